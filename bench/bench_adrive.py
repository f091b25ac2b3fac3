#!/usr/bin/env python3
"""The async drivers' cost per wait, on an fd that is already readable.

    python bench/bench_adrive.py [--waits N] [--rounds R]

Each figure is microseconds per wait (median of R rounds of N waits, the
rows' rounds interleaved) on an eventfd whose counter stays non-zero, so
every wait returns on the next turn of the loop and what is measured is
the driver's own work plus one turn, in CPU time of the thread (all of it
runs there, and CPU time is what a loaded shared machine disturbs least).
asyncio: ``adrive_flow`` of a flow that waits once (what every
``netrunner.aio`` call does) and the bare ``wait_ready`` under it; trio
(when installed): the same through the trio backend (a private epoll per
wait) against a bare ``trio.lowlevel.wait_readable``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from netrunner import _drive
from netrunner._drive import POLLIN, Pending


def per_wait(rounds: int, waits: int, run_round: Callable[[int], float]) -> Callable[[], float]:
    """One round of ``waits`` waits, as microseconds per wait (the rounds
    of every row are interleaved by :func:`main`, so load hits all alike)."""
    del rounds
    return lambda: run_round(waits) / waits * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    efd = os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    interest = [(efd, POLLIN)]
    try:
        from netrunner import _adrive
        from netrunner._adrive import wait_ready

        def attempt_once() -> Callable[[list[int] | None], Any]:
            def attempt(ready: list[int] | None) -> Any:
                return Pending(interest, None) if ready is None else ready

            return attempt

        def on_asyncio(body: Callable[[], Awaitable[Any]]) -> Callable[[int], float]:
            def run_round(waits: int) -> float:
                async def loop() -> float:
                    began = time.thread_time()
                    for _ in range(waits):
                        await body()
                    return time.thread_time() - began

                return asyncio.run(loop())

            return run_round

        rows: list[tuple[str, Callable[[], float]]] = [
            (
                "asyncio adrive_flow(until(attempt)), one wait",
                per_wait(
                    opts.rounds, opts.waits, on_asyncio(lambda: _adrive.adrive_flow(_drive.until(attempt_once())))
                ),
            ),
            ("asyncio wait_ready", per_wait(opts.rounds, opts.waits, on_asyncio(lambda: wait_ready(interest, None)))),
        ]
        try:
            import trio
        except ImportError:
            trio = None
        if trio is not None:

            def on_trio(body: Callable[[], Awaitable[Any]]) -> Callable[[int], float]:
                def run_round(waits: int) -> float:
                    async def loop() -> float:
                        began = time.thread_time()
                        for _ in range(waits):
                            await body()
                        return time.thread_time() - began

                    result: float = trio.run(loop)
                    return result

                return run_round

            rows.append(
                (
                    "trio bare wait_readable(fd)",
                    per_wait(opts.rounds, opts.waits, on_trio(lambda: trio.lowlevel.wait_readable(efd))),
                )
            )
            rows.append(
                (
                    "trio adrive_flow(until(attempt)), one wait",
                    per_wait(
                        opts.rounds, opts.waits, on_trio(lambda: _adrive.adrive_flow(_drive.until(attempt_once())))
                    ),
                )
            )
        samples: dict[str, list[float]] = {name: [] for name, _round in rows}
        for _ in range(opts.rounds):
            for name, one_round in rows:
                samples[name].append(one_round())
        for name, values in samples.items():
            print(f"{name:48s} {statistics.median(values):7.2f} us/wait")
    finally:
        os.close(efd)


if __name__ == "__main__":
    main()
