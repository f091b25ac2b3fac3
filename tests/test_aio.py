"""netrunner.aio: run / spawn -> AsyncProcess / stream on the event loop.

Same semantics as the sync API; the loop is never blocked (every test here
runs under a heartbeat that fails it when the loop stalls for 100 ms);
cancelling the task that awaits run, spawn, a process method, a stream or
the body of ``async with`` stops the child's group and reaps it *before*
CancelledError reaches the awaiting code, at every await point.

Tests are plain functions driving ``asyncio.run`` (through :func:`arun`,
which adds the heartbeat); no pytest plugin is involved.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from procs import assert_group_gone, silent_pipe

import netrunner
from netrunner import aio

T = TypeVar("T")
KiB = 1 << 10
MiB = 1 << 20
# No turn of the loop may block it for this long (see LoopWatch).
LOOP_STALL_LIMIT = 0.1
# Ignores SIGTERM, announces itself, then sleeps (exec keeps the ignore).
TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60']
# Ignores SIGTERM and never reads stdin; floods stdout (``yes`` is a second
# process in the group).
TERM_IGNORING_FLOOD = ["sh", "-c", 'trap "" TERM; yes']


# -------------------------------------------------------- loop watchdog
class LoopWatch:
    """Measures every turn of the loop: the stretch between the selector
    returning and the loop calling it again is time spent in callbacks,
    and a callback that computes or sleeps in a syscall shows up there.

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


_stalls: list[tuple[float, float]] = []  # (own stall, wall time) per loop run


def arun(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` under a :class:`LoopWatch`; the autouse
    fixture below fails the test if the loop ever stalled."""

    async def watched() -> T:
        beat = LoopWatch(asyncio.get_running_loop())
        try:
            return await main
        finally:
            beat.stop()
            _stalls.append((beat.max_gap, beat.max_wall_gap))

    return asyncio.run(watched())


@pytest.fixture(autouse=True)
def loop_never_blocked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test in this module runs its loop through :func:`arun`, and no
    turn of a loop may block it for LOOP_STALL_LIMIT (100 ms) or more."""
    _stalls.clear()
    yield
    if request.node.name == "test_heartbeat_catches_a_blocked_loop":
        return  # the watchdog's own test blocks the loop on purpose
    assert _stalls, "this test did not run an event loop through arun()"
    worst, wall = max(_stalls)
    if worst >= LOOP_STALL_LIMIT:
        pytest.fail(
            f"the event loop was blocked for {worst * 1000:.0f} ms ({wall * 1000:.0f} ms of wall time)", pytrace=False
        )


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


async def apid_gone(pid: int, within: float) -> bool:
    """:func:`pid_gone` awaited on the loop (the pidfd through add_reader)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(True))
    try:
        return await asyncio.wait_for(exited, within)
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def processes_with(token: str) -> list[int]:
    """Live processes whose environment carries ``NR_AIO_TOKEN=token``."""
    needle = f"NR_AIO_TOKEN={token}".encode()
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


def marked_env() -> tuple[str, dict[str, str]]:
    token = uuid.uuid4().hex
    return token, dict(os.environ, NR_AIO_TOKEN=token)


def write_fifo(path: Path, data: bytes) -> None:
    """Blocking: open a FIFO for writing (waits for the reader), write, close."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def fifo_line(path: Path, within: float = 20.0) -> bytes:
    """One line a child writes into the FIFO at ``path``, awaited on the loop."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        deadline = loop.time() + within
        while not data.endswith(b"\n"):
            readable = loop.create_future()
            loop.add_reader(fd, lambda f=readable: f.done() or f.set_result(None))
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(fd)
            chunk = os.read(fd, 100)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


async def read_until(p: aio.AsyncProcess, end: bytes, within: float = 20.0) -> bytes:
    data = b""
    deadline = time.monotonic() + within
    while end not in data:
        chunk = await p.read(timeout=max(0.0, deadline - time.monotonic()))
        if not chunk:
            break
        data += chunk
    return data


async def read_all(p: aio.AsyncProcess, within: float = 20.0) -> bytes:
    parts = []
    deadline = time.monotonic() + within
    while chunk := await p.read(timeout=max(0.0, deadline - time.monotonic())):
        parts.append(chunk)
    return b"".join(parts)


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
def test_run_captures_stdout_stderr_returncode() -> None:
    r = arun(aio.run(["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert isinstance(r, netrunner.Result)
    assert isinstance(r, subprocess.CompletedProcess)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert r.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert r.pid > 0
    assert r.stats.returncode == 3 and r.stats.bytes_out == 4 and r.stats.bytes_err == 4
    assert r.stats.max_rss is not None and r.stats.max_rss > 0


def test_run_text_mode_and_encoding() -> None:
    r = arun(aio.run(["printf", r"h\303\251\r\nx"], text=True))
    assert r.stdout == "hé\nx"
    r = arun(aio.run(["printf", r"\351"], encoding="latin-1"))
    assert r.stdout == "é"


def test_run_input_kinds(tmp_path: Path) -> None:
    path = tmp_path / "in"
    path.write_bytes(b"from a file")

    async def main() -> list[bytes]:
        outs = []
        for value in (b"bytes", "strs ✓", [b"it", b"er"], io.BytesIO(b"bio"), bytearray(b"ba")):
            outs.append((await aio.run(["cat"], input=value)).stdout)
        with path.open("rb") as f:
            outs.append((await aio.run(["cat"], input=f)).stdout)
        return outs

    assert arun(main()) == [b"bytes", "strs ✓".encode(), b"iter", b"bio", b"ba", b"from a file"]


@pytest.mark.parametrize("front", ["run", "stream"])
def test_a_silent_input_pipe_neither_blocks_the_loop_nor_defeats_the_timeout(front: str) -> None:
    # Reading the quiet pipe on the loop blocked it (the heartbeat fixture
    # fails a stall of 100 ms); the pipe is now waited on with add_reader.
    timeout, kill_timeout = 1.0, 0.5

    async def main(quiet: Any) -> None:
        if front == "run":
            await aio.run(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout)
        else:
            async for _ in aio.stream(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout):
                pass

    with silent_pipe() as quiet:
        started = time.monotonic()
        with pytest.raises(netrunner.TimeoutExpired):
            arun(main(quiet))
        elapsed = time.monotonic() - started
    assert elapsed <= timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"


def test_run_input_generator_64_mib_fed_concurrently() -> None:
    def gen() -> Iterator[bytes]:
        block = (b"x" * 63 + b"\n") * (MiB // 64)
        for _ in range(64):
            yield block

    r = arun(aio.run(["grep", "-c", "x"], input=gen(), timeout=60))
    assert r.stdout == b"%d\n" % (MiB)
    assert r.stats.bytes_in == 64 * MiB


def test_run_input_and_output_both_larger_than_pipes() -> None:
    data = os.urandom(8 * MiB)
    r = arun(aio.run(["cat"], input=data, timeout=60))
    assert r.stdout == data


def test_run_stdin_is_devnull_without_input() -> None:
    r = arun(aio.run(["cat"], timeout=20))
    assert r.stdout == b"" and r.returncode == 0


def test_run_exec_failures_carry_errno_and_filename(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")

    async def main() -> None:
        with pytest.raises(FileNotFoundError) as missing:
            await aio.run(["/nonexistent/netrunner-test"])
        assert missing.value.errno == 2
        assert missing.value.filename == "/nonexistent/netrunner-test"
        with pytest.raises(PermissionError) as denied:
            await aio.run([str(script)])
        assert denied.value.filename == str(script)
        with pytest.raises(FileNotFoundError) as nocwd:
            await aio.run(["true"], cwd=tmp_path / "missing")
        assert nocwd.value.filename == str(tmp_path / "missing")
        with pytest.raises(FileNotFoundError):
            await aio.spawn(["/nonexistent/netrunner-test"])
        with pytest.raises(FileNotFoundError):
            async for _ in aio.stream(["/nonexistent/netrunner-test"]):
                pass

    arun(main())


def test_run_validation_errors_before_anything_starts() -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await aio.run([])
        with pytest.raises(ValueError):
            await aio.run(["true"], timeout=0)
        with pytest.raises(ValueError):
            await aio.run(["true"], stderr="sideways")
        with pytest.raises(ValueError):
            await aio.run(["true"], max_output_size=-1)
        with pytest.raises(TypeError):
            await aio.run(["cat"], input=42)
        with pytest.raises(ValueError):
            aio.stream(["true"], chunk_size=0)
        with pytest.raises(ValueError):
            await aio.spawn(["a\0b"])

    arun(main())


def test_run_check_raises_with_output_and_stderr_tail() -> None:
    async def main() -> None:
        with pytest.raises(netrunner.CalledProcessError) as info:
            await aio.run(["sh", "-c", "echo out; echo the reason >&2; exit 5"], check=True)
        exc = info.value
        assert isinstance(exc, subprocess.CalledProcessError)
        assert (exc.returncode, exc.stdout, exc.stderr) == (5, b"out\n", b"the reason\n")
        assert "the reason" in str(exc)
        r = await aio.run(["true"], check=True)
        assert r.returncode == 0

    arun(main())


def test_run_timeout_partial_output_and_bound() -> None:
    timeout, kill_timeout = 0.5, 0.5

    async def main() -> tuple[float, netrunner.TimeoutExpired]:
        started = time.monotonic()
        with pytest.raises(netrunner.TimeoutExpired) as info:
            await aio.run(TERM_IGNORING, timeout=timeout, kill_timeout=kill_timeout)
        return time.monotonic() - started, info.value

    elapsed, exc = arun(main())
    assert timeout <= elapsed < timeout + kill_timeout + 0.5
    assert isinstance(exc, subprocess.TimeoutExpired)
    assert exc.timeout == timeout
    assert exc.stdout == b"ready\n"


def test_run_max_output_size() -> None:
    async def main() -> None:
        with pytest.raises(netrunner.OutputLimitExceeded) as info:
            await aio.run(["yes"], max_output_size=100_000, timeout=60)
        assert info.value.stdout == b"y\n" * 50_000
        r = await aio.run(["printf", "12345"], max_output_size=5)
        assert r.stdout == b"12345"

    arun(main())


@pytest.mark.parametrize(
    ("mode", "stdout", "stderr", "on_our_stderr"),
    [
        ("pipe", b"out\n", b"err\n", False),
        (subprocess.PIPE, b"out\n", b"err\n", False),
        ("stdout", b"out\nerr\n", None, False),
        (subprocess.STDOUT, b"out\nerr\n", None, False),
        ("devnull", b"out\n", None, False),
        (subprocess.DEVNULL, b"out\n", None, False),
        ("inherit", b"out\n", None, True),
        (None, b"out\n", None, True),
    ],
)
def test_run_stderr_modes(
    mode: Any, stdout: bytes, stderr: bytes | None, on_our_stderr: bool, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    r = arun(aio.run(["sh", "-c", "echo out; echo err >&2"], stderr=mode))
    assert r.stdout == stdout
    assert r.stderr == stderr
    assert (b"err" in capfdbinary.readouterr().err) is on_our_stderr


def test_run_stderr_flood_while_stdout_produced() -> None:
    script = "i=0; while [ $i -lt 20 ]; do head -c 262144 /dev/zero >&2; echo out-$i; i=$((i+1)); done"
    r = arun(aio.run(["sh", "-c", script], timeout=60))
    assert r.stdout == b"".join(b"out-%d\n" % i for i in range(20))
    assert len(r.stderr) == 20 * 262144


def test_run_cwd_env_rlimits(tmp_path: Path) -> None:
    r = arun(
        aio.run(
            ["sh", "-c", 'pwd; echo "$FOO"; ulimit -n'],
            cwd=tmp_path,
            env={"FOO": "bar", "PATH": os.environ["PATH"]},
            rlimits={"RLIMIT_NOFILE": (64, 64)},
        )
    )
    assert r.stdout == f"{tmp_path}\nbar\n64\n".encode()


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


# ================================================================= spawn
def test_spawn_round_trip_and_state() -> None:
    async def main() -> None:
        async with await aio.spawn(["sh", "-c", "echo $$; exec cat"]) as p:
            assert isinstance(p, aio.AsyncProcess)
            assert await read_until(p, b"\n") == b"%d\n" % p.pid
            assert os.getpgid(p.pid) == p.pid
            assert p.alive and p.returncode is None
            await p.write(b"hello\n")
            assert await read_until(p, b"\n") == b"hello\n"
            await p.write(bytearray(b"a\0b"))
            await p.write(memoryview(b"xyz")[:1])
            p.close_stdin()
            assert await read_all(p) == b"a\0bx"
            assert await p.read() == b""
            assert await p.wait(timeout=20) == 0
            assert not p.alive and p.returncode == 0
            assert p.stats.returncode == 0 and p.stats.bytes_in == 10

    arun(main())


def test_spawn_large_round_trip_writer_and_reader_tasks() -> None:
    data = os.urandom(8 * MiB)

    async def main() -> bytes:
        async with await aio.spawn(["cat"]) as p:

            async def writer() -> None:
                view = memoryview(data)
                for i in range(0, len(data), 256 * KiB):
                    await p.write(view[i : i + 256 * KiB])
                p.close_stdin()

            got, _ = await asyncio.gather(read_all(p, within=60), writer())
            assert await p.wait(timeout=20) == 0
            return got

    assert arun(main()) == data


def test_spawn_read_stderr_and_flood() -> None:
    async def main() -> None:
        script = "head -c 3000000 /dev/zero >&2; echo out; echo last >&2"
        async with await aio.spawn(["sh", "-c", script]) as p:
            assert await read_all(p) == b"out\n"  # stderr drained meanwhile
            assert await p.wait(timeout=20) == 0
            err = b""
            while chunk := await p.read_stderr(timeout=20):
                err += chunk
            assert err.endswith(b"\0last\n")
            assert p.stats.bytes_err == 3_000_005

    arun(main())


def test_spawn_read_and_wait_timeouts() -> None:
    async def main() -> None:
        async with await aio.spawn(["sleep", "60"], kill_timeout=1) as p:
            with pytest.raises(TimeoutError):
                await p.read(timeout=0.05)
            with pytest.raises(TimeoutError):
                await p.read_stderr(timeout=0.05)
            with pytest.raises(netrunner.TimeoutExpired):
                await p.wait(timeout=0.05)
            assert p.alive

    arun(main())


def test_spawn_write_brokenpipe() -> None:
    async def main() -> None:
        async with await aio.spawn(["cat"]) as p:
            p.close_stdin()
            with pytest.raises(BrokenPipeError):
                await p.write(b"late")
            assert await p.wait(timeout=20) == 0
        async with await aio.spawn(["sh", "-c", "exec 0<&-; echo closed; exec sleep 60"], kill_timeout=1) as p:
            assert await read_until(p, b"\n") == b"closed\n"
            with pytest.raises(BrokenPipeError):
                await p.write(b"x" * (2 * MiB))

    arun(main())


def test_spawn_send_signal_terminate_kill() -> None:
    async def main() -> None:
        # ``wait`` returns at once when a trapped signal arrives (POSIX); the
        # group's USR1 also ends the background sleep, and the loop goes on.
        script = 'trap "echo usr1" USR1; echo ready; while :; do sleep 60 & wait $!; done'
        async with await aio.spawn(["sh", "-c", script], kill_timeout=1) as p:
            assert await read_until(p, b"ready\n") == b"ready\n"
            p.send_signal("usr1")
            assert await read_until(p, b"usr1\n") == b"usr1\n"
            p.send_signal(signal.SIGUSR1)
            assert await read_until(p, b"usr1\n") == b"usr1\n"
            with pytest.raises(ValueError):
                p.send_signal("NOPE")
            p.terminate()
            assert await p.wait(timeout=20) == -signal.SIGTERM
            p.kill()  # after the end: nothing to do, no error
        async with await aio.spawn(TERM_IGNORING, kill_timeout=1) as p:
            assert await read_until(p, b"\n") == b"ready\n"
            p.kill()
            assert await p.wait(timeout=20) == -signal.SIGKILL

    arun(main())


def test_spawn_stop_escalates_and_reaps() -> None:
    async def main() -> None:
        async with await aio.spawn(TERM_IGNORING, kill_timeout=30) as p:
            assert await read_until(p, b"\n") == b"ready\n"
            started = time.monotonic()
            assert await p.stop(grace=0.3) == -signal.SIGKILL
            assert 0.3 <= time.monotonic() - started < 5
            assert_group_gone(p.pid)
        async with await aio.spawn(["sleep", "60"], kill_timeout=30) as p:
            started = time.monotonic()
            assert await p.stop() == -signal.SIGTERM  # exits on TERM: no kill_timeout wait
            assert time.monotonic() - started < 5
            assert_group_gone(p.pid)

    arun(main())


def test_spawn_async_with_exit_stops_the_group() -> None:
    async def main() -> int:
        async with await aio.spawn(TERM_IGNORING, kill_timeout=0.3) as p:
            assert await read_until(p, b"\n") == b"ready\n"
            pid = p.pid
        assert_group_gone(pid)
        assert p.returncode == -signal.SIGKILL
        with pytest.raises(KeyError):
            async with await aio.spawn(TERM_IGNORING, kill_timeout=0.3) as q:
                assert await read_until(q, b"\n") == b"ready\n"
                raise KeyError("body failed")
        assert_group_gone(q.pid)
        return pid

    arun(main())


def test_spawn_garbage_collected_process_is_stopped() -> None:
    async def main() -> None:
        p = await aio.spawn(TERM_IGNORING, kill_timeout=0.3)
        assert await read_until(p, b"\n") == b"ready\n"
        pid = p.pid
        del p
        gc.collect()
        assert await apid_gone(pid, within=5), "a dropped AsyncProcess left its child running"

    arun(main())


def test_spawn_stdin_devnull_and_stderr_merged() -> None:
    async def main() -> None:
        async with await aio.spawn(["sh", "-c", "cat; echo err >&2"], stdin="devnull", stderr="stdout") as p:
            assert await read_all(p) == b"err\n"
            assert await p.wait(timeout=20) == 0

    arun(main())


# ================================================================ stream
def test_stream_chunks_returncode_stderr_stats() -> None:
    async def main() -> None:
        s = aio.stream(["sh", "-c", "echo one; echo err >&2; echo two; exit 3"], chunk_size=3)
        assert s.pid is None and s.returncode is None
        chunks = [c async for c in s]
        assert all(0 < len(c) <= 3 for c in chunks)
        assert b"".join(chunks) == b"one\ntwo\n"
        assert (s.returncode, s.stderr) == (3, b"err\n")
        assert s.stats is not None and s.stats.bytes_out == 8 and s.stats.returncode == 3
        assert [c async for c in s] == []

    arun(main())


def test_stream_chunks_arrive_as_produced(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)

    async def main() -> None:
        async with aio.stream(["sh", "-c", 'echo one; read x < "$1"; echo "two $x"', "sh", str(gate)]) as s:
            it = s.__aiter__()
            assert await it.__anext__() == b"one\n"
            # A blocking open (it waits for the child to open its end) in a
            # worker thread, not on the loop.
            await asyncio.to_thread(write_fifo, gate, b"go\n")
            assert await it.__anext__() == b"two go\n"
            assert [c async for c in it] == []
        assert s.returncode == 0

    arun(main())


def test_stream_lines_across_chunk_boundaries() -> None:
    data = b"alpha\nbeta\n\ngamma delta\r\nlast without newline"

    async def main() -> None:
        for size in (1, 2, 3, 5, 64):
            lines = [line async for line in aio.stream(["printf", "%s", data], chunk_size=size).lines()]
            assert lines == data.splitlines(keepends=True), size
        assert [line async for line in aio.stream(["true"]).lines()] == []

    arun(main())


def test_stream_lines_one_mib_line_no_limit() -> None:
    script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; printf tail"

    async def main() -> list[bytes]:
        return [line async for line in aio.stream(["sh", "-c", script], chunk_size=4096).lines()]

    assert arun(main()) == [b"x" * MiB + b"\n", b"tail"]


def test_stream_check_raises_after_all_chunks_and_last_line() -> None:
    async def main() -> None:
        got = []
        s = aio.stream(["sh", "-c", "echo a; echo why >&2; printf b; exit 2"], check=True, chunk_size=1)
        with pytest.raises(netrunner.CalledProcessError) as info:
            async for chunk in s:
                got.append(chunk)
        assert b"".join(got) == b"a\nb"
        assert info.value.returncode == 2 and info.value.stderr == b"why\n"
        assert s.returncode == 2
        lines = []
        with pytest.raises(netrunner.CalledProcessError):
            async for line in aio.stream(["sh", "-c", "echo a; printf b; exit 2"], check=True).lines():
                lines.append(line)
        assert lines == [b"a\n", b"b"]

    arun(main())


def test_stream_timeout_raised_by_iteration() -> None:
    timeout, kill_timeout = 0.5, 0.5

    async def main() -> tuple[float, list[bytes], int | None]:
        started = time.monotonic()
        got = []
        s = aio.stream(TERM_IGNORING, timeout=timeout, kill_timeout=kill_timeout)
        with pytest.raises(netrunner.TimeoutExpired):
            async for chunk in s:
                got.append(chunk)
        assert s.pid is not None
        assert_group_gone(s.pid)
        return time.monotonic() - started, got, s.pid

    elapsed, got, _ = arun(main())
    assert got == [b"ready\n"]
    assert timeout <= elapsed < timeout + kill_timeout + 0.5


def test_stream_input_fed_concurrently() -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * MiB

    async def main() -> None:
        s = aio.stream(["wc", "-c"], input=gen(), timeout=60)
        assert b"".join([c async for c in s]).strip() == b"%d" % (64 * MiB)
        data = os.urandom(4 * MiB)
        s = aio.stream(["cat"], input=data, chunk_size=16 * KiB, timeout=60)
        assert b"".join([c async for c in s]) == data
        s = aio.stream(["cat"], input="strs ✓")
        assert b"".join([c async for c in s]) == "strs ✓".encode()

    arun(main())


def test_stream_input_iterable_that_raises_stops_child() -> None:
    class Boom(Exception):
        pass

    def gen() -> Iterator[bytes]:
        yield b"x" * MiB
        raise Boom

    async def main() -> None:
        s = aio.stream(["sh", "-c", 'trap "" TERM; exec cat'], input=gen(), kill_timeout=5)
        started = 0.0
        with pytest.raises(Boom):
            async for _ in s:
                started = started or time.monotonic()
        assert started == 0.0 or time.monotonic() - started < 2  # SIGKILL, no kill_timeout wait
        assert s.pid is not None
        assert_group_gone(s.pid)

    arun(main())


def test_stream_stderr_flood_does_not_deadlock() -> None:
    script = "i=0; while [ $i -lt 8 ]; do head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero; i=$((i+1)); done"

    async def main() -> None:
        s = aio.stream(["sh", "-c", script], chunk_size=16 * KiB, timeout=60)
        n = 0
        async for chunk in s:
            n += len(chunk)
        assert n == 8 * MiB
        assert s.stats is not None and s.stats.bytes_err == 8 * MiB

    arun(main())


def test_stream_exit_before_drain_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "random"
    path.write_bytes(os.urandom(5_000_000))
    cmd = ["head", "-c", "5000000", str(path)]
    expected = hashlib.sha256(subprocess.run(cmd, capture_output=True, check=True).stdout).hexdigest()

    async def main() -> None:
        for _ in range(2):
            h = hashlib.sha256()
            s = aio.stream(cmd, chunk_size=1000, timeout=60)
            async for chunk in s:
                hashlib.sha256(chunk * 4).digest()  # a slow consumer
                h.update(chunk)
            assert h.hexdigest() == expected
            assert s.returncode == 0
        # All output already in the pipe and the child reaped before reading.
        small = tmp_path / "small"
        small.write_bytes(os.urandom(60_000))
        s = aio.stream(["cat", str(small)], chunk_size=7)
        it = s.__aiter__()
        first = await it.__anext__()
        assert s.pid is not None and await apid_gone(s.pid, within=20)
        rest = b"".join([c async for c in it])
        assert first + rest == small.read_bytes()

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


def test_stream_break_then_drop_kills_group() -> None:
    async def main() -> None:
        s = aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
        async for _ in s:
            break
        pid = s.pid
        assert pid is not None
        started = time.monotonic()
        del s
        gc.collect()
        assert await apid_gone(pid, within=2)
        assert time.monotonic() - started < 2

    arun(main())


def test_stream_lines_dropped_kills_group() -> None:
    async def main() -> None:
        s = aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
        lines = s.lines()
        assert await lines.__anext__() == b"y\n"
        pid = s.pid
        assert pid is not None
        del s, lines
        gc.collect()
        assert await apid_gone(pid, within=2)

    arun(main())


def test_stream_aclose_and_async_with_kill_at_once() -> None:
    async def main() -> None:
        s = aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
        await s.__anext__()
        started = time.monotonic()
        await s.aclose()
        assert time.monotonic() - started < 2
        assert s.pid is not None
        assert_group_gone(s.pid)
        assert s.returncode == -signal.SIGKILL
        await s.aclose()  # idempotent
        async with aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s2:
            async for _ in s2:
                started = time.monotonic()
                break
        assert time.monotonic() - started < 2
        assert s2.pid is not None
        assert_group_gone(s2.pid)

    arun(main())


def test_stream_consumer_exception_mid_stream_leaves_nothing() -> None:
    class ConsumerCrashed(Exception):
        pass

    async def main() -> None:
        # With async with: gone when the exception leaves the block.
        with pytest.raises(ConsumerCrashed):
            async with aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s:
                n = 0
                async for chunk in s:
                    n += len(chunk)
                    if n > MiB:
                        started = time.monotonic()
                        raise ConsumerCrashed
        assert time.monotonic() - started < 2
        assert s.pid is not None
        assert_group_gone(s.pid)
        # Without: gone once the stream is dropped.
        s2 = aio.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
        with pytest.raises(ConsumerCrashed):
            async for _ in s2.lines():
                raise ConsumerCrashed
        pid = s2.pid
        assert pid is not None
        del s2
        gc.collect()
        assert await apid_gone(pid, within=2)

    arun(main())


# ========================================================== cancellation
def test_cancel_run_stops_group_before_cancelled_error(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = 'trap "" TERM; (trap "" TERM; exec sleep 60) & echo $$ > "$1"; exec sleep 60'

    async def main() -> None:
        pid = 0

        async def started() -> None:
            nonlocal pid
            pid = int(await fifo_line(fifo))

        task = asyncio.create_task(aio.run(["sh", "-c", script, "sh", str(fifo)], kill_timeout=0.3, timeout=60))
        t0 = time.monotonic()
        await cancelled_after(task, started)
        assert_group_gone(pid)
        assert time.monotonic() - t0 >= 0.3  # it did wait kill_timeout for the TERM-ignoring child

    arun(main())


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


def test_cancel_async_for_over_stream_stops_group() -> None:
    async def main() -> None:
        s = aio.stream(TERM_IGNORING, kill_timeout=0.3)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in s:
                first.set()

        task = asyncio.create_task(consume())
        await cancelled_after(task, first.wait)
        assert s.pid is not None
        assert_group_gone(s.pid)

    arun(main())


def test_cancel_inside_async_with_body_stops_group() -> None:
    async def main() -> None:
        ready = asyncio.Event()
        pids: list[int] = []

        async def body() -> None:
            async with await aio.spawn(TERM_IGNORING, kill_timeout=0.3) as p:
                pids.append(p.pid)
                assert await read_until(p, b"\n") == b"ready\n"
                ready.set()
                await asyncio.Event().wait()  # forever: only cancellation ends it

        task = asyncio.create_task(body())
        await cancelled_after(task, ready.wait)
        assert_group_gone(pids[0])

        async def stream_body() -> None:
            async with aio.stream(TERM_IGNORING, kill_timeout=0.3) as s:
                async for _ in s:
                    pids.append(s.pid or 0)
                    ready.set()
                    await asyncio.Event().wait()

        ready.clear()
        task = asyncio.create_task(stream_body())
        await cancelled_after(task, ready.wait)
        assert_group_gone(pids[1])

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
