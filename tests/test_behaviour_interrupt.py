"""An interrupted call stops its child's group first, on every front end:
Ctrl-C (KeyboardInterrupt) for the blocking API, cancelling the task on
asyncio, cancelling the scope on trio.  The interrupt comes once the
child has announced (on a FIFO) that it ignores SIGTERM, and the test
checks the group at the moment the interrupt reaches it: only a stop that
waited out kill_timeout and sent SIGKILL, then reaped, can have it gone.
Front-end specific interrupts (a cancellation at every await point,
cancelling one method of a process, an interrupt inside the spawn
handshake) stay in test_aio.py and test_promise.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from frontends import Front, FrontStream
from procs import assert_group_gone, read_fifo_line

MiB = 1 << 20
KILL_TIMEOUT = 0.3


def announcing(fifo: Path, *, grandchild: bool = False) -> list[str]:
    """A TERM-ignoring sh (and, if asked, a TERM-ignoring grandchild in its
    group) that writes its pid to ``fifo`` once every trap is set, then
    sleeps without reading stdin or writing anything."""
    if grandchild:
        script = 'trap "" TERM; (trap "" TERM; echo $$ > "$1"; exec sleep 60) & exec sleep 60'
    else:
        script = 'trap "" TERM; echo $$ > "$1"; exec sleep 60'
    return ["sh", "-c", script, "sh", str(fifo)]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "ready"
    os.mkfifo(path)
    return path


class Announced:
    """The readiness wait: the pid the child writes to the FIFO."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.pid = 0

    def __call__(self) -> None:
        self.pid = int(read_fifo_line(self.fifo, 20))


async def test_interrupting_run_stops_the_group_first(front: Front, fifo: Path) -> None:
    ready = Announced(fifo)
    started = time.monotonic()
    await front.interrupted(
        lambda: front.run(announcing(fifo, grandchild=True), kill_timeout=KILL_TIMEOUT, timeout=60), ready
    )
    assert_group_gone(ready.pid)
    assert time.monotonic() - started >= KILL_TIMEOUT  # it did wait kill_timeout for the TERM-ignoring group


async def test_interrupting_a_stream_consumer_stops_the_group_first(front: Front, fifo: Path) -> None:
    # Inside ``async with``: a KeyboardInterrupt can land anywhere, also
    # between iterations, where only the block's exit can stop the child
    # (a cancellation lands at an await, inside the stream's own cleanup).
    s: FrontStream = front.stream(announcing(fifo, grandchild=True), kill_timeout=KILL_TIMEOUT)

    async def consume() -> None:
        async with s:
            async for _ in s:
                pass

    ready = Announced(fifo)
    await front.interrupted(consume, ready)
    # (An async stream cancelled inside its start never got a pid to show.)
    assert s.pid in (None, ready.pid)
    assert_group_gone(ready.pid)


@pytest.mark.parametrize("blocked_in", ["wait", "read", "read_stderr", "write"])
async def test_interrupting_a_process_block_stops_the_group_first(front: Front, fifo: Path, blocked_in: str) -> None:
    async def body() -> None:
        async with await front.spawn(announcing(fifo), kill_timeout=KILL_TIMEOUT) as p:
            if blocked_in == "wait":
                await p.wait()
            elif blocked_in == "read":
                await p.read()
            elif blocked_in == "read_stderr":
                await p.read_stderr()
            else:
                await p.write(b"x" * (4 * MiB))  # sleep never reads: blocks

    # The interrupt may also land before spawn returned: the child must be
    # stopped all the same.
    ready = Announced(fifo)
    await front.interrupted(body, ready)
    assert_group_gone(ready.pid)
