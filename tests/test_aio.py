"""netrunner.aio on asyncio: what only the asyncio front end has.

The behaviour it shares with the sync API (and trio) is tested once for
all front ends in test_behaviour_*.py, whose asyncio runs are watched by
the same heartbeat.  Here: the loop is never blocked (every test here runs
under a heartbeat that fails it when the loop stalls for 100 ms, and some
check the loop keeps turning); cancelling the task that awaits spawn, a
process method or stop, at every await point and after every loop turn,
stops the child's group and reaps it *before* CancelledError reaches the
awaiting code.

Tests are plain functions driving ``asyncio.run`` (through :func:`arun`,
which adds the heartbeat); no pytest plugin is involved.
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

import pytest
from frontends import LoopWatch, fail_if_stalled, marked_env, processes_with, run_watched
from procs import assert_group_gone

import netrunner
from netrunner import aio

T = TypeVar("T")
MiB = 1 << 20
# Ignores SIGTERM, announces itself, then sleeps (exec keeps the ignore).
TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60']


# -------------------------------------------------------- loop watchdog
# LoopWatch is in frontends.py: the behaviour suite's asyncio front end
# runs every behaviour test under it too.
_stalls: list[tuple[float, float]] = []  # (own stall, wall time) per loop run


def arun(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` under a :class:`LoopWatch`; the autouse
    fixture below fails the test if the loop ever stalled."""
    return run_watched(main, _stalls)


@pytest.fixture(autouse=True)
def loop_never_blocked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test in this module runs its loop through :func:`arun`, and no
    turn of a loop may block it for LOOP_STALL_LIMIT (100 ms) or more."""
    _stalls.clear()
    yield
    if request.node.name == "test_heartbeat_catches_a_blocked_loop":
        return  # the watchdog's own test blocks the loop on purpose
    assert _stalls, "this test did not run an event loop through arun()"
    fail_if_stalled(_stalls)


def test_heartbeat_catches_a_blocked_loop() -> None:
    """The watchdog itself works: a 150 ms blocking sleep and 150 ms of
    computing in a callback are both seen, and a loop that only waits is
    not blamed for its idle time."""

    async def main() -> tuple[float, float, float]:
        beat = LoopWatch(asyncio.get_running_loop())
        await beat.next_turn()
        time.sleep(0.15)  # the blocking call being detected (not synchronisation)
        await beat.next_turn()
        slept = beat.stop()
        beat = LoopWatch(asyncio.get_running_loop())
        await beat.next_turn()
        until = time.thread_time() + 0.15
        while time.thread_time() < until:  # computing on the loop, also to be detected
            pass
        await beat.next_turn()
        computed = beat.stop()
        beat = LoopWatch(asyncio.get_running_loop())
        await asyncio.sleep(0.3)  # waiting in the selector: the loop is idle, not blocked
        return slept, computed, beat.stop()

    slept, computed, idle = asyncio.run(main())
    assert slept >= 0.12
    assert computed >= 0.12
    assert idle < 0.05


# ----------------------------------------------------------------- helpers


async def read_until(p: aio.AsyncProcess, end: bytes, within: float = 20.0) -> bytes:
    data = b""
    deadline = time.monotonic() + within
    while end not in data:
        chunk = await p.read(timeout=max(0.0, deadline - time.monotonic()))
        if not chunk:
            break
        data += chunk
    return data


async def cancelled_after(task: asyncio.Task[Any], started: Callable[[], Awaitable[Any]] | None = None) -> None:
    """Cancel ``task`` (once ``started`` is done, if given, else after one
    loop turn) and check CancelledError reaches the awaiting code."""
    if started is not None:
        await started()
    else:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# =================================================================== run


def test_two_hundred_concurrent_runs_in_one_loop() -> None:
    """200 aio.run at once, all correct, and the loop stays responsive.
    Tasks are created in waves of 10 with a loop turn in between, so the
    heartbeat measures blocking calls rather than the cost of creating
    200 tasks in one loop iteration; all 200 still run concurrently."""

    async def one(i: int) -> netrunner.Result:
        return await aio.run(["sh", "-c", 'cat; echo "err $1" >&2; exit $(($1 % 7))', "sh", str(i)], input=b"%d\n" % i)

    async def main() -> tuple[list[netrunner.Result], int]:
        tasks = []
        peak = 0
        for i in range(200):
            tasks.append(asyncio.create_task(one(i)))
            if i % 10 == 9:
                await asyncio.sleep(0)
                peak = max(peak, sum(not t.done() for t in tasks))
        return await asyncio.gather(*tasks), peak

    results, peak = arun(main())
    assert peak > 20, "the runs did not overlap"
    for i, r in enumerate(results):
        assert (r.stdout, r.stderr, r.returncode) == (b"%d\n" % i, b"err %d\n" % i, i % 7)
    assert len({r.pid for r in results}) == 200


def test_handshake_does_not_block_the_loop(fresh_fork_server: None) -> None:
    """Spawning (the fork server's start included) is awaited, not waited
    for: after one loop turn every spawn is still pending on its handshake
    while other tasks run; the heartbeat fixture checks no step blocked."""

    async def main() -> tuple[int, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        tasks = [asyncio.create_task(aio.spawn(["cat"], kill_timeout=1)) for _ in range(50)]
        await asyncio.sleep(0)  # every spawn task has taken its first step by now
        pending = sum(not t.done() for t in tasks)
        ticks_at_start = ticks
        procs = await asyncio.gather(*tasks)
        stop.set()
        await beat
        for p in procs:
            p.close_stdin()
        assert await asyncio.gather(*[p.wait(timeout=20) for p in procs]) == [0] * 50
        for p in procs:
            await p.aclose()
        return pending, ticks - ticks_at_start

    pending, ticks = arun(main())
    assert pending == 50, "a spawn finished its handshake without ever yielding to the loop"
    assert ticks >= 1, "no other task ran while the spawns were pending"


# ================================================================ stream
def test_stream_starts_on_first_use() -> None:
    """aio.stream() is not a coroutine: the child starts at the first
    ``__anext__`` (the sync stream starts at the call)."""

    async def main() -> None:
        s = aio.stream(["echo", "hi"])
        assert s.pid is None and s.returncode is None
        assert [c async for c in s] == [b"hi\n"]
        assert s.pid is not None and s.returncode == 0

    arun(main())


def test_stream_slow_consumer_of_fast_producer_does_not_starve_the_loop() -> None:
    """A consumer slower than ``head`` finds data waiting at every read;
    the loop must still get turns (the heartbeat fixture checks it)."""

    async def main() -> int:
        n = 0
        async for chunk in aio.stream(["head", "-c", "128M", "/dev/zero"], timeout=60):
            hashlib.sha256(chunk * 4).digest()
            n += len(chunk)
        async with await aio.spawn(["head", "-c", "128M", "/dev/zero"]) as p:
            while chunk := await p.read():
                hashlib.sha256(chunk * 4).digest()
                n += len(chunk)
        return n

    assert arun(main()) == 256 * MiB


# ========================================================== cancellation


def test_cancel_spawn_mid_handshake_leaves_nothing() -> None:
    async def main() -> None:
        for turns in range(4):
            token, env = marked_env()
            task = asyncio.create_task(aio.spawn(TERM_IGNORING, env=env, kill_timeout=0.3))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            try:
                p = await task
            except asyncio.CancelledError:
                assert processes_with(token) == []
            else:  # the handshake was already done: nothing to cancel
                await p.aclose()

    arun(main())


@pytest.mark.parametrize("method", ["wait", "read", "read_stderr", "write"])
def test_cancel_process_method_stops_group_before_cancelled_error(method: str) -> None:
    async def main() -> None:
        p = await aio.spawn(TERM_IGNORING, kill_timeout=0.3)
        assert await read_until(p, b"\n") == b"ready\n"
        call: Awaitable[Any] = {
            "wait": lambda: p.wait(),
            "read": lambda: p.read(),
            "read_stderr": lambda: p.read_stderr(),
            "write": lambda: p.write(b"x" * (4 * MiB)),  # sleep never reads: blocks
        }[method]()
        task = asyncio.ensure_future(call)
        await cancelled_after(task)
        assert_group_gone(p.pid)
        assert p.returncode == -signal.SIGKILL
        await p.aclose()

    arun(main())


def test_cancel_stop_still_finishes_the_stop() -> None:
    async def main() -> None:
        p = await aio.spawn(TERM_IGNORING, kill_timeout=5)
        assert await read_until(p, b"\n") == b"ready\n"
        task = asyncio.create_task(p.stop(grace=0.3))
        await cancelled_after(task)
        assert_group_gone(p.pid)
        await p.aclose()

    arun(main())


def test_cancel_twice_during_cleanup_still_waits_for_the_reap() -> None:
    async def main() -> None:
        p = await aio.spawn(TERM_IGNORING, kill_timeout=0.3)
        assert await read_until(p, b"\n") == b"ready\n"
        task = asyncio.ensure_future(p.wait())
        await asyncio.sleep(0)
        task.cancel()
        for _ in range(3):  # cancel again while the shielded cleanup runs
            await asyncio.sleep(0)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_group_gone(p.pid)
        await p.aclose()

    arun(main())


# ------------------------------------- cancellation at every await point
class CancelAtSuspension:
    """Drives ``coro`` and cancels the task running it just as the
    coroutine suspends for the ``n``-th time (0-based): a cancellation
    injected deterministically at one await point, whatever the timing."""

    def __init__(self, coro: Coroutine[Any, Any, Any], n: int) -> None:
        self.coro = coro
        self.n = n
        self.suspensions = 0
        self.injected = False

    def __await__(self) -> Generator[Any, Any, Any]:
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = self.coro.throw(error) if error is not None else self.coro.send(send)
            except StopIteration as stop:
                return stop.value
            if self.suspensions == self.n:
                self.injected = True
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
            self.suspensions += 1
            try:
                send, error = (yield yielded), None
            except BaseException as exc:  # delivered into the wrapped coroutine
                send, error = None, exc


Scenario = Callable[[dict[str, str], list[int]], Coroutine[Any, Any, Any]]


async def _process_scenario(env: dict[str, str], pids: list[int]) -> None:
    async with await aio.spawn(["cat"], env=env, kill_timeout=0.3) as p:
        pids.append(p.pid)
        await p.write(b"hello\n")
        assert await read_until(p, b"\n") == b"hello\n"
        p.close_stdin()
        assert await p.read() == b""
        assert await p.wait() == 0


async def _term_ignoring_scenario(env: dict[str, str], pids: list[int]) -> None:
    script = 'trap "" TERM; read x; echo "got $x"; exec cat >&2'
    async with await aio.spawn(["sh", "-c", script], env=env, kill_timeout=0.1) as p:
        pids.append(p.pid)
        await p.write(b"it\n")
        assert await read_until(p, b"\n") == b"got it\n"
        await p.write(b"to stderr\n")
        assert await p.read_stderr() == b"to stderr\n"
        p.close_stdin()
        assert await p.wait() == 0


async def _stream_scenario(env: dict[str, str], pids: list[int]) -> None:
    async with aio.stream(["sh", "-c", "echo a; echo bc; printf d"], env=env, chunk_size=2, kill_timeout=0.3) as s:
        lines = []
        async for line in s.lines():
            pids.append(s.pid or 0)
            lines.append(line)
        assert lines == [b"a\n", b"bc\n", b"d"]


async def _run_scenario(env: dict[str, str], pids: list[int]) -> None:
    r = await aio.run(["cat"], input=[b"x" * 100_000, b"y"], env=env, kill_timeout=0.3)
    pids.append(r.pid)
    assert r.stdout == b"x" * 100_000 + b"y"


SCENARIOS: dict[str, Scenario] = {
    "process": _process_scenario,
    "term-ignoring": _term_ignoring_scenario,
    "stream": _stream_scenario,
    "run": _run_scenario,
}


async def _nothing_left(token: str, pids: list[int]) -> None:
    for pid in pids:
        assert_group_gone(pid)
    assert processes_with(token) == [], "a process outlived the cancelled task"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cancellation_at_every_await_point_leaves_nothing(name: str) -> None:
    """For n = 0, 1, 2, ...: cancel at the scenario's n-th suspension, and
    check (right after CancelledError) that no process of it is left and
    that the cancellation was not swallowed.  How many times a scenario
    suspends depends on how fast its child answers, so n goes on until the
    scenario has completed unharmed CLEAN_RUNS times in a row."""
    scenario = SCENARIOS[name]
    clean_runs = 10

    async def main() -> tuple[int, int]:
        n = injected = clean = 0
        while clean < clean_runs:
            token, env = marked_env()
            pids: list[int] = []
            wrapper = CancelAtSuspension(scenario(env, pids), n)

            async def runner(wrapper: CancelAtSuspension = wrapper) -> Any:
                return await wrapper

            task = asyncio.create_task(runner())
            try:
                await task
            except asyncio.CancelledError:
                assert wrapper.injected
                injected += 1
                clean = 0
            else:
                assert not wrapper.injected, f"the cancellation at await point {n} was swallowed"
                clean += 1
            await _nothing_left(token, pids)
            n += 1
            assert n < 1000, "the scenario never completed"
        return n, injected

    _, injected = arun(main())
    assert injected >= 2


def test_cancel_during_aclose_of_a_finished_stream_is_not_swallowed() -> None:
    """The cleanup finishing first must not eat a cancellation that
    arrived while it ran."""

    async def main() -> None:
        s = aio.stream(["echo", "hi"])
        assert [c async for c in s] == [b"hi\n"]
        task = asyncio.create_task(s.aclose())
        await asyncio.sleep(0)  # the task is now awaiting its (instant) cleanup
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    arun(main())


@pytest.mark.parametrize("name", ["process", "run"])
def test_cancellation_after_n_loop_turns_leaves_nothing(name: str) -> None:
    """The same, timed by the loop instead: a helper task cancels the
    scenario after N ``sleep(0)`` turns, N = 0, 1, 2, ... until the
    scenario completes first.  This also hits the states between a waker
    firing and the task resuming."""
    scenario = SCENARIOS[name]

    async def cancel_after(task: asyncio.Task[Any], turns: int) -> bool:
        for _ in range(turns):
            await asyncio.sleep(0)
        return task.cancel()  # True: the task was still waiting, so it must see it

    async def main() -> int:
        turns = 0
        while True:
            token, env = marked_env()
            pids: list[int] = []
            task = asyncio.create_task(scenario(env, pids))
            canceller = asyncio.create_task(cancel_after(task, turns))
            try:
                await task
            except asyncio.CancelledError:
                await _nothing_left(token, pids)
                await canceller
            else:
                assert not await canceller, f"the cancellation after {turns} turns was swallowed"
                await _nothing_left(token, pids)
                return turns
            # Dense at first, then sparser: the await points are all early
            # in loop turns; later turns mostly wait on the child.
            turns += 1 if turns < 200 else 7
            assert turns < 20_000, "the scenario never completed"

    assert arun(main()) > 0


def test_replacing_the_fork_server_does_not_block_the_loop() -> None:
    # Lowering a limit makes the next spawn replace the fork server.  The
    # old one cannot exit while its shepherd still watches a child, and
    # waiting for it (or reaping it) must not happen on the loop: a thread
    # reaps it once that child is gone.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main() -> bytes:
        p = await aio.spawn(["sleep", "60"], stdin="devnull", kill_timeout=0.2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        try:
            r = await aio.run(["sh", "-c", "ulimit -n"])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await p.stop()
        return bytes(r.stdout)

    assert arun(main()).strip() == str(soft - 1).encode()
