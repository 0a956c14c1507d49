"""A cluster of hosts on one machine: Linux network namespaces joined by a bridge, for
the multi-host tests (tests/cluster) and tools/bench_cluster.py. Root only.

    with Cluster(hosts=2) as c:              # up; always down on leaving, failed or not
        c.limit("1gbit")                      # every host's link (tc tbf); None: unlimited
        proc = c.popen([gpt, "train", ...])   # mpirun on host 1, one rank a host
        c.link(2, up=False)                   # cut host 2 off

  * host i is the namespace NAME-hI with the address 10.77.0.i on a veth whose peer is on
    the bridge of the namespace NAME-br; hosts reach only each other;
  * each host has a hostname of its own (unshare --uts) and a core of its own (taskset):
    the simulated hosts see every core, and Open MPI's binding would put every host's
    first rank on core 0, so ranks run with --bind-to none inside their host's core;
  * Open MPI starts its daemon on another host through LAUNCHER, an rsh agent that runs
    the command line in the host's namespace (no sshd); TCP between hosts (btl tcp,
    restricted to the cluster's subnet), shared memory within one;
  * the hosts share the file system, as a cluster's nodes share a parallel one;
  * TCP gives up on an unreachable peer after 5 retransmissions (~13 s), as clusters
    that need failover configure it (net.ipv4.tcp_retries2; Linux's default of 15 keeps
    mpirun waiting ~15 minutes for the daemon of a host cut off after a job aborts);
  * NAME carries the creating process's id; down() deletes the namespaces by name (their
    processes first), and up() removes those of earlier clusters whose creator is gone.

python3 tools/netns_cluster.py up|down [--hosts N] keeps one up by hand (NAME: gptc-cli)."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBNET = "10.77.0"
PREFIX = "gptc"
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

AGENT = """#!/bin/sh
# Open MPI's rsh agent for the cluster {name}: `agent HOST COMMAND...` runs COMMAND on HOST
host=$1; shift
case $host in
{cases}
*) echo "{name} launcher: unknown host $host" >&2; exit 1;;
esac
exec nsenter --net="/run/netns/$ns" unshare --uts sh -c 'hostname "$1"; shift; exec taskset -c "$1" sh -c "$2"' sh "$ns" "$core" "$*"
"""


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def inside(ns, *args, check=True):
    """Runs args in the network namespace ns. nsenter --net enters only that: `ip -n` and
    `ip netns exec` also make a mount namespace and remount /sys, which fails in a chroot
    (its / is no mount point) and hides /sys/fs/cgroup from slurmd."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *args], capture_output=True, text=True,
                          check=check)


def namespaces():
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def delete_namespaces(names):
    """Kills the processes of the namespaces `names`, then deletes them."""
    for ns in names:
        for pid in ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in names:
        ip("netns", "delete", ns, check=False)


def remove_stale():
    """The namespaces of clusters whose creating process no longer exists."""
    stale = []
    for ns in namespaces():
        parts = ns.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not Path(f"/proc/{parts[1]}").exists():
            stale.append(ns)
    delete_namespaces(stale)


class Cluster:
    def __init__(self, hosts=2, name=None):
        self.hosts = hosts
        self.name = name or f"{PREFIX}-{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.launcher = self.dir / "launcher.sh"
        self.ncpu = len(os.sched_getaffinity(0))

    # ------------------------------------------------------------------ hosts
    def ns(self, i):
        return f"{self.name}-h{i}"

    def addr(self, i):
        return f"{SUBNET}.{i}"

    def core(self, i):
        return sorted(os.sched_getaffinity(0))[(i - 1) % self.ncpu]

    def names(self):
        return [self.ns(i) for i in range(1, self.hosts + 1)] + [f"{self.name}-br"]

    def up(self):
        remove_stale()
        self.down()
        br = f"{self.name}-br"
        ip("netns", "add", br)
        inside(br, "ip", "link", "add", "br0", "type", "bridge")
        inside(br, "ip", "link", "set", "br0", "up")
        for i in range(1, self.hosts + 1):
            ns, peer = self.ns(i), f"gptc{os.getpid() % 100000}v{i}"
            ip("netns", "add", ns)
            ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", peer, "netns", br)
            inside(br, "ip", "link", "set", peer, "master", "br0", "up")
            inside(ns, "ip", "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            inside(ns, "ip", "link", "set", "eth0", "up")
            inside(ns, "ip", "link", "set", "lo", "up")
            # a peer that vanished with data unacknowledged is given up after ~13 s of
            # retransmissions, not Linux's default ~15 minutes (tcp_retries2 15): how long
            # mpirun waits, after an abort, for the daemon of a host cut off
            inside(ns, "sh", "-c", "echo 5 > /proc/sys/net/ipv4/tcp_retries2")
        cases = "\n".join(f"{self.addr(i)}) ns={self.ns(i)} core={self.core(i)};;" for i in range(1, self.hosts + 1))
        self.launcher.write_text(AGENT.format(name=self.name, cases=cases))
        self.launcher.chmod(0o755)
        return self

    def down(self):
        delete_namespaces([n for n in self.names() if n in namespaces()])

    def __enter__(self):
        try:
            return self.up()
        except BaseException:  # a cluster half made comes down too
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ links
    def limit(self, rate):
        """Every host's outgoing rate (tc tbf, "1gbit"), or None: unlimited."""
        for i in range(1, self.hosts + 1):
            inside(self.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            if rate:
                # a bucket of 1 ms at the rate (at least 64 KiB); 100 ms of queue
                bits = parse_rate(rate)
                burst = max(65536, bits // 8 // 1000)
                inside(self.ns(i), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
                       "burst", str(burst), "latency", "100ms")

    def link(self, i, up):
        inside(self.ns(i), "ip", "link", "set", "eth0", "up" if up else "down")

    def pids(self, i):
        return [int(p) for p in ip("netns", "pids", self.ns(i), check=False).stdout.split()]

    # ------------------------------------------------------------------ jobs
    def mpirun(self, args, per_host=1, hosts=None, mca=()):
        """The command line of `mpirun ARGS` started on host 1, with per_host ranks on each
        of `hosts` (default all: 1..N)."""
        hosts = hosts or list(range(1, self.hosts + 1))
        spec = ",".join(f"{self.addr(i)}:{per_host}" for i in hosts)
        inner = ["mpirun", "--host", spec, "-np", str(per_host * len(hosts)), "--bind-to", "none",
                 "--mca", "plm_rsh_agent", str(self.launcher), "--mca", "btl", "tcp,vader,self",
                 "--mca", "btl_tcp_if_include", f"{SUBNET}.0/24", "--mca", "oob_tcp_if_include", f"{SUBNET}.0/24",
                 *[x for kv in mca for x in ("--mca", *kv)], *[str(a) for a in args]]
        return self.on(1, inner)

    def on(self, i, args):
        """The command line running args on host i (its namespace, hostname and core)."""
        return ["nsenter", f"--net=/run/netns/{self.ns(i)}", "unshare", "--uts", "sh", "-c",
                'hostname "$1"; shift; exec taskset -c "$@"', "sh", self.ns(i), str(self.core(i)),
                *[str(a) for a in args]]

    def env(self, extra=None):
        return {**os.environ, **MPI_ENV, **{k: str(v) for k, v in (extra or {}).items()}}

    def popen(self, args, per_host=1, hosts=None, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        """mpirun ARGS in a session of its own. A job whose host was cut off leaves that
        host's Open MPI daemon running, holding the job's output: give files as stdout
        and stderr to wait for mpirun alone."""
        # more ranks than the host's one core: ranks waiting in MPI yield the core to the
        # others, as Open MPI does by itself when it knows a node is oversubscribed
        env = {**({"OMPI_MCA_mpi_yield_when_idle": "1"} if per_host > 1 else {}), **(env or {})}
        return subprocess.Popen(self.mpirun(args, per_host, hosts), env=self.env(env), stdout=stdout,
                                stderr=stderr, text=True, start_new_session=True)

    def run(self, args, per_host=1, hosts=None, env=None, timeout=600):
        """Runs mpirun ARGS to its end (killed, group and all, past timeout); returns
        (returncode, stdout, stderr, seconds); returncode None: timed out."""
        t0 = time.monotonic()
        proc = self.popen(args, per_host, hosts, env)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc = None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return rc, out, err, time.monotonic() - t0


def parse_rate(rate):
    """tc's "1gbit", "500mbit", "25gbit" as bits per second."""
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bit": 1}
    for u, f in units.items():
        if rate.endswith(u):
            return int(float(rate[: -len(u)]) * f)
    raise ValueError(f"rate {rate!r}: expected a number and kbit, mbit or gbit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--hosts", type=int, default=2)
    a = ap.parse_args()
    c = Cluster(a.hosts, name=f"{PREFIX}-cli")
    if a.action == "up":
        c.up()
        print(f"up: {', '.join(c.names())}; launcher {c.launcher}")
        print("mpirun on host 1: " + " ".join(c.mpirun(["hostname"])))
    else:
        c.down()
        print(f"down: {', '.join(c.names())}")


if __name__ == "__main__":
    sys.exit(main())
