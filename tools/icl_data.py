#!/usr/bin/env python3
"""icl_data: synthetic data for an in-context-learning (induction) demonstration.

Standard library only; everything follows from --seed.

Words. A pool of short lowercase keys ("bax", "kel", ...) and a pool of short
uppercase values ("ZOR", "MIK", ...), consonant-vowel-consonant, all distinct.

Pre-training corpus (OUT/corpus.txt). Documents separated by blank lines (for
`gpt prepare --split-on-blank-lines`). Each document draws a fresh random mapping of
--keys-min..--keys-max keys to distinct values and writes lines "key VALUE", each line
a key chosen uniformly from the mapping, --lines-per-key times as many lines as keys
(so keys repeat). A key's first value in a document is unpredictable; a repeated key's
value is predictable only from the document's own earlier lines, so lowering the loss
on it needs copying from context (an induction head).

Evaluation sets (OUT/eval/defs_M.jsonl, OUT/eval/queries_M.jsonl for M = 0 .. --mappings
- 1), each on a NEW random mapping of --eval-keys keys, one record a line:
    {"context": "key", "endings": [" VALUE", ...], "label": i}
defs_M has one record per key of mapping M (its definition: the right value among
--choices endings); queries_M has one record per key again (the same questions with
their own shuffling of the endings). Few-shot examples for a query are drawn from
defs_M (gold endings), so with --eval-keys shots every definition is shown and with 0
shots nothing is known about the mapping (chance: 1 / --choices).
The wrong endings are other values of the same mapping (--distractors mapping, the
default): with every definition shown, all endings are in the prompt, so only a
key-conditional copy (not "repeat any value seen") answers right. --distractors pool
draws them from the values outside the mapping instead.

OUT/eval/manifest.json records the parameters and the file names.
"""

import argparse
import json
import os
import random
import sys

CONSONANTS = "bcdfghjklmnprstvz"   # 17
VOWELS = "aeiou"                    # 5  -> 17 * 5 * 17 = 1445 CVC words


def word_pool(rng, n, upper, exclude=()):
    """n distinct consonant-vowel-consonant words (uppercase if upper), not in exclude."""
    words = [c1 + v + c2 for c1 in CONSONANTS for v in VOWELS for c2 in CONSONANTS]
    ex = {w.lower() for w in exclude}
    words = [w for w in words if w not in ex]
    if n > len(words):
        sys.exit(f"icl_data: a pool of {n} words is more than the {len(words)} available")
    picked = rng.sample(words, n)
    return [w.upper() for w in picked] if upper else picked


def mapping(rng, keys, values, n):
    """A random mapping of n distinct keys to n distinct values, as a list of pairs."""
    return list(zip(rng.sample(keys, n), rng.sample(values, n)))


def document(rng, keys, values, args):
    n = rng.randint(args.keys_min, args.keys_max)
    pairs = mapping(rng, keys, values, n)
    if args.order == "random":
        lines = [rng.choice(pairs) for _ in range(args.lines_per_key * n)]
    else:  # passes: each pass shows every key once, in a new order, never the same key twice in a row
        lines = []
        for _ in range(args.lines_per_key):
            p = rng.sample(pairs, n)
            if lines and n > 1 and p[0] == lines[-1]:
                j = rng.randrange(1, n)
                p[0], p[j] = p[j], p[0]
            lines += p
    return "".join(f"{k} {v}\n" for k, v in lines)


def record(rng, key, value, wrong_pool, choices):
    wrong = rng.sample([w for w in wrong_pool if w != value], choices - 1)
    endings = [value] + wrong
    rng.shuffle(endings)
    return {"context": key, "endings": [" " + e for e in endings],
            "label": endings.index(value)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--key-pool", type=int, default=40, help="number of lowercase keys")
    ap.add_argument("--value-pool", type=int, default=40, help="number of uppercase values")
    ap.add_argument("--docs", type=int, default=40000, help="pre-training documents")
    ap.add_argument("--keys-min", type=int, default=4)
    ap.add_argument("--keys-max", type=int, default=8)
    ap.add_argument("--lines-per-key", type=int, default=3,
                    help="a document has this many lines per key of its mapping")
    ap.add_argument("--order", choices=("passes", "random"), default="passes",
                    help="passes: the lines are --lines-per-key passes over the keys, each "
                         "in a fresh random order, no key twice in a row; random: each "
                         "line's key drawn uniformly")
    ap.add_argument("--mappings", type=int, default=50, help="evaluation mappings")
    ap.add_argument("--eval-keys", type=int, default=8, help="keys per evaluation mapping")
    ap.add_argument("--choices", type=int, default=4, help="endings per record")
    ap.add_argument("--distractors", choices=("mapping", "pool"), default="mapping")
    args = ap.parse_args()
    if not 1 <= args.keys_min <= args.keys_max <= min(args.key_pool, args.value_pool):
        sys.exit("icl_data: need 1 <= --keys-min <= --keys-max <= both pool sizes")
    if args.eval_keys > min(args.key_pool, args.value_pool):
        sys.exit("icl_data: --eval-keys exceeds a pool size")
    if args.distractors == "mapping" and args.choices > args.eval_keys:
        sys.exit("icl_data: --distractors mapping needs --choices <= --eval-keys")
    if args.distractors == "pool" and args.choices > args.value_pool - args.eval_keys + 1:
        sys.exit("icl_data: --distractors pool: not enough values outside a mapping")

    rng = random.Random(args.seed)
    keys = word_pool(rng, args.key_pool, upper=False)
    values = word_pool(rng, args.value_pool, upper=True, exclude=keys)

    os.makedirs(os.path.join(args.out, "eval"), exist_ok=True)
    # Separate streams, so the evaluation sets do not change with --docs.
    train_rng = random.Random(f"{args.seed}/train")
    with open(os.path.join(args.out, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(document(train_rng, keys, values, args) for _ in range(args.docs)))

    eval_rng = random.Random(f"{args.seed}/eval")
    files = []
    for m in range(args.mappings):
        pairs = mapping(eval_rng, keys, values, args.eval_keys)
        mvals = [v for _, v in pairs]
        pool = mvals if args.distractors == "mapping" else \
            [v for v in values if v not in mvals]
        out = {}
        for kind in ("defs", "queries"):
            recs = [record(eval_rng, k, v, pool, args.choices) for k, v in pairs]
            if kind == "queries":
                eval_rng.shuffle(recs)
            name = f"{kind}_{m}.jsonl"
            with open(os.path.join(args.out, "eval", name), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in recs)
            out[kind] = name
        files.append(out)

    manifest = {"args": vars(args), "keys": keys, "values": values,
                "corpus": "corpus.txt", "mappings": files,
                "shot_separator": "\n"}
    with open(os.path.join(args.out, "eval", "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
