"""spawn() and Process of the blocking API only: threads sharing one
Process, a writer parked in another thread, stdin inherited from ours,
signal name forms, stopped children, reference cycles.

Behaviour every front end shares (round trips, timeouts, stderr drained,
broken pipes, signals to the group, stop's escalation, the child stopped
when the block is left or the object dropped) is in
test_behaviour_process.py, run for sync, asyncio and trio."""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from procs import pid_gone

import netrunner

MiB = 1 << 20
# A sh that ignores SIGTERM (and so does the sleep it execs), announcing
# itself once the trap is in place.
TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60']


# ----------------------------------------------------------------- helpers


def read_until(p: netrunner.Process, end: bytes, within: float = 20.0) -> bytes:
    """stdout up to and including ``end`` (or EOF), bounded in time."""
    deadline = time.monotonic() + within
    data = b""
    while end not in data:
        chunk = p.read(timeout=max(0.0, deadline - time.monotonic()))
        if not chunk:
            break
        data += chunk
    return data


def read_all(p: netrunner.Process, within: float = 20.0) -> bytes:
    deadline = time.monotonic() + within
    parts = []
    while chunk := p.read(timeout=max(0.0, deadline - time.monotonic())):
        parts.append(chunk)
    return b"".join(parts)


# --------------------------------------------------------------- basics


def test_single_thread_write_larger_than_pipes_does_not_deadlock() -> None:
    """write() keeps stdout drained meanwhile, so writing everything
    before reading anything cannot deadlock against cat."""
    data = os.urandom(6 * MiB)
    errors: list[BaseException] = []
    with netrunner.spawn(["cat"]) as p:

        def write_everything() -> None:
            try:
                p.write(data)
                p.close_stdin()
            except BaseException as exc:  # reported below
                errors.append(exc)

        # In a helper thread only so that a deadlock fails the test instead
        # of hanging it: nobody reads stdout until write() has returned.
        thread = threading.Thread(target=write_everything)
        thread.start()
        thread.join(60)
        deadlocked = thread.is_alive()
        if deadlocked:
            p.kill()  # unblocks write() with BrokenPipeError
            thread.join(20)
        assert not deadlocked, "write() deadlocked against a child blocked on a full stdout pipe"
        assert errors == []
        assert read_all(p, within=60) == data
        assert p.wait(timeout=20) == 0


# -------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [15, signal.SIGTERM, "TERM", "sigterm", "SIGTERM", "Term"], ids=repr)
def test_send_signal_forms(sig: Any) -> None:
    with netrunner.spawn(["sleep", "60"]) as p:
        p.send_signal(sig)
        assert p.wait(timeout=20) == -signal.SIGTERM


@pytest.mark.parametrize("sig", ["NOPE", "SIGFOO", 0, -15, 4096, 2.0, None], ids=repr)
def test_send_signal_invalid_is_valueerror(sig: Any) -> None:
    with netrunner.spawn(["sleep", "60"]) as p:
        with pytest.raises(ValueError):
            p.send_signal(sig)
        assert p.alive
        with pytest.raises(netrunner.TimeoutExpired):
            p.wait(timeout=0.05)


# A child and a grandchild in its process group, each with a SIGUSR1
# handler installed before it announces itself.  The child keeps running
# until the grandchild has answered, so nothing is cut short.
GROUP_SCRIPT = r"""
import os, signal

def answer(name, leave):
    def handler(signum, frame):
        os.write(1, name + b"-got-usr1\n")
        if leave:
            os._exit(0)
    return handler

signal.signal(signal.SIGUSR1, answer(b"child", False))
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGUSR1, answer(b"grandchild", True))
    os.write(1, b"grandchild-ready\n")
    while True:
        signal.pause()
os.write(1, b"child-ready\n")
os.waitpid(pid, 0)
"""


def test_send_signal_reaches_the_whole_group() -> None:
    """A grandchild in the child's group gets the signal too."""
    with netrunner.spawn([sys.executable, "-c", GROUP_SCRIPT]) as p:
        ready = b""
        while sorted(ready.splitlines()) != [b"child-ready", b"grandchild-ready"]:
            chunk = p.read(timeout=30)
            assert chunk, ready
            ready += chunk
        p.send_signal(signal.SIGUSR1)
        out = read_all(p)
        assert sorted(out.splitlines()) == [b"child-got-usr1", b"grandchild-got-usr1"]
        assert p.wait(timeout=20) == 0


# ----------------------------------------------------------------- stop


# A child whose worker (in its group) has stopped itself: see the helper.
STOPPED_CHILD = [sys.executable, str(Path(__file__).parent / "helpers" / "stopped_child.py")]


def test_stop_continues_a_stopped_child() -> None:
    """Like timeout(1): SIGTERM is followed by SIGCONT, so a stopped child
    acts on it at once instead of waiting out the grace for its SIGKILL.
    (Before the shepherd sent SIGCONT: -SIGKILL after the full 30 s.)"""
    with netrunner.spawn(STOPPED_CHILD, stdin="devnull") as p:
        worker = int(read_until(p, b"\n").split()[1])
        started = time.monotonic()
        assert p.stop(grace=30) == -signal.SIGTERM
        assert time.monotonic() - started < 10
        assert pid_gone(worker, within=0)


def test_terminate_reaches_a_stopped_child() -> None:
    """send_signal("TERM") to a stopped group is followed by SIGCONT: the
    worker dies of it (before: it stayed stopped with TERM pending)."""
    with netrunner.spawn(STOPPED_CHILD, stdin="devnull", kill_timeout=0.5) as p:
        read_until(p, b"\n")
        p.send_signal("TERM")
        assert p.wait(timeout=20) == -signal.SIGTERM


# ------------------------------------------------------------- lifetime


def test_dropped_process_in_reference_cycle_is_stopped_by_gc() -> None:
    p = netrunner.spawn(TERM_IGNORING, kill_timeout=0.3)
    assert read_until(p, b"ready\n") == b"ready\n"
    holder: dict[str, Any] = {"p": p}
    holder["self"] = holder  # only the cycle collector can free this
    pidfd = os.pidfd_open(p.pid)
    try:
        del p, holder
        gc.collect()
        # TERM is ignored: SIGKILL after kill_timeout.
        assert select.select([pidfd], [], [], 0.3 + 5)[0], "TERM-ignoring child not killed after GC"
    finally:
        os.close(pidfd)


# -------------------------------------------------------------- threads
def test_one_thread_waits_another_signals() -> None:
    with netrunner.spawn(["sleep", "60"]) as p:
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(p.wait(timeout=30)))
        thread.start()
        # The waiter blocks inside wait(); signal from here.
        p.terminate()
        thread.join(30)
        assert not thread.is_alive()
        assert results == [-signal.SIGTERM]


def test_reader_thread_and_writer_thread_interleaved() -> None:
    """Line-by-line conversation: writer in one thread, reader in another."""
    lines = [b"line %d\n" % i for i in range(2000)]
    received: list[bytes] = []
    with netrunner.spawn(["cat"]) as p:

        def reader() -> None:
            received.append(read_all(p, within=60))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for line in lines:
                p.write(line)
            p.close_stdin()
        finally:
            thread.join(60)
            if thread.is_alive():
                p.kill()
                thread.join(20)
        assert received == [b"".join(lines)]


# ---------------------------------------------------------- stdin modes


def test_stdin_inherit() -> None:
    """The child reads our own fd 0."""
    r, w = os.pipe()
    saved = os.dup(0)
    try:
        os.dup2(r, 0)
        try:
            p = netrunner.spawn(["cat"], stdin="inherit")
        finally:
            os.dup2(saved, 0)
            os.close(r)
        with p:
            os.write(w, b"from our stdin\n")
            os.close(w)
            w = -1
            assert read_all(p) == b"from our stdin\n"
            assert p.wait(timeout=20) == 0
    finally:
        os.close(saved)
        if w >= 0:
            os.close(w)


def test_stdin_inherit_alias_none() -> None:
    r, w = os.pipe()
    saved = os.dup(0)
    try:
        os.dup2(r, 0)
        try:
            p = netrunner.spawn(["sh", "-c", "read -r line; echo got:$line"], stdin=None)
        finally:
            os.dup2(saved, 0)
            os.close(r)
        with p:
            os.write(w, b"hi\n")
            assert read_all(p) == b"got:hi\n"
            assert p.wait(timeout=20) == 0
    finally:
        os.close(saved)
        os.close(w)


def test_set_window_size_needs_a_pty() -> None:
    with netrunner.spawn(["cat"]) as p:
        with pytest.raises(ValueError):
            p.set_window_size(40, 120)
        assert p.alive


# ---------------------------------------------- a writer parked in write()


def _park_a_writer(p: netrunner.Process, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Thread, list[Any]]:
    """Start a thread writing 8 MiB into a child that never reads, and
    return once that thread is about to block in poll for stdin room."""
    from netrunner import _drive

    parked = threading.Event()
    real_poll = _drive.poll_ready

    def observed(interest: list[tuple[int, int]], deadline: float | None) -> list[int]:
        if threading.current_thread() is writer and any(events & select.POLLOUT for _fd, events in interest):
            parked.set()
        return real_poll(interest, deadline)

    monkeypatch.setattr(_drive, "poll_ready", observed)
    outcome: list[Any] = []

    def write() -> None:
        try:
            p.write(b"x" * (8 * MiB))
            outcome.append("returned")
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert parked.wait(30), "the writer never had to wait"
    return writer, outcome


def test_close_stdin_fails_a_writer_parked_in_another_thread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream lesson 14: a parked writer must not hang until the child exits.
    with netrunner.spawn(["sh", "-c", "exec sleep 60"], kill_timeout=0.2) as p:
        writer, outcome = _park_a_writer(p, monkeypatch)
        p.close_stdin()
        writer.join(5)
        assert not writer.is_alive(), "write() stayed parked after close_stdin()"
        assert len(outcome) == 1 and isinstance(outcome[0], BrokenPipeError), outcome
        assert p.alive  # it was close_stdin that ended the write, not the child's exit


def test_control_calls_work_while_a_writer_is_parked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream lesson 33: a write blocked on a child that stopped reading
    # must not wedge kill() or wait() from another thread.
    with netrunner.spawn(["sh", "-c", "exec sleep 60"]) as p:
        writer, outcome = _park_a_writer(p, monkeypatch)
        started = time.monotonic()
        p.kill()
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert time.monotonic() - started < 5
        writer.join(10)
        assert not writer.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], BrokenPipeError), outcome


def test_unread_stderr_is_kept_bounded_while_every_byte_is_counted() -> None:
    # Upstream lesson 22: an 8 MiB stderr flood nobody reads costs at most
    # the 1 MiB buffer (the newest bytes), and bytes_err still counts all.
    with netrunner.spawn(["sh", "-c", "head -c 8388608 /dev/zero >&2; printf tail >&2"], stdin="devnull") as p:
        assert p.wait(timeout=60) == 0
        kept = b""
        while chunk := p.read_stderr(timeout=10):
            kept += chunk
        assert len(kept) == MiB
        assert kept.endswith(b"tail")
        assert p.stats.bytes_err == 8 * MiB + 4
        assert p.stats.stderr_dropped == 7 * MiB + 4


# ------------------------------------------------- stdio to fds and files
def test_spawn_with_stdout_elsewhere_reads_eof_at_once(tmp_path: Path) -> None:
    # stdout went to a file: read() has nothing to read and says so (b"",
    # end of file) at once rather than waiting for the child.
    with open(tmp_path / "out", "wb") as out:
        with netrunner.spawn(["sh", "-c", "cat; echo done"], stdout=out) as p:
            assert p.read() == b""
            p.write(b"typed\n")
            p.close_stdin()
            assert p.wait(timeout=30) == 0
    assert (tmp_path / "out").read_bytes() == b"typed\ndone\n"


def test_spawn_stdin_from_a_file_object_and_stderr_to_an_fd(tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b"from a file\n")
    r, w = os.pipe()
    try:
        with open(tmp_path / "in", "rb") as source:
            with netrunner.spawn(["sh", "-c", "cat >&2"], stdin=source, stderr=w) as p:
                os.close(w)
                w = -1
                assert p.wait(timeout=30) == 0
        assert os.read(r, 100) == b"from a file\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# --------------------------------------------- sessions and process groups
SESSION = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), flush=True)"


def test_start_new_session_gives_the_child_its_own_session_and_group() -> None:
    assert netrunner.run([sys.executable, "-c", SESSION]).stdout == b"False True\n"
    assert netrunner.run([sys.executable, "-c", SESSION], start_new_session=True).stdout == b"True True\n"
    # A terminal's child has a session of its own whether asked or not.
    out = netrunner.run([sys.executable, "-c", SESSION], start_new_session=True, pty=True).stdout
    assert out == b"True True\r\n"


def test_a_new_session_child_and_its_descendants_are_still_stopped() -> None:
    script = "sleep 300 & echo $!; wait"
    with netrunner.spawn(["sh", "-c", script], start_new_session=True, kill_timeout=0) as p:
        grandchild = int(read_until(p, b"\n"))
        p.stop()
    assert pid_gone(grandchild, within=5)


@pytest.mark.parametrize("value", [None, 0])
def test_process_group_none_or_zero_is_what_every_child_gets(value: int | None) -> None:
    assert netrunner.run([sys.executable, "-c", SESSION], process_group=value).stdout == b"False True\n"


@pytest.mark.parametrize(
    ("value", "error", "why"),
    [(1, ValueError, "kill radius"), (os.getpgrp(), ValueError, "kill radius"), (True, TypeError, "None or 0")],
)
def test_another_process_group_is_refused_saying_why(value: object, error: type[Exception], why: str) -> None:
    with pytest.raises(error, match=why):
        netrunner.spawn(["true"], process_group=value)  # type: ignore[arg-type]
    with pytest.raises(error, match=why):
        netrunner.run(["true"], process_group=value)  # type: ignore[arg-type]


def _open_sockets() -> int:
    where = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = 0
        for name in os.listdir(where):
            try:
                found += os.readlink(name, dir_fd=where).startswith("socket:")
            except OSError:  # (our own directory fd, closed by listdir's end)
                pass
        return found
    finally:
        os.close(where)


@pytest.mark.parametrize("how", ["wait", "stop", "alive"])
def test_a_reaped_process_that_is_kept_holds_no_shepherd_socket(how: str) -> None:
    """A service keeps finished Process objects (a job table, a history):
    once the exit is reported the shepherd has nothing more to say (no
    cgroup to remove), so a kept Process must not hold its socket, as a
    kept ``subprocess.Popen`` holds no fd after ``wait()``.  Otherwise 1000
    kept jobs are 1000 fds: EMFILE at the usual limit."""
    netrunner.run(["true"])  # the fork server and its spare exist before the count
    before = _open_sockets()
    kept: list[netrunner.Process] = []
    try:
        for _ in range(5):
            argv = ["sleep", "60"] if how == "stop" else ["true"]
            proc = netrunner.spawn(argv, stdin="devnull", stdout="devnull", stderr="devnull")
            kept.append(proc)
            if how == "wait":
                assert proc.wait(timeout=60) == 0
            elif how == "stop":
                assert proc.stop() == -signal.SIGTERM
            else:  # polled, as a service's job table does: the exit is seen on the socket
                sock = proc._core.sock  # (None already if EXITED came with STARTED)
                if sock is not None:
                    assert select.select([sock], [], [], 60)[0], "no exit report"
                assert not proc.alive and proc.returncode == 0
        assert _open_sockets() - before <= 1  # (a spare shepherd may have been made meanwhile)
    finally:
        for proc in kept:
            proc.close()
