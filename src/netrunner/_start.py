"""Starting a child, as a flow (see :mod:`netrunner._drive`): the
handshake, and on any failure or interrupt a bounded stop of whatever did
start before the exception goes on.  Every front end, sync or async,
starts its children through :func:`started`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._core import ChildCore, Starter
from ._drive import Flow, drive_flow, until
from ._protocol import SpawnRequest

__all__ = ["start", "started"]

T = TypeVar("T")


def started(
    args: Any,
    rq: SpawnRequest,
    wrap: Callable[[ChildCore], T],
    *,
    stderr_complete: bool = False,
    timeout: float | None = None,
    request: bytes | None = None,
) -> Flow[T]:
    """The handshake to completion, then ``wrap(core)``; with the caller's
    ``timeout``, ``TimeoutExpired`` if the child has not started within it
    (see :class:`~netrunner._core.Starter`).

    ``wrap`` makes the caller's owner of the live core (a ``Process``, a
    job): it runs inside the same guard as the handshake, so an interrupt
    before the owner exists still stops and reaps the child before the
    exception goes on, instead of leaving it to the garbage collector.
    ``request``: ``rq`` already encoded (a cached plan's), else it is here."""
    starter = Starter(args, rq, stderr_complete=stderr_complete, timeout=timeout, request=request)
    try:
        return wrap((yield from until(starter)))
    except GeneratorExit:
        # Closed unfinished (collected): no waiting now.  Closing the
        # socket is owner loss; the shepherd stops whatever started.
        starter.release()
        raise
    except BaseException:
        # Interrupted (or failed) mid-handshake: a child may already run.
        # Do not return before it is stopped; a second interrupt here drops
        # the socket, and the shepherd finishes the job on its own.
        try:
            starter.begin_abort()
            yield from until(starter.abort_attempt)
        finally:
            starter.release()
        raise


def start(
    args: Any,
    rq: SpawnRequest,
    wrap: Callable[[ChildCore], T],
    *,
    stderr_complete: bool = False,
    timeout: float | None = None,
) -> T:
    """:func:`started`, driven in this thread (the CLI's way in)."""
    return drive_flow(started(args, rq, wrap, stderr_complete=stderr_complete, timeout=timeout))
