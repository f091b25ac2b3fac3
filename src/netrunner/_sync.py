"""The sync driver's entry point for starting a child: the handshake,
driven by ``poll``, and on any failure or interrupt a bounded stop of
whatever did start before the exception goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._core import ChildCore, Starter
from ._drive import drive, settle
from ._protocol import SpawnRequest

__all__ = ["start"]

T = TypeVar("T")


def start(args: Any, rq: SpawnRequest, wrap: Callable[[ChildCore], T]) -> T:
    """Run the handshake to completion (bounded) and return ``wrap(core)``.

    ``wrap`` makes the caller's owner of the live core (a ``Process``, a
    stream job): it runs inside the same guard as the handshake, so an
    interrupt before the owner exists still stops and reaps the child
    before the exception goes on, instead of leaving it to a finalizer."""
    starter = Starter(args, rq)
    try:
        return wrap(drive(starter))
    except BaseException:
        # Interrupted (or failed) mid-handshake: a child may already run.
        # Do not return before it is stopped; a second interrupt here drops
        # the socket, and the shepherd finishes the job on its own.
        settle(starter.begin_abort, starter.abort_attempt, starter.release)
        raise
