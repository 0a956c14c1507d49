// Hugging Face's own tokenizers library (the Rust implementation, npm package
// "tokenizers", pinned) reading a tokenizer.json: the independent reader of the files
// `gpt export --format hf` writes.
//
//   node hf_tokenize.mjs TOKENIZER.json FILE...
//       for each FILE, prints the ids of its text (UTF-8) space-separated on one line.
//       Added special tokens spelled in the text become those tokens (tokenizers always
//       matches them), as with `gpt tokenize --allow-special`.
//   node hf_tokenize.mjs --resave TOKENIZER.json OUT.json
//       loads TOKENIZER.json and saves it again as the library serialises it (merges as
//       pairs since tokenizers 0.20, its own key order and defaults).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const { Tokenizer } = createRequire(import.meta.url)("tokenizers");

function fail(msg) {
  process.stderr.write(`hf_tokenize.mjs: ${msg}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const resave = args[0] === "--resave";
if (resave) args.shift();
const [json, ...files] = args;
if (!json || files.length === 0 || (resave && files.length !== 1))
  fail("usage: node hf_tokenize.mjs TOKENIZER.json FILE... | --resave TOKENIZER.json OUT.json");
let tok;
try {
  tok = Tokenizer.fromFile(json);
} catch (e) {
  fail(`${json}: ${e.message}`);
}
if (resave) {
  tok.save(files[0], true);
  process.exit(0);
}
for (const path of files) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(readFileSync(path));
  } catch (e) {
    fail(`${path}: ${e.message}`);
  }
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  process.stdout.write(enc.getIds().join(" ") + "\n");
}
