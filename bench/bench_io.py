#!/usr/bin/env python3
"""Streaming and asyncio benchmarks (issue 3), interleaved, as ratios.

    python bench/bench_io.py                    # all
    python bench/bench_io.py stream concurrent pingpong

* stream: ``netrunner.stream`` over 2 GiB of ``head -c ... /dev/zero``
  against the best plain-Python loop on a plain 1 MiB pipe from the same
  producer (``os.read`` of 64 KiB until EOF).  Target: >= 0.90.
* concurrent: 500 concurrent ``aio.run(["/bin/echo", i])`` against
  ``asyncio.create_subprocess_exec`` + ``communicate()``.  Target: <= 1.0.
* pingpong: write a line to ``cat``, read it back, 2000 times, through a
  netrunner ``Process`` against plain ``Popen`` pipes.  Target: <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import netrunner
from netrunner import aio

F_SETPIPE_SZ = 1031


def interleave(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float]:
    xs, ys = [], []
    for i in range(rounds):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1, r2 = first(), second()
        if first is a:
            xs.append(r1)
            ys.append(r2)
        else:
            xs.append(r2)
            ys.append(r1)
    return statistics.median(xs), statistics.median(ys)


def bench_stream(rounds: int, size: int = 2 << 30) -> dict[str, float]:
    cmd = ["head", "-c", str(size), "/dev/zero"]

    def nr() -> float:
        start = time.perf_counter()
        total = 0
        for chunk in netrunner.stream(cmd):
            total += len(chunk)
        assert total == size
        return time.perf_counter() - start

    def plain() -> float:
        start = time.perf_counter()
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
        proc = subprocess.Popen(cmd, stdout=w)
        os.close(w)
        total = 0
        read = os.read
        while True:
            data = read(r, 65536)
            if not data:
                break
            total += len(data)
        os.close(r)
        proc.wait()
        assert total == size
        return time.perf_counter() - start

    n, p = interleave(nr, plain, rounds)
    gib = size / 2**30
    return {"netrunner_GiB_s": gib / n, "plain_loop_GiB_s": gib / p, "ratio": p / n}


def bench_concurrent(rounds: int, count: int = 500) -> dict[str, float]:
    async def nr_batch() -> None:
        results = await asyncio.gather(*(aio.run(["/bin/echo", str(i)]) for i in range(count)))
        assert all(r.stdout == f"{i}\n".encode() for i, r in enumerate(results))

    async def asyncio_one(i: int) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "/bin/echo", str(i), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out

    async def aio_batch() -> None:
        results = await asyncio.gather(*(asyncio_one(i) for i in range(count)))
        assert all(out == f"{i}\n".encode() for i, out in enumerate(results))

    def timed(batch: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            asyncio.run(batch())  # type: ignore[arg-type]
            return time.perf_counter() - start

        return run

    n, a = interleave(timed(nr_batch), timed(aio_batch), rounds)
    return {"netrunner_s": n, "asyncio_s": a, "ratio": n / a}


def bench_pingpong(rounds: int, count: int = 2000) -> dict[str, float]:
    line = b"x" * 63 + b"\n"

    def nr() -> float:
        with netrunner.spawn(["cat"]) as proc:
            start = time.perf_counter()
            for _ in range(count):
                proc.write(line)
                got = b""
                while len(got) < len(line):
                    got += proc.read()
            elapsed = time.perf_counter() - start
            proc.close_stdin()
            proc.wait()
        return elapsed / count

    def popen() -> float:
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None
        start = time.perf_counter()
        for _ in range(count):
            proc.stdin.write(line)
            got = b""
            while len(got) < len(line):
                got += (
                    proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else os.read(proc.stdout.fileno(), 65536)
                )
        elapsed = time.perf_counter() - start
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
        return elapsed / count

    n, p = interleave(nr, popen, rounds)
    return {"netrunner_us": n * 1e6, "popen_us": p * 1e6, "ratio": n / p}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["stream", "concurrent", "pingpong"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    benches = {"stream": bench_stream, "concurrent": bench_concurrent, "pingpong": bench_pingpong}
    for name in args.which:
        if name not in benches:
            parser.error(f"unknown benchmark {name!r}")
        result = benches[name](args.rounds)
        print(f"{name:12s} " + "  ".join(f"{k}={v:.3f}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
