"""One behaviour, three front ends: the facade the behaviour tests
(``tests/test_behaviour_*.py``) are written against.

A behaviour test is an ``async def`` taking the ``front`` fixture
(conftest.py: params "sync", "asyncio", "trio"), and says what it does once:

    async def test_x(front: Front) -> None:
        r = await front.run(["cat"], input=b"x")
        async with await front.spawn(["cat"]) as p:
            await p.write(b"hi\\n")
            assert await p.read_until(b"\\n") == b"hi\\n"
        async for chunk in front.stream(["yes"]): ...

* "sync" calls the blocking API (``netrunner.run/stream/spawn``) and drives
  the test's coroutine with no event loop at all: one ``send(None)`` must
  finish it, so a sync test can never silently await something (a facade
  method that suspended would fail the test, not hang it);
* "asyncio" awaits ``netrunner.aio`` under ``asyncio.run``, watched by a
  :class:`LoopWatch` (any turn of the loop blocked for LOOP_STALL_LIMIT
  fails the test, as every test in test_aio.py did);
* "trio" awaits the same ``netrunner.aio`` functions under ``trio.run``.

Facade methods that wait are coroutines on every front end; the ones that
never wait (``close_stdin``, ``send_signal``, ``terminate``, ``kill``) are
plain calls, as in both real APIs.  On the async front ends a facade
coroutine must be backed by a real coroutine of ``netrunner.aio`` (and on
the sync one by a plain call): a front end whose method lost or gained an
``await`` fails here instead of being papered over.

Interrupts: :meth:`Front.interrupted` interrupts a call that blocks, the way
a user of that front end does -- Ctrl-C (a real SIGINT to the main thread,
so ``KeyboardInterrupt``) for sync, cancelling the task for asyncio,
cancelling the enclosing scope for trio -- once a readiness condition
(typically a FIFO line the child writes after setting its traps) holds, and
returns right when the interrupt reached the caller, so the test can check
the promise at that very moment: the child and its group are already
stopped and reaped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import resource
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import netrunner
from netrunner import aio

T = TypeVar("T")
FRONTS = ("sync", "asyncio", "trio")
# No turn of an asyncio loop may block it for this long (see LoopWatch).
LOOP_STALL_LIMIT = 0.1
# How long a helper thread (a concurrent branch of Front.gather on the sync
# front end, the readiness wait of Front.interrupted) may take at most.
THREAD_BOUND = 120.0


# -------------------------------------------------------- loop watchdog
class LoopWatch:
    """Measures every turn of an asyncio loop: the stretch between the
    selector returning and the loop calling it again is time spent in
    callbacks, and a callback that computes or sleeps in a syscall shows up
    there.

    Only the loop's own doing counts, so the figure is the same on a quiet
    machine and on a busy 2-core VM: the thread's CPU time for the turn
    (``getrusage(RUSAGE_THREAD)``), plus, if the thread went to sleep
    voluntarily during the turn (a blocking call: a voluntary context
    switch), the wall time it was neither running nor waiting for a CPU
    (``run_delay`` from ``/proc/thread-self/schedstat``).  Preemption by
    other processes and a hypervisor's stolen time involve no voluntary
    switch, so they never count; the raw wall figure is kept for the
    failure message."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.max_gap = 0.0
        self.max_wall_gap = 0.0
        self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        selector = loop._selector  # type: ignore[attr-defined]
        self._selector = selector
        inner = selector.select

        def select(timeout: float | None = None) -> Any:
            self._turn_ends()
            try:
                return inner(timeout)
            finally:
                self._turn_begins()

        selector.select = select
        self._inner = inner
        self._turn_begins()

    def _sample(self) -> tuple[float, float, int, float]:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        run_delay = int(os.pread(self._schedstat, 128, 0).split()[1]) / 1e9
        return time.monotonic(), usage.ru_utime + usage.ru_stime, usage.ru_nvcsw, run_delay

    def _turn_begins(self) -> None:
        self._begin = self._sample()

    def _turn_ends(self) -> None:
        wall0, cpu0, switches0, delay0 = self._begin
        wall1, cpu1, switches1, delay1 = self._sample()
        wall, cpu = wall1 - wall0, cpu1 - cpu0
        asleep = max(0.0, wall - cpu - (delay1 - delay0)) if switches1 > switches0 else 0.0
        self.max_gap = max(self.max_gap, cpu + asleep)
        self.max_wall_gap = max(self.max_wall_gap, wall)

    async def next_turn(self) -> None:
        """Return after the loop went round once (a turn boundary)."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def stop(self) -> float:
        if self._schedstat >= 0:
            self._turn_ends()  # the stretch since the last turn counts too
            self._selector.select = self._inner
            os.close(self._schedstat)
            self._schedstat = -1
        return self.max_gap


def run_watched(main: Coroutine[Any, Any, T], stalls: list[tuple[float, float]]) -> T:
    """``asyncio.run(main)`` under a :class:`LoopWatch`; appends (own
    stall, wall time) of its worst turn to ``stalls``."""

    async def watched() -> T:
        beat = LoopWatch(asyncio.get_running_loop())
        try:
            return await main
        finally:
            beat.stop()
            stalls.append((beat.max_gap, beat.max_wall_gap))

    return asyncio.run(watched())


def fail_if_stalled(stalls: list[tuple[float, float]], limit: float = LOOP_STALL_LIMIT) -> None:
    if not stalls:
        return
    worst, wall = max(stalls)
    if worst >= limit:
        pytest.fail(
            f"the event loop was blocked for {worst * 1000:.0f} ms ({wall * 1000:.0f} ms of wall time)", pytrace=False
        )


# -------------------------------------------------------------- helpers
def run_to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Drive ``coro`` with no event loop: it must finish in one step."""
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError(f"a sync behaviour test suspended (it awaited {yielded!r}): sync calls never wait on a loop")


def _expect(front: Front, what: Any, result: Any) -> None:
    """A sync front end's call returns its value; an async one's a coroutine."""
    awaitable = inspect.isawaitable(result)
    if awaitable != front.is_async:
        if awaitable:
            result.close()
        kind = "a coroutine" if front.is_async else "a plain value"
        raise AssertionError(f"{getattr(what, '__qualname__', what)} should give {kind} on the {front.name} front end")


# --------------------------------------------------------------- the facade
class FrontProcess:
    """A spawned child (``netrunner.Process`` or ``aio.AsyncProcess``)."""

    def __init__(self, front: Front, process: Any) -> None:
        self.front = front
        self.raw = process

    # -- state (plain attributes on both)
    @property
    def pid(self) -> int:
        return int(self.raw.pid)

    @property
    def returncode(self) -> int | None:
        return self.raw.returncode  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        return bool(self.raw.alive)

    @property
    def stats(self) -> netrunner.Stats:
        return self.raw.stats  # type: ignore[no-any-return]

    @property
    def args(self) -> Any:
        return self.raw.args

    # -- calls that never wait
    def close_stdin(self) -> None:
        self.raw.close_stdin()

    def send_signal(self, sig: Any) -> None:
        self.raw.send_signal(sig)

    def terminate(self) -> None:
        self.raw.terminate()

    def kill(self) -> None:
        self.raw.kill()

    # -- calls that wait
    async def _wait_on(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.raw, name)
        return await self.front.call(method, *args, **kwargs)

    async def write(self, data: Any) -> None:
        await self._wait_on("write", data)

    async def read(self, n: int = 65536, timeout: float | None = None) -> bytes:
        return bytes(await self._wait_on("read", n, timeout=timeout))

    async def read_stderr(self, n: int = 65536, timeout: float | None = None) -> bytes:
        return bytes(await self._wait_on("read_stderr", n, timeout=timeout))

    async def wait(self, timeout: float | None = None) -> int:
        return int(await self._wait_on("wait", timeout=timeout))

    async def stop(self, grace: float | None = None) -> int:
        return int(await self._wait_on("stop", grace))

    async def aclose(self) -> None:
        await self._wait_on("aclose" if self.front.is_async else "close")

    async def __aenter__(self) -> FrontProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- test helpers, bounded in time
    async def read_until(self, end: bytes, within: float = 20.0) -> bytes:
        """stdout up to and including ``end`` (or EOF)."""
        deadline = time.monotonic() + within
        data = b""
        while end not in data:
            chunk = await self.read(timeout=max(0.0, deadline - time.monotonic()))
            if not chunk:
                break
            data += chunk
        return data

    async def read_all(self, within: float = 20.0) -> bytes:
        """stdout up to EOF."""
        deadline = time.monotonic() + within
        parts = []
        while chunk := await self.read(timeout=max(0.0, deadline - time.monotonic())):
            parts.append(chunk)
        return b"".join(parts)

    async def read_all_stderr(self, within: float = 20.0) -> bytes:
        """stderr up to EOF (the drained buffer first)."""
        deadline = time.monotonic() + within
        parts = []
        while chunk := await self.read_stderr(timeout=max(0.0, deadline - time.monotonic())):
            parts.append(chunk)
        return b"".join(parts)


class _AsyncChunks:
    """``async for`` over a sync iterator (the sync front end) or an async
    one, the same either way."""

    def __init__(self, front: Front, make: Callable[[], Any]) -> None:
        self._front = front
        self._make = make
        self._it: Any = None

    def __aiter__(self) -> _AsyncChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._it is None:
            self._it = self._make()
        if self._front.is_async:
            return await self._it.__anext__()  # type: ignore[no-any-return]
        try:
            return next(self._it)  # type: ignore[no-any-return]
        except StopIteration:
            raise StopAsyncIteration from None


class FrontStream(_AsyncChunks):
    """A stream (``netrunner.Stream`` or ``aio.AsyncStream``).  On the sync
    front end the child starts when :meth:`Front.stream` is called (so
    spawn errors come from there), on the async ones at the first
    ``__anext__``: tests put both inside the same ``pytest.raises``.  The
    iterator is made at the first ``__anext__`` and kept, so leaving an
    ``async for`` early does not end the stream on any front end (on sync,
    dropping the generator of a ``for`` does): only dropping the stream,
    ``aclose()`` or ``async with`` does."""

    def __init__(self, front: Front, stream: Any) -> None:
        self.raw = stream
        super().__init__(front, (lambda: iter(stream)) if not front.is_async else (lambda: stream))

    @property
    def pid(self) -> int | None:
        return self.raw.pid  # type: ignore[no-any-return]

    @property
    def returncode(self) -> int | None:
        return self.raw.returncode  # type: ignore[no-any-return]

    @property
    def stderr(self) -> bytes | None:
        return self.raw.stderr  # type: ignore[no-any-return]

    @property
    def stats(self) -> netrunner.Stats | None:
        return self.raw.stats  # type: ignore[no-any-return]

    @property
    def args(self) -> Any:
        return self.raw.args

    def lines(self) -> _AsyncChunks:
        return _AsyncChunks(self._front, self.raw.lines)

    async def aclose(self) -> None:
        await self._front.call(self.raw.aclose if self._front.is_async else self.raw.close)

    async def __aenter__(self) -> FrontStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def collect(self) -> bytes:
        """Every chunk to the end, joined."""
        return b"".join([chunk async for chunk in self])


class Front:
    """One front end seen through the facade (see the module doc)."""

    is_async = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.api: Any = aio if self.is_async else netrunner
        # A test whose one turn must materialise what it asked for (64 MiB
        # of captured output joined into one bytes, on the loop's thread)
        # may raise this, saying why; everything else keeps the 100 ms.
        self.stall_limit = LOOP_STALL_LIMIT

    def __repr__(self) -> str:
        return f"<front {self.name}>"

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, awaited on the async front ends (and checked to be
        a coroutine there, a plain call on sync)."""
        result = fn(*args, **kwargs)
        _expect(self, fn, result)
        if self.is_async:
            return await result
        return result

    # -- the three entry points
    async def run(self, args: Any, **options: Any) -> netrunner.Result:
        result: netrunner.Result = await self.call(self.api.run, args, **options)
        return result

    def stream(self, args: Any, **options: Any) -> FrontStream:
        return FrontStream(self, self.api.stream(args, **options))

    async def spawn(self, args: Any, **options: Any) -> FrontProcess:
        return FrontProcess(self, await self.call(self.api.spawn, args, **options))

    # -- waiting and concurrency, as this front end does them
    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking helper of the test (a FIFO, a pidfd): in a worker
        thread on the async front ends, so the loop (and the children's
        pipes it serves) keeps going meanwhile; called directly on sync."""
        raise NotImplementedError

    async def gather(self, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
        """Run the calls concurrently (threads on sync, tasks on asyncio, a
        nursery on trio); their results in order, or the first error."""
        raise NotImplementedError

    async def interrupted(self, call: Callable[[], Awaitable[Any]], when: Callable[[], object]) -> None:
        """Run ``call()``, interrupt it once the blocking ``when()`` has
        returned (see the module doc), and return right when the interrupt
        reached us.  Fails if ``call()`` ends otherwise."""
        raise NotImplementedError

    def run_test(self, body: Coroutine[Any, Any, Any]) -> Any:
        raise NotImplementedError


class SyncFront(Front):
    is_async = False

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    async def gather(self, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def branch(i: int, call: Callable[[], Awaitable[Any]]) -> None:
            try:
                results[i] = run_to_completion(call())  # type: ignore[arg-type]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=branch, args=(i, c), name=f"gather-{i}") for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + THREAD_BOUND
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"concurrent branches still blocked after {THREAD_BOUND} s: {stuck}"
        if errors:
            raise errors[0]
        return results

    async def interrupted(self, call: Callable[[], Awaitable[Any]], when: Callable[[], object]) -> None:
        # Ctrl-C: a real SIGINT to the main thread, sent by a helper thread
        # once ``when()`` holds; the blocking call sees KeyboardInterrupt.
        main = threading.main_thread().ident
        assert main is not None and threading.get_ident() == main, "interrupts need the main thread"
        failed: list[BaseException] = []
        armed = True
        fired = False
        # The readiness wait starts only once the call has begun, so the
        # interrupt cannot land in this method (before the call) however
        # late the main thread gets a CPU.
        entered = threading.Event()
        ended = threading.Event()

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal fired
            # One KeyboardInterrupt, and only while the call runs (a SIGINT
            # after it ended must not hit pytest; a repeated one must not
            # interrupt the call's own cleanup).
            if armed and not fired:
                fired = True
                raise KeyboardInterrupt

        def interrupt() -> None:
            try:
                assert entered.wait(THREAD_BOUND), "the call never began"
                when()
            except BaseException as exc:  # reported below; interrupt anyway so the call ends
                failed.append(exc)
            # A SIGINT that lands after the interpreter's last check and
            # before the call's blocking syscall starts is taken, but the
            # syscall does not see it (the classic signal race: Python runs
            # the handler only once the syscall returns, and it may never).
            # So it is sent again until the call has ended, at most every
            # 0.25 s and for THREAD_BOUND; the handler raises only once.
            deadline = time.monotonic() + THREAD_BOUND
            while True:
                signal.pthread_kill(main, signal.SIGINT)
                if ended.wait(0.25) or time.monotonic() >= deadline:
                    return

        previous = signal.signal(signal.SIGINT, on_sigint)
        helper = threading.Thread(target=interrupt, name="interrupter")
        interrupted = False
        helper.start()
        try:
            entered.set()
            await call()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            armed = False
            ended.set()
            helper.join(THREAD_BOUND)
            signal.signal(signal.SIGINT, previous)
        if failed:
            raise failed[0]
        assert interrupted, "the call returned before it was interrupted"

    def run_test(self, body: Coroutine[Any, Any, Any]) -> Any:
        return run_to_completion(body)


class AsyncioFront(Front):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.stalls: list[tuple[float, float]] = []

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def gather(self, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*(call() for call in calls)))

    async def interrupted(self, call: Callable[[], Awaitable[Any]], when: Callable[[], object]) -> None:
        async def wrapped() -> Any:
            return await call()

        task = asyncio.ensure_future(wrapped())
        ready = asyncio.ensure_future(asyncio.to_thread(when))
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done() or task.done():  # the call ended first
            await asyncio.gather(ready, return_exceptions=True)
            task.result()
            raise AssertionError("the call returned before it was interrupted")
        task.cancel()
        if ready.exception() is not None:  # the readiness wait failed: report that
            await asyncio.gather(task, return_exceptions=True)
            ready.result()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the cancelled call returned normally")

    def run_test(self, body: Coroutine[Any, Any, Any]) -> Any:
        try:
            return run_watched(body, self.stalls)
        finally:
            fail_if_stalled(self.stalls, self.stall_limit)


class TrioFront(Front):
    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import trio

        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def gather(self, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
        import trio

        results: list[Any] = [None] * len(calls)

        async def branch(i: int, call: Callable[[], Awaitable[Any]]) -> None:
            results[i] = await call()

        async with trio.open_nursery() as nursery:
            for i, call in enumerate(calls):
                nursery.start_soon(branch, i, call)
        return results

    async def interrupted(self, call: Callable[[], Awaitable[Any]], when: Callable[[], object]) -> None:
        import trio

        returned = False
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def interrupter() -> None:
                    await trio.to_thread.run_sync(when)
                    scope.cancel()

                nursery.start_soon(interrupter)
                await call()
                returned = True
        assert not returned, "the call returned before it was interrupted"
        assert scope.cancelled_caught, "the cancellation did not reach the call"

    def run_test(self, body: Coroutine[Any, Any, Any]) -> Any:
        import trio

        async def main() -> Any:
            return await body

        return trio.run(main)


def make_front(name: str) -> Front:
    return {"sync": SyncFront, "asyncio": AsyncioFront, "trio": TrioFront}[name](name)


# ----------------------------------------------- finding a call's processes
def marked_env() -> tuple[str, dict[str, str]]:
    """(token, our environment plus ``NR_TOKEN=token``): every process of
    a call given this env carries the token, setsid'ed daemons included."""
    token = uuid.uuid4().hex
    return token, dict(os.environ, NR_TOKEN=token)


def processes_with(token: str) -> list[int]:
    """Live processes whose environment carries ``NR_TOKEN=token``."""
    needle = f"NR_TOKEN={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


__all__ = [
    "FRONTS",
    "LOOP_STALL_LIMIT",
    "Front",
    "FrontProcess",
    "FrontStream",
    "LoopWatch",
    "fail_if_stalled",
    "make_front",
    "marked_env",
    "processes_with",
    "run_to_completion",
    "run_watched",
]
