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
from ._core import POLLIN, ChildCore, Handshake, receive
from ._errors import ShepherdError
from ._launch import connect_shepherd
from ._protocol import Exited, SpawnRequest, encode_stop

HANDSHAKE_TIMEOUT = 30.0


def poll_ready(interest: list[tuple[int, int]], deadline: float | None) -> list[int]:
    """Block until fds of ``interest`` are ready and return them; ``[]``
    once ``deadline`` (``time.monotonic()``) passes first."""
    if deadline is None:
        timeout_ms = None
    else:
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        timeout_ms = max(1, math.ceil(left * 1000))
    poller = select.poll()
    for fd, events in interest:
        poller.register(fd, events)
    return [fd for fd, _events in poller.poll(timeout_ms)]


def wait_ready(interest: list[tuple[int, int]], deadline: float | None) -> bool:
    """Block until one fd of ``interest`` is ready; False once ``deadline``
    passes first."""
    return bool(poll_ready(interest, deadline))


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
    except BaseException as exc:
        if hs.started is not None or not isinstance(exc, (OSError, ShepherdError)):
            # Interrupted (KeyboardInterrupt, or whatever a signal handler
            # raised) while the child may already run: stop it first.
            _stop_interrupted(hs, deadline)
        # Closing the socket is owner loss: a child that did start is stopped.
        sock.close()
        if hs.started is not None:
            for fd in (hs.started.stdin, hs.started.stdout, hs.started.stderr):
                if fd is not None:
                    os.close(fd)
        for fd in hs.decoder.take_unclaimed_fds():
            os.close(fd)
        raise


def _stop_interrupted(hs: Handshake, deadline: float) -> None:
    """An exception hit the handshake while the child may be starting or
    running: finish the handshake (briefly), have the shepherd stop the
    child (STOP, kill_timeout) and wait for its exit report, so nothing
    runs when the exception reaches the caller.  If this is cut short (a
    second interrupt, the bounds), closing the socket still stops the
    child, only not before we return."""
    try:
        if hs.started is None and not hs.request_sent():
            return  # the shepherd never had the whole request: no child
        settle_by = min(deadline, time.monotonic() + 5.0)
        while hs.started is None:
            if hs.step() is None and not wait_ready([hs.want()], settle_by):
                return
        if hs.ended is not None or any(isinstance(event, Exited) for event in hs.after):
            return  # already over, leftovers killed
        hs.sock.send(encode_stop(hs.rq.kill_timeout))
        stop_by = time.monotonic() + hs.rq.kill_timeout + 5.0
        while wait_ready([(hs.sock.fileno(), POLLIN)], stop_by):
            events, ended = receive(hs.sock, hs.decoder)
            if ended is not None or any(isinstance(event, Exited) for event in events):
                return
    except Exception:
        return  # the spawn failed or the shepherd is gone: no child to stop
