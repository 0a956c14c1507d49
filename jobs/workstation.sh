#!/usr/bin/env bash
# Pre-trains (or fine-tunes) a GPT with mpirun on this machine, NP ranks of THREADS
# threads each (default: one rank per core, one thread each), checkpointing as it goes
# and resuming from the newest good checkpoint of the run directory; Ctrl-C (or SIGTERM
# to this script) makes every rank write a checkpoint at the next step and stop, and
# running the same command again carries on from there.
#
#   jobs/workstation.sh --data corpus.h5 --model small --out runs/small --steps 2000 --batch 8
#   NP=4 CKPT_EVERY=50 jobs/workstation.sh --data corpus.h5 --out runs/small --steps 2000
#   NP=2 THREADS=8 jobs/workstation.sh --data corpus.h5 --out runs/small --steps 2000
#   jobs/workstation.sh finetune --init runs/small/model.h5 --data task.h5 --out runs/task
#
# The arguments are `gpt train`'s (bin/gpt train --help), or after `finetune` those of
# `gpt finetune`; this script adds `--resume auto`, `--ckpt-every $CKPT_EVERY` and
# `--threads $THREADS` unless they are given.
#   THREADS     threads per rank (--threads)   default: 1 (a --threads argument counts too)
#   NP          ranks                          default: cores / THREADS
#   GPT         the gpt binary                 default: bin/gpt next to this directory
#   CKPT_EVERY  checkpoint every N steps       default: 100
#   MPIRUN_ARGS more mpirun arguments, split on blanks (e.g. "--oversubscribe")
#
# Every rank is bound to THREADS cores of its own (mpirun --map-by slot:PE=THREADS
# --bind-to core) and its OpenMP threads to those cores (OMP_NUM_THREADS=THREADS,
# OMP_PROC_BIND=close, OMP_PLACES=cores). Cores are the physical cores this process may
# run on (hardware threads of one core count once). NP x THREADS more than the cores is
# an error unless MPIRUN_ARGS has --oversubscribe; the ranks are then not bound
# (--bind-to none, OMP_PROC_BIND=false), nor when MPIRUN_ARGS has its own --map-by or
# --bind-to.
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
CKPT_EVERY=${CKPT_EVERY:-100}
MPIRUN_ARGS=${MPIRUN_ARGS:-}

log() { printf '[workstation] %s\n' "$*" >&2; }

count_cores() {  # the physical cores among the CPUs this process may run on
    local list range cpu lo hi topo n=0 unknown=''
    local -A seen=()
    list=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status 2>/dev/null)
    for range in ${list//,/ }; do
        lo=${range%-*} hi=${range#*-}
        for ((cpu = lo; cpu <= hi; cpu++)); do
            topo=/sys/devices/system/cpu/cpu$cpu/topology
            [ -r "$topo/core_id" ] || { unknown=1; break 2; }
            seen["$(<"$topo/physical_package_id"):$(<"$topo/core_id")"]=1
        done
    done
    [ -n "$unknown" ] || n=${#seen[@]}
    # no topology to read: nproc (which honours OMP_NUM_THREADS, hence the env -u)
    [ "$n" -gt 0 ] || n=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    echo "$n"
}
cores=$(count_cores)

if [ $# -eq 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
[ -x "$GPT" ] || { log "GPT=$GPT is not an executable: run make, or set GPT"; exit 2; }

command=train
case $1 in train | finetune) command=$1; shift ;; esac
args=("$@")

# threads per rank: THREADS, or the arguments' --threads (both: they must agree)
threads_arg='' next=''
for a in "${args[@]}"; do
    if [ -n "$next" ]; then threads_arg=$a; next=; continue; fi
    case $a in --threads) next=1 ;; --threads=*) threads_arg=${a#--threads=} ;; esac
done
if [ -n "$threads_arg" ] && [ -n "${THREADS:-}" ] && [ "$THREADS" != "$threads_arg" ]; then
    log "THREADS=$THREADS and --threads $threads_arg disagree: give one of them"
    exit 2
fi
THREADS=${THREADS:-${threads_arg:-1}}
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || { log "THREADS=$THREADS: a number of threads per rank"; exit 2; }
if [ -z "${NP:-}" ]; then
    NP=$((cores / THREADS))
    if [ "$NP" -lt 1 ]; then
        log "THREADS=$THREADS threads per rank, but this machine has $cores core(s): not even one rank fits; lower THREADS"
        exit 2
    fi
fi
[[ $NP =~ ^[1-9][0-9]*$ ]] || { log "NP=$NP: a number of ranks"; exit 2; }

read -r -a extra <<<"$MPIRUN_ARGS"
oversubscribe='' own_binding=''
for a in "${extra[@]}"; do
    case $a in
    --oversubscribe | -oversubscribe) oversubscribe=1 ;;
    --map-by | --map-by=* | -map-by | --bind-to | --bind-to=* | -bind-to) own_binding=1 ;;
    esac
done
if [ $((NP * THREADS)) -gt "$cores" ]; then
    if [ -z "$oversubscribe" ]; then
        log "NP=$NP ranks x THREADS=$THREADS threads = $((NP * THREADS)) cores, but this machine has $cores: lower NP or THREADS (NP x THREADS <= $cores), or pass MPIRUN_ARGS=--oversubscribe to share cores (the ranks are then not bound, and slower)"
        exit 2
    fi
    own_binding=${own_binding:-none}
fi
has() {  # has OPTION: the arguments give OPTION (as "--opt value" or "--opt=value")
    local a
    for a in "${args[@]}"; do
        [ "$a" = "$1" ] || [[ $a == "$1="* ]] && return 0
    done
    return 1
}
has --resume || args+=(--resume auto)
has --ckpt-every || args+=(--ckpt-every "$CKPT_EVERY")
has --threads || args+=(--threads "$THREADS")

# each rank on THREADS cores of its own, its threads one a core; unbound ranks (shared
# cores, or MPIRUN_ARGS's own mapping) get unbound threads: OMP_PROC_BIND=close would put
# thread i of every rank on the same core i
mpirun=(mpirun -np "$NP")
if [ -z "$own_binding" ]; then
    bind=close
    mpirun+=(--map-by "slot:PE=$THREADS" --bind-to core)
else
    bind=false
    [ "$own_binding" = none ] && mpirun+=(--map-by slot --bind-to none)
fi
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS OMP_PROC_BIND=$bind OMP_PLACES=cores
mpirun+=(-x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS -x OMP_PROC_BIND -x OMP_PLACES)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
mpirun+=("${extra[@]}")

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

log "layout: $NP rank(s) x $THREADS thread(s) on $cores core(s) (OMP_PROC_BIND=$bind OMP_PLACES=cores)"
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
