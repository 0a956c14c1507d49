#!/usr/bin/env bash
# Does pre-training help? Sentence polarity (Pang & Lee's 4,000 labelled sentences, from
# Debian's python3-pattern) fine-tuned from a model pre-trained on unlabelled movie
# reviews (the package's 2,000-review CSV with its labels dropped), against the same
# model from scratch, with lambda 0 and 0.5, and with LoRA. Prints the held-out (20%)
# accuracy table of docs/finetuning.md. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN_DIR:-runs/polarity}
steps=${PRETRAIN_STEPS:-3000}
seeds=${SEEDS:-1 2 3}
corpora=/usr/share/doc/python3-pattern/test/corpora
ranks=$(nproc)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$run"
if [ ! -f "$run/pre/model.h5" ]; then
    /usr/bin/python3 -c "
import csv, sys
for label, text in csv.reader(open(sys.argv[1], encoding='utf-8-sig')):
    print(text.strip() + '\n')" "$corpora/polarity-en-pang&lee1.csv" > "$run/reviews.txt"
    bin/gpt tokenizer train --merges 3836 --out "$run/tok.h5" "$run/reviews.txt"
    mpirun -np "$ranks" bin/gpt prepare --tokenizer "$run/tok.h5" --out "$run/corpus.h5" --split-on-blank-lines \
        --val-fraction 0.02 "$run/reviews.txt"
    mpirun -np "$ranks" bin/gpt train --data "$run/corpus.h5" --model small --ln pre --n-ctx 128 --vocab 4096 \
        --out "$run/pre" --overwrite --steps "$steps" --batch $((16 / ranks)) --lr 1e-3 --warmup 50 \
        --eval-every 200 --eval-windows 100 --log-every 100
fi
bin/gpt init --model small --ln pre --n-ctx 128 --vocab 4096 --seed 1 --out "$run/scratch.h5"
bin/gpt prepare-task --tokenizer "$run/tok.h5" --task classify --labels=-1,1 --n-ctx 128 --val-fraction 0.2 \
    --out "$run/polarity.h5" "$corpora/polarity-en-pang&lee2.csv"
finetune() { # name seed init options...; a run already evaluated is kept
    local name=$1 seed=$2 init=$3
    shift 3
    [ -s "$run/$name-$seed.json" ] && return
    mpirun -np "$ranks" bin/gpt finetune --init "$init" --data "$run/polarity.h5" --out "$run/$name-$seed" \
        --overwrite --seed "$seed" --epochs 3 --lr 2e-4 --eval-every 100 --log-every 100 "$@" > "$run/$name-$seed.log"
    bin/gpt eval-task --model "$run/$name-$seed/model.h5" --data "$run/polarity.h5" > "$run/$name-$seed.json"
}
for seed in $seeds; do
    finetune scratch "$seed" "$run/scratch.h5" --lambda 0.5
    finetune pre_lambda0 "$seed" "$run/pre/model.h5" --lambda 0
    finetune pre_lambda05 "$seed" "$run/pre/model.h5" --lambda 0.5
    finetune lora "$seed" "$run/pre/model.h5" --lambda 0.5 --lora-rank 8 --lora-targets attn,mlp --lr 3e-3
done
/usr/bin/python3 - "$run" $seeds <<'PY'
import json, re, statistics, sys
run, seeds = sys.argv[1], sys.argv[2:]
print(f"{'run':<14} {'accuracy, mean +- sd':<22} {'per seed':<22} {'held-out loss':<14} trained parameters")
for name in ("scratch", "pre_lambda0", "pre_lambda05", "lora"):
    res = [json.load(open(f"{run}/{name}-{s}.json")) for s in seeds]
    acc = [r["accuracy"] for r in res]
    params = re.search(r"training (\d+) parameters", open(f"{run}/{name}-{seeds[0]}.log").read()).group(1)
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    print(f"{name:<14} {statistics.mean(acc):.4f} +- {sd:.4f}       {' '.join(f'{a:.4f}' for a in acc):<22} "
          f"{statistics.mean(r['loss'] for r in res):<14.4f} {params}")
PY
