#!/usr/bin/env bash
# Pre-trains (or fine-tunes) a GPT with mpirun on this machine, one rank per core with one BLAS thread
# each, checkpointing as it goes and resuming from the newest good checkpoint of the
# run directory; Ctrl-C (or SIGTERM to this script) makes every rank write a checkpoint
# at the next step and stop, and running the same command again carries on from there.
#
#   jobs/workstation.sh --data corpus.h5 --model small --out runs/small --steps 2000 --batch 8
#   NP=4 CKPT_EVERY=50 jobs/workstation.sh --data corpus.h5 --out runs/small --steps 2000
#   jobs/workstation.sh finetune --init runs/small/model.h5 --data task.h5 --out runs/task
#
# The arguments are `gpt train`'s (bin/gpt train --help), or after `finetune` those of
# `gpt finetune`; this script adds `--resume auto` and `--ckpt-every $CKPT_EVERY` unless
# they are given.
#   NP          ranks                          default: the number of cores (nproc)
#   GPT         the gpt binary                 default: bin/gpt next to this directory
#   CKPT_EVERY  checkpoint every N steps       default: 100
#   THREADS     BLAS/OpenMP threads per rank   default: 1
#   MPIRUN_ARGS more mpirun arguments, split on blanks (e.g. "--bind-to none")
#
# Exit status: gpt's: 0 all steps done, 75 stopped after a checkpoint (run the same
# command again to resume), anything else an error. A second Ctrl-C stops at once
# (SIGTERM to mpirun, which kills the ranks; a resume then starts from the newest
# checkpoint on disk).
#
# mpirun runs in a session of its own (setsid): Ctrl-C in a terminal sends SIGINT to the
# whole foreground process group, and mpirun answers SIGINT by killing the ranks at
# once. Here only this script gets it, and sends USR1 to mpirun, which forwards it to
# every rank.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GPT=${GPT:-$here/../bin/gpt}
# nproc honours OMP_NUM_THREADS, which one-thread-per-rank setups often set to 1
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
NP=${NP:-$cores}
CKPT_EVERY=${CKPT_EVERY:-100}
THREADS=${THREADS:-1}
MPIRUN_ARGS=${MPIRUN_ARGS:-}

log() { printf '[workstation] %s\n' "$*" >&2; }

if [ $# -eq 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
[ -x "$GPT" ] || { log "GPT=$GPT is not an executable: run make, or set GPT"; exit 2; }
[[ $NP =~ ^[1-9][0-9]*$ ]] || { log "NP=$NP: a number of ranks"; exit 2; }

command=train
case $1 in train | finetune) command=$1; shift ;; esac
args=("$@")
has() {  # has OPTION: the arguments give OPTION (as "--opt value" or "--opt=value")
    local a
    for a in "${args[@]}"; do
        [ "$a" = "$1" ] || [[ $a == "$1="* ]] && return 0
    done
    return 1
}
has --resume || args+=(--resume auto)
has --ckpt-every || args+=(--ckpt-every "$CKPT_EVERY")

export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
mpirun=(mpirun -np "$NP" -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
[ "$NP" -gt "$cores" ] && mpirun+=(--oversubscribe)
if [ -n "$MPIRUN_ARGS" ]; then
    read -r -a extra <<<"$MPIRUN_ARGS"
    mpirun+=("${extra[@]}")
fi

launcher_pid=
stops=0
# shellcheck disable=SC2317  # (called from the traps)
on_signal() {
    stops=$((stops + 1))
    [ -n "$launcher_pid" ] || exit 130
    if [ "$stops" = 1 ]; then
        log "SIG$1: asking the ranks to checkpoint and stop at the next step (again to stop at once)"
        kill -USR1 "$launcher_pid" 2>/dev/null
    else
        log "SIG$1 again: stopping mpirun now"
        kill -TERM "$launcher_pid" 2>/dev/null
    fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

log "${mpirun[*]} $GPT $command ${args[*]}"
# a background command of a non-interactive shell is not a process-group leader, so
# setsid makes the new session in the same process (no fork): $! is mpirun's pid
setsid "${mpirun[@]}" "$GPT" "$command" "${args[@]}" </dev/null &
launcher_pid=$!
while :; do
    signalled=$stops
    wait "$launcher_pid"
    rc=$?
    if [ "$stops" != "$signalled" ] && [ "$rc" -gt 128 ]; then
        # a trapped signal interrupted `wait`: wait again while mpirun runs on (or is a
        # zombie); if it is gone already, bash still holds its status
        kill -0 "$launcher_pid" 2>/dev/null && continue
        wait "$launcher_pid"
        again=$?
        [ "$again" -ne 127 ] && rc=$again
    fi
    break
done
case $rc in
0) log "done" ;;
75) log "stopped after a checkpoint (exit 75): run the same command again to resume" ;;
*)
    if [ "$stops" -ge 2 ]; then
        log "stopped at once (exit $rc): the same command resumes from the newest good checkpoint"
    else
        log "gpt $command failed (exit $rc)"
    fi
    ;;
esac
exit "$rc"
