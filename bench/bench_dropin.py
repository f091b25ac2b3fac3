#!/usr/bin/env python3
"""Spawn cost of the drop-in: ``netrunner.subprocess.run(["true"])`` next to
``netrunner.run(["true"])`` and the stdlib's ``subprocess.run(["true"])``,
interleaved in one process (round by round, rotating who goes first), so
the noise of a shared machine hits all three alike.

    python bench/bench_dropin.py [--rounds N] [--calls N]

Prints one line of ``name=value`` pairs: the median over rounds of the mean
time per call, in microseconds, and the ratios.  Target (issue 11): the
drop-in costs no more than the native ``run`` (ratio ~1.0).  Both capture
nothing here (the stdlib's default): the native ``run`` is called with
``stdout=None`` so the three do the same work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable

import netrunner
from netrunner import subprocess as dropin

TRUE = ["true"]


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    opts = parser.parse_args()
    sides: dict[str, Callable[[], object]] = {
        "dropin": lambda: dropin.run(TRUE),
        "native": lambda: netrunner.run(TRUE, stdout=None, stderr=None),
        "stdlib": lambda: subprocess.run(TRUE),
    }
    for fn in sides.values():  # warm up: fork server, spares, imports
        per_call(fn, 20)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(opts.rounds):
        order = names[r % 3 :] + names[: r % 3]
        for name in order:
            times[name].append(per_call(sides[name], opts.calls))
    med = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
    print(
        f"bench=dropin_spawn dropin_us={med['dropin']:.0f} native_us={med['native']:.0f} "
        f"stdlib_us={med['stdlib']:.0f} dropin/native={med['dropin'] / med['native']:.2f} "
        f"dropin/stdlib={med['dropin'] / med['stdlib']:.2f} rounds={opts.rounds} calls={opts.calls}"
    )


if __name__ == "__main__":
    main()
