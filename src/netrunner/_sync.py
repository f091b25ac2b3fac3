"""The sync driver's two primitives: wait for fds, and start a child.

Everything else in the sync API is the core's non-blocking steps called
between these waits."""

from __future__ import annotations

import math
import os
import select
import time
from typing import Any

from . import _opcodes as op
from ._core import ChildCore, Handshake
from ._errors import ShepherdError
from ._launch import connect_shepherd
from ._protocol import SpawnRequest

HANDSHAKE_TIMEOUT = 30.0


def wait_ready(interest: list[tuple[int, int]], deadline: float | None) -> bool:
    """Block until one fd of ``interest`` is ready; False once ``deadline``
    (``time.monotonic()``) passes first."""
    if deadline is None:
        timeout_ms = None
    else:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        timeout_ms = max(1, math.ceil(left * 1000))
    poller = select.poll()
    for fd, events in interest:
        poller.register(fd, events)
    while True:
        try:
            return bool(poller.poll(timeout_ms))
        except InterruptedError:  # pragma: no cover - PEP 475 retries already
            continue


def start(args: Any, rq: SpawnRequest, *, stderr_complete: bool = False) -> ChildCore:
    """Run the handshake to completion (bounded) and return the live core."""
    inherit = [slot for slot, mode in enumerate((rq.stdin, rq.stdout, rq.stderr)) if mode == op.STDIO_INHERIT]
    sock = connect_shepherd()
    hs = Handshake(sock, rq, inherit)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    try:
        while hs.step() is None:
            if not wait_ready([hs.want()], deadline):
                raise ShepherdError(f"the shepherd did not answer within {HANDSHAKE_TIMEOUT} s")
        return ChildCore(args, hs, stderr_complete=stderr_complete)
    except BaseException:
        # Closing the socket is owner loss: a child that did start is stopped.
        sock.close()
        if hs.started is not None:
            for fd in (hs.started.stdin, hs.started.stdout, hs.started.stderr):
                if fd is not None:
                    os.close(fd)
        for fd in hs.decoder.take_unclaimed_fds():
            os.close(fd)
        raise
