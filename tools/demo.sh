#!/usr/bin/env bash
# The README's main command (`make demo`), as far as the tool goes today: a `small`
# GPT is initialised, checked, and trained for a few steps on synthetic tokens with the
# speed and memory report. Corpus preparation, training under mpirun and sampling join
# this script as those commands land.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-runs/demo}
mkdir -p "$run"
bin/gpt init --model small --seed 1 --out "$run/model.h5"
bin/gpt inspect "$run/model.h5" | head -n 3
bin/gpt bench --model small --batch 8 --steps 10
echo "model file: $run/model.h5 (layout: docs/formats.md)"
