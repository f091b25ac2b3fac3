"""Daemon: a supervised long-running child.  Output always drained, writes
never block the caller, restarts by policy with backoff, stop bounded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procs import pid_gone

import netrunner
from netrunner import Daemon

PROMPT = 15.0


class Collector:
    """on_output that keeps everything and lets a test wait for a pattern."""

    def __init__(self) -> None:
        self.data = b""
        self.changed = threading.Condition()

    def __call__(self, chunk: bytes) -> None:
        with self.changed:
            self.data += chunk
            self.changed.notify_all()

    def wait_for(self, pattern: bytes, count: int = 1, within: float = PROMPT) -> bytes:
        with self.changed:
            assert self.changed.wait_for(lambda: self.data.count(pattern) >= count, within), self.data
            return self.data


def test_output_goes_to_on_output_and_writes_reach_stdin() -> None:
    out = Collector()
    with Daemon(["cat"], on_output=out) as d:
        assert d.alive and isinstance(d.pid, int)
        d.write(b"PING\r\n")
        d.write(b"PONG\n")
        assert out.wait_for(b"PONG\n") == b"PING\r\nPONG\n"
        pid = d.pid
    assert not d.alive and d.pid is None
    assert d.returncode == -signal.SIGTERM
    assert pid is not None and pid_gone(pid, within=5)


def test_stderr_goes_with_stdout_by_default() -> None:
    out = Collector()
    d = Daemon(["sh", "-c", "echo to-err >&2; echo to-out"], on_output=out).start()
    assert d.wait(PROMPT) == 0
    assert b"to-err\n" in out.data and b"to-out\n" in out.data


def test_restart_on_failure_with_backoff_until_max_restarts() -> None:
    out = Collector()
    d = Daemon(["sh", "-c", "echo run; exit 3"], on_output=out, restart="on-failure", max_restarts=2, backoff=0.01)
    d.start()
    assert d.wait(PROMPT) == 3
    assert d.restarts == 2 and out.data == b"run\n" * 3
    assert d.stop() == 3


def test_on_failure_does_not_restart_a_clean_exit_but_always_does() -> None:
    clean = Collector()
    d = Daemon(["echo", "once"], on_output=clean, restart="on-failure", backoff=0.01).start()
    assert d.wait(PROMPT) == 0 and d.restarts == 0 and clean.data == b"once\n"
    again = Collector()
    d = Daemon(["echo", "again"], on_output=again, restart="always", max_restarts=1, backoff=0.01).start()
    assert d.wait(PROMPT) == 0 and d.restarts == 1 and again.data == b"again\n" * 2
    sleeper = Daemon(["sleep", "60"], stop_timeout=0.2).start()
    with pytest.raises(netrunner.TimeoutExpired):
        sleeper.wait(0.05)
    assert sleeper.stop() == -signal.SIGTERM


def test_a_daemon_that_ends_on_its_own_leaves_no_thread_behind() -> None:
    # Never stop()ped: no restart is due once `true` exits.  Its stdin
    # forwarder used to wait for input forever, a thread per such Daemon.
    d = Daemon(["true"], stdin="pipe").start()
    assert d.wait(PROMPT) == 0
    ours = [t for t in threading.enumerate() if t.name.startswith("netrunner-daemon")]
    for thread in ours:
        thread.join(PROMPT)
    assert [t.name for t in ours if t.is_alive()] == []
    with pytest.raises(RuntimeError, match="not running"):
        d.write(b"late")


def test_stop_during_a_long_backoff_returns_at_once() -> None:
    out = Collector()
    d = Daemon(["echo", "bye"], on_output=out, restart="always", backoff=60).start()
    out.wait_for(b"bye\n")
    started = time.monotonic()
    # (0 once echo has exited and the 60 s backoff runs; -15 if the stop
    # came first: either way stop() must not sit out the backoff.)
    assert d.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
    assert d.restarts == 0


def test_stop_escalates_to_sigkill_within_stop_timeout() -> None:
    out = Collector()
    d = Daemon(["sh", "-c", 'trap "" TERM; echo ready; while :; do sleep 1; done'], on_output=out, stop_timeout=0.3)
    d.start()
    out.wait_for(b"ready\n")
    pid = d.pid
    started = time.monotonic()
    assert d.stop() == -signal.SIGKILL
    assert 0.3 - 0.05 <= time.monotonic() - started < 0.3 + 5
    assert pid is not None and pid_gone(pid, within=5)


def test_a_child_that_stops_reading_never_blocks_write_or_stop() -> None:
    # Upstream lesson 33: writes go through one forwarder thread.
    d = Daemon(["sh", "-c", "exec sleep 60"]).start()
    started = time.monotonic()
    for _ in range(64):
        d.write(b"x" * (1 << 20))  # far more than the pipe holds
    assert time.monotonic() - started < 5
    assert d.stop() == -signal.SIGTERM
    assert time.monotonic() - started < 10


def test_output_is_always_drained_even_when_discarded() -> None:
    # 64 MiB through 1 MiB pipes: the child finishes only if we keep reading.
    d = Daemon(["head", "-c", str(64 << 20), "/dev/zero"]).start()
    assert d.wait(60) == 0


def test_a_raising_on_output_stops_the_daemon(caplog: pytest.LogCaptureFixture) -> None:
    # Upstream lesson 35: no healthy-looking Daemon with a dead drain.
    class Boom(Exception):
        pass

    def explode(_chunk: bytes) -> None:
        raise Boom

    d = Daemon(["sh", "-c", "echo hi; exec sleep 60"], on_output=explode, restart="always").start()
    assert d.wait(PROMPT) == -signal.SIGTERM
    assert not d.alive
    assert isinstance(d.error, Boom)
    assert d.returncode == -signal.SIGTERM and d.restarts == 0
    assert "on_output" in caplog.text
    with pytest.raises(RuntimeError):
        d.write(b"late")
    d.stop()


def test_log_mode_logs_each_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netrunner.daemon")
    d = Daemon(["printf", "one\\ntwo\\nno-newline"], on_output="log").start()
    assert d.wait(PROMPT) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "netrunner.daemon"]
    assert [m.split("] ", 1)[1] for m in messages] == ["one", "two", "no-newline"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "netrunner.daemon")


def test_log_mode_logs_a_line_without_end_in_pieces_instead_of_holding_it() -> None:
    """A child that never ends its line (a progress bar redrawn with ``\\r``,
    binary output) must not make a log-mode Daemon hold all its output in
    memory for the child's whole life: the open line is logged in pieces
    of at most ``LOG_LINE_MAX`` bytes (plus one read) as it grows."""
    from netrunner._daemon import LOG_LINE_MAX

    total = 4 * LOG_LINE_MAX + 1000
    logged: list[str] = []
    all_in = threading.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage().split("] ", 1)[1])
            if sum(map(len, logged)) >= total - LOG_LINE_MAX:
                all_in.set()

    logger = logging.getLogger("netrunner.daemon")
    handler = Collect(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    script = f"head -c {total} /dev/zero | tr '\\0' x; exec sleep 60"
    d = Daemon(["sh", "-c", script], on_output="log", stop_timeout=0.1).start()
    try:
        assert all_in.wait(PROMPT), f"only {sum(map(len, logged))} of {total} bytes logged while the child ran"
    finally:
        d.stop()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "".join(logged) == "x" * total
    assert max(map(len, logged)) <= LOG_LINE_MAX + 65536


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    touch = ["touch", str(sentinel)]
    for kwargs, error in (
        ({"restart": "sometimes"}, ValueError),
        ({"on_output": "print"}, ValueError),
        ({"backoff": 0}, ValueError),
        ({"stop_timeout": -1}, ValueError),
        ({"max_restarts": -1}, ValueError),
        ({"max_restarts": 1.5}, TypeError),
        ({"timeout": 1}, TypeError),  # a run() option, not a spawn() one
    ):
        with pytest.raises(error):
            Daemon(touch, **kwargs)
    with pytest.raises(ValueError):
        Daemon([])
    with pytest.raises(FileNotFoundError):
        Daemon([str(tmp_path / "absent")]).start()
    with pytest.raises(ValueError):
        Daemon(touch, cwd="a\0b").start()
    assert not sentinel.exists()
    d = Daemon(["true"]).start()
    with pytest.raises(RuntimeError):
        d.start()
    assert d.wait(PROMPT) == 0
    assert d.stop() == 0
    assert d.stop() == 0  # twice is fine
    quiet = Daemon(["sleep", "60"], stdin="devnull").start()
    with pytest.raises(ValueError, match="stdin"):
        quiet.write(b"nowhere to go")
    assert quiet.stop() == -signal.SIGTERM
    with pytest.raises(RuntimeError):
        d.write(b"after stop")


OWNER = """
import sys, threading, netrunner
said = threading.Event()
def on_output(chunk):
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    said.set()
netrunner.Daemon(["sh", "-c", "echo $$; exec sleep 60"], on_output=on_output, kill_timeout=0.5).start()
assert said.wait(15)
"""  # and the interpreter ends with the Daemon still running


def test_a_daemon_ends_with_its_interpreter() -> None:
    # Its threads do not keep the interpreter alive, and once the owner is
    # gone the shepherd stops the child like any other.
    owner = subprocess.run([sys.executable, "-c", OWNER], capture_output=True, timeout=60)
    assert owner.returncode == 0, owner.stderr
    assert pid_gone(int(owner.stdout), within=0.5 + 5)


def test_a_lost_shepherd_counts_as_a_failure_and_is_restarted() -> None:
    out = Collector()
    d = Daemon(["sh", "-c", "echo $$; exec sleep 60"], on_output=out, restart="on-failure", backoff=0.01)
    d.start()
    first = int(out.wait_for(b"\n").split()[0])
    stat = Path(f"/proc/{first}/stat").read_text()
    os.kill(int(stat.rsplit(")", 1)[1].split()[1]), signal.SIGKILL)  # its shepherd
    second = int(out.wait_for(b"\n", count=2).split()[1])
    assert second != first and pid_gone(first, within=5)
    assert isinstance(d.error, netrunner.ShepherdError) and d.restarts == 1
    assert d.stop() == -signal.SIGTERM
