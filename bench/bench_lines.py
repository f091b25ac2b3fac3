#!/usr/bin/env python3
"""Line iteration speed (issue 13): interleaved rounds, medians, ratios.

    python bench/bench_lines.py [--rounds N] [--count N] [--only NAME ...]

Output of ``seq 1 COUNT`` (101 MB, 12.5 M lines by default), every figure
in CPU time of this process (``time.process_time()``: what a loaded 2-core
machine still measures fairly) and in wall time; end to end also as a
ratio to ``Popen`` stdout iteration.

* in memory, the same 64 KiB chunks (what a read of a full pipe gives):
  the floors, i.e. the consumer's ``for`` loop alone (over
  ``itertools.repeat``) and over lines already made (no ``bytes`` made per
  line); ``split_lines`` (``LineSplitter``: a ``BytesIO`` per chunk);
  the splitter before (one ``splitlines`` list per chunk); and the floor
  of any per-line ``async for``: a minimal class whose ``async def
  __anext__`` returns the next line already made.
* end to end: ``for line in netrunner.stream(cmd).lines()``, ``for line in
  Popen(cmd, stdout=PIPE).stdout`` (target: netrunner >= 1.5x Popen),
  ``async for line in aio.stream(cmd).lines()`` (one coroutine per line:
  the floor of any ``async for``) and ``async for batch in
  aio.stream(cmd).lines().batches()`` (one await per chunk), on asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import netrunner
from netrunner import aio
from netrunner._stream import split_lines


def count(lines: Iterable[Any]) -> int:
    """The consumer every figure shares: a ``for`` loop doing almost nothing."""
    n = 0
    for _ in lines:
        n += 1
    return n


def splitlines_before(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The splitter before this one: one ``splitlines`` list per chunk
    (``seq`` writes no ``\\r``), the tail carried into the next chunk."""

    def lists() -> Iterator[list[bytes]]:
        tail = b""
        for chunk in chunks:
            lines = chunk.splitlines(keepends=True)
            if lines and tail:
                lines[0] = tail + lines[0]
            tail = lines.pop() if lines and not chunk.endswith(b"\n") else b""
            yield lines
        if tail:
            yield [tail]

    return itertools.chain.from_iterable(lists())


def popen_lines(cmd: list[str]) -> int:
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        return count(proc.stdout)


async def acount(lines: Any) -> int:
    n = 0
    async for _ in lines:
        n += 1
    return n


async def acount_batches(batches: Any) -> int:
    n = 0
    async for batch in batches:
        for _ in batch:
            n += 1
    return n


class MinimalAsyncIterator:
    """The cheapest ``async for`` a Python class allows: one coroutine per
    item, doing nothing but take the next one (a ``def __anext__``
    returning a done Future or an object with ``__await__`` costs 2-4x
    more on 3.10-3.13)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = iter(items)

    def __aiter__(self) -> MinimalAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        for item in self.items:
            return item
        raise StopAsyncIteration


def interleaved(fns: dict[str, Callable[[], int]], rounds: int, lines: int) -> dict[str, tuple[float, float]]:
    """Median (CPU, wall) seconds per contender; the order rotates each
    round; each run must see every line."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            n = fns[name]()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert n == lines, (name, n)
            times[name].append((cpu, wall))
    return {name: (statistics.median(c for c, _ in t), statistics.median(w for _, w in t)) for name, t in times.items()}


def report(title: str, results: dict[str, tuple[float, float]], size: int, lines: int, ref: str | None) -> None:
    ref_cpu, ref_wall = results.get(ref or "", (None, None))
    for name, (cpu, wall) in results.items():
        ratio = ""
        if ref_cpu and ref_wall:
            ratio = f"  {ref} / this: CPU {ref_cpu / cpu:4.2f}x, wall {ref_wall / wall:4.2f}x"
        print(
            f"{title:11s} {name:34s} CPU {cpu * 1e3:6.0f} ms {cpu / lines * 1e9:5.1f} ns/line"
            f"  wall {size / wall / 1e6:6.1f} MB/s{ratio}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=12_500_000)
    parser.add_argument("--only", action="append", default=[], help="run the contenders whose name has this")
    args = parser.parse_args()
    n = args.count
    cmd = ["seq", "1", str(n)]
    data = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    # Lines already made: one chunk's lines over and over (12.5 M distinct
    # bytes objects would take 600 MB).
    one = chunks[0][: chunks[0].rfind(b"\n") + 1].splitlines(keepends=True)
    made = [*itertools.repeat(one, n // len(one)), one[: n % len(one)]]
    size = len(data)
    print(
        f"Python {sys.version.split()[0]}, seq 1 {n}: {size / 1e6:.1f} MB, {len(chunks)} chunks of 64 KiB;"
        f" {args.rounds} rounds; load {os.getloadavg()[0]:.2f}"
    )
    nr_aio: Any = aio  # (typed loosely: the async figures are plain callables here)

    def wanted(fns: dict[str, Callable[[], int]]) -> dict[str, Callable[[], int]]:
        return {k: f for k, f in fns.items() if not args.only or any(o in k for o in args.only)}

    memory = wanted(
        {
            "consumer loop alone": lambda: count(itertools.repeat(b"", n)),
            "lines already made": lambda: count(itertools.chain.from_iterable(made)),
            "split_lines (BytesIO per chunk)": lambda: count(split_lines(chunks)),
            "splitlines per chunk (before)": lambda: count(splitlines_before(chunks)),
            "async for, minimal class": lambda: asyncio.run(
                acount(MinimalAsyncIterator(itertools.chain.from_iterable(made)))
            ),
        }
    )
    if memory:
        report("in memory", interleaved(memory, args.rounds, n), size, n, None)
    e2e = wanted(
        {
            "stream().lines()": lambda: count(netrunner.stream(cmd).lines()),
            "Popen stdout": lambda: popen_lines(cmd),
            "aio stream().lines()": lambda: asyncio.run(acount(nr_aio.stream(cmd).lines())),
            "aio stream().lines().batches()": lambda: asyncio.run(acount_batches(nr_aio.stream(cmd).lines().batches())),
        }
    )
    if e2e:
        netrunner.run(["true"])  # the fork server starts once per interpreter: not timed
        report("end to end", interleaved(e2e, args.rounds, n), size, n, "Popen stdout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
