#!/usr/bin/env python3
"""Line splitting speed (issue 13), interleaved, medians, as MB/s and ratios.

    python bench/bench_lines.py [--rounds N] [--count N]

* split: ``LineSplitter.feed`` over the chunks ``netrunner.stream`` really
  yields for ``seq 1 COUNT`` (captured once, then split in memory, so only
  the splitter is timed), against the per-line ``find`` loop the splitter
  used before issue 13 (kept below as the reference).
* end to end: ``for line in netrunner.stream(cmd).lines()`` against the
  same chunks through the old splitter, and against
  ``for line in Popen(cmd, stdout=PIPE).stdout`` (target: >= 1.5x Popen).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import netrunner
from netrunner._stream import LineSplitter


class FindLoopSplitter:
    """The splitter before issue 13: one Python-level ``find`` per line."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = []
        start = 0
        while True:
            end = chunk.find(b"\n", start) + 1
            if not end:
                break
            if self.parts:
                self.parts.append(chunk[start:end])
                lines.append(b"".join(self.parts))
                self.parts.clear()
            else:
                lines.append(chunk[start:end])
            start = end
        if start < len(chunk):
            self.parts.append(chunk[start:])
        return lines


def split_all(make: Callable[[], LineSplitter | FindLoopSplitter], chunks: list[bytes], lines: int) -> float:
    start = time.perf_counter()
    splitter = make()
    count = 0
    for chunk in chunks:
        count += len(splitter.feed(chunk))
    elapsed = time.perf_counter() - start
    assert count == lines, count
    return elapsed


def nr_lines(cmd: list[str], lines: int) -> float:
    start = time.perf_counter()
    count = 0
    for _ in netrunner.stream(cmd).lines():
        count += 1
    elapsed = time.perf_counter() - start
    assert count == lines, count
    return elapsed


def old_lines(cmd: list[str], lines: int) -> float:
    """stream() chunks through the splitter and generator used before issue 13."""

    def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
        splitter = FindLoopSplitter()
        for chunk in chunks:
            yield from splitter.feed(chunk)

    start = time.perf_counter()
    count = 0
    for _ in split_lines(iter(netrunner.stream(cmd))):
        count += 1
    elapsed = time.perf_counter() - start
    assert count == lines, count
    return elapsed


def popen_lines(cmd: list[str], lines: int) -> float:
    start = time.perf_counter()
    count = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for _ in proc.stdout:
            count += 1
    elapsed = time.perf_counter() - start
    assert count == lines, count
    return elapsed


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds per contender; the order rotates each round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(fns[name]())
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=12_500_000)
    args = parser.parse_args()
    cmd = ["seq", "1", str(args.count)]
    chunks = list(netrunner.stream(cmd))
    size = sum(map(len, chunks))
    mb = size / 1e6
    print(f"seq 1 {args.count}: {mb:.1f} MB in {len(chunks)} chunks (mean {size // len(chunks)} bytes)")

    split = interleaved(
        {
            "LineSplitter": lambda: split_all(LineSplitter, chunks, args.count),
            "find loop (before)": lambda: split_all(FindLoopSplitter, chunks, args.count),
        },
        args.rounds,
    )
    for name, t in split.items():
        print(f"split in memory  {name:20s} {mb / t:8.1f} MB/s")
    ratio = split["find loop (before)"] / split["LineSplitter"]
    print(f"split in memory  ratio LineSplitter / find loop: {ratio:.2f}x")

    e2e = interleaved(
        {
            "stream().lines()": lambda: nr_lines(cmd, args.count),
            "stream() + old split": lambda: old_lines(cmd, args.count),
            "Popen stdout iter": lambda: popen_lines(cmd, args.count),
        },
        args.rounds,
    )
    for name, t in e2e.items():
        print(f"end to end       {name:20s} {mb / t:8.1f} MB/s")
    print(f"end to end       ratio netrunner / Popen: {e2e['Popen stdout iter'] / e2e['stream().lines()']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
