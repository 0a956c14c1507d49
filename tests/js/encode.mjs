// Reference GPT-2 encoder for the tokenizer tests and benchmark: js-tiktoken's "gpt2"
// encoding (its own bundled ranks, independent of gpt-tokenizer's r50k_base.tiktoken).
//
//   node encode.mjs [--allow-special] FILE...
//       for each FILE, prints the ids of its text (UTF-8; invalid UTF-8 is an error)
//       space-separated on one line (an empty line for an empty file). Spellings of
//       special tokens are ordinary text unless --allow-special, as with `gpt tokenize`.
//   node encode.mjs --bench FILE [REPS]
//       prints {"mb_per_s", "tokens", "bytes", "seconds"} as JSON: in-process encoding
//       speed, the best of REPS timed runs (default 3) after one warm-up run.
import { readFileSync } from "node:fs";
import { getEncoding } from "js-tiktoken";

function fail(msg) {
  process.stderr.write(`encode.mjs: ${msg}\n`);
  process.exit(2);
}

function readText(path) {
  let bytes;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    fail(`${path}: ${e.message}`);
  }
  try {
    return { text: new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes), nbytes: bytes.length };
  } catch (e) {
    fail(`${path}: not valid UTF-8 (${e.message})`);
  }
}

const args = process.argv.slice(2);
const enc = getEncoding("gpt2");

if (args[0] === "--bench") {
  if (args.length < 2 || args.length > 3) fail("usage: node encode.mjs --bench FILE [REPS]");
  const { text, nbytes } = readText(args[1]);
  const reps = args.length === 3 ? Number.parseInt(args[2], 10) : 3;
  if (!(reps >= 1)) fail(`bad REPS: ${args[2]}`);
  let tokens = enc.encode(text, [], []).length; // warm-up
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const ids = enc.encode(text, [], []);
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    tokens = ids.length;
    if (dt < best) best = dt;
  }
  process.stdout.write(JSON.stringify({ mb_per_s: nbytes / 1e6 / best, tokens, bytes: nbytes, seconds: best }) + "\n");
} else {
  let allowSpecial = false;
  if (args[0] === "--allow-special") {
    allowSpecial = true;
    args.shift();
  }
  if (args.length === 0 || args.some((a) => a.startsWith("--")))
    fail("usage: node encode.mjs [--allow-special] FILE... | --bench FILE [REPS]");
  const lines = args.map((path) => {
    const { text } = readText(path);
    // encode(text, allowedSpecial, disallowedSpecial): "all" turns every special
    // spelling into its token; [] and [] make them ordinary text (and do not throw).
    const ids = allowSpecial ? enc.encode(text, "all") : enc.encode(text, [], []);
    return ids.join(" ") + "\n";
  });
  process.stdout.write(lines.join(""));
}
