// Reference GGUF reader for the tests: @huggingface/gguf's parser on a local file.
//
//   node gguf_dump.mjs FILE.gguf
//       prints one JSON object on stdout:
//         {"metadata": {KEY: VALUE, ...},
//          "tensorInfos": [{"name", "shape": [n, ...], "dtype": GGML_TYPE, "offset": N}, ...],
//          "tensorDataOffset": N}
//       metadata holds the file's key/value pairs only (the package's synthetic
//       "version", "tensor_count" and "kv_count" entries are left out). shape is in
//       file order (ne[0] first); offset is relative to the tensor data section;
//       tensorDataOffset is the absolute file offset of that section. BigInts (u64/i64
//       values, dims, offsets) become Numbers. Arrays longer than 64 elements are
//       printed as {"length": n, "head": [first 8], "tail": [last 8]} unless the
//       environment has GGUF_FULL=1. f32 values are the exact doubles of the stored
//       floats (0.1f prints as 0.10000000149011612); NaN/Infinity print as null.
//       Exits 2 with a message on stderr if the file can't be parsed.
import { statSync } from "node:fs";
import { gguf } from "@huggingface/gguf";

function fail(msg) {
  process.stderr.write(`gguf_dump.mjs: ${msg}\n`);
  process.exit(2);
}

const full = process.env.GGUF_FULL === "1";
const SYNTHETIC_KEYS = new Set(["version", "tensor_count", "kv_count"]);

function conv(v) {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) {
    if (!full && v.length > 64) {
      return { length: v.length, head: v.slice(0, 8).map(conv), tail: v.slice(-8).map(conv) };
    }
    return v.map(conv);
  }
  return v;
}

const args = process.argv.slice(2);
if (args.length !== 1) fail("usage: node gguf_dump.mjs FILE.gguf");
const path = args[0];

let size;
try {
  size = statSync(path).size;
} catch (e) {
  fail(`${path}: ${e.message}`);
}

let parsed;
try {
  // A plain path (not a file:// URL); http(s):// strings would be fetched instead.
  parsed = await gguf(path, { allowLocalFile: true });
} catch (e) {
  fail(`${path}: ${e && e.message ? e.message : e}`);
}

// The package reads the file in zero-padded 2 MB chunks, so a truncated header can
// "parse" as zeros; insist that the key/value and tensor-info sections fit in the file.
const headerEnd = parsed.tensorInfoByteRange[1];
if (headerEnd > size) fail(`${path}: truncated (header needs ${headerEnd} bytes, file has ${size})`);

const metadata = {};
for (const [k, v] of Object.entries(parsed.metadata)) {
  if (!SYNTHETIC_KEYS.has(k)) metadata[k] = conv(v);
}
const tensorInfos = parsed.tensorInfos.map((t) => ({
  name: t.name,
  shape: t.shape.map(Number),
  dtype: t.dtype,
  offset: Number(t.offset),
}));

process.stdout.write(
  JSON.stringify({ metadata, tensorInfos, tensorDataOffset: Number(parsed.tensorDataOffset) }) + "\n",
);
