#!/usr/bin/env bash
# A real single-node Slurm cluster (munged + slurmctld + slurmd) living in one directory,
# for tests/slurm/test_slurm.py and for trying jobs/pretrain.sbatch by hand.
#
#   tests/slurm/slurm_cluster.sh up DIR     # writes DIR/slurm.conf, starts the daemons,
#                                           # waits for the node to be idle, prints DIR/env.sh
#   . DIR/env.sh                            # SLURM_CONF=DIR/slurm.conf for sbatch, squeue, ...
#   tests/slurm/slurm_cluster.sh down DIR   # stops the daemons by their pid files
#
# Needs root, the Debian packages slurm-wlm and munge (Slurm 22.05, MUNGE 0.5.15), and no
# other daemon on the two TCP ports it takes (free ports are chosen at `up`; set
# SLURMCTLD_PORT / SLURMD_PORT to fix them). Nothing outside DIR is written: the munge key,
# socket, seed, pid and log files, Slurm's state and spool directories and logs are all in
# DIR. MUNGE clients use the socket path compiled into libmunge (/run/munge/munge.socket.2)
# unless told otherwise; Slurm is told through `AuthInfo=socket=DIR/munge/munge.socket.2`
# in slurm.conf (used by both auth/munge and cred/munge), so no environment variable
# besides SLURM_CONF is needed. (`munge -S DIR/munge/munge.socket.2 -n | unmunge -S ...`
# tests the daemon by hand.)
#
# Several nodes (tests/cluster): SLURM_NODES="node1=10.77.0.1@NETNS1 node2=10.77.0.2@NETNS2"
# names network namespaces made beforehand (tools/netns_cluster.py), one a node. slurmctld
# runs in the first, each slurmd in its own (nsenter --net: the mount namespace, and so
# /sys/fs/cgroup, stays the machine's), each with the hostname of its node (unshare
# --uts). Each node has its own copy of slurm.conf in DIR/nodes/NAME, for an mpi.conf of
# its own: PMIx's per-step directory (PMIxCliTmpDirBase) would otherwise be the same
# path for both nodes on the shared file system. Each slurmd runs on a core of its own
# (taskset, inherited by its jobs) with TaskPlugin=task/none: to task/affinity each
# node's one CPU would be CPU 0. Clients (sbatch, squeue, sinfo) reach
# slurmctld from inside the first namespace only: `nsenter --net=/run/netns/$(cat
# DIR/ctl_netns) sbatch ...`.
#
# Settings that matter to the tests:
#   AuthInfo=...,cred_expire=10  a requeued job may start again only after cred_expire
#                                seconds (default 120): measured here, a job requeued with
#                                `scontrol requeue` runs again 11-12 s later.
#   JobRequeue=1, KillWait=30    batch jobs may be requeued; 30 s between SIGTERM and SIGKILL.
#   SchedulerParameters=sched_interval=1  the main scheduler passes over pending jobs every
#                                second instead of 60: a requeued job becomes eligible
#                                cred_expire + 1 s later, but without this it waited for
#                                the next periodic pass (measured: 29 s instead of 11-12 s).
#   MinJobAge=120                a finished job stays visible to `scontrol show job` for
#                                2 minutes (there is no slurmdbd, hence no sacct).
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/affinity: no cgroups needed;
#                                task/affinity (sched_setaffinity) makes srun --cpu-bind
#                                bind each task to its CPUs, as on a real cluster
#                                (task/none: "cluster configuration lacks support for cpu binding").
#   MpiDefault=none              `srun --mpi=pmix` asks for PMIx (Open MPI 4.1 works with it).
#
# Measured on a 2-vCPU Debian 12 VM (Slurm 22.05.8, Open MPI 4.1.4, PMIx 4.2.2): `up`
# takes 0.1-1.2 s until the node is idle; `down` 5-6 s (slurmctld's shutdown), plus up
# to KillWait for jobs still running, which it cancels first (jobs outlive slurmd).
# Inside a batch job of 2 tasks both `srun --mpi=pmix -n 2 ...` and `mpirun ...` (which
# reads the allocation) start MPI ranks. Signals: srun forwards USR1 to the tasks, ends
# the step at once on SIGTERM (tasks killed, srun exits 137) and only reports status on
# one SIGINT; Open MPI's mpirun forwards USR1/USR2 and kills the ranks (exit 1) on
# SIGTERM/SIGINT. `scancel --batch --signal=USR1` signals only the batch shell;
# `scancel` and `scontrol requeue` send SIGTERM to every process of the job (batch
# shell, srun, mpirun and the ranks), SIGKILL KillWait later. `scontrol requeue` also
# succeeds on a job being cancelled (it comes back), which jobs/pretrain.sbatch avoids.

set -euo pipefail

usage() {
    echo "usage: $0 up DIR | down DIR | status DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

UP_TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}   # seconds to wait for the node to become idle

log_tails() {
    local f
    for f in "$dir/log/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; do
        [ -f "$f" ] || continue
        echo "---- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

die() {
    echo "slurm_cluster.sh: $*" >&2
    log_tails
    exit 1
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid_alive() {  # pid_alive PIDFILE: the pid in it names a live process
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# multi-node mode: node names, addresses and namespaces from SLURM_NODES
NODE_NAMES=() NODE_ADDRS=() NODE_NETNS=()
for spec in ${SLURM_NODES:-}; do
    [[ $spec =~ ^([A-Za-z0-9_-]+)=([0-9.]+)@([A-Za-z0-9_.-]+)$ ]] ||
        { echo "slurm_cluster.sh: SLURM_NODES: '$spec' is not NAME=ADDR@NETNS" >&2; exit 2; }
    NODE_NAMES+=("${BASH_REMATCH[1]}") NODE_ADDRS+=("${BASH_REMATCH[2]}") NODE_NETNS+=("${BASH_REMATCH[3]}")
done

# ctl COMMAND...: runs a client or slurmctld where slurmctld listens
ctl() {
    if [ -s "$dir/ctl_netns" ]; then nsenter --net="/run/netns/$(cat "$dir/ctl_netns")" "$@"; else "$@"; fi
}

slurmd_pidfiles() { compgen -G "$dir/slurmd*.pid" || true; }

write_nodes_config() {
    local line mem i
    line=$(slurmd -C | head -n 1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    sed -i -e "s|^SlurmctldHost=.*|SlurmctldHost=${NODE_NAMES[0]}(${NODE_ADDRS[0]})|" \
        -e "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$dir/spool/%n|" \
        -e "s|^SlurmdPidFile=.*|SlurmdPidFile=$dir/slurmd.%n.pid|" \
        -e "s|^SlurmdLogFile=.*|SlurmdLogFile=$dir/log/slurmd.%n.log|" \
        -e "s|^TaskPlugin=.*|TaskPlugin=task/none|" \
        -e '/^NodeName=/d' -e '/^PartitionName=/d' "$dir/slurm.conf"
    for i in "${!NODE_NAMES[@]}"; do
        echo "NodeName=${NODE_NAMES[$i]} NodeAddr=${NODE_ADDRS[$i]} CPUs=1 RealMemory=${mem:-1} State=UNKNOWN"
    done >>"$dir/slurm.conf"
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODE_NAMES[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$dir/slurm.conf"
    for i in "${!NODE_NAMES[@]}"; do
        mkdir -p "$dir/nodes/${NODE_NAMES[$i]}/pmix" "$dir/spool/${NODE_NAMES[$i]}"
        cp "$dir/slurm.conf" "$dir/nodes/${NODE_NAMES[$i]}/slurm.conf"
        echo "PMIxCliTmpDirBase=$dir/nodes/${NODE_NAMES[$i]}/pmix" >"$dir/nodes/${NODE_NAMES[$i]}/mpi.conf"
    done
    echo "${NODE_NETNS[0]}" >"$dir/ctl_netns"
}

write_config() {
    local node cpus line host
    host=$(hostname -s)
    # `slurmd -C` prints this machine's real layout: NodeName=vm CPUs=2 Boards=1 ... RealMemory=N
    line=$(slurmd -C | head -n 1)
    [[ $line == NodeName=* ]] || die "unexpected output of slurmd -C: $line"
    node=${line%% *}
    node=${node#NodeName=}
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$line")
    ctld_port=${SLURMCTLD_PORT:-$(free_port)}
    slurmd_port=${SLURMD_PORT:-$(free_port)}
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

    : >"$dir/plugstack.conf"   # empty: do not load /etc/slurm/plugstack.conf
    cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/slurm_cluster.sh: a single-node test cluster in $dir
ClusterName=gpttest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
JobRequeue=1
MinJobAge=120
KillWait=30
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$line State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    # the first field of `slurmd -C` is this node's name; slurmd looks itself up by it
    sed -i "s/^NodeName=$node /NodeName=$node NodeAddr=127.0.0.1 /" "$dir/slurm.conf"
    [ -n "$cpus" ] || die "no CPUs= in: $line"
    rm -f "$dir/ctl_netns"
    [ ${#NODE_NAMES[@]} -eq 0 ] || write_nodes_config
    printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf" >"$dir/env.sh"
}

start_munged() {
    mkdir -p "$dir/munge" "$dir/log"
    chmod 755 "$dir/munge"      # munged refuses a socket directory writable by others
    if [ ! -s "$dir/munge/munge.key" ]; then
        mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 ||
            dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 600 "$dir/munge/munge.key"
    # --force: root and the directory checks (a test's tmp dir may sit under /tmp, 1777)
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" ||
        die "munged failed to start"
    local _
    for _ in $(seq 50); do
        [ -S "$dir/munge/munge.socket.2" ] && pid_alive "$dir/munge/munged.pid" && return 0
        sleep 0.1
    done
    die "munged did not create its socket"
}

start_slurm() {
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    # -c: clear the state of any earlier cluster in DIR (a fresh cluster every `up`)
    if [ ${#NODE_NAMES[@]} -eq 0 ]; then
        slurmctld -c -f "$dir/slurm.conf" || die "slurmctld failed to start"
        slurmd -f "$dir/slurm.conf" || die "slurmd failed to start"
        return
    fi
    local i
    nsenter --net="/run/netns/${NODE_NETNS[0]}" unshare --uts sh -c 'hostname "$1"; exec slurmctld -c -f "$2"' \
        sh "${NODE_NAMES[0]}" "$dir/slurm.conf" || die "slurmctld failed to start"
    local ncpu
    ncpu=$(nproc)
    for i in "${!NODE_NAMES[@]}"; do
        # a core a node (its jobs inherit it): with task/none, as each node's one CPU
        # would be CPU 0 to task/affinity
        nsenter --net="/run/netns/${NODE_NETNS[$i]}" unshare --uts \
            taskset -c $((i % ncpu)) sh -c 'hostname "$1"; exec slurmd -N "$1" -f "$2"' \
            sh "${NODE_NAMES[$i]}" "$dir/nodes/${NODE_NAMES[$i]}/slurm.conf" ||
            die "slurmd of ${NODE_NAMES[$i]} failed to start"
    done
}

wait_idle() {
    local t0 state
    t0=$SECONDS
    export SLURM_CONF="$dir/slurm.conf"
    while :; do
        # every node's state, or the first one that is not idle
        state=$(ctl sinfo -h -N -o '%t' 2>/dev/null | sort -u | grep -vx idle | head -n 1 || true)
        [ -z "$state" ] && ctl sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle && state=idle
        case $state in
        idle) return 0 ;;
        down* | drain* | fail*)
            # ReturnToService=2 brings a node back when it registers with a valid
            # configuration; anything else is an error in the configuration
            if [ $((SECONDS - t0)) -gt 10 ]; then
                ctl sinfo -N -l >&2 || true
                ctl scontrol show node >&2 || true
                die "node is $state"
            fi
            ;;
        esac
        pid_alive "$dir/slurmctld.pid" || die "slurmctld exited"
        for f in $(slurmd_pidfiles); do pid_alive "$f" || die "slurmd exited ($f)"; done
        if [ $((SECONDS - t0)) -ge "$UP_TIMEOUT" ]; then
            ctl sinfo -N -l >&2 || true
            die "node not idle after $UP_TIMEOUT s (state: '${state:-none}')"
        fi
        sleep 0.2
    done
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL
    local name=$1 file=$2 pid _
    pid_alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    echo "slurm_cluster.sh: $name ($pid) still running after 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$file"
}

cancel_jobs() {
    # jobs outlive slurmd (their slurmstepd processes run on): cancel what is left and
    # wait until the controller has no job left running (KillWait + a margin)
    local jobs _
    pid_alive "$dir/slurmctld.pid" || return 0
    export SLURM_CONF="$dir/slurm.conf"
    jobs=$(ctl squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [ -n "${jobs// /}" ] || return 0
    echo "slurm_cluster.sh: cancelling jobs $jobs" >&2
    # shellcheck disable=SC2086  # a list of job ids
    ctl scancel $jobs 2>/dev/null || true
    # squeue lists pending, running and completing jobs, not ended ones
    for _ in $(seq 450); do
        [ -z "$(ctl squeue -h -o %i 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    echo "slurm_cluster.sh: jobs not ended 45 s after scancel: $(ctl squeue -h -o '%i %T' | tr '\n' ' '); SIGKILL to them" >&2
    # shellcheck disable=SC2086
    ctl scancel --signal=KILL --full $jobs 2>/dev/null || true
    for _ in $(seq 150); do
        [ -z "$(ctl squeue -h -o %i 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    echo "slurm_cluster.sh: jobs still there: $(ctl squeue -h -o '%i %T' | tr '\n' ' ')" >&2
}

down() {
    local f
    cancel_jobs
    for f in $(slurmd_pidfiles); do stop_pidfile slurmd "$f"; done
    stop_pidfile slurmctld "$dir/slurmctld.pid"
    stop_pidfile munged "$dir/munge/munged.pid"
}

case $cmd in
up)
    [ "$(id -u)" = 0 ] || die "needs root (SlurmUser=root, slurmd)"
    for d in munged slurmctld slurmd sinfo; do
        command -v "$d" >/dev/null || die "$d not found: apt-get install slurm-wlm munge"
    done
    for f in "$dir/slurmctld.pid" "$dir/munge/munged.pid" $(slurmd_pidfiles); do
        pid_alive "$f" && die "a cluster is already running in $dir (run: $0 down $dir)"
    done
    # stop whatever did start if a later step fails
    trap 'if [ $? -ne 0 ]; then down; fi' EXIT
    t0=${EPOCHREALTIME/[.,]/}
    write_config
    start_munged
    start_slurm
    wait_idle
    trap - EXIT
    ms=$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))
    printf 'slurm_cluster.sh: up in %d.%03d s: node(s) %s idle; . %s\n' \
        $((ms / 1000)) $((ms % 1000)) "${NODE_NAMES[*]:-$(hostname -s)}" "$dir/env.sh" >&2
    cat "$dir/env.sh"
    ;;
down)
    down
    ;;
status)
    for f in "$dir/munge/munged.pid" "$dir/slurmctld.pid" $(slurmd_pidfiles); do
        if pid_alive "$f"; then echo "${f#"$dir"/}: running ($(cat "$f"))"; else echo "${f#"$dir"/}: not running"; fi
    done
    ;;
*)
    usage
    ;;
esac
