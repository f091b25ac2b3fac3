"""The sync driver, the flows, and the hooks the async drivers fill.

Everything above this module is written as *attempts*: a non-blocking
function that either returns its result or a :class:`Pending` naming the
fds (and deadline) worth waiting for before trying again.  The sync API
waits with ``poll(2)`` (here); :mod:`netrunner.aio` waits on the running
asyncio or trio loop (:mod:`netrunner._adrive`).  That is the only
difference between the fronts (the httpcore/psycopg shape: one core, thin
drivers).  This module imports no async library: the core reaches the
async drivers through :func:`notify_closing` and :func:`may_block`.
"""

from __future__ import annotations

import inspect
import math
import select
import time
from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")

POLLIN = select.POLLIN | select.POLLHUP | select.POLLERR
POLLOUT = select.POLLOUT | select.POLLERR

Interest = list[tuple[int, int]]


class Pending:
    """Not done yet: wait until one of ``interest`` is ready or ``deadline``."""

    __slots__ = ("deadline", "interest")

    def __init__(self, interest: Interest, deadline: float | None) -> None:
        self.interest = interest
        self.deadline = deadline


Attempt = Callable[[list[int] | None], "T | Pending"]


# ------------------------------------------------------------------ sync
def poll_ready(interest: Interest, deadline: float | None) -> list[int]:
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


def drive(attempt: Callable[[list[int] | None], T | Pending]) -> T:
    """Run ``attempt`` to completion, blocking in ``poll`` between tries.
    ``attempt`` gets the fds that fired (None on the first try)."""
    ready: list[int] | None = None
    while True:
        result = attempt(ready)
        if not isinstance(result, Pending):
            return result
        ready = poll_ready(result.interest, result.deadline)


# ------------------------------------------------------------ flows
# A *flow* is a whole front-end operation (start a child, run it to the
# end, stop it, read a chunk) written once as a generator: it yields a
# :class:`Pending` (or :data:`CHECKPOINT`) whenever it must wait and is
# sent back the fds that fired (``[]`` once the deadline passed).  What
# interrupts the wait (KeyboardInterrupt here, a cancellation on an event
# loop) is thrown into the flow at its ``yield``, so its own
# ``try``/``except`` stops and reaps the child, waiting as it must, before
# the exception goes on.  The drivers below (and ``_adrive``'s) only wait.

Flow = Generator["Pending | Checkpoint", "list[int] | None", T]


class Checkpoint:
    """Yielded by a flow that found work ready without waiting: an event
    loop gets its turn here (a consumer faster than its producer would
    otherwise never let it run); the sync driver goes straight on."""

    __slots__ = ()


CHECKPOINT = Checkpoint()

# A read that finds data waiting returns without waiting, so a consumer on
# an event loop that keeps up with its producer would never let the loop
# run (0.6 s for 256 MiB from /dev/zero, for ever for ``yes``): every
# FAIR_READS-th read of a stream or process yields a CHECKPOINT first.
FAIR_READS = 16


def after_checkpoint(flow: Flow[T]) -> Flow[T]:
    """``flow``, after letting an event loop run once."""
    yield CHECKPOINT
    return (yield from flow)


def until(attempt: Callable[[list[int] | None], T | Pending]) -> Flow[T]:
    """The flow that repeats ``attempt`` until it returns a result."""
    ready: list[int] | None = None
    while True:
        result = attempt(ready)
        if not isinstance(result, Pending):
            return result
        ready = yield result


def drive_flow(flow: Flow[T]) -> T:
    """Run ``flow`` to its end, blocking in ``poll`` while it waits.

    An exception raised here while the flow is suspended (KeyboardInterrupt
    in ``poll``, or anywhere in this loop) is thrown into the flow, which
    decides what happens (it re-raises after its cleanup); one that comes
    out of the flow has ended it and goes on.  So a flow is never left
    suspended, for its generator's finalizer to close at collection."""
    ready: list[int] | None = None  # a generator's first send must be None
    thrown: BaseException | None = None
    while True:
        # Two loops: an interrupt is checked for between bytecodes, the
        # loop's back-edge included, so the loop that runs while the child
        # lives must lie wholly inside the ``try`` (one whose back-edge was
        # outside it let a KeyboardInterrupt leave the flow suspended and
        # reach the caller with the child running).  The outer back-edge is
        # taken only after an interrupt was thrown in: a second one there
        # is a second interrupt, which may drop the child without waiting.
        try:
            while True:
                try:
                    request = flow.send(ready) if thrown is None else flow.throw(thrown)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                thrown = None
                ready = poll_ready(request.interest, request.deadline) if isinstance(request, Pending) else []
        except BaseException as exc:
            if inspect.getgeneratorstate(flow) == inspect.GEN_CLOSED:  # raised by the flow (or after its end)
                raise
            thrown = exc
            ready = None


# ------------------------------------------------------------ driver hooks
# The async drivers live in ``_adrive`` (which imports asyncio); the core
# reaches them only through these hooks, which ``_adrive`` fills on import.
_closing_hooks: tuple[Callable[[int], None], ...] = ()
_loop_probes: tuple[Callable[[], bool], ...] = ()


def add_closing_hook(hook: Callable[[int], None]) -> None:
    """Have :func:`notify_closing` call ``hook(fd)`` (an async driver's)."""
    global _closing_hooks
    _closing_hooks = (*_closing_hooks, hook)


def add_loop_probe(probe: Callable[[], bool]) -> None:
    """Have :func:`may_block` ask ``probe()`` whether an event loop runs in
    this thread (an async driver's)."""
    global _loop_probes
    _loop_probes = (*_loop_probes, probe)


def notify_closing(fd: int) -> None:
    """About to close ``fd``: every async driver wakes its waiters on it and
    drops its registration while the number still names the same file
    (trio's ``notify_closing``).  Otherwise a new fd that reuses the number
    could be "already registered" and never wake anyone.  Each hook returns
    at once while no loop ever waited: the sync API's fast path."""
    for hook in _closing_hooks:
        hook(fd)


def may_block() -> bool:
    """Whether blocking work (bounded, seconds) may run in this thread now:
    not on an event loop's thread (asyncio or trio), where it goes to a
    thread instead; yes in sync code."""
    return not any(probe() for probe in _loop_probes)
