"""The two drivers: how to wait for fds, synchronously or on asyncio.

Everything above this module is written as *attempts*: a non-blocking
function that either returns its result or a :class:`Pending` naming the
fds (and deadline) worth waiting for before trying again.  The sync API
waits with ``poll(2)``; :mod:`netrunner.aio` waits with the running event
loop's ``add_reader``/``add_writer``.  That is the only difference between
the two fronts (the httpcore/psycopg shape: one core, two thin drivers).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import select
import time
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

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
        try:
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


# --------------------------------------------------------------- asyncio
class _LoopFds:
    """Per event loop: many waiters per fd.  ``loop.add_reader`` keeps one
    callback per fd, so two tasks waiting on the same fd (a reader and a
    ``wait()``, both following the shepherd socket) would silently steal
    each other's wake-ups; this registers each fd once and fans out."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.readers: dict[int, set[Callable[[int], None]]] = {}
        self.writers: dict[int, set[Callable[[int], None]]] = {}

    def _fire(self, table: dict[int, set[Callable[[int], None]]], fd: int) -> None:
        for callback in list(table.get(fd, ())):
            callback(fd)

    def add(self, fd: int, write: bool, callback: Callable[[int], None]) -> None:
        table = self.writers if write else self.readers
        waiters = table.get(fd)
        if waiters is None:
            waiters = table[fd] = set()
            if write:
                self.loop.add_writer(fd, self._fire, self.writers, fd)
            else:
                self.loop.add_reader(fd, self._fire, self.readers, fd)
        waiters.add(callback)

    def remove(self, fd: int, write: bool, callback: Callable[[int], None]) -> None:
        table = self.writers if write else self.readers
        waiters = table.get(fd)
        if waiters is None:
            return
        waiters.discard(callback)
        if not waiters:
            del table[fd]
            if write:
                self.loop.remove_writer(fd)
            else:
                self.loop.remove_reader(fd)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopFds] = weakref.WeakKeyDictionary()


def notify_closing(fd: int) -> None:
    """About to close ``fd``: wake every waiter on it in the running loop
    and drop its registration while the number still names the same file
    (trio's ``notify_closing``).  Otherwise a new fd that reuses the number
    could be "already registered" and never wake anyone."""
    if not _loops:
        return  # no event loop ever waited on an fd: the sync API's fast path
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    fds = _loops.get(loop)
    if fds is None:
        return
    for write, table in ((False, fds.readers), (True, fds.writers)):
        waiters = table.pop(fd, None)
        if waiters is None:
            continue
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
        for callback in list(waiters):
            callback(fd)


async def wait_ready(interest: Interest, deadline: float | None) -> list[int]:
    """The event loop's version of :func:`poll_ready`: never blocks the loop."""
    loop = asyncio.get_running_loop()
    fds = _loops.get(loop)
    if fds is None:
        fds = _loops[loop] = _LoopFds(loop)
    waiter: asyncio.Future[None] = loop.create_future()
    ready: list[int] = []

    def fire(fd: int) -> None:
        ready.append(fd)
        if not waiter.done():
            waiter.set_result(None)

    added: list[tuple[int, bool]] = []
    timer = None
    try:
        for fd, events in interest:
            for write, mask in ((False, select.POLLIN), (True, select.POLLOUT)):
                if events & mask:
                    fds.add(fd, write, fire)
                    added.append((fd, write))
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return ready
            timer = loop.call_later(left, fire, -1)
        await waiter
    finally:
        for fd, write in added:
            fds.remove(fd, write, fire)
        if timer is not None:
            timer.cancel()
    return [fd for fd in ready if fd >= 0]


async def adrive(attempt: Callable[[list[int] | None], T | Pending]) -> T:
    """Run ``attempt`` to completion, awaiting readiness between tries."""
    ready: list[int] | None = None
    while True:
        result = attempt(ready)
        if not isinstance(result, Pending):
            return result
        ready = await wait_ready(result.interest, result.deadline)


# -------------------------------------------------------- stopping, both
Step = Callable[[], object]


def settle(begin: Step, attempt: Callable[[list[int] | None], object], release: Step) -> None:
    """After a failure or an interrupt: ``begin`` stopping the child, drive
    ``attempt`` until it is reaped (bounded by the shepherd's own
    escalation), and ``release`` whatever happens.  A second interrupt while
    we wait still releases, and dropping the socket is owner loss: the
    shepherd finishes the stop on its own."""
    try:
        begin()
        drive(attempt)
    finally:
        release()


async def uncancellable(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to the end even if our task is cancelled meanwhile
    (trio's rule: a supervised helper never returns before the child is
    reaped).  A cancellation that arrives during cleanup is re-raised after."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            cancelled = True  # even if the cleanup is done by now: never swallow it
            if task.done():
                break
    if cancelled:
        raise asyncio.CancelledError


async def asettle(begin: Step, attempt: Callable[[list[int] | None], object], release: Step) -> None:
    """:func:`settle` on the event loop, shielded from cancellation."""

    async def work() -> None:
        try:
            begin()
            await adrive(attempt)
        finally:
            release()

    await uncancellable(work())
