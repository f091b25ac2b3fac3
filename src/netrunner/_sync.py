"""The sync driver's entry point for starting a child: the handshake,
driven by ``poll``, and on any failure or interrupt a bounded stop of
whatever did start before the exception goes on."""

from __future__ import annotations

from typing import Any

from ._core import ChildCore, Starter
from ._drive import drive, settle
from ._protocol import SpawnRequest

__all__ = ["start"]


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
