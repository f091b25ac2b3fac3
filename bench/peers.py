#!/usr/bin/env python3
"""netrunner against every peer, in one table (issue 13).

    python bench/peers.py                      # everything, 3 rounds
    python bench/peers.py --quick              # small sizes, 1 round
    python bench/peers.py --only lines --only netrunner --rounds 5
    python bench/peers.py --json out.json --chart docs/peers.png

Peers (``pip install '.[bench]'``): subprocess, asyncio, trio, anyio, sh,
plumbum, pexpect (pty only); psutil counts memory.  A missing peer is shown
as "not installed".

How it measures, and why:

* Every case (one figure for one contender) runs in a **child process of
  its own**, so one contender's heap, threads or leftovers cannot slow the
  next, and its ``rusage`` (``ru_maxrss``) is its own.
* A **watchdog** bounds every case: ``--timeout`` seconds of wall time and
  ``--mem-limit`` of resident memory (sampled from ``/proc`` every 0.2 s:
  this is monitoring, not synchronisation).  A case that trips it is shown
  as "hung >30 s" or "RSS 6.1 GiB", not dropped.
* When the cgroup v2 hierarchy is writable each case runs in a cgroup of its
  own; everything left in it afterwards is killed with ``cgroup.kill``, and
  the "owner SIGKILL" column counts what is left in it.
* **Interleaved rounds**: each round runs every contender once per figure,
  the order rotating, and the table shows **medians** and the **ratio to
  subprocess** (for times: contender / subprocess, lower is better; for
  rates: contender / subprocess, higher is better).  These are shared
  2-vCPU VMs: noise that hits every contender alike cancels in a ratio.
* Every case checks what it received (sizes, line counts, echoed bytes), so
  a fast wrong answer cannot score.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import inspect
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

F_SETPIPE_SZ = 1031
MiB = 1 << 20
GiB = 1 << 30

CONTENDERS = [
    *("netrunner", "netrunner.aio", "subprocess", "asyncio", "trio", "anyio"),
    *("sh", "plumbum", "pexpect", "raw-pipe"),
]
PEER_MODULES = {"trio": "trio", "anyio": "anyio", "sh": "sh", "plumbum": "plumbum", "pexpect": "pexpect"}


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    full: int
    quick: int
    timed: bool = True  # False: measured once (not per round)


FIGURES = [
    Figure("spawn", "spawn+wait /bin/true", "µs", False, 200, 20),
    Figure("capture", "capture from head -c", "MiB/s", True, GiB, 64 * MiB),
    Figure("stdin", "stdin into wc -c", "MiB/s", True, GiB, 64 * MiB),
    Figure("lines", "lines of seq 1 N", "MB/s", True, 12_500_000, 1_000_000),
    Figure("pingpong", "ping-pong via cat", "µs", False, 2000, 200),
    Figure("concurrent", "concurrent /bin/echo", "s", False, 500, 50),
    Figure("idle", "idle children", "", False, 2000, 100, timed=False),
    Figure("pty", "pty through cat, echo off", "MB/s", True, 50 * MiB, 4 * MiB),
    Figure("ptyout", "pty output of yes", "MB/s", True, 50 * MiB, 4 * MiB),
    Figure("sigkill", "owner SIGKILL: survivors", "", False, 0, 0, timed=False),
    Figure("grandchild", "grandchild holds the pipes", "", False, 0, 0, timed=False),
    Figure("cap", "output cap", "", False, 0, 0, timed=False),
]
FIGURE = {f.name: f for f in FIGURES}


class NotApplicable(Exception):
    """The contender has no way to do this (the reason is shown)."""


# ============================================================== the cases
# Each case runs in its own process (``peers.py --case FIGURE CONTENDER``)
# and returns a dict: {"value": float} for a timed figure, or anything
# JSON-able for the others.  ``size`` is the figure's size parameter.

CASES: dict[tuple[str, str], Callable[[int], dict[str, Any]]] = {}


def case(figure: str, *contenders: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    def register(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        for contender in contenders:
            CASES[(figure, contender)] = (lambda c: lambda size: fn(c, size))(contender)
        return fn

    return register


async def maybe(result: Any) -> Any:
    """Await ``result`` if it is awaitable (aio makes only blocking calls
    coroutines)."""
    return await result if inspect.isawaitable(result) else result


def warm_up(contender: str) -> None:
    """Pay one-time costs outside the timing: imports, and netrunner's fork
    server (started once per interpreter)."""
    if contender == "netrunner":
        import netrunner

        netrunner.run(TRUE)
    elif contender == "netrunner.aio":
        from netrunner import aio

        asyncio.run(aio.run(TRUE))
    elif contender in PEER_MODULES:
        __import__(PEER_MODULES[contender])


def run_async(contender: str, fn: Callable[[], Any]) -> Any:
    """Run an async function under the contender's event loop."""
    if contender == "trio":
        import trio

        return trio.run(fn)
    if contender == "anyio":
        import anyio

        return anyio.run(fn)
    return asyncio.run(fn())


# ------------------------------------------------------------------ spawn
TRUE = ["/bin/true"]


@case("spawn", "netrunner", "subprocess", "sh", "plumbum")
def spawn_sync(contender: str, calls: int) -> dict[str, Any]:
    if contender == "netrunner":
        import netrunner

        def one() -> object:
            return netrunner.run(TRUE)
    elif contender == "subprocess":

        def one() -> object:
            return subprocess.run(TRUE)
    elif contender == "sh":
        import sh

        true = sh.Command(TRUE[0])

        def one() -> object:
            return true()
    else:
        from plumbum import local

        true = local[TRUE[0]]

        def one() -> object:
            return true()

    for _ in range(5):
        one()
    start = time.perf_counter()
    for _ in range(calls):
        one()
    return {"value": (time.perf_counter() - start) / calls * 1e6}


@case("spawn", "netrunner.aio", "asyncio", "trio", "anyio")
def spawn_async(contender: str, calls: int) -> dict[str, Any]:
    one = async_runner(contender, TRUE)

    async def main() -> float:
        for _ in range(5):
            await one()
        start = time.perf_counter()
        for _ in range(calls):
            await one()
        return time.perf_counter() - start

    return {"value": run_async(contender, main) / calls * 1e6}


def async_runner(contender: str, cmd: list[str], data: bytes | None = None) -> Callable[[], Any]:
    """A coroutine function running ``cmd`` to the end, returning stdout."""
    if contender == "netrunner.aio":
        from netrunner import aio

        async def nr() -> bytes:
            return (await aio.run(cmd, input=data)).stdout  # type: ignore[no-any-return]

        return nr
    if contender == "asyncio":

        async def aio_() -> bytes:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if data is not None else None,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate(data)
            return out

        return aio_
    if contender == "trio":
        import trio

        async def tr() -> bytes:
            kw: dict[str, Any] = {"stdin": data} if data is not None else {}
            done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, **kw)
            return done.stdout  # type: ignore[no-any-return]

        return tr
    import anyio

    async def an() -> bytes:
        return (await anyio.run_process(cmd, input=data)).stdout

    return an


# ---------------------------------------------------- capture and stdin
def capture_cmd(size: int) -> list[str]:
    return ["head", "-c", str(size), "/dev/zero"]


def sync_runner(contender: str, cmd: list[str], data: bytes | None = None) -> Callable[[], bytes | str]:
    """A function running ``cmd`` to the end, returning stdout (plumbum: as
    the str it decodes to; re-encoding it here would add a copy it does not
    make)."""
    if contender == "netrunner":
        import netrunner

        return lambda: netrunner.run(cmd, input=data).stdout  # type: ignore[no-any-return]
    if contender == "subprocess":
        return lambda: subprocess.run(cmd, input=data, capture_output=True).stdout
    if contender == "sh":
        import sh

        command = sh.Command(cmd[0])
        kw: dict[str, Any] = {"_in": data} if data is not None else {}
        return lambda: command(*cmd[1:], _return_cmd=True, **kw).stdout  # type: ignore[no-any-return]
    from plumbum import local

    pcmd = local[cmd[0]][tuple(cmd[1:])]
    if data is not None:
        pcmd = pcmd << data
    return lambda: pcmd()  # type: ignore[no-any-return]


@case("capture", "netrunner", "subprocess", "sh", "plumbum", "netrunner.aio", "asyncio", "trio", "anyio")
def capture(contender: str, size: int) -> dict[str, Any]:
    cmd = capture_cmd(size)
    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        fn = async_runner(contender, cmd)

        async def top() -> int:
            # The length, not the bytes: Python 3.11's asyncio.run formats
            # its task's result twice (an enum lookup on the task builds a
            # ValueError message), a 4 GiB repr for 1 GiB of NULs.
            return len(await fn())

        start = time.perf_counter()
        got = run_async(contender, top)
    else:
        one = sync_runner(contender, cmd)
        start = time.perf_counter()
        got = len(one())
    elapsed = time.perf_counter() - start
    assert got == size, got
    return {"value": size / MiB / elapsed}


@case("capture", "raw-pipe")
def capture_raw(contender: str, size: int) -> dict[str, Any]:
    """The ceiling: readv of 1 MiB from a 1 MiB pipe into one reused
    buffer, nothing kept.  (An ``os.read`` per MiB allocates a new 1 MiB
    ``bytes`` each time, and whether those allocations page-fault moved this
    ceiling between ~1300 and ~1700 MiB/s from run to run.)"""
    start = time.perf_counter()
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, MiB)
    proc = subprocess.Popen(capture_cmd(size), stdout=w)
    os.close(w)
    total = 0
    buffer = [bytearray(MiB)]
    while n := os.readv(r, buffer):
        total += n
    os.close(r)
    proc.wait()
    elapsed = time.perf_counter() - start
    assert total == size
    return {"value": size / MiB / elapsed}


def resident(size: int) -> bytes:
    """Input in real memory: ``bytes(size)`` is calloc'ed, so every read of
    it would come from the one shared zero page, always in cache."""
    return b"x" * size


@case("stdin", "netrunner", "subprocess", "sh", "plumbum", "netrunner.aio", "asyncio", "trio", "anyio")
def stdin(contender: str, size: int) -> dict[str, Any]:
    data = resident(size)
    cmd = ["wc", "-c"]
    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        fn = async_runner(contender, cmd, data)
        start = time.perf_counter()
        out = run_async(contender, fn)
    else:
        one = sync_runner(contender, cmd, data)
        start = time.perf_counter()
        out = one()
    elapsed = time.perf_counter() - start
    assert int(out) == size, out
    return {"value": size / MiB / elapsed}


@case("stdin", "raw-pipe")
def stdin_raw(contender: str, size: int) -> dict[str, Any]:
    """The ceiling: os.write of 1 MiB slices into a 1 MiB pipe."""
    data = memoryview(resident(size))
    start = time.perf_counter()
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, MiB)
    proc = subprocess.Popen(["wc", "-c"], stdin=r, stdout=subprocess.PIPE)
    os.close(r)
    sent = 0
    while sent < size:
        sent += os.write(w, data[sent : sent + MiB])
    os.close(w)
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    assert int(out) == size
    return {"value": size / MiB / elapsed}


# ------------------------------------------------------------------ lines
@case("lines", *CONTENDERS)
def lines(contender: str, count: int) -> dict[str, Any]:
    cmd = ["seq", "1", str(count)]
    size = sum(len(str(i)) + 1 for i in range(1, count + 1))
    n = 0
    start = time.perf_counter()
    if contender == "netrunner":
        import netrunner

        for _ in netrunner.stream(cmd).lines():
            n += 1
    elif contender == "netrunner.aio":
        from netrunner import aio

        async def nr() -> int:
            n = 0
            async for _ in aio.stream(cmd).lines():
                n += 1
            return n

        n = asyncio.run(nr())
    elif contender == "subprocess":
        with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            for _ in proc.stdout:
                n += 1
    elif contender == "asyncio":

        async def aio_() -> int:
            n = 0
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            async for _ in proc.stdout:
                n += 1
            await proc.wait()
            return n

        n = asyncio.run(aio_())
    elif contender == "anyio":
        import anyio
        from anyio.streams.buffered import BufferedByteReceiveStream

        async def an() -> int:
            n = 0
            async with await anyio.open_process(cmd, stderr=None) as proc:
                assert proc.stdout is not None
                reader = BufferedByteReceiveStream(proc.stdout)
                with contextlib.suppress(anyio.IncompleteRead, anyio.EndOfStream):
                    while True:
                        await reader.receive_until(b"\n", 65536)
                        n += 1
            return n

        n = anyio.run(an)
    elif contender == "sh":
        import sh

        for _ in sh.Command("seq")(1, count, _iter=True):
            n += 1
    elif contender == "plumbum":
        from plumbum import local

        for _ in local["seq"][1, count].popen().iter_lines():
            n += 1
    elif contender == "trio":
        raise NotApplicable("no line API")
    elif contender == "pexpect":
        raise NotApplicable("pty only")
    else:
        raise NotApplicable("reference is capture")
    elapsed = time.perf_counter() - start
    assert n == count, n
    return {"value": size / 1e6 / elapsed}


# --------------------------------------------------------------- ping-pong
LINE = b"x" * 63 + b"\n"


@case("pingpong", *CONTENDERS)
def pingpong(contender: str, count: int) -> dict[str, Any]:
    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        return {"value": run_async(contender, lambda: pingpong_async(contender, count)) / count * 1e6}
    if contender == "netrunner":
        import netrunner

        with netrunner.spawn(["cat"]) as p:
            start = time.perf_counter()
            for _ in range(count):
                p.write(LINE)
                got = b""
                while len(got) < len(LINE):
                    got += p.read()
                assert got == LINE
            elapsed = time.perf_counter() - start
            p.close_stdin()
            p.wait()
    elif contender == "subprocess":
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None
        start = time.perf_counter()
        for _ in range(count):
            proc.stdin.write(LINE)
            got = b""
            while len(got) < len(LINE):
                got += proc.stdout.read(65536)  # bufsize=0: one read(2)
            assert got == LINE
        elapsed = time.perf_counter() - start
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    elif contender == "plumbum":
        raise NotApplicable("popen() is subprocess.Popen")
    elif contender == "sh":
        raise NotApplicable("no read-a-reply API")
    elif contender == "pexpect":
        raise NotApplicable("pty only")
    else:
        raise NotApplicable("-")
    return {"value": elapsed / count * 1e6}


async def pingpong_async(contender: str, count: int) -> float:
    if contender == "netrunner.aio":
        from netrunner import aio

        async with await aio.spawn(["cat"]) as p:
            start = time.perf_counter()
            for _ in range(count):
                await p.write(LINE)
                got = b""
                while len(got) < len(LINE):
                    got += await p.read()
                assert got == LINE
            elapsed = time.perf_counter() - start
            await maybe(p.close_stdin())
            await p.wait()
        return elapsed
    if contender == "asyncio":
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None
        start = time.perf_counter()
        for _ in range(count):
            proc.stdin.write(LINE)
            await proc.stdin.drain()
            got = b""
            while len(got) < len(LINE):
                got += await proc.stdout.read(65536)
            assert got == LINE
        elapsed = time.perf_counter() - start
        proc.stdin.close()
        await proc.wait()
        return elapsed
    if contender == "trio":
        import trio

        tproc = await trio.lowlevel.open_process(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert tproc.stdin is not None and tproc.stdout is not None
        start = time.perf_counter()
        for _ in range(count):
            await tproc.stdin.send_all(LINE)
            got = b""
            while len(got) < len(LINE):
                got += await tproc.stdout.receive_some(65536)
            assert got == LINE
        elapsed = time.perf_counter() - start
        await tproc.stdin.aclose()
        await tproc.wait()
        await tproc.stdout.aclose()
        return elapsed
    import anyio

    async with await anyio.open_process(["cat"], stderr=None) as aproc:
        assert aproc.stdin is not None and aproc.stdout is not None
        start = time.perf_counter()
        for _ in range(count):
            await aproc.stdin.send(LINE)
            got = b""
            while len(got) < len(LINE):
                got += await aproc.stdout.receive(65536)
            assert got == LINE
        elapsed = time.perf_counter() - start
        await aproc.stdin.aclose()
    return elapsed


# -------------------------------------------------------------- concurrent
@case("concurrent", *CONTENDERS)
def concurrent(contender: str, count: int) -> dict[str, Any]:
    cmds = [["/bin/echo", str(i)] for i in range(count)]
    want = [f"{i}\n".encode() for i in range(count)]
    start = time.perf_counter()
    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        runners = [async_runner(contender, cmd) for cmd in cmds]
        if contender in ("netrunner.aio", "asyncio"):

            async def gathered() -> list[bytes]:
                return list(await asyncio.gather(*(r() for r in runners)))

            outs = asyncio.run(gathered())
        else:
            outs = [b""] * count
            if contender == "trio":
                import trio

                async def nursery() -> None:
                    async def one(i: int) -> None:
                        outs[i] = await runners[i]()

                    async with trio.open_nursery() as n:
                        for i in range(count):
                            n.start_soon(one, i)

                trio.run(nursery)
            else:
                import anyio

                async def group() -> None:
                    async def one(i: int) -> None:
                        outs[i] = await runners[i]()

                    async with anyio.create_task_group() as tg:
                        for i in range(count):
                            tg.start_soon(one, i)

                anyio.run(group)
    elif contender == "netrunner":
        import netrunner

        procs = [netrunner.spawn(cmd, stdin="devnull") for cmd in cmds]
        outs = []
        for p in procs:
            out = b""
            while chunk := p.read():
                out += chunk
            p.wait()
            outs.append(out)
    elif contender in ("subprocess", "plumbum"):
        if contender == "subprocess":
            pops = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in cmds]
        else:
            from plumbum import local

            pops = [local[cmd[0]][cmd[1]].popen() for cmd in cmds]
        outs = [p.communicate()[0] for p in pops]
    elif contender == "sh":
        import sh

        echo = sh.Command("/bin/echo")
        running = [echo(cmd[1], _bg=True, _return_cmd=True) for cmd in cmds]
        for r in running:
            r.wait()
        outs = [r.stdout for r in running]
    elif contender == "pexpect":
        raise NotApplicable("pty only")
    else:
        raise NotApplicable("-")
    elapsed = time.perf_counter() - start
    assert outs == want
    return {"value": elapsed}


# ------------------------------------------------------------------- idle
def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def own_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_uss_kib() -> float:
    """Unique memory of every descendant (children and their watchers)."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().uss
    return total / 1024


IDLE = ["sleep", "3600"]


@case("idle", *CONTENDERS)
def idle(contender: str, count: int) -> dict[str, Any]:
    """``count`` idle children with stdout piped: what each costs the owner."""
    import gc

    gc.collect()
    fds0, rss0 = own_fds(), own_rss_kib()
    measured: dict[str, Any] = {}

    def measure() -> None:
        measured.update(
            fds=(own_fds() - fds0) / count,
            owner_kib=(own_rss_kib() - rss0) / count,
            tree_kib=tree_uss_kib() / count,
            threads=threading.active_count(),
        )

    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        run_async(contender, lambda: idle_async(contender, count, measure))
    elif contender == "netrunner":
        import netrunner

        procs = [netrunner.spawn(IDLE, stdin="devnull") for _ in range(count)]
        measure()
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    elif contender in ("subprocess", "plumbum"):
        if contender == "subprocess":
            pops = [subprocess.Popen(IDLE, stdout=subprocess.PIPE) for _ in range(count)]
        else:
            from plumbum import local

            pops = [local[IDLE[0]][IDLE[1]].popen() for _ in range(count)]
        measure()
        for pop in pops:
            pop.kill()
        for pop in pops:
            pop.communicate()
    elif contender == "sh":
        import sh

        sleep = sh.Command(IDLE[0])
        running = [sleep(IDLE[1], _bg=True, _bg_exc=False, _return_cmd=True) for _ in range(count)]
        measure()
        for r in running:
            r.kill()
        for r in running:
            with contextlib.suppress(sh.ErrorReturnCode, sh.SignalException):
                r.wait()
    elif contender == "pexpect":
        raise NotApplicable("pty only")
    else:
        raise NotApplicable("-")
    return measured


async def idle_async(contender: str, count: int, measure: Callable[[], None]) -> None:
    if contender == "netrunner.aio":
        from netrunner import aio

        procs = [await aio.spawn(IDLE, stdin="devnull") for _ in range(count)]
        measure()
        for p in procs:
            await maybe(p.kill())
        for p in procs:
            await p.wait()
    elif contender == "asyncio":
        aprocs = [await asyncio.create_subprocess_exec(*IDLE, stdout=asyncio.subprocess.PIPE) for _ in range(count)]
        measure()
        for ap in aprocs:
            ap.kill()
        for ap in aprocs:
            await ap.wait()
    elif contender == "trio":
        import trio

        tprocs = [await trio.lowlevel.open_process(IDLE, stdout=subprocess.PIPE) for _ in range(count)]
        measure()
        for tp in tprocs:
            tp.kill()
        for tp in tprocs:
            await tp.wait()
            assert tp.stdout is not None
            await tp.stdout.aclose()
    else:
        import anyio

        anprocs = [await anyio.open_process(IDLE, stdin=None, stderr=None) for _ in range(count)]
        measure()
        for anp in anprocs:
            anp.kill()
        for anp in anprocs:
            await anp.wait()
            await anp.aclose()


# -------------------------------------------------------------------- pty
def pty_data(size: int) -> bytes:
    return LINE * (size // len(LINE))


def pty_expected(data: bytes) -> int:
    """A cooked terminal's ONLCR turns each \\n into \\r\\n on the way out."""
    return len(data) + data.count(b"\n")


def pump(write: Callable[[bytes], int | None], data: bytes) -> threading.Thread:
    """Write ``data`` from a thread while the caller reads the echo back;
    ``write`` returns how much it wrote (a pty may take less) or None (all)."""

    def run() -> None:
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            block = bytes(view[sent : sent + 65536])
            n = write(block)
            sent += len(block) if n is None else n

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@case("pty", *CONTENDERS)
def pty_throughput(contender: str, size: int) -> dict[str, Any]:
    data = pty_data(size)
    want = pty_expected(data)
    got = 0
    if contender == "pexpect":
        import pexpect

        child = pexpect.spawn("cat", echo=False, timeout=60)
        child.delaybeforesend = None  # its default sleeps 50 ms before every send
        start = time.perf_counter()
        writer = pump(child.send, data)
        while got < want:
            got += len(child.read_nonblocking(65536, timeout=60))
        elapsed = time.perf_counter() - start
        writer.join()
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    elif contender == "subprocess":
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        proc = subprocess.Popen(["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        start = time.perf_counter()
        writer = pump(lambda b: os.write(master, b), data)
        while got < want:
            got += len(os.read(master, 65536))
        elapsed = time.perf_counter() - start
        writer.join()
        proc.kill()
        proc.wait()
        os.close(master)
    elif contender == "netrunner":
        import netrunner

        with netrunner.spawn(["cat"], pty=True, echo=False) as p:
            start = time.perf_counter()
            writer = pump(p.write, data)
            while got < want:
                got += len(p.read())
            elapsed = time.perf_counter() - start
            writer.join()
            p.kill()
    elif contender == "netrunner.aio":
        from netrunner import aio

        async def through_cat() -> tuple[int, float]:
            received = 0
            async with await aio.spawn(["cat"], pty=True, echo=False) as p:
                begin = time.perf_counter()
                writer = asyncio.create_task(p.write(data))
                while received < want:
                    received += len(await p.read())
                took = time.perf_counter() - begin
                await writer
                p.kill()
            return received, took

        got, elapsed = asyncio.run(through_cat())
    else:
        raise NotApplicable("-")
    assert got == want, (got, want)
    return {"value": len(data) / 1e6 / elapsed}


def yes_on_a_terminal(size: int) -> tuple[list[str], int]:
    """A child writing ``size`` bytes of 64-byte lines to its terminal, and
    what the owner reads (ONLCR makes each \\n a \\r\\n)."""
    line = LINE.decode().rstrip("\n")
    # yes's stderr goes to /dev/null: under pexpect the child starts with
    # SIGPIPE ignored (inherited from Python), so yes would print "Broken pipe".
    return ["sh", "-c", f"yes {line} 2>/dev/null | head -c {size}"], size + size // len(LINE)


@case("ptyout", *CONTENDERS)
def pty_output(contender: str, size: int) -> dict[str, Any]:
    """The read path alone: the child only writes (no line discipline on the
    input side, no writer thread in the owner)."""
    cmd, want = yes_on_a_terminal(size)
    got = 0
    start = time.perf_counter()
    if contender == "pexpect":
        import pexpect

        child = pexpect.spawn(cmd[0], cmd[1:], timeout=60)
        with contextlib.suppress(pexpect.EOF):
            while True:
                got += len(child.read_nonblocking(65536, timeout=60))
        child.close()
    elif contender == "subprocess":
        master, slave = os.openpty()
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        while True:
            try:
                block = os.read(master, 65536)
            except OSError:  # EIO: the terminal hung up
                break
            if not block:
                break
            got += len(block)
        proc.wait()
        os.close(master)
    elif contender == "netrunner":
        import netrunner

        with netrunner.spawn(cmd, pty=True) as p:
            while block := p.read():
                got += len(block)
            p.wait()
    elif contender == "netrunner.aio":
        from netrunner import aio

        async def read_all() -> int:
            received = 0
            async with await aio.spawn(cmd, pty=True) as p:
                while block := await p.read():
                    received += len(block)
                await p.wait()
            return received

        got = asyncio.run(read_all())
    else:
        raise NotApplicable("-")
    elapsed = time.perf_counter() - start
    assert got == want, (got, want)
    return {"value": size / 1e6 / elapsed}


# ------------------------------------------------------------- behaviours
# The harness passes FIFO in the environment: the child script writes a line
# there once its grandchild runs, then the harness SIGKILLs this owner.
SURVIVOR_SCRIPT = 'sleep 3600 & echo ready > "$PEERS_FIFO"; exec sleep 3600'


@case("sigkill", *CONTENDERS)
def sigkill(contender: str, size: int) -> dict[str, Any]:
    """Start a child (with a grandchild), then block until SIGKILLed."""
    cmd = ["sh", "-c", SURVIVOR_SCRIPT]
    if contender == "netrunner":
        import netrunner

        netrunner.spawn(cmd, stdin="devnull").wait()
    elif contender in ("netrunner.aio", "asyncio", "trio", "anyio"):

        async def hold() -> None:
            if contender == "netrunner.aio":
                from netrunner import aio

                await (await aio.spawn(cmd, stdin="devnull")).wait()
            elif contender == "asyncio":
                await (await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)).wait()
            elif contender == "trio":
                import trio

                await (await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)).wait()
            else:
                import anyio

                await (await anyio.open_process(cmd)).wait()

        run_async(contender, hold)
    elif contender == "subprocess":
        subprocess.Popen(cmd, stdout=subprocess.PIPE).wait()
    elif contender == "sh":
        import sh

        sh.Command("sh")("-c", SURVIVOR_SCRIPT, _bg=True, _bg_exc=False, _return_cmd=True).wait()
    elif contender == "plumbum":
        from plumbum import local

        local["sh"]["-c", SURVIVOR_SCRIPT].popen().wait()
    elif contender == "pexpect":
        import pexpect

        child = pexpect.spawn("sh", ["-c", SURVIVOR_SCRIPT], timeout=None)
        child.expect(pexpect.EOF)
    else:
        raise NotApplicable("-")
    return {}


GRANDCHILD = ["sh", "-c", "sleep 3600 & echo hi"]


@case("grandchild", *CONTENDERS)
def grandchild(contender: str, size: int) -> dict[str, Any]:
    """Does the run-to-the-end call return when the child exits but its
    backgrounded grandchild still holds stdout?"""
    start = time.perf_counter()
    if contender in ("netrunner.aio", "asyncio", "trio", "anyio"):
        out = run_async(contender, async_runner(contender, GRANDCHILD))
    elif contender in ("netrunner", "subprocess", "sh", "plumbum"):
        out = sync_runner(contender, GRANDCHILD)()
        out = out.encode() if isinstance(out, str) else out
    elif contender == "pexpect":
        import pexpect

        out = pexpect.run(" ".join(["sh", "-c", "'sleep 3600 & echo hi'"]), timeout=None).replace(b"\r\n", b"\n")
    else:
        raise NotApplicable("-")
    assert out == b"hi\n", out
    return {"seconds": time.perf_counter() - start}


@case("cap", *CONTENDERS)
def cap(contender: str, size: int) -> dict[str, Any]:
    """Capture 1 GiB with a 1 MiB cap, where the contender has one."""
    if contender not in ("netrunner", "netrunner.aio"):
        raise NotApplicable("no option")
    import netrunner

    cmd = capture_cmd(GiB)
    start = time.perf_counter()
    try:
        if contender == "netrunner":
            netrunner.run(cmd, max_output_size=MiB)
        else:
            from netrunner import aio

            asyncio.run(aio.run(cmd, max_output_size=MiB))
    except netrunner.OutputLimitExceeded as exc:
        assert len(exc.stdout) == MiB
        return {"seconds": time.perf_counter() - start, "kept": len(exc.stdout)}
    raise AssertionError("no OutputLimitExceeded")


def case_main(figure: str, contender: str, size: int, out: str) -> int:
    """Child side: run one case, write its result as JSON to ``out``."""
    module = PEER_MODULES.get(contender)
    result: dict[str, Any]
    try:
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                raise NotApplicable("not installed") from None
        fn = CASES.get((figure, contender))
        if fn is None:
            raise NotApplicable("-")
        if FIGURE[figure].timed:
            warm_up(contender)
        result = {"ok": fn(size)}
    except NotApplicable as exc:
        result = {"na": str(exc)}
    except BaseException as exc:  # shown in the table, not hidden
        result = {"error": f"{type(exc).__name__}: {exc}"[:120]}
    Path(out).write_text(json.dumps(result))
    return 0


# ============================================================== the harness
class CaseGroup:
    """A cgroup v2 directory per case (when writable), to find and kill
    whatever the case left behind."""

    root: Path | None = None

    @classmethod
    def setup(cls) -> None:
        try:
            from netrunner._cgroup import mount_point

            base = Path(mount_point()) / f"netrunner-peers.{os.getpid()}"
            base.mkdir()
            cls.root = base
        except Exception:  # no cgroup v2, not writable: fall back to the session
            cls.root = None

    @classmethod
    def teardown(cls) -> None:
        if cls.root is not None:
            with contextlib.suppress(OSError):
                cls.root.rmdir()

    def __init__(self, name: str) -> None:
        self.path = None if self.root is None else self.root / name
        if self.path is not None:
            self.path.mkdir()

    def procs(self) -> list[int]:
        if self.path is None:
            return []
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def wait_empty(self, deadline: float) -> bool:
        """Wait (on cgroup.events notifications) until nothing is left."""
        if self.path is None:
            return True
        events = self.path / "cgroup.events"
        with open(events, "rb", buffering=0) as f:
            poller = select.poll()
            poller.register(f, select.POLLPRI)
            while True:
                f.seek(0)
                if b"populated 0" in f.read():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(left * 1000)

    def kill_all(self) -> None:
        if self.path is None:
            return
        (self.path / "cgroup.kill").write_text("1")
        self.wait_empty(time.monotonic() + 30)
        self.path.rmdir()


@dataclass
class Outcome:
    ok: dict[str, Any] | None = None
    na: str | None = None
    error: str | None = None
    maxrss: int = 0  # bytes, the case process and what it reaped
    wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    killed: bool = False  # the watchdog stopped it (time or memory)


def rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_case(figure: str, contender: str, size: int, args: argparse.Namespace, index: int) -> Outcome:
    """Parent side: one case in a child process, under the watchdog."""
    group = CaseGroup(f"case{index}")
    tmp = Path(tempfile.mkdtemp(prefix="peers."))
    out = tmp / "result.json"
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    env = dict(os.environ, PEERS_FIFO=str(fifo))
    argv = [sys.executable, __file__, "--case", figure, contender, str(size), str(out)]
    cgroup_procs = None if group.path is None else str(group.path / "cgroup.procs")
    if cgroup_procs is not None:
        env["PEERS_CGROUP_PROCS"] = cgroup_procs
    # idle: thousands of children, and psutil reading each one's smaps.
    limit = {"grandchild": args.grandchild_timeout, "idle": 4 * args.timeout}.get(figure, args.timeout)
    outcome = Outcome()
    start = time.monotonic()
    pid = os.posix_spawn(sys.executable, argv, env, setsid=True)
    pidfd = os.pidfd_open(pid)
    try:
        if figure == "sigkill":
            outcome = sigkill_watch(pid, pidfd, fifo_fd, group, args)
        else:
            outcome = watch(pid, pidfd, limit, args.mem_limit)
        outcome.wall = time.monotonic() - start
        if outcome.ok is None and outcome.na is None and outcome.error is None:
            try:
                result = json.loads(out.read_text())
            except (OSError, ValueError):
                result = {"error": "no result"}
            outcome.ok, outcome.na, outcome.error = result.get("ok"), result.get("na"), result.get("error")
    finally:
        os.close(pidfd)
        os.close(fifo_fd)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the session, when no cgroup
        group.kill_all()
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return outcome


def reap(pid: int, outcome: Outcome) -> None:
    _, status, usage = os.wait4(pid, 0)
    outcome.maxrss = max(outcome.maxrss, usage.ru_maxrss * 1024)
    if os.WIFSIGNALED(status) and outcome.error is None and outcome.na is None and outcome.ok is None:
        outcome.error = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"


def watch(pid: int, pidfd: int, limit: float, mem_limit: int) -> Outcome:
    """Wait for the case on its pidfd; kill it past ``limit`` seconds or
    ``mem_limit`` bytes of RSS (sampled every 0.2 s)."""
    outcome = Outcome()
    deadline = time.monotonic() + limit
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            outcome.error = f"not done in {limit:g} s, killed"
            outcome.killed = True
            break
        if poller.poll(min(left, 0.2) * 1000):
            reap(pid, outcome)
            return outcome
        rss = rss_of(pid)
        outcome.maxrss = max(outcome.maxrss, rss)
        if rss > mem_limit:
            outcome.error = f"RSS {rss / GiB:.1f} GiB, killed"
            outcome.killed = True
            break
    os.kill(pid, signal.SIGKILL)
    reap(pid, outcome)
    return outcome


def sigkill_watch(pid: int, pidfd: int, fifo_fd: int, group: CaseGroup, args: argparse.Namespace) -> Outcome:
    """Wait for the child's "ready", SIGKILL the owner, count survivors."""
    outcome = Outcome()
    poller = select.poll()
    poller.register(fifo_fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + args.timeout
    ready = False
    while not ready and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            if fd == fifo_fd:
                ready = bool(os.read(fifo_fd, 100))
            else:
                reap(pid, outcome)  # the case ended by itself (n/a, error)
                return outcome
    if not ready:
        outcome.error = f"hung >{args.timeout:g} s before the child ran"
    os.kill(pid, signal.SIGKILL)
    reap(pid, outcome)
    if ready:
        outcome.error = None
        if group.path is None:
            outcome.na = "no cgroup to count in"
        else:
            group.wait_empty(time.monotonic() + args.survivor_wait)
            outcome.ok = {"survivors": len(group.procs())}
    return outcome


# ================================================================ reporting
def cell(figure: Figure, contender: str, outcomes: list[Outcome], base: float | None) -> str:
    oks = [o.ok for o in outcomes if o.ok is not None]
    if not oks:
        o = outcomes[0]
        if o.na is not None:
            return "n/a" if o.na == "-" else f"n/a ({o.na})"
        text = o.error or "?"
        if o.maxrss >= GiB:
            text += f", RSS {o.maxrss / GiB:.1f} GiB"
        return text
    if figure.name == "idle":
        ok = oks[0]
        return f"{ok['fds']:.1f} fd, {ok['owner_kib']:.0f} / {ok['tree_kib']:.0f} KiB"
    if figure.name == "sigkill":
        n = oks[0]["survivors"]
        return "none" if n == 0 else f"{n} of 2 survive"
    if figure.name == "grandchild":
        return f"returns ({oks[0]['seconds']:.2f} s)"
    if figure.name == "cap":
        o = next(o for o in outcomes if o.ok is not None)
        return f"raises at 1 MiB, RSS {o.maxrss / MiB:.0f} MiB"
    value = statistics.median(ok["value"] for ok in oks)
    text = fmt(value) + (" " + figure.unit if figure.unit else "")
    if base:
        text += f" ({value / base:.2f}x)"
    errors = len(outcomes) - len(oks)
    if errors:
        text += f" [{errors} failed]"
    peak = max(o.maxrss for o in outcomes)
    if peak >= GiB and figure.name in ("capture", "stdin", "lines"):
        text += f" RSS {peak / GiB:.1f} GiB"
    return text


def fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def median_value(outcomes: list[Outcome]) -> float | None:
    values = [o.ok["value"] for o in outcomes if o.ok is not None and "value" in o.ok]
    return statistics.median(values) if values else None


def table(results: dict[str, dict[str, list[Outcome]]], figures: list[Figure], contenders: list[str]) -> str:
    heads = []
    for f in figures:
        head = f.title
        if f.timed:
            head += " (higher is better)" if f.higher_is_better else " (lower is better)"
        if f.name == "idle":
            head += ": per child, owner fds, owner RSS / all descendants' USS"
        heads.append(head)
    lines = ["| contender | " + " | ".join(heads) + " |", "|---" * (len(figures) + 1) + "|"]
    for c in contenders:
        cells = []
        for f in figures:
            outs = results.get(f.name, {}).get(c)
            if not outs:
                cells.append("")
                continue
            base = median_value(results[f.name].get("subprocess", [])) if f.timed and c != "subprocess" else None
            cells.append(cell(f, c, outs, base))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(
    results: dict[str, dict[str, list[Outcome]]], figures: list[Figure], contenders: list[str], path: str
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return
    timed = [f for f in figures if f.timed and "subprocess" in results.get(f.name, {})]
    shown = [c for c in contenders if c != "raw-pipe"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(shown))
    for i, c in enumerate(shown):
        xs, ys = [], []
        for j, f in enumerate(timed):
            base = median_value(results[f.name]["subprocess"])
            value = median_value(results[f.name].get(c, []))
            if base and value:
                xs.append(j + i * width)
                ys.append(value / base if f.higher_is_better else base / value)
        ax.bar(xs, ys, width, label=c)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(timed))])
    ax.set_xticklabels([f.title for f in timed], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("speed relative to subprocess (higher is better)")
    ax.set_title("netrunner and its peers, medians of interleaved rounds (missing bar: n/a, hung or failed)")
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart written to {path}", file=sys.stderr)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        _, _, figure, contender, size, out = sys.argv
        return case_main(figure, contender, int(size), out)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument("--only", action="append", default=[], help="a figure or contender (repeatable)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the timed figures (default 3)")
    parser.add_argument("--json", help="write every outcome here")
    parser.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    parser.add_argument("--timeout", type=float, default=60.0, help="watchdog per case, seconds")
    parser.add_argument("--grandchild-timeout", type=float, default=10.0)
    parser.add_argument("--survivor-wait", type=float, default=5.0)
    parser.add_argument("--mem-limit", type=float, default=6.0, help="watchdog RSS limit, GiB")
    args = parser.parse_args()
    args.mem_limit = int(args.mem_limit * GiB)
    rounds = args.rounds or (1 if args.quick else 3)
    for name in args.only:
        if name not in FIGURE and name not in CONTENDERS:
            parser.error(f"unknown figure or contender {name!r}")
    figures = [f for f in FIGURES if f.name in args.only] or FIGURES
    contenders = [c for c in CONTENDERS if c in args.only] or CONTENDERS
    if "subprocess" not in contenders:
        contenders.insert(0, "subprocess")  # the base of every ratio
    CaseGroup.setup()
    results: dict[str, dict[str, list[Outcome]]] = {}
    started = time.monotonic()
    index = 0
    try:
        for r in range(rounds):
            for f in figures:
                if not f.timed and r:
                    continue
                size = f.quick if args.quick else f.full
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for c in order:
                    earlier = results.get(f.name, {}).get(c, [])
                    if any(o.killed for o in earlier):
                        continue  # the watchdog stopped it once: another round only costs the bound again
                    index += 1
                    outcome = run_case(f.name, c, size, args, index)
                    results.setdefault(f.name, {}).setdefault(c, []).append(outcome)
                    print(f"round {r + 1} {f.name:10s} {c:14s} {short(outcome)}", file=sys.stderr, flush=True)
    finally:
        CaseGroup.teardown()
    elapsed = time.monotonic() - started
    print(table(results, figures, contenders))
    capture = results.get("capture", {})
    ceiling = median_value(capture.get("raw-pipe", []))
    for c in ("netrunner", "netrunner.aio"):
        value = median_value(capture.get(c, []))
        if ceiling and value:
            print(f"\ncapture: {c} = {value / ceiling:.0%} of the raw-pipe read ceiling ({ceiling:.0f} MiB/s)", end="")
    print(f"\n{rounds} round(s), {elapsed:.0f} s, load {os.getloadavg()[0]:.2f}; sizes: " + sizes(figures, args.quick))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rounds": rounds,
                    "quick": args.quick,
                    "seconds": elapsed,
                    "python": sys.version,
                    "results": {
                        f: {c: [o.__dict__ for o in outs] for c, outs in per.items()} for f, per in results.items()
                    },
                },
                indent=1,
            )
        )
    if args.chart:
        chart(results, figures, contenders, args.chart)
    return 0


def sizes(figures: list[Figure], quick: bool) -> str:
    out = []
    for f in figures:
        n = f.quick if quick else f.full
        if f.name in ("capture", "stdin", "pty", "ptyout"):
            out.append(f"{f.name} {n / MiB:g} MiB")
        elif n:
            out.append(f"{f.name} {n}")
    return ", ".join(out)


def short(o: Outcome) -> str:
    if o.ok is not None:
        return json.dumps(o.ok) + f"  maxrss {o.maxrss / MiB:.0f} MiB  {o.wall:.1f} s"
    return f"n/a ({o.na})" if o.na is not None else f"{o.error}  maxrss {o.maxrss / MiB:.0f} MiB"


def join_cgroup() -> None:
    """A case moves itself into its cgroup before it starts anything."""
    procs = os.environ.get("PEERS_CGROUP_PROCS")
    if procs:
        Path(procs).write_text(str(os.getpid()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        join_cgroup()
    sys.exit(main())
