"""run() of the blocking API only: what the other front ends do not share
or what is not about the front end (input from a pipe or socket, stderr's
bound in a separate owner, exit codes, Stats units, option forms, the
process tree, KeyboardInterrupt from the input, fds held by an exception).

Behaviour every front end shares (output capture, input of every kind,
stderr modes, text mode, check, timeout and output limit with their
bounds, exec errors, validation) is in test_behaviour_run.py, run for
sync, asyncio and trio."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fork_server_fds, open_fds
from procs import pid_gone, read_fifo_line, silent_pipe

import netrunner

MiB = 1 << 20


# ------------------------------------------------------------------ stderr


def test_stderr_captured_completely_like_subprocess() -> None:
    """Below its bound, run() keeps all of stderr, as subprocess does."""
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i >&2; i=$((i+1)); done"
    ours = netrunner.run(["sh", "-c", script])
    theirs = subprocess.run(["sh", "-c", script], capture_output=True)
    assert ours.stderr == theirs.stderr
    assert len(ours.stderr) > 20000


# --------------------------------------- input that may block: a pipe, a socket


def test_a_child_that_ends_without_reading_a_silent_input_pipe_returns_at_once() -> None:
    # No timeout at all: the child's end is the end, whatever the input does.
    with silent_pipe() as quiet:
        started = time.monotonic()
        result = netrunner.run(["sh", "-c", "echo done"], input=quiet)
        elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (0, b"done\n")
    assert elapsed < 5, f"took {elapsed:.2f} s"


def test_input_from_a_pipe_and_a_socket_written_meanwhile_arrives_whole() -> None:
    data = os.urandom(3 * MiB)
    r, w = os.pipe()
    ours, theirs = socket.socketpair()

    def write_both() -> None:
        with os.fdopen(w, "wb") as out:
            for i in range(0, len(data), 100_000):
                out.write(data[i : i + 100_000])
                out.flush()
        with theirs:
            theirs.sendall(data)

    writer = threading.Thread(target=write_both)
    writer.start()
    try:
        with os.fdopen(r, "rb") as pipe_in:
            assert netrunner.run(["cat"], input=pipe_in, timeout=60).stdout == data
        with ours, ours.makefile("rb") as socket_in:
            assert netrunner.run(["cat"], input=socket_in, timeout=60).stdout == data
    finally:
        writer.join()


# ------------------------------------------------- stderr capture bounded


@pytest.mark.parametrize("bound", [None, MiB])
def test_a_400_mb_stderr_flood_leaves_the_owner_in_bounded_memory(bound: int | None) -> None:
    # The owner is a Python process of its own, so its peak RSS is its own
    # (this one's has seen everything the suite did).  Before the bound it
    # peaked at ~785 MiB; now the tail (64 MiB, or max_output_size) plus
    # one copy of it to return.
    code = (
        "import resource, sys, netrunner\n"
        "bound = eval(sys.argv[1])\n"
        "r = netrunner.run(['sh', '-c', 'head -c 400000000 /dev/zero >&2'], max_output_size=bound, timeout=120)\n"
        "dropped = getattr(r.stats, 'stderr_dropped', -1)\n"
        "print(len(r.stderr), dropped, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    src = str(Path(netrunner.__file__).resolve().parents[1])
    owner = netrunner.run(
        [sys.executable, "-c", code, repr(bound)],
        env={**os.environ, "PYTHONPATH": src},
        timeout=180,
        check=True,
    )
    kept, dropped, peak = map(int, owner.stdout.split())
    tail = 64 * MiB if bound is None else bound
    # The interpreter and netrunner take ~25 MiB; allow 64 MiB on top of
    # the two copies of the tail (400 MB would be far above either bound).
    assert peak < 2 * tail + 64 * MiB, f"owner peaked at {peak / MiB:.0f} MiB"
    assert (kept, dropped) == (tail, 400_000_000 - tail)


# ------------------------------------------------------------------- check


def test_check_returncode_method() -> None:
    result = netrunner.run(["sh", "-c", "exit 4"])
    with pytest.raises(netrunner.CalledProcessError) as info:
        result.check_returncode()
    assert info.value.returncode == 4
    netrunner.run(["true"]).check_returncode()


# -------------------------------------------------------------- returncode


def test_exit_codes_up_to_255() -> None:
    for code in (0, 1, 2, 126, 127, 128, 255):
        assert netrunner.run(["sh", "-c", f"exit {code}"]).returncode == code


# ------------------------------------------------------------ Result/Stats


def test_stats_is_frozen() -> None:
    stats = netrunner.run(["true"]).stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.returncode = 1  # type: ignore[misc]


def test_stats_max_rss_in_bytes() -> None:
    code = "b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    result = netrunner.run([sys.executable, "-c", code], timeout=60)
    assert result.returncode == 0
    assert result.stats.max_rss is not None
    assert 64 * MiB <= result.stats.max_rss < 4096 * MiB


def test_stats_cpu_times_in_seconds() -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    result = netrunner.run([sys.executable, "-c", code], timeout=60)
    stats = result.stats
    assert stats.user_time is not None and stats.system_time is not None
    assert 0.2 <= stats.user_time + stats.system_time < 30


# ---------------------------------------------------------------- cwd / env
def test_cwd_honoured(tmp_path: Path) -> None:
    expected = os.fsencode(os.path.realpath(tmp_path)) + b"\n"
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=tmp_path).stdout == expected
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=str(tmp_path)).stdout == expected
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=os.fsencode(tmp_path)).stdout == expected


def test_relative_executable_resolved_against_cwd(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho tool-ran\n")
    script.chmod(0o755)
    assert netrunner.run(["./tool"], cwd=tmp_path).stdout == b"tool-ran\n"


def test_env_empty() -> None:
    assert netrunner.run(["env"], env={}).stdout == b""


def test_env_default_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRUNNER_TEST_VALUE", "from-parent")
    result = netrunner.run(["sh", "-c", 'printf %s "$NETRUNNER_TEST_VALUE"'])
    assert result.stdout == b"from-parent"


# ------------------------------------------------------- the process tree
def test_background_grandchild_holding_stdout_does_not_block_run() -> None:
    started = time.monotonic()
    result = netrunner.run(["sh", "-c", "sleep 60 & echo hi"], timeout=30)
    assert time.monotonic() - started < 5
    assert result.returncode == 0
    assert result.stdout == b"hi\n"


def test_background_grandchild_is_killed_when_child_exits() -> None:
    result = netrunner.run(["sh", "-c", "sleep 60 & echo $!"], timeout=30)
    assert result.returncode == 0
    assert pid_gone(int(result.stdout), within=2)


def test_setsid_grandchild_is_killed_when_child_exits() -> None:
    """A grandchild that left the group (setsid) is still part of the tree."""
    result = netrunner.run(["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"], timeout=30)
    assert result.returncode == 0
    assert pid_gone(int(result.stdout), within=5)


def test_keyboard_interrupt_from_input_stops_child(tmp_path: Path) -> None:
    """Any exception leaving run() -- KeyboardInterrupt included -- stops
    the child before it propagates."""
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    seen: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b"x"
        seen.append(int(read_fifo_line(fifo, 20)))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        netrunner.run(["sh", "-c", 'echo $$ > "$1"; exec sleep 60', "sh", str(fifo)], input=chunks())
    (pid,) = seen
    assert pid_gone(pid, within=5)


def test_a_stderr_drain_cut_short_by_its_budget_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream lesson 61: force the slow path.  With a budget of one read a
    # pass, every pass over an 8 MiB stderr flood ends at the budget, and
    # only resuming on the next wake-up gets all of it (and stdout) in.
    from netrunner import _core

    monkeypatch.setattr(_core, "DRAIN_BUDGET", 1)
    calls = 0
    real = _core.ChildCore.drain_stderr

    def counted(self: Any) -> bool:
        nonlocal calls
        calls += 1
        return bool(real(self))

    monkeypatch.setattr(_core.ChildCore, "drain_stderr", counted)
    r = netrunner.run(["sh", "-c", "head -c 8388608 /dev/zero >&2; echo out"], timeout=60)
    assert (r.returncode, r.stdout, len(r.stderr)) == (0, b"out\n", 8 << 20)
    assert calls >= (8 << 20) // _core.READ_SIZE


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: netrunner.run(["false"], check=True), id="check"),
        pytest.param(lambda: netrunner.run(["sleep", "30"], timeout=0.2, kill_timeout=0.2), id="timeout"),
        pytest.param(lambda: netrunner.run(["yes"], max_output_size=1000), id="output-limit"),
    ],
)
def test_an_exception_from_run_holds_no_fd(call: Callable[[], object]) -> None:
    # The exception (and its traceback, which references run()'s frames) may
    # be kept for a long time by the caller: it must not keep the shepherd
    # socket or a pipe open with it.
    netrunner.run(["true"])  # the fork server and its spare exist already
    before = open_fds() - fork_server_fds()
    with pytest.raises(netrunner.NetRunnerError) as held:
        call()
    assert open_fds() - fork_server_fds() - before == set(), held.value
