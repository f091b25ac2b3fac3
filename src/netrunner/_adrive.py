"""The async drivers: one face over asyncio and trio (and anyio on either).

:mod:`netrunner._drive` holds the sync driver and the *flows* (a whole
front-end operation as a generator yielding :class:`~netrunner._drive.Pending`
or :data:`~netrunner._drive.CHECKPOINT`).  This module drives the same flows
on an event loop.  The running library is detected per call
(:func:`current_backend`), as httpcore does with sniffio, but with the
stdlib alone: an asyncio loop running in this thread means asyncio;
otherwise, if ``trio`` was imported (by the user: we never import it) and
``trio.lowlevel.current_task()`` works, trio.  anyio needs nothing of its
own: it runs on one of the two, and its cancel scopes cancel through them.

A backend gives what a driver needs and nothing more: wait for any of some
``(fd, POLLIN/POLLOUT)`` or a ``time.monotonic()`` deadline, optionally
shielded from cancellation; a checkpoint; ``is_cancellation(exc)``;
``start_background(fn)`` (False where there is no place to run it: the
caller does the work on its next await); ``notify_closing(fd)``.

How each waits:

- **asyncio**: ``add_reader``/``add_writer``, each fd registered once per
  loop and the wake-up fanned out to every waiter (``add_reader`` keeps one
  callback per fd, so a reader and a ``wait()`` both following the shepherd
  socket would steal each other's wake-ups).  Within one call (one flow)
  an fd stays registered from one wait to the next (``_FlowWaits``): only
  the difference is added or removed, everything when the call ends.  A
  shielded wait records a ``CancelledError`` and goes on waiting; under
  anyio (which re-cancels the task on every turn of the loop until its
  scope exits) it also sits in an ``anyio.CancelScope(shield=True)``, so
  the loop does not spin.
- **trio**: ``wait_readable`` raises ``BusyResourceError`` for a second
  waiter on one fd and takes one fd per call, so each wait makes its own
  ``epoll`` (CLOEXEC) holding its interest and waits for *that* fd to be
  readable, inside a ``CancelScope`` carrying the deadline (and the shield)
  if it has either.  ``notify_closing`` wakes the waiters on that fd (a
  per-thread registry fd -> waits) with trio's own ``notify_closing`` of
  their epolls, and they report the fd as ready.
  A fresh epoll each time, not a pooled one: an fd closed behind our back
  while its file lives on elsewhere would leave a stale entry in a pooled
  epoll, waking every later wait at once.

Cost per wait (``bench/bench_adrive.py``: CPU time for one ``adrive`` of an
attempt that waits once on a ready eventfd, one turn of the loop included;
2-core VM, Python 3.11): asyncio 17.3 us (17.0 us before this module: the
same within noise); trio 19.2 us, against 7.3 us for a bare
``trio.lowlevel.wait_readable`` on the fd: the epoll (create, register,
trio's own registration of it, poll, close) and the registry.  A cancel
scope is made only for a deadline or a shield (it adds ~5 us).  Waiting on
trio directly would save that for one-fd waits, but ours have at least two
(the shepherd socket and stderr).

Cancellation in :func:`adrive_flow` (trio's rule: a helper that started a
child never returns before the child is reaped): what a wait raises is
thrown into the flow at its ``yield``, every later wait is shielded, and a
cancellation is re-raised when the flow ends even if the flow swallowed it.
"""

from __future__ import annotations

import asyncio
import math
import select
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ._drive import (
    CHECKPOINT,
    Flow,
    Interest,
    Pending,
    add_closing_hook,
    add_loop_probe,
)

T = TypeVar("T")

NO_LOOP = "netrunner.aio needs a running asyncio or trio event loop"
# Turns of the loop a held anyio cancellation gets to arrive after a
# shielded flow (it takes one: anyio re-delivers on every turn).
ANYIO_TURNS = 8


class Backend(Protocol):
    """What a driver needs from an async library (see the module doc)."""

    name: str

    async def wait(
        self,
        interest: Interest,
        deadline: float | None,
        shielded: bool = False,
        caught: list[BaseException] | None = None,
    ) -> list[int]:
        """The fds of ``interest`` that are ready (``[]`` once ``deadline``
        passed).  ``shielded``: no cancellation interrupts it; one that
        arrives meanwhile is appended to ``caught`` (asyncio) or left
        pending in the library (trio: it fires at the next checkpoint)."""
        ...

    async def checkpoint(self) -> None:
        """Let the loop run other tasks once (and deliver a cancellation)."""
        ...

    async def pending_cancellation(self) -> None:
        """After shielded work: raise a cancellation the library kept
        pending meanwhile (trio), or do nothing (asyncio records its own)."""
        ...

    def is_cancellation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this library's cancellation."""
        ...

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> object | None:
        """Run ``fn()`` as a task of its own if this library can without a
        nursery (the task); None if not (the caller then does it on its
        next await)."""
        ...

    def notify_closing(self, fd: int) -> None:
        """``fd`` is about to be closed: wake whoever waits on it here."""
        ...

    def flow_waits(self) -> _FlowWaits | _NoFlowWaits:
        """What one flow waits with (its ``wait`` as above, then ``close()``
        when the flow ends)."""
        ...


# --------------------------------------------------------------- asyncio
class _LoopFds:
    """Per event loop: many waiters per fd.  ``loop.add_reader`` keeps one
    callback per fd, so two tasks waiting on the same fd (a reader and a
    ``wait()``, both following the shepherd socket) would silently steal
    each other's wake-ups; this registers each fd once and fans out.

    It holds its loop weakly: it is the value of :data:`_loops`, keyed
    weakly by that loop, and a value that refers to its key keeps it alive
    for good (every loop of an ``asyncio.run`` per call would pile up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        # Each waiter's callback(fd, closing): closing=True from notify_closing.
        self.readers: dict[int, set[Callable[[int, bool], None]]] = {}
        self.writers: dict[int, set[Callable[[int, bool], None]]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, alive while anyone calls us: we are used from it."""
        loop = self._loop()
        assert loop is not None
        return loop

    def _fire(self, table: dict[int, set[Callable[[int, bool], None]]], fd: int) -> None:
        for callback in list(table.get(fd, ())):
            callback(fd, False)

    def add(self, fd: int, write: bool, callback: Callable[[int, bool], None]) -> None:
        table = self.writers if write else self.readers
        waiters = table.get(fd)
        if waiters is None:
            waiters = table[fd] = set()
            if write:
                self.loop.add_writer(fd, self._fire, self.writers, fd)
            else:
                self.loop.add_reader(fd, self._fire, self.readers, fd)
        waiters.add(callback)

    def remove(self, fd: int, write: bool, callback: Callable[[int, bool], None]) -> None:
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
# Tasks started by start_background(): the loop keeps only weak references.
_background: set[asyncio.Task[None]] = set()


def notify_closing(fd: int) -> None:
    """About to close ``fd``: wake every waiter on it in the running asyncio
    loop and drop its registration while the number still names the same
    file (trio's ``notify_closing``).  Otherwise a new fd that reuses the
    number could be "already registered" and never wake anyone."""
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
            callback(fd, True)


def _loop_fds(loop: asyncio.AbstractEventLoop) -> _LoopFds:
    """The loop's fd registry (see :class:`_LoopFds`), made on first use."""
    fds = _loops.get(loop)
    if fds is None:
        fds = _loops[loop] = _LoopFds(loop)
    return fds


async def wait_ready(
    interest: Interest, deadline: float | None, shielded: bool = False, caught: list[BaseException] | None = None
) -> list[int]:
    """The asyncio loop's version of :func:`~netrunner._drive.poll_ready`:
    never blocks the loop.  ``shielded``: a ``CancelledError`` is appended
    to ``caught`` and the wait goes on (see :meth:`Backend.wait`)."""
    loop = asyncio.get_running_loop()
    fds = _loop_fds(loop)
    # A list, so that a shielded wait can put a fresh future in place of
    # one a cancellation consumed, and fire() completes the current one.
    waiter: list[asyncio.Future[None]] = [loop.create_future()]
    ready: list[int] = []

    def fire(fd: int, closing: bool = False) -> None:
        ready.append(fd)
        if not waiter[0].done():
            waiter[0].set_result(None)

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
        if shielded:
            await _shielded_wait(loop, waiter, ready, caught)
        else:
            await waiter[0]
    finally:
        for fd, write in added:
            fds.remove(fd, write, fire)
        if timer is not None:
            timer.cancel()
    return [fd for fd in ready if fd >= 0]


class _FlowWaits:
    """asyncio, for one flow (one :func:`adrive_flow`): its fds stay
    registered with the loop from one wait to the next, and only the
    difference is added or removed.  A ``run()`` waits three or four times
    on nearly the same fds (the socket, the pidfd, the pipes); adding and
    removing each one per wait was ~10 ``epoll_ctl`` and as many selector
    updates and handles per call.  Everything left is removed when the flow
    ends (:meth:`close`), so no fd stays registered after a call; an fd the
    flow closes meanwhile goes through ``notify_closing`` first (the core's
    ``Fd.close`` does that), which drops its registration while the number
    still names that file.

    A kept registration fires late as a rule: the task resumes one turn of
    the loop after the fd woke it, and that turn's (level-triggered)
    ``epoll_wait`` sees the fd, still unread, ready again and queues its
    callback behind the task, which reads the fd and waits again.  So
    until a wait has something, a readiness callback is checked with a
    ``poll`` of that fd (timeout 0); one that is not ready is stale and
    ignored (were it ready after all, the loop reports it again).  Cheaper
    than the alternatives tried: a callback queued on entering that arms
    the wait costs a whole extra turn of the loop per wait, and adding each
    kept fd's reader again (which cancels its queued callback) a handle and
    a selector update per fd.  Between waits readiness is ignored.
    ``notify_closing`` and the deadline count at once (``closing=True``,
    ``-1``)."""

    __slots__ = ("fds", "fire", "interest", "loop", "ready", "registered", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fds = _loop_fds(loop)
        self.registered: set[tuple[int, bool]] = set()
        self.ready: list[int] = []
        # A list, as in wait_ready: a shielded wait may put a fresh future
        # in place of one a cancellation consumed.
        self.waiter: list[asyncio.Future[None]] = []
        self.interest: Interest = []
        self.fire = self._fire  # one bound method: the callback's identity in _LoopFds

    def _fire(self, fd: int, closing: bool = False) -> None:
        if closing:  # notify_closing dropped the fd's registration
            self.registered.discard((fd, False))
            self.registered.discard((fd, True))
        elif fd >= 0:
            waiter = self.waiter
            if not waiter:
                return  # between waits (see the class)
            if not waiter[0].done() and not self._still_ready(fd):
                return  # queued before this wait began
        self.ready.append(fd)
        waiter = self.waiter
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    def _still_ready(self, fd: int) -> bool:
        events = 0
        for interested, mask in self.interest:
            if interested == fd:
                events |= mask
        poller = select.poll()
        poller.register(fd, events)
        return bool(poller.poll(0))

    async def wait(
        self,
        interest: Interest,
        deadline: float | None,
        shielded: bool = False,
        caught: list[BaseException] | None = None,
    ) -> list[int]:
        """As :func:`wait_ready`, keeping the registrations (see the class)."""
        fds, fire = self.fds, self.fire
        want: set[tuple[int, bool]] = set()
        for fd, events in interest:
            if events & select.POLLIN:
                want.add((fd, False))
            if events & select.POLLOUT:
                want.add((fd, True))
        registered = self.registered
        if want != registered:
            # (What notify_closing dropped is no longer in ``registered``:
            # its number, maybe naming a new file now, is added afresh.)
            for fd, write in registered - want:
                fds.remove(fd, write, fire)
            for fd, write in want - registered:
                fds.add(fd, write, fire)
            self.registered = want
        loop = self.loop
        timer = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            timer = loop.call_later(left, fire, -1)
        ready: list[int] = []
        self.ready = ready
        self.interest = interest
        self.waiter = waiter = [loop.create_future()]
        try:
            if shielded:
                await _shielded_wait(loop, waiter, ready, caught)
            else:
                await waiter[0]
        finally:
            self.waiter = []
            if timer is not None:
                timer.cancel()
        return [fd for fd in ready if fd >= 0]

    def close(self) -> None:
        """The flow ended: drop every registration it still holds."""
        fds, fire = self.fds, self.fire
        for fd, write in self.registered:
            fds.remove(fd, write, fire)
        self.registered = set()


class _NoFlowWaits:
    """A backend's plain ``wait`` for a flow (trio: nothing kept)."""

    __slots__ = ("wait",)

    def __init__(self, wait: Callable[..., Awaitable[list[int]]]) -> None:
        self.wait = wait

    def close(self) -> None:
        pass


async def _shielded_wait(
    loop: asyncio.AbstractEventLoop,
    waiter: list[asyncio.Future[None]],
    ready: list[int],
    caught: list[BaseException] | None,
) -> None:
    """Await ``waiter[0]`` until something is ``ready``, recording each
    ``CancelledError`` in ``caught`` instead of stopping (a future the
    cancellation consumed is replaced by a fresh one)."""
    anyio = sys.modules.get("anyio")
    scope: Any = None
    if anyio is not None:
        # anyio re-cancels a task in a cancelled scope on every turn of
        # the loop until the scope exits: without its own shield this
        # wait would spin.  Harmless on a task that anyio does not run.
        try:
            scope = anyio.CancelScope(shield=True)
            scope.__enter__()
        except Exception:  # not usable here: plain asyncio it is
            scope = None
    try:
        while True:
            try:
                await waiter[0]
                return
            except asyncio.CancelledError as exc:
                if caught is not None:
                    caught.append(exc)
                if ready:
                    return
                if waiter[0].done():
                    waiter[0] = loop.create_future()
    finally:
        if scope is not None:
            scope.__exit__(None, None, None)


class _Asyncio:
    """The asyncio backend (see the module doc)."""

    name = "asyncio"

    # wait_ready itself, not a coroutine awaiting it: one frame less per wait.
    wait = staticmethod(wait_ready)

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    async def pending_cancellation(self) -> None:
        # asyncio's own cancellations were recorded by the shielded waits;
        # anyio's wait for our shield to end (it holds them, as trio does),
        # and arrive on the next turn of the loop: take them there.
        anyio = sys.modules.get("anyio")
        if anyio is None:
            return
        for _ in range(ANYIO_TURNS):
            try:
                if anyio.current_effective_deadline() != -math.inf:
                    return
            except Exception:  # anyio unusable here: nothing held
                return
            await asyncio.sleep(0)

    def is_cancellation(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncio.CancelledError)

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> object | None:
        async def body() -> None:
            await fn()

        task = asyncio.get_running_loop().create_task(body())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return task

    def notify_closing(self, fd: int) -> None:
        notify_closing(fd)

    def flow_waits(self) -> _FlowWaits:
        return _FlowWaits(asyncio.get_running_loop())


# ------------------------------------------------------------------ trio
class _TrioWait:
    """One wait in progress on trio: its epoll, how to wake it (trio's
    ``notify_closing`` of that epoll), and the fds ``notify_closing`` woke
    it for (reported as ready)."""

    __slots__ = ("closing", "epoll", "wake")

    def __init__(self, epoll: select.epoll, wake: Callable[[int], None]) -> None:
        self.epoll = epoll
        self.wake = wake
        self.closing: list[int] = []


class _TrioWaits(threading.local):
    """Per thread (a trio run lives in one): fd -> the waits watching it."""

    def __init__(self) -> None:
        self.by_fd: dict[int, set[_TrioWait]] = {}


_trio_waits = _TrioWaits()
_trio_used = False  # set by the first trio wait: notify_closing's fast path


def _trio_notify_closing(fd: int) -> None:
    """Wake this thread's trio waits on ``fd`` (they report it ready) and
    drop it from their epolls before it closes."""
    if not _trio_used:
        return
    waits = _trio_waits.by_fd.pop(fd, None)
    if not waits:
        return
    for wait in waits:
        wait.closing.append(fd)
        try:
            wait.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        try:  # its wait_readable raises ClosedResourceError
            wait.wake(wait.epoll.fileno())
        except RuntimeError:  # not inside this thread's trio run after all
            pass


class _Trio:
    """The trio backend (see the module doc); made from the ``trio``
    module the user imported."""

    name = "trio"

    def __init__(self, trio: Any) -> None:
        self.trio = trio
        self.cancelled = trio.Cancelled
        self.wait_readable = trio.lowlevel.wait_readable
        self.current_time = trio.current_time
        self.CancelScope = trio.CancelScope
        self.ClosedResourceError = trio.ClosedResourceError
        self.notify_closing_fd = trio.lowlevel.notify_closing
        self._checkpoint = trio.lowlevel.checkpoint
        self._checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled

    async def wait(
        self,
        interest: Interest,
        deadline: float | None,
        shielded: bool = False,
        caught: list[BaseException] | None = None,
    ) -> list[int]:
        global _trio_used
        # A cancel scope only for a deadline or a shield: it costs ~5 us,
        # and notify_closing wakes a wait without one.
        scope = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            scope = self.CancelScope(deadline=self.current_time() + left, shield=shielded)
        elif shielded:
            scope = self.CancelScope(shield=True)
        masks: dict[int, int] = {}
        for fd, events in interest:
            mask = masks.get(fd, 0)
            if events & select.POLLIN:
                mask |= select.EPOLLIN
            if events & select.POLLOUT:
                mask |= select.EPOLLOUT
            masks[fd] = mask
        epoll = select.epoll(len(masks), select.EPOLL_CLOEXEC)
        wait = _TrioWait(epoll, self.notify_closing_fd)
        by_fd = _trio_waits.by_fd
        _trio_used = True
        try:
            for fd, mask in masks.items():
                epoll.register(fd, mask)
                by_fd.setdefault(fd, set()).add(wait)
            try:
                if scope is None:
                    await self.wait_readable(epoll.fileno())
                else:
                    with scope:
                        await self.wait_readable(epoll.fileno())
            except self.ClosedResourceError:
                if not wait.closing:
                    raise
            ready = wait.closing + [fd for fd, _events in epoll.poll(0)]
        finally:
            for fd in masks:
                waits = by_fd.get(fd)
                if waits is not None:
                    waits.discard(wait)
                    if not waits:
                        del by_fd[fd]
            epoll.close()
        return ready

    async def checkpoint(self) -> None:
        await self._checkpoint()

    async def pending_cancellation(self) -> None:
        await self._checkpoint_if_cancelled()

    def is_cancellation(self, exc: BaseException) -> bool:
        return isinstance(exc, self.cancelled)

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> object | None:
        return None  # no nursery to start it in

    def notify_closing(self, fd: int) -> None:
        _trio_notify_closing(fd)

    def flow_waits(self) -> _NoFlowWaits:
        return _NoFlowWaits(self.wait)


# ------------------------------------------------------------- detection
_ASYNCIO = _Asyncio()
_trio_backend: _Trio | None = None


def _running_trio() -> _Trio | None:
    """The trio backend if trio (already imported) runs in this thread."""
    global _trio_backend
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_task()
    except (RuntimeError, AttributeError):
        return None
    backend = _trio_backend
    if backend is None or backend.trio is not trio:
        backend = _trio_backend = _Trio(trio)
    return backend


def current_backend() -> Backend:
    """The async library running in this thread (see the module doc);
    RuntimeError if none."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        backend = _running_trio()
        if backend is None:
            raise RuntimeError(NO_LOOP) from None
        return backend
    return _ASYNCIO


def _on_event_loop() -> bool:
    """The probe for :func:`netrunner._drive.may_block`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _running_trio() is not None
    return True


add_closing_hook(notify_closing)
add_closing_hook(_trio_notify_closing)
add_loop_probe(_on_event_loop)


# ----------------------------------------------------------------- flows
async def adrive_flow(flow: Flow[T], *, shielded: bool = False) -> T:
    """Drive ``flow`` to its end on the running backend; its return value.

    A :data:`~netrunner._drive.CHECKPOINT` yields to the loop once (never
    while shielded).  What a wait raises (a cancellation) is thrown into
    the flow at its ``yield``, and from then on every wait is shielded, so
    the flow's cleanup (stop, reap) completes even if the task is cancelled
    again.  A cancellation is re-raised when the flow ends, even if the
    flow swallowed it, and wins over an ordinary exception its cleanup
    raised (that one is its ``__context__``); on trio it is the same
    ``Cancelled`` object.  ``shielded=True`` (for cleanups: ``aclose``,
    ``__aexit__``) shields the whole flow, and a cancellation that arrived
    meanwhile is raised at the end."""
    backend = current_backend()
    waits = backend.flow_waits()
    try:
        return await _drive_on(backend, waits, flow, shielded)
    finally:
        waits.close()


async def _drive_on(backend: Backend, waits: _FlowWaits | _NoFlowWaits, flow: Flow[T], shielded: bool) -> T:
    """:func:`adrive_flow`'s loop, waiting with ``waits``."""
    shield = shielded
    cancel: BaseException | None = None
    caught: list[BaseException] = []
    ready: list[int] | None = None  # a fresh generator takes no value
    thrown: BaseException | None = None
    wait = waits.wait
    while True:
        try:
            if thrown is not None:
                request = flow.throw(thrown)
            elif ready is None:
                request = next(flow)
            else:
                request = flow.send(ready)
        except StopIteration as stop:
            result: T = stop.value
            break
        except Exception:
            if cancel is None and caught:
                cancel = caught[0]
            if cancel is None:
                raise
            raise cancel  # noqa: B904 (the flow's error stays its __context__)
        thrown = None
        ready = []
        try:
            if request is CHECKPOINT:
                if not shield:
                    await backend.checkpoint()
            else:
                assert isinstance(request, Pending)
                ready = await wait(request.interest, request.deadline, shield, caught)
        except BaseException as exc:  # handed to the flow
            thrown = exc
            shield = True
            if cancel is None and backend.is_cancellation(exc):
                cancel = exc
    if cancel is None and caught:
        cancel = caught[0]
    if cancel is not None:
        raise cancel
    if shielded:
        await backend.pending_cancellation()
    return result


def start_background(fn: Callable[[], Awaitable[None]]) -> object | None:
    """Run ``fn()`` in the background on the running loop if its library
    allows it without a nursery (asyncio: the task, kept referenced until
    it ends); None on trio or outside any loop (the caller then does the
    work on its next await)."""
    try:
        backend = current_backend()
    except RuntimeError:
        return None
    return backend.start_background(fn)
