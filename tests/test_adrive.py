"""The async drivers (``netrunner._adrive``) on real loops and real fds.

Every behaviour runs under asyncio, trio, anyio on asyncio and anyio on
trio (the ``kit`` fixture).  The flows here are small generators over
pipes and eventfds; a flow says it is about to wait by setting an event
(the readiness signal the test waits for before it acts), so nothing is
synchronised by sleeping.  Deadlines are generous: a flow that should be
woken waits up to WAKE_BOUND seconds, and a wake-up that never came shows
as ``[]`` (the deadline's answer), not as a hang.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import netrunner
from netrunner import _drive
from netrunner._adrive import adrive_flow, current_backend
from netrunner._drive import CHECKPOINT, POLLIN, POLLOUT, Checkpoint, Pending, may_block, notify_closing

try:  # optional (the test extra has them): without, their kits skip
    import trio
    import trio.testing as trio_testing
except ImportError:
    trio = trio_testing = None
try:
    import anyio
except ImportError:
    anyio = None

WAKE_BOUND = 60.0  # a flow that must be woken waits at most this long
Step = Generator["Pending | Checkpoint", list[int], Any]


# ------------------------------------------------------------------ kits
@dataclass
class Handle:
    """A task started by a kit: what it returned or raised, once done."""

    done: Any
    scope: Any = None
    task: Any = None
    result: Any = None
    error: BaseException | None = None
    finished: bool = False


@dataclass
class Kit:
    """One way of running async code: the library's own primitives for
    starting a task, cancelling it, waiting for it and for events, so each
    test reads the same under every library."""

    name: str
    run: Callable[[Callable[[Kit], Awaitable[Any]]], Any]
    nursery: Any = None
    cancellation: type[BaseException] = BaseException
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self) -> Any:
        if self.name == "asyncio":
            return asyncio.Event()
        if self.name == "trio":
            return trio.Event()
        return anyio.Event()

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> Handle:
        handle = Handle(done=self.event())

        async def body() -> None:
            try:
                handle.result = await fn()
            except BaseException as exc:
                handle.error = exc
                raise
            finally:
                handle.finished = True
                handle.done.set()

        if self.name == "asyncio":
            handle.task = asyncio.get_running_loop().create_task(body())
            return handle

        # anyio on trio is cancelled through trio's own scope: anyio 4.16's
        # trio CancelScope.cancel() passes a reason that trio 0.22 rejects.
        lib = anyio if self.name == "anyio-asyncio" else trio

        async def scoped() -> None:
            with handle.scope:
                await body()

        handle.scope = lib.CancelScope()
        self.nursery.start_soon(scoped)
        return handle

    def cancel(self, handle: Handle) -> None:
        if self.name == "asyncio":
            handle.task.cancel()
        else:
            handle.scope.cancel()

    async def join(self, handle: Handle) -> None:
        await handle.done.wait()
        if self.name == "asyncio":
            try:
                await handle.task
            except BaseException:
                pass  # recorded in handle.error

    async def checkpoint(self) -> None:
        if self.name == "asyncio":
            await asyncio.sleep(0)
        elif self.name == "trio":
            await trio.lowlevel.checkpoint()
        else:
            await anyio.lowlevel.checkpoint()


def _run_asyncio(main: Callable[[Kit], Awaitable[Any]]) -> Any:
    kit = Kit("asyncio", _run_asyncio, cancellation=asyncio.CancelledError)

    async def top() -> Any:
        return await main(kit)

    return asyncio.run(top())


def _run_trio(main: Callable[[Kit], Awaitable[Any]], **kwargs: Any) -> Any:
    kit = Kit("trio", _run_trio, cancellation=trio.Cancelled)

    async def top() -> Any:
        async with trio.open_nursery() as nursery:
            kit.nursery = nursery
            return await main(kit)

    return trio.run(top, **kwargs)


def _anyio_runner(backend: str) -> Callable[[Callable[[Kit], Awaitable[Any]]], Any]:
    def run(main: Callable[[Kit], Awaitable[Any]]) -> Any:
        kit = Kit("anyio-" + backend, run)

        async def top() -> Any:
            kit.cancellation = anyio.get_cancelled_exc_class()
            async with anyio.create_task_group() as group:
                kit.nursery = group
                return await main(kit)

        return anyio.run(top, backend=backend)

    return run


KITS = {
    "asyncio": _run_asyncio,
    "trio": _run_trio,
    "anyio-asyncio": _anyio_runner("asyncio"),
    "anyio-trio": _anyio_runner("trio"),
}


def _needs(name: str) -> None:
    """Skip a kit whose libraries are not installed."""
    if trio is None and "trio" in name:
        pytest.skip("trio is not installed (pip install '.[test]')")
    if anyio is None and "anyio" in name:
        pytest.skip("anyio is not installed (pip install '.[test]')")


@pytest.fixture(params=list(KITS))
def kit_run(request: pytest.FixtureRequest) -> Callable[[Callable[[Kit], Awaitable[Any]]], Any]:
    """Runs ``main(kit)`` to its end under one library (see KITS)."""
    _needs(request.param)
    runner: Callable[[Callable[[Kit], Awaitable[Any]]], Any] = KITS[request.param]
    return runner


@pytest.fixture
def pipes() -> Iterator[Callable[[], tuple[int, int]]]:
    """Makes pipes (CLOEXEC) and closes whatever is still open after."""
    made: list[int] = []

    def make() -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def soon(seconds: float = WAKE_BOUND) -> float:
    return time.monotonic() + seconds


def wait_on(fds: list[int], announce: Any, deadline: float | None, events: int = POLLIN) -> Step:
    """The flow that waits once on ``fds`` (after setting ``announce``)
    and returns what fired."""
    announce.set()
    ready = yield Pending([(fd, events) for fd in fds], deadline)
    return sorted(ready)


# ---------------------------------------------------------------- waking
@pytest.mark.parametrize("which", [0, 1])
def test_a_flow_waiting_on_two_fds_wakes_on_either(kit_run: Any, pipes: Any, which: int) -> None:
    (r0, w0), (r1, w1) = pipes(), pipes()

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(wait_on([r0, r1], waiting, soon())))
        await waiting.wait()
        os.write((w0, w1)[which], b"x")
        await kit.join(handle)
        return handle.result

    assert kit_run(main) == [(r0, r1)[which]]


def test_two_tasks_waiting_on_the_same_fd_both_wake(kit_run: Any, pipes: Any) -> None:
    r, w = pipes()

    async def main(kit: Kit) -> Any:
        first, second = kit.event(), kit.event()
        a = kit.spawn(lambda: adrive_flow(wait_on([r], first, soon())))
        await first.wait()
        b = kit.spawn(lambda: adrive_flow(wait_on([r], second, soon())))
        await second.wait()
        os.write(w, b"x")
        await kit.join(a)
        await kit.join(b)
        return a.result, b.result, a.error, b.error

    assert kit_run(main) == ([r], [r], None, None)


def test_a_flow_waiting_to_write_wakes_when_the_pipe_has_room(kit_run: Any, pipes: Any) -> None:
    r, w = pipes()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass  # the pipe is full

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(wait_on([w], waiting, soon(), POLLOUT)))
        await waiting.wait()
        os.read(r, 1 << 20)  # room (the pipe held at most 1 MiB)
        await kit.join(handle)
        return handle.result

    assert kit_run(main) == [w]


def test_a_deadline_ends_the_wait_with_nothing_ready(kit_run: Any, pipes: Any) -> None:
    r, _w = pipes()

    async def main(kit: Kit) -> Any:
        began = time.monotonic()
        ready = await adrive_flow(wait_on([r], kit.event(), time.monotonic() + 0.2))
        return ready, time.monotonic() - began

    ready, took = kit_run(main)
    assert ready == []
    assert 0.2 <= took < WAKE_BOUND


def test_trio_deadlines_follow_trios_clock(pipes: Any) -> None:
    """Our deadlines are time.monotonic(); on trio they become trio's
    clock per wait, so a MockClock that jumps ahead ends a 1000 s wait
    in no real time at all."""
    _needs("trio")
    r, _w = pipes()

    async def main(kit: Kit) -> Any:
        began = trio.current_time()
        ready = await adrive_flow(wait_on([r], kit.event(), time.monotonic() + 1000))
        return ready, trio.current_time() - began

    began = time.monotonic()
    ready, virtual = _run_trio(main, clock=trio_testing.MockClock(autojump_threshold=0))
    assert ready == []
    assert virtual >= 999
    assert time.monotonic() - began < WAKE_BOUND


# ---------------------------------------------------------- cancellation
def test_a_cancellation_is_thrown_into_the_flow_whose_cleanup_completes_shielded(kit_run: Any, pipes: Any) -> None:
    """Cancelled while waiting: the flow gets the cancellation at its
    yield; its cleanup wait is shielded, so a second cancellation does not
    cut it short; the cancellation propagates once the flow is done."""
    (r1, _w1), (r2, w2) = pipes(), pipes()
    log: list[Any] = []

    def flow(waiting: Any, cleaning: Any) -> Step:
        try:
            waiting.set()
            yield Pending([(r1, POLLIN)], soon())
            log.append("not cancelled")
        except BaseException as exc:
            log.append(("thrown", exc))
            cleaning.set()
            ready = yield Pending([(r2, POLLIN)], soon())
            log.append(("cleanup woke on", ready))
            raise

    async def main(kit: Kit) -> Any:
        waiting, cleaning = kit.event(), kit.event()
        handle = kit.spawn(lambda: adrive_flow(flow(waiting, cleaning)))
        await waiting.wait()
        kit.cancel(handle)
        await cleaning.wait()
        kit.cancel(handle)  # again, during the cleanup
        for _ in range(10):
            await kit.checkpoint()  # room for the second one to (not) land
        assert not handle.finished, "the cleanup did not wait for its fd"
        os.write(w2, b"x")
        await kit.join(handle)
        return handle.error, kit.cancellation

    error, cancellation = kit_run(main)
    assert isinstance(error, cancellation)
    assert [entry if isinstance(entry, str) else entry[0] for entry in log] == ["thrown", "cleanup woke on"]
    assert isinstance(log[0][1], cancellation)
    assert log[1][1] == [r2]


def test_a_swallowed_cancellation_is_raised_anyway(kit_run: Any, pipes: Any) -> None:
    """A flow that catches the cancellation and returns normally does not
    end the cancellation: it is raised when the flow ends (the same object
    that was thrown in)."""
    r, _w = pipes()
    thrown: list[BaseException] = []

    def flow(waiting: Any) -> Step:
        try:
            waiting.set()
            yield Pending([(r, POLLIN)], soon())
        except BaseException as exc:
            thrown.append(exc)
        return "swallowed"

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(flow(waiting)))
        await waiting.wait()
        kit.cancel(handle)
        await kit.join(handle)
        return handle.result, handle.error

    result, error = kit_run(main)
    assert result is None
    assert thrown and error is thrown[0]


def test_a_cancellation_wins_over_an_error_of_the_cleanup(kit_run: Any, pipes: Any) -> None:
    r, _w = pipes()

    def flow(waiting: Any) -> Step:
        try:
            waiting.set()
            yield Pending([(r, POLLIN)], soon())
        except BaseException:
            raise OSError("the cleanup failed") from None

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(flow(waiting)))
        await waiting.wait()
        kit.cancel(handle)
        await kit.join(handle)
        return handle.error, kit.cancellation

    error, cancellation = kit_run(main)
    assert isinstance(error, cancellation)
    assert isinstance(error.__context__, OSError)


def test_a_shielded_flow_finishes_and_then_raises_the_cancellation(kit_run: Any, pipes: Any) -> None:
    """``shielded=True`` (aclose, __aexit__): a cancellation while it runs
    does not reach the flow; it is raised after the flow's end."""
    r, w = pipes()
    log: list[str] = []

    def flow(waiting: Any) -> Step:
        try:
            waiting.set()
            yield CHECKPOINT  # never yields to the loop while shielded
            yield Pending([(r, POLLIN)], soon())
            log.append("finished")
        except BaseException:
            log.append("interrupted")
            raise

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(flow(waiting), shielded=True))
        await waiting.wait()
        kit.cancel(handle)
        for _ in range(10):
            await kit.checkpoint()
        assert not handle.finished
        os.write(w, b"x")
        await kit.join(handle)
        return handle.error, kit.cancellation

    error, cancellation = kit_run(main)
    assert isinstance(error, cancellation)
    assert log == ["finished"]


def test_an_error_of_the_flow_propagates_and_its_value_is_returned(kit_run: Any, pipes: Any) -> None:
    r, w = pipes()
    os.write(w, b"x")

    def good() -> Step:
        ready = yield Pending([(r, POLLIN)], soon())
        return ("done", ready)

    def bad() -> Step:
        yield Pending([(r, POLLIN)], soon())
        raise ValueError("from the flow")

    async def main(kit: Kit) -> Any:
        value = await adrive_flow(good())
        try:
            await adrive_flow(bad())
        except ValueError as exc:
            return value, str(exc)
        return value, None

    assert kit_run(main) == (("done", [r]), "from the flow")


# ------------------------------------------------------------ checkpoint
def test_a_checkpoint_lets_another_task_run(kit_run: Any) -> None:
    def flow(other_ran: list[bool]) -> Step:
        for _ in range(100):
            if other_ran:
                return True
            yield CHECKPOINT
        return False

    async def main(kit: Kit) -> Any:
        other_ran: list[bool] = []

        async def other() -> None:
            other_ran.append(True)

        handle = kit.spawn(other)
        result = await adrive_flow(flow(other_ran))
        await kit.join(handle)
        return result

    assert kit_run(main) is True


# -------------------------------------------------------- notify_closing
def test_notify_closing_wakes_a_waiter_and_the_reused_number_works(kit_run: Any, pipes: Any) -> None:
    """Closing an fd someone waits on (after notify_closing, as the core
    does) wakes the waiter at once (it would otherwise sleep until its
    deadline); a new file under the same number is then waited on by two
    tasks, and both wake."""
    r, _w = pipes()

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(wait_on([r], waiting, soon())))
        await waiting.wait()
        notify_closing(r)
        os.close(r)
        await kit.join(handle)
        woke = handle.result
        new_r, new_w = pipes()
        os.dup2(new_r, r)  # the same number, a different pipe
        first, second = kit.event(), kit.event()
        a = kit.spawn(lambda: adrive_flow(wait_on([r], first, soon())))
        b = kit.spawn(lambda: adrive_flow(wait_on([r], second, soon())))
        await first.wait()
        await second.wait()
        os.write(new_w, b"x")
        await kit.join(a)
        await kit.join(b)
        return woke, a.result, b.result, a.error, b.error

    assert kit_run(main) == ([r], [r], [r], None, None)


def test_a_number_closed_and_reused_between_waits_is_waited_on_afresh_and_nothing_stays_registered(
    kit_run: Any, pipes: Any
) -> None:
    """On asyncio a flow's fds stay registered from one wait to the next.
    One the flow closes between waits (through notify_closing, as the core
    does) and whose number then names a new pipe must be waited on as that
    new pipe (a registration kept for the old file would never wake: the
    flow would sleep to its deadline); when the flow ends, none of its fds
    is left registered with the loop."""
    (r0, w0), (r1, _w1) = pipes(), pipes()
    fresh: list[int] = []

    def flow(announce: Any) -> Step:
        os.write(w0, b"x")
        first = yield Pending([(r0, POLLIN), (r1, POLLIN)], soon())
        os.read(r0, 1)
        notify_closing(r1)
        os.close(r1)
        new_r, new_w = pipes()
        os.dup2(new_r, r1)  # the same number, a different pipe
        fresh.append(new_w)
        announce.set()
        second = yield Pending([(r0, POLLIN), (r1, POLLIN)], soon())
        return sorted(first), sorted(second)

    async def main(kit: Kit) -> Any:
        selector = None
        if current_backend().name == "asyncio":
            selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(flow(waiting)))
        await waiting.wait()
        os.write(fresh[0], b"y")
        await kit.join(handle)
        left = [] if selector is None else [fd for fd in (r0, r1) if fd in selector.get_map()]
        return handle.result, handle.error, left

    assert kit_run(main) == (([r0], [r1]), None, [])


def test_notify_closing_costs_nothing_for_a_number_nobody_waits_on(kit_run: Any, pipes: Any) -> None:
    r, w = pipes()
    other_r, _other_w = pipes()

    async def main(kit: Kit) -> Any:
        waiting = kit.event()
        handle = kit.spawn(lambda: adrive_flow(wait_on([r], waiting, soon())))
        await waiting.wait()
        notify_closing(other_r)  # someone else's fd: the waiter sleeps on
        for _ in range(10):
            await kit.checkpoint()
        still_waiting = not handle.finished
        os.write(w, b"x")
        await kit.join(handle)
        return still_waiting, handle.result

    assert kit_run(main) == (True, [r])


# --------------------------------------------------------------- backends
@pytest.mark.parametrize(
    ("runner", "expected"),
    [("asyncio", "asyncio"), ("trio", "trio"), ("anyio-asyncio", "asyncio"), ("anyio-trio", "trio")],
)
def test_each_library_is_detected(runner: str, expected: str) -> None:
    _needs(runner)

    async def main(kit: Kit) -> Any:
        backend = current_backend()
        cancellation = trio.Cancelled._create() if backend.name == "trio" else asyncio.CancelledError()
        return (
            backend.name,
            backend.is_cancellation(cancellation),
            backend.is_cancellation(ValueError()),
            may_block(),
        )

    assert KITS[runner](main) == (expected, True, False, False)


def test_outside_any_loop_detection_raises_a_clear_runtime_error() -> None:
    assert may_block() is True
    with pytest.raises(RuntimeError, match="needs a running asyncio or trio event loop"):
        current_backend()
    flow = adrive_flow(_drive.until(lambda ready: 1))
    with pytest.raises(RuntimeError, match="needs a running asyncio or trio event loop"):
        flow.send(None)


def test_background_work_runs_as_a_task_on_asyncio_and_is_declined_on_trio(kit_run: Any) -> None:
    async def main(kit: Kit) -> Any:
        done = kit.event()

        async def work() -> None:
            done.set()

        task = current_backend().start_background(work)
        if task is not None:
            await done.wait()
        return current_backend().name, task is not None, done.is_set()

    name, started, ran = kit_run(main)
    assert (started, ran) == ((True, True) if name == "asyncio" else (False, False))


def test_importing_the_async_front_end_does_not_import_trio_and_the_core_no_asyncio() -> None:
    # The netrunner under test (the installed one in CI, src/ in a dev tree).
    src = str(Path(netrunner.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (
        "import sys\n"
        "import netrunner\n"
        "netrunner.run(['true'])\n"
        "assert 'asyncio' not in sys.modules, 'the sync API imported asyncio'\n"
        "import netrunner.aio\n"
        "assert 'trio' not in sys.modules, 'netrunner.aio imported trio'\n"
        "assert 'anyio' not in sys.modules, 'netrunner.aio imported anyio'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAKE_BOUND)
    assert proc.returncode == 0, proc.stderr


def test_a_shielded_wait_under_a_cancelled_scope_does_not_spin_the_loop(kit_run: Any, pipes: Any) -> None:
    """anyio re-cancels a task in a cancelled scope on every turn of the
    loop; a shielded wait must not turn that into a busy loop (counted:
    the loop's selector calls during a 1 s shielded wait)."""
    r, _w = pipes()

    def flow(waiting: Any) -> Step:
        waiting.set()
        ready = yield Pending([(r, POLLIN)], time.monotonic() + 1.0)
        return ready

    async def main(kit: Kit) -> Any:
        selects = [0]
        selector = None
        if current_backend().name == "asyncio":
            selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
            inner = selector.select

            def counted(timeout: float | None = None) -> Any:
                selects[0] += 1
                return inner(timeout)

            selector.select = counted
        try:
            waiting = kit.event()
            handle = kit.spawn(lambda: adrive_flow(flow(waiting), shielded=True))
            await waiting.wait()
            kit.cancel(handle)
            await kit.join(handle)
        finally:
            if selector is not None:
                del selector.select
        return handle.result, handle.error, kit.cancellation, selects[0]

    result, error, cancellation, selects = kit_run(main)
    assert result is None
    assert isinstance(error, cancellation)
    assert selects < 50


def test_aio_run_cancelled_on_any_library_reaps_the_group_before_the_cancellation(kit_run: Any, tmp_path: Path) -> None:
    """End to end through the public ``netrunner.aio.run``: on asyncio, trio
    and anyio, cancelling the awaiting task or scope stops the child's
    TERM-ignoring group (SIGTERM, kill_timeout, SIGKILL) and reaps it
    before the cancellation reaches the caller."""
    from procs import assert_group_gone

    from netrunner import aio

    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = 'trap "" TERM; (trap "" TERM; exec sleep 60) & echo $$ > "$1"; exec sleep 60'

    def read_line(fd: int) -> Step:
        data = b""
        while not data.endswith(b"\n"):
            ready = yield Pending([(fd, POLLIN)], soon())
            assert ready, "the child never wrote its pid"
            data += os.read(fd, 64)
        return data

    async def main(kit: Kit) -> Any:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            handle = kit.spawn(lambda: aio.run(["sh", "-c", script, "sh", str(fifo)], kill_timeout=0.3, timeout=60))
            pid = int(await adrive_flow(read_line(fd)))
        finally:
            os.close(fd)
        began = time.monotonic()
        kit.cancel(handle)
        await kit.join(handle)
        assert_group_gone(pid)
        return handle.error, kit.cancellation, time.monotonic() - began

    error, cancellation, took = kit_run(main)
    assert isinstance(error, cancellation)
    assert took >= 0.3  # it did wait kill_timeout for the TERM-ignoring child


def test_an_event_loop_that_ran_netrunner_is_not_kept_alive_after_it_is_done() -> None:
    """A service that calls ``asyncio.run`` per request (sync code calling an
    async helper) makes a new loop each time.  The per-loop fd registry is
    keyed weakly by the loop; it must not hold the loop itself, or every
    loop that ever awaited netrunner (with its selector, ready queue and
    registry: ~3 KB each) lives as long as the interpreter."""
    import gc
    import weakref

    from netrunner import aio

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with await aio.spawn(["cat"]) as proc:
            await proc.write(b"x")
            proc.close_stdin()
            assert await proc.read() == b"x"
            assert await proc.wait() == 0
        assert (await aio.run(["true"])).returncode == 0

    for _ in range(3):
        asyncio.run(one())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
