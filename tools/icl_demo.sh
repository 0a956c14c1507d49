#!/usr/bin/env bash
# In-context learning (induction) demonstration: tools/icl_demo.sh OUTDIR
#
# A tiny 2-layer GPT is pre-trained on documents that each define a fresh random
# mapping of keys to values as lines "key VALUE" in which keys repeat
# (tools/icl_data.py), so that predicting a repeated key's value needs copying from the
# document's own earlier lines. Evaluated on new mappings with K few-shot definitions
# in the prompt, it should be at chance (1/4) with K = 0 and well above it with all 8
# definitions shown.
#
# OUTDIR gets: corpus.txt, tokenizer.h5, corpus.h5, train/ (config.json, metrics.jsonl,
# model.h5), eval/ (defs_M.jsonl, queries_M.jsonl for M = 0 .. MAPPINGS-1, manifest.json).
#
# Then `gpt eval-choice` scores every query of every mapping with K = 0, 1, 2, 4, 8 of
# the mapping's definitions as shots (--shots-from defs_M.jsonl, separated by a newline as
# the training lines are), and the accuracy by K over all mappings is printed as a table
# (OUTDIR/accuracy.txt). docs/evaluation.md has the table this recipe gave.
#
# Environment: GPT (default: bin/gpt of this repository), PYTHON (for the standard-library
# tools/icl_data.py; default python3), DATA_SEED (1), TRAIN_SEED (1337), DOCS (80000),
# MAPPINGS (50), STEPS (6000), THREADS (1).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GPT=${GPT:-$root/bin/gpt}
PYTHON=${PYTHON:-python3}
data_seed=${DATA_SEED:-1}
train_seed=${TRAIN_SEED:-1337}
docs=${DOCS:-80000}
mappings=${MAPPINGS:-50}
steps=${STEPS:-6000}
threads=${THREADS:-1}
shots="0 1 2 4 8"

echo "=== data: $docs pre-training documents, $mappings evaluation mappings (seed $data_seed)"
# 4 to 8 keys a document, 6 lines a key, each line's key drawn uniformly
"$PYTHON" tools/icl_data.py --out "$out" --seed "$data_seed" --docs "$docs" --mappings "$mappings" \
    --key-pool 40 --value-pool 40 --keys-min 4 --keys-max 8 --lines-per-key 6 --order random \
    --eval-keys 8 --choices 4 --distractors mapping

echo "=== tokenizer and corpus"
# 40 keys + 40 values + "\n" are 81 distinct pre-tokenizer pieces; about 150 merges make
# each one token (training stops when no pair is left), within the tiny preset's 512.
"$GPT" tokenizer train --merges 252 --out "$out/tokenizer.h5" "$out/corpus.txt"
"$GPT" prepare --tokenizer "$out/tokenizer.h5" --out "$out/corpus.h5" \
    --split-on-blank-lines --val-fraction 0.01 "$out/corpus.txt"

echo "=== pre-training ($steps steps, $threads thread(s))"
"$GPT" train --data "$out/corpus.h5" --model tiny --ln pre --dropout 0 \
    --out "$out/train" --overwrite --steps "$steps" --batch 32 --lr 3e-3 --min-lr 3e-4 --warmup 100 \
    --seed "$train_seed" --eval-every 1000 --eval-windows 300 --log-every 1000 --threads "$threads"

echo "=== few-shot accuracy (gpt eval-choice, shots from each mapping's definitions)"
for k in $shots; do
    for ((m = 0; m < mappings; m++)); do
        "$GPT" eval-choice --model "$out/train/model.h5" --data "$out/eval/queries_$m.jsonl" \
            --shots "$k" --shots-from "$out/eval/defs_$m.jsonl" --shot-separator $'\n' --json
    done > "$out/eval_choice_$k.jsonl"
done
"$PYTHON" - "$out" $shots <<'PY' | tee "$out/accuracy.txt"
import json, math, sys
out, shots = sys.argv[1], [int(k) for k in sys.argv[2:]]
print(f"{'shots':>5} {'queries':>7} {'accuracy':>8} {'+-se':>6} {'chance':>6} {'gold log-lik':>12}")
for k in shots:
    runs = [json.loads(line) for line in open(f"{out}/eval_choice_{k}.jsonl")]
    n = sum(r["records"] for r in runs)
    acc = sum(r["accuracy"] * r["records"] for r in runs) / n
    gold = sum(r["gold_loglik"] * r["records"] for r in runs) / n
    chance = sum(r["chance"] * r["records"] for r in runs) / n
    print(f"{k:>5} {n:>7} {acc:>8.3f} {math.sqrt(acc * (1 - acc) / n):>6.3f} {chance:>6.3f} {gold:>12.3f}")
PY

echo "model: $out/train/model.h5; table: $out/accuracy.txt"
