"""pty=True: the child gets a pseudo-terminal as stdin/stdout/stderr and as
its controlling terminal; output of a child that exits at once is never
lost; the window size is the child's to read and ours to change."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import textwrap
import time

import pytest

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
