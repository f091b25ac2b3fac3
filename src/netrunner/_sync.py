"""The sync driver's entry points: wait for fds, and start a child."""

from __future__ import annotations

from typing import Any

from ._core import ChildCore, Starter
from ._drive import drive, poll_ready, settle
from ._protocol import SpawnRequest

__all__ = ["poll_ready", "start", "wait_ready"]


def wait_ready(interest: list[tuple[int, int]], deadline: float | None) -> bool:
    """Block until one fd of ``interest`` is ready; False once ``deadline``
    (``time.monotonic()``) passes first."""
    return bool(poll_ready(interest, deadline))


def start(args: Any, rq: SpawnRequest, *, stderr_complete: bool = False) -> ChildCore:
    """Run the handshake to completion (bounded) and return the live core."""
    starter = Starter(args, rq, stderr_complete=stderr_complete)
    try:
        return drive(starter)
    except BaseException:
        # Interrupted (or failed) mid-handshake: a child may already run.
        # Do not return before it is stopped; a second interrupt here drops
        # the socket, and the shepherd finishes the job on its own.
        settle(starter.begin_abort, starter.abort_attempt, starter.release)
        raise
