#!/usr/bin/env python3
"""Where a 1 GiB capture's time goes: ``run()`` against the raw-pipe
ceiling and against the floor of any reader that keeps the bytes.

    python bench/bench_capture.py [--rounds N] [--size BYTES] [--only CASE ...]

Every case reads ``head -c SIZE /dev/zero`` through a 1 MiB pipe, in a
**fresh process** of its own (a capture's cost is first-touch page faults,
so each case must start from the memory state a user's process has), the
cases in rotating order, round after round.  Printed per case: medians of
MiB/s, of the owner's CPU time (``time.process_time()`` over the read) and
of its minor page faults, and the median over rounds of the case's rate
divided by the raw pipe's rate in the same round.

Cases:
  raw          ``readv`` of 1 MiB from the pipe into one reused buffer,
               nothing kept: the ceiling ``bench/peers.py`` shows as
               "raw-pipe" (its ``os.read`` makes a new 1 MiB ``bytes`` per
               read, which in a fresh process may fault as the heap grows
               and shrinks; here no read faults)
  netrunner    ``run(cmd).stdout`` as shipped
  fill         ``run(cmd).stdout`` with the prefault off: the buffer's
               pages faulted in one by one by BytesIO's zero-fill (the
               collector before issue 13)
  floor-4k     ``readv`` into a fresh anonymous ``mmap``, each 1 MiB faulted
               in right before the read with ``madvise(MADV_POPULATE_WRITE)``:
               the least any reader keeping 1 GiB in 4 KiB pages pays (no
               ``bytes`` made, no zero-fill)
  floor-thp    the same with ``MADV_HUGEPAGE`` (2 MiB pages), touched one
               byte per 2 MiB ahead of the reads
"""

from __future__ import annotations

import argparse
import fcntl
import json
import mmap
import os
import resource
import statistics
import subprocess
import sys
import time

MiB = 1 << 20
F_SETPIPE_SZ = 1031
MADV_POPULATE_WRITE = 23
CASES = ("raw", "netrunner", "fill", "floor-4k", "floor-thp")


def child_pipe(size: int) -> tuple[int, subprocess.Popen[bytes]]:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, MiB)
    proc = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=w)
    os.close(w)
    return r, proc


def case(name: str, size: int) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    if name in ("netrunner", "fill"):
        import netrunner
        from netrunner import _prefault

        netrunner.run(["true"])  # the fork server, outside the timing
        if name == "fill":
            _prefault._state = "off"
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = time.process_time()
    start = time.perf_counter()
    if name in ("netrunner", "fill"):
        got = len(netrunner.run(["head", "-c", str(size), "/dev/zero"]).stdout)
    else:
        r, proc = child_pipe(size)
        got = 0
        if name == "raw":
            chunk = bytearray(b"x" * MiB)  # touched once, reused: no page faults
            while n := os.readv(r, [chunk]):
                got += n
        else:
            buf = mmap.mmap(-1, size + 8 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if name == "floor-thp":
                buf.madvise(mmap.MADV_HUGEPAGE)
            view = memoryview(buf)
            ready = 0
            while True:
                if ready - got < MiB:
                    if name == "floor-4k":
                        buf.madvise(MADV_POPULATE_WRITE, ready, MiB)
                        ready += MiB
                    else:
                        for at in range(ready, ready + 4 * MiB, 2 * MiB):
                            buf[at] = 0
                        ready += 4 * MiB
                n = os.readv(r, [view[got : got + MiB]])
                if not n:
                    break
                got += n
            view.release()
            buf.close()
        os.close(r)
        proc.wait()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    assert got == size, got
    return {"mib_s": size / MiB / elapsed, "cpu": cpu, "faults": faults}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--only", action="append", choices=CASES, help="cases to run (raw always runs)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # child side
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.size)))
        return 0
    cases = ["raw"] + [c for c in CASES[1:] if not args.only or c in args.only]
    results: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    ratios: dict[str, list[float]] = {c: [] for c in cases}
    print(f"load {os.getloadavg()[0]:.2f} at the start; {args.rounds} rounds of {args.size // MiB} MiB", flush=True)
    for r in range(args.rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        got: dict[str, dict[str, float]] = {}
        for name in order:
            out = subprocess.run(
                [sys.executable, __file__, "--case", name, "--size", str(args.size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got[name] = json.loads(out)
            results[name].append(got[name])
        for name in cases:
            ratios[name].append(got[name]["mib_s"] / got["raw"]["mib_s"])
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    print(f"{'case':10} {'MiB/s':>7} {'of raw':>7} {'owner CPU':>10} {'faults':>8}")
    for name in cases:
        rows = results[name]
        print(
            f"{name:10} {statistics.median(x['mib_s'] for x in rows):7.0f} "
            f"{statistics.median(ratios[name]):7.0%} "
            f"{statistics.median(x['cpu'] for x in rows):9.3f}s "
            f"{statistics.median(x['faults'] for x in rows):8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
