#!/usr/bin/env python3
"""Core benchmarks: netrunner against the stdlib, interleaved, as ratios.

    python bench/bench_core.py            # all of them
    python bench/bench_core.py spawn      # one: spawn | throughput | memory

Both sides run in the same process, alternating round by round, so machine
noise (these are shared 2-core VMs) hits both alike; the figure that counts
is the ratio of medians.  Results go to stdout as a table and, with
``--json FILE``, as JSON.  Targets (issue 2): spawn <= 1.5x subprocess.run,
1 GiB collection >= 2x subprocess.run(capture_output=True), one idle
shepherd <= 256 KiB private memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import netrunner
from netrunner._launch import FORK_SERVER


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleave(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[list[float], list[float]]:
    """Alternate ``a`` and ``b`` (swapping who goes first) ``rounds`` times."""
    xs, ys = [], []
    for i in range(rounds):
        if i % 2:
            ys.append(b())
            xs.append(a())
        else:
            xs.append(a())
            ys.append(b())
    return xs, ys


def bench_spawn(rounds: int) -> dict[str, float]:
    """run(["/bin/true"]) spawn + wait, medians of 200-call batches; and the
    owner's CPU time per call (``time.process_time()``, kernel time
    included), which a loaded machine moves far less than wall time: on a
    2-vCPU VM the owner's work after the child exits is serial with it, so
    a microsecond of owner CPU is about one of wall time per spawn."""
    cmd = ["/bin/true"]
    netrunner.run(cmd)
    subprocess.run(cmd)
    cpu: dict[str, list[float]] = {"nr": [], "sp": []}

    def batch(side: str, fn: Callable[[], object]) -> float:
        start = time.process_time()
        wall = per_call(fn, 200)
        cpu[side].append((time.process_time() - start) / 200)
        return wall

    nr, sp = interleave(
        lambda: batch("nr", lambda: netrunner.run(cmd)),
        lambda: batch("sp", lambda: subprocess.run(cmd)),
        rounds,
    )
    n, s = statistics.median(nr), statistics.median(sp)
    return {
        "netrunner_us": n * 1e6,
        "subprocess_us": s * 1e6,
        "ratio": n / s,
        "netrunner_cpu_us": statistics.median(cpu["nr"]) * 1e6,
        "subprocess_cpu_us": statistics.median(cpu["sp"]) * 1e6,
    }


def bench_throughput(rounds: int, size: int = 1 << 30) -> dict[str, float]:
    """Collect ``size`` bytes of stdout from head -c SIZE /dev/zero."""
    cmd = ["head", "-c", str(size), "/dev/zero"]

    def nr() -> float:
        start = time.perf_counter()
        out = netrunner.run(cmd).stdout
        elapsed = time.perf_counter() - start
        assert len(out) == size
        return elapsed

    def sp() -> float:
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True).stdout
        elapsed = time.perf_counter() - start
        assert len(out) == size
        return elapsed

    nr_t, sp_t = interleave(nr, sp, rounds)
    n, s = statistics.median(nr_t), statistics.median(sp_t)
    mib = size / 2**20
    return {"netrunner_MiB_s": mib / n, "subprocess_MiB_s": mib / s, "ratio": s / n}


def private_kib(pid: int) -> int:
    """Private_Clean + Private_Dirty of ``pid``, in KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def bench_memory() -> dict[str, float]:
    """Private memory of a shepherd watching an idle child, the fork
    server, and the spare shepherd waiting for the next spawn."""
    with netrunner.spawn(["sleep", "60"], stdin="devnull") as proc:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        shepherd = int(stat.rsplit(")", 1)[1].split()[1])
        server = FORK_SERVER.pid
        kids = Path(f"/proc/{server}/task/{server}/children").read_text().split()
        spares = [int(k) for k in kids if int(k) != shepherd]
        result = {
            "shepherd_private_KiB": private_kib(shepherd),
            "fork_server_private_KiB": private_kib(server),
        }
        if spares:
            result["spare_shepherd_private_KiB"] = private_kib(spares[0])
        proc.stop(0)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["spawn", "throughput", "memory"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for name in args.which:
        if name == "spawn":
            results[name] = bench_spawn(args.rounds)
        elif name == "throughput":
            results[name] = bench_throughput(max(3, args.rounds // 2))
        elif name == "memory":
            results[name] = bench_memory()
        else:
            parser.error(f"unknown benchmark {name!r}")
        print(f"{name:12s} " + "  ".join(f"{k}={v:.2f}" for k, v in results[name].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version, "cpus": os.cpu_count(), **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
