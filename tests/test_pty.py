"""pty=True: the child gets a pseudo-terminal as stdin/stdout/stderr and as
its controlling terminal; output of a child that exits at once is never
lost; the window size is the child's to read and ours to change."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import pid_gone, read_fifo_line

import netrunner
from netrunner import aio


def read_all(p: netrunner.Process, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        chunk = p.read(timeout=max(0.01, deadline - time.monotonic()))
        if not chunk:
            return out
        out += chunk


def read_until(p: netrunner.Process, marker: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        chunk = p.read(timeout=max(0.01, deadline - time.monotonic()))
        assert chunk, f"EOF before {marker!r}; got {out!r}"
        out += chunk
    return out


def test_fast_exit_output_is_never_lost() -> None:
    for _ in range(100):
        assert netrunner.run(["echo", "hi"], pty=True).stdout == b"hi\r\n"


def test_stdin_and_stdout_are_a_terminal_and_the_controlling_one() -> None:
    script = "[ -t 0 ] && echo in; [ -t 1 ] && echo out; [ -t 2 ] && echo err; tty >/dev/null && echo ctty"
    assert netrunner.run(["sh", "-c", script], pty=True).stdout.split() == [b"in", b"out", b"err", b"ctty"]


def test_default_and_requested_window_size() -> None:
    assert netrunner.run(["stty", "size"], pty=True).stdout == b"24 80\r\n"
    with netrunner.spawn(["stty", "size"], pty=True, rows=30, cols=100) as p:
        assert read_all(p) == b"30 100\r\n"
        assert p.wait() == 0


def test_set_window_size_is_seen_by_the_child() -> None:
    with netrunner.spawn(["sh", "-c", "echo ready; read x; stty size"], pty=True) as p:
        read_until(p, b"ready\r\n")
        p.set_window_size(40, 120)
        p.write(b"go\n")
        assert read_all(p).endswith(b"40 120\r\n")
        assert p.wait() == 0


def test_set_window_size_needs_a_pty_and_sane_sizes() -> None:
    with netrunner.spawn(["cat"]) as p:
        with pytest.raises(ValueError):
            p.set_window_size(10, 10)
    with netrunner.spawn(["cat"], pty=True) as p:
        with pytest.raises(ValueError):
            p.set_window_size(0, 10)


def test_close_stdin_sends_the_terminals_eof_even_mid_line() -> None:
    with netrunner.spawn(["cat"], pty=True) as p:
        p.write(b"line\n")
        p.write(b"partial")
        p.close_stdin()
        out = read_all(p)
        assert p.wait() == 0  # cat saw EOF, not a hang-up
    # the terminal's echo and cat's copy interleave as they like
    assert out.count(b"line\r\n") == 2 and out.count(b"partial") == 2


# ------------------------------------- the EOF waits for room, never dropped
LINE = b"y" * 63 + b"\n"
LINES = LINE * 100


class Quiet:
    """A pty child that turns echo off (so its output is only its own), then
    says ``ready`` through a FIFO and execs ``command``."""

    def __init__(self, tmp_path: Path, command: str) -> None:
        self.ready = tmp_path / "ready"
        os.mkfifo(self.ready)
        self.env = {**os.environ, "NR_READY": str(self.ready)}
        self.args = ["sh", "-c", 'stty -echo; echo ready > "$NR_READY"; exec ' + command]

    def wait_ready(self) -> None:
        assert read_fifo_line(self.ready, 15) == b"ready\n"


@pytest.fixture
def no_room_for_the_eof(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``stop(master)``: from now on every write to that terminal fails with
    EAGAIN, exactly as when its input is full (``tcflow(TCOOFF)``: flow
    control on our side of it), until ``end_input()`` has made its attempt
    at writing the EOF; then it takes input again (``TCOON``).  The hook is
    ``_wake_writers()``, which ``end_input()`` calls right after that
    attempt, in the old code as in the new: deterministic, where filling
    the terminal for real is not (the kernel moves its input on in a
    worker, so room comes back at moments of its own)."""
    from netrunner import _core

    stopped: list[int] = []
    wake = _core.ChildCore._wake_writers

    def wake_then_resume(core: _core.ChildCore) -> None:
        wake(core)
        while stopped:
            termios.tcflow(stopped.pop(), termios.TCOON)

    monkeypatch.setattr(_core.ChildCore, "_wake_writers", wake_then_resume)

    def stop(master: int) -> None:
        termios.tcflow(master, termios.TCOOFF)
        with pytest.raises(BlockingIOError):
            os.write(master, b"?")  # (nothing is written: the terminal is stopped)
        stopped.append(master)

    return stop


def our_terminal_master() -> int:
    """The master fd of the one terminal this process holds right now."""
    masters = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/ptmx":
                masters.append(int(name))
    assert masters, "no terminal master among our fds"
    return masters[0]


def _run_through(front: str, args: list[str], feed: Iterator[bytes], env: dict[str, str]) -> tuple[int, bytes]:
    options: dict[str, Any] = {"input": feed, "pty": True, "env": env, "timeout": 10, "kill_timeout": 0.5}
    if front == "run":
        r = netrunner.run(args, **options)
        return r.returncode, r.stdout
    if front == "stream":
        s = netrunner.stream(args, **options)
        out = b"".join(s)
        assert s.returncode is not None
        return s.returncode, out

    async def main() -> tuple[int, bytes]:
        if front == "aio.run":
            r = await aio.run(args, **options)
            return r.returncode, bytes(r.stdout)
        s = aio.stream(args, **options)
        out = b"".join([chunk async for chunk in s])
        assert s.returncode is not None
        return s.returncode, out

    return asyncio.run(main())


@pytest.mark.parametrize("front", ["run", "stream", "aio.run", "aio.stream"])
def test_the_input_writers_eof_waits_for_room_in_the_terminal(
    front: str, tmp_path: Path, no_room_for_the_eof: Callable[[int], None]
) -> None:
    # The EOF after the input was one os.write whose EAGAIN was swallowed:
    # when the input had just filled the terminal, cat never saw its EOF
    # (run(["cat"], input=<50 MiB>, pty=True) hung in 4 of 10 trials).
    child = Quiet(tmp_path, "cat")

    def feed() -> Iterator[bytes]:
        child.wait_ready()
        yield LINES
        no_room_for_the_eof(our_terminal_master())  # all of it went in; the EOF finds no room

    returncode, out = _run_through(front, child.args, feed(), child.env)
    assert returncode == 0  # cat saw the EOF (it used to time out)
    assert out == LINES.replace(b"\n", b"\r\n")  # cat's copy


def test_close_stdin_waits_for_room_in_the_terminal(tmp_path: Path, no_room_for_the_eof: Callable[[int], None]) -> None:
    child = Quiet(tmp_path, "wc -c")
    with netrunner.spawn(child.args, pty=True, env=child.env, kill_timeout=0.5) as p:
        child.wait_ready()
        p.write(LINES)
        no_room_for_the_eof(p._core.stdin.fd)
        p.close_stdin()  # waits for room (it used to drop the EOF)
        assert int(read_all(p)) == len(LINES)
        assert p.wait(timeout=10) == 0


def test_async_close_stdin_queues_the_eof_until_there_is_room(
    tmp_path: Path, no_room_for_the_eof: Callable[[int], None]
) -> None:
    child = Quiet(tmp_path, "wc -c")

    async def main() -> None:
        async with await aio.spawn(child.args, pty=True, env=child.env, kill_timeout=0.5) as p:
            child.wait_ready()
            await p.write(LINES)
            waiting = asyncio.Event()

            async def read_all_output() -> bytes:
                out = b""
                waiting.set()  # (read() registers its wait before we run again)
                while chunk := await p.read(timeout=10):
                    out += chunk
                return out

            # Another task already waits for output, which wc gives only
            # after the EOF: the queued EOF must get out without its help.
            reader = asyncio.ensure_future(read_all_output())
            await waiting.wait()
            no_room_for_the_eof(p._core.stdin.fd)
            p.close_stdin()  # not a coroutine: the EOF is queued, never dropped
            assert int(await reader) == len(LINES)
            assert await p.wait(timeout=10) == 0

    asyncio.run(main())


def test_an_async_process_dropped_while_its_eof_waits_is_still_collected_and_stopped(tmp_path: Path) -> None:
    # The task that writes the queued EOF must not keep the AsyncProcess
    # alive: dropping it stops the child, as for any AsyncProcess.
    child = Quiet(tmp_path, "sleep 60")

    async def main() -> tuple[int, asyncio.Task[None]]:
        p = await aio.spawn(child.args, pty=True, env=child.env, kill_timeout=0.5)
        child.wait_ready()
        termios.tcflow(p._core.stdin.fd, termios.TCOOFF)  # no room, for good
        p.close_stdin()
        task = p._eof_writer
        assert isinstance(task, asyncio.Task) and not task.done()
        pid = p.pid
        del p
        gc.collect()
        await asyncio.wait_for(task, 10)  # the child's fds closed: it ends
        return pid, task

    pid, task = asyncio.run(main())
    assert task.exception() is None
    assert pid_gone(pid, 10)


def test_run_input_goes_through_the_line_discipline() -> None:
    r = netrunner.run(["cat"], input=b"abc\n", pty=True)
    assert r.returncode == 0
    assert r.stdout == b"abc\r\nabc\r\n"  # echo, then cat's copy (CR LF by onlcr)
    assert r.stderr is None  # merged into the terminal


def test_python_repl_round_trip() -> None:
    # Python 3.13's new REPL redraws the line with escape sequences; the
    # basic one prints plain ">>> " prompts on every version.
    env = {**os.environ, "PYTHONSTARTUP": "", "PYTHON_BASIC_REPL": "1"}
    with netrunner.spawn([sys.executable, "-i", "-q"], pty=True, env=env) as p:
        read_until(p, b">>> ")
        p.write(b"print(6 * 7)\n")
        assert b"42\r\n" in read_until(p, b">>> ")
        p.close_stdin()
        read_all(p)
        assert p.wait() == 0


def test_stream_and_asyncio_with_a_pty() -> None:
    assert b"".join(netrunner.stream(["echo", "streamed"], pty=True)) == b"streamed\r\n"

    async def main() -> bytes:
        r = await aio.run(["echo", "async"], pty=True)
        return bytes(r.stdout)

    assert asyncio.run(main()) == b"async\r\n"


def test_owner_sigkill_with_a_pty_child_leaves_nothing() -> None:
    owner_code = textwrap.dedent(
        """
        import os, sys, netrunner
        p = netrunner.spawn(["sh", "-c", "trap '' HUP TERM; echo up; exec sleep 60"], pty=True, kill_timeout=0.5)
        assert p.read(timeout=10).startswith(b"up")
        os.write(1, b"%d\\n" % p.pid)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert owner.stdout is not None and owner.stdin is not None
    try:
        child = int(owner.stdout.readline())
        owner.kill()
        owner.wait(timeout=10)
        try:
            fd = os.pidfd_open(child)
        except ProcessLookupError:
            return
        try:
            assert select.select([fd], [], [], 0.5 + 2.0)[0], "the pty child outlived its SIGKILLed owner"
        finally:
            os.close(fd)
    finally:
        owner.stdin.close()
        owner.stdout.close()


# ------------------------------------------------------------------ echo
def test_echo_false_leaves_only_what_the_child_writes() -> None:
    # With echo (the default) the terminal copies the input back first.
    assert netrunner.run(["cat"], input=b"abc\n", pty=True).stdout == b"abc\r\nabc\r\n"
    assert netrunner.run(["cat"], input=b"abc\n", pty=True, echo=False).stdout == b"abc\r\n"


def test_echo_false_holds_from_the_childs_first_byte_on_every_front_end() -> None:
    # The child reports its terminal's settings before reading anything:
    # echo is off before it starts, not turned off later.
    probe = ["sh", "-c", "stty -a"]
    assert b"-echo " in netrunner.run(probe, pty=True, echo=False).stdout
    assert b" echo " in netrunner.run(probe, pty=True).stdout
    assert b"-echo " in b"".join(netrunner.stream(probe, pty=True, echo=False))
    with netrunner.spawn(["cat"], pty=True, echo=False) as p:
        p.write(b"ping\n")
        assert p.read(timeout=30) == b"ping\r\n"  # cat's copy only

    async def main() -> bytes:
        return (await aio.run(["cat"], input=b"x\n", pty=True, echo=False)).stdout

    assert asyncio.run(main()) == b"x\r\n"


def test_echo_false_without_a_terminal_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="echo=False needs pty=True"):
        netrunner.run(["true"], echo=False)
    with pytest.raises(TypeError, match="echo"):
        netrunner.spawn(["true"], pty=True, echo="no")  # type: ignore[arg-type]
