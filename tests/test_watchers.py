"""Watcher failure: the owner's answer to a lost, stopped or frozen shepherd
and to a stopped fork server (docs/decisions/0010-watcher-failure.md).

A shepherd is stopped by its own child (``kill -STOP $PPID``: in ``sh``,
``$PPID`` is the shepherd), so the stop lands at a known point with no
race; it is frozen (SIGCONT does nothing) by moving it into a cgroup v2
leaf of the test's own and writing ``cgroup.freeze``.  Deaths are seen on
pidfds against deadlines; a front end that could hang on the old code runs
in a thread joined with a bound, and the test continues every stopped
shepherd before it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import pid_gone

import netrunner
from netrunner import aio
from netrunner._cgroup import mount_point
from netrunner._core import NUDGE_AFTER, REPORT_MARGIN, SILENT_BOUND, TAKEOVER_GRACE
from netrunner._launch import FORK_SERVER

HELPERS = Path(__file__).resolve().parent / "helpers"
SRC = str(Path(netrunner.__file__).resolve().parent.parent)
SLACK = 3.0  # scheduling noise on a loaded 2-core machine
BOUND = 20.0  # what "never returns" is cut off at


# --------------------------------------------------------------- helpers
def stat_of(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parent_of(pid: int) -> int:
    fields = stat_of(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[1])


def continue_stopped_shepherds() -> None:
    """SIGCONT every stopped child of our fork server (a failing test's
    cleanup: the old code leaves them stopped for good)."""
    server = FORK_SERVER.pid
    if not server:
        return
    with contextlib.suppress(OSError):
        for pid in Path(f"/proc/{server}/task/{server}/children").read_text().split():
            fields = stat_of(int(pid))
            if fields is not None and fields[0] in "Tt":
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGCONT)


def bounded(call: Callable[[], Any], within: float = BOUND) -> tuple[Any, BaseException | None, float]:
    """``call()`` in a thread, joined with a bound: (result, exception,
    seconds).  Fails the test (after continuing stopped shepherds, so the
    call can end) if it does not return in time."""
    out: list[Any] = [None, None]

    def target() -> None:
        try:
            out[0] = call()
        except BaseException as exc:  # handed to the test
            out[1] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(within)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        continue_stopped_shepherds()
        thread.join(BOUND)
        pytest.fail(f"did not return within {within} s with its shepherd stopped")
    return out[0], out[1], elapsed


def announced(data: bytes) -> dict[str, int]:
    roles = {}
    for line in data.decode().splitlines():
        role, pid = line.split()
        roles[role] = int(pid)
    return roles


def read_roles(p: netrunner.Process, n: int) -> dict[str, int]:
    data = b""
    while data.count(b"\n") < n:
        chunk = p.read(timeout=BOUND)
        assert chunk, f"output ended after {data!r}"
        data += chunk
    return announced(data)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Freeze ``pid`` with the cgroup v2 freezer (SIGCONT does not thaw it);
    thaw and put it back on the way out."""
    try:
        mount = Path(mount_point())
    except (OSError, netrunner.CgroupError) as exc:
        pytest.skip(f"no cgroup v2 mount: {exc}")
    home = next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))
    leaf = mount / "netrunner" / f"{os.getpid()}-frozen-{uuid.uuid4().hex[:8]}"
    try:
        leaf.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup to freeze in: {exc}")
    try:
        (leaf / "cgroup.procs").write_text(str(pid))
        with open(leaf / "cgroup.events", "rb", buffering=0) as events:
            (leaf / "cgroup.freeze").write_text("1")
            deadline = time.monotonic() + BOUND
            poller = select.poll()
            poller.register(events, select.POLLPRI)
            while b"frozen 1" not in os.pread(events.fileno(), 4096, 0):
                left = deadline - time.monotonic()
                assert left > 0, "the freezer did not freeze the shepherd"
                poller.poll(left * 1000)
        yield
    finally:
        with contextlib.suppress(OSError):
            (leaf / "cgroup.freeze").write_text("0")
        with contextlib.suppress(OSError):
            (mount / home.lstrip("/") / "cgroup.procs").write_text(str(pid))
        leaf.rmdir()


# -------------------------------------------------- 1. shepherd lost
@pytest.mark.parametrize("front", ["sync", "aio"])
def test_lost_shepherd_without_its_fork_server_the_owner_kills_the_child_and_its_group(
    front: str, fresh_fork_server: None
) -> None:
    # The fork server first, then the shepherd: nobody is left to sweep.
    # The owner kills the child and its group through the child's pidfd,
    # and wait() says what it verified, not "the child was killed".
    script = 'sleep 60 & echo "grandchild $!"; echo "sh $$"; exec sleep 60'

    async def aio_case() -> tuple[int, dict[str, int], BaseException | None]:
        p = await aio.spawn(["sh", "-c", script], stdin="devnull")
        async with p:
            data = b""
            while data.count(b"\n") < 2:
                data += await p.read(timeout=BOUND)
            roles = announced(data)
            kill_watchers(p.pid)
            try:
                await p.wait(timeout=BOUND)
            except netrunner.ShepherdError as exc:
                return p.pid, roles, exc
            return p.pid, roles, None

    started = time.monotonic()
    if front == "aio":
        pid, roles, error = asyncio.run(aio_case())
    else:
        with netrunner.spawn(["sh", "-c", script], stdin="devnull") as p:
            roles = read_roles(p, 2)
            pid = p.pid
            kill_watchers(pid)
            started = time.monotonic()
            error = None
            try:
                p.wait(timeout=BOUND)
            except netrunner.ShepherdError as exc:
                error = exc
            assert not p.alive
    assert isinstance(error, netrunner.ShepherdError), "wait() did not raise ShepherdError"
    message = str(error)
    assert "shepherd lost" in message, message
    # The child itself died with its shepherd (PR_SET_PDEATHSIG), so the
    # owner found it dead and killed what was left of its group.
    assert (
        f"the owner killed the child (pid {pid}) and its process group" in message
        or "the child had already exited; the owner sent SIGKILL to what was left of its process group" in message
    ), message
    assert "the child was killed" not in message
    # Verified dead when wait() raised; the grandchild of its group too.
    assert pid_gone(pid, within=0), f"the child {pid} survived its lost shepherd"
    assert pid_gone(roles["grandchild"], within=2.0), "the grandchild in the child's group survived"
    assert time.monotonic() - started < BOUND


def test_a_child_dies_with_its_shepherd_even_with_no_fork_server_and_a_passive_owner(
    fresh_fork_server: None,
) -> None:
    # Both watchers SIGKILLed and the owner calls nothing: nobody is left to
    # act but the kernel, which kills the child when its parent, the
    # shepherd, dies (PR_SET_PDEATHSIG, set just before the exec).
    with netrunner.spawn(["sleep", "60"], stdin="devnull") as p:
        kill_watchers(p.pid)
        assert pid_gone(p.pid, within=BOUND), "the child outlived both of its watchers"
        with pytest.raises(netrunner.ShepherdError, match="the child had already exited"):
            p.wait(timeout=BOUND)


def kill_watchers(child: int) -> None:
    """SIGKILL the fork server, then the child's shepherd; both are gone
    (seen on pidfds) when this returns."""
    server, shepherd = FORK_SERVER.pid, parent_of(child)
    assert server and shepherd not in (server, os.getpid(), 1)
    fd = os.pidfd_open(shepherd)
    try:
        os.kill(server, signal.SIGKILL)
        assert pid_gone(server, within=BOUND)
        os.kill(shepherd, signal.SIGKILL)
        assert select.select([fd], [], [], BOUND)[0], "the shepherd survived SIGKILL"
    finally:
        os.close(fd)


# -------------------------------------- 2. shepherd stopped by its child
# The child stops its shepherd once it has read a line, i.e. after STARTED
# (the handshake's own stall is test 5's).
STOPS_ITS_SHEPHERD = ["sh", "-c", "read x; kill -STOP $PPID; echo out; exit 3"]
GO = b"go\n"


def run_front(front: str) -> int:
    if front == "run":
        r = netrunner.run(STOPS_ITS_SHEPHERD, input=GO)
        assert r.stdout == b"out\n"
        return r.returncode
    if front == "wait":
        with netrunner.spawn(STOPS_ITS_SHEPHERD) as p:
            p.write(GO)
            return p.wait()
    if front == "stream":
        s = netrunner.stream(STOPS_ITS_SHEPHERD, input=GO)
        assert b"".join(s) == b"out\n"
        assert s.returncode is not None
        return s.returncode
    if front == "aio-run":
        return asyncio.run(aio.run(STOPS_ITS_SHEPHERD, input=GO)).returncode

    async def aio_wait() -> int:
        async with await aio.spawn(STOPS_ITS_SHEPHERD) as p:
            await p.write(GO)
            return await p.wait()

    return asyncio.run(aio_wait())


@pytest.mark.parametrize("front", ["run", "wait", "stream", "aio-run", "aio-wait"])
def test_a_stopped_shepherd_is_continued_once_the_child_has_exited(front: str) -> None:
    # No timeout anywhere: the child's exit, seen on its pidfd, is what
    # makes the owner SIGCONT the silent shepherd, which then reports.
    rc, error, elapsed = bounded(lambda: run_front(front))
    assert error is None, repr(error)
    assert rc == 3
    assert elapsed < NUDGE_AFTER + SLACK


def test_a_timeout_is_a_true_bound_with_a_stopped_shepherd() -> None:
    # TimeoutExpired only once the child is dead: the STOP waits in the
    # stopped shepherd's socket, so the owner kills the child and its group.
    script = 'trap "" TERM; sleep 60 & echo "grandchild $!"; echo "sh $$"; read x; kill -STOP $PPID; exec sleep 60'
    timeout, kill_timeout = 1.0, 0.5

    def call() -> None:
        netrunner.run(["sh", "-c", script], input=GO, timeout=timeout, kill_timeout=kill_timeout)

    _, error, elapsed = bounded(call)
    assert isinstance(error, netrunner.TimeoutExpired), repr(error)
    roles = announced(error.stdout)
    assert pid_gone(roles["sh"], within=0), "TimeoutExpired while the child still ran"
    assert pid_gone(roles["grandchild"], within=2.0), "the grandchild in the child's group survived"
    assert elapsed < timeout + kill_timeout + REPORT_MARGIN + SLACK


def test_stop_continues_a_stopped_shepherd_and_kills_the_child() -> None:
    # stop()'s escalation deadline passes without EXITED: the owner
    # SIGCONTs the shepherd and SIGKILLs the child and its group; the
    # continued shepherd then reports the exit it reaped.
    script = 'trap "" TERM; echo "sh $$"; read x; kill -STOP $PPID; echo "stopped $PPID"; exec sleep 60'
    with netrunner.spawn(["sh", "-c", script]) as p:
        read_roles(p, 1)
        p.write(GO)
        # Once its kill returned the stop is pending: the shepherd runs no
        # code of its own before a SIGCONT, so it cannot take the STOP.
        read_roles(p, 1)
        rc, error, elapsed = bounded(lambda: p.stop(grace=0.5))
        assert error is None, repr(error)
        assert rc == -signal.SIGKILL
        assert elapsed < 0.5 + REPORT_MARGIN + SLACK
        assert pid_gone(p.pid, within=0)


# ------------------------------------------------- 3. shepherd frozen
@pytest.mark.slow
def test_stop_with_a_frozen_shepherd_kills_the_child_and_says_so() -> None:
    script = 'trap "" TERM; sleep 60 & echo "grandchild $!"; echo "sh $$"; exec sleep 60'
    with netrunner.spawn(["sh", "-c", script], stdin="devnull") as p:
        roles = read_roles(p, 2)
        shepherd = parent_of(p.pid)
        with frozen(shepherd):
            _, error, elapsed = bounded(lambda: p.stop(grace=0.5))
            assert isinstance(error, netrunner.ShepherdError), repr(error)
            message = str(error)
            assert f"no exit report from the shepherd (pid {shepherd})" in message, message
            assert f"the owner killed the child (pid {p.pid}) and its process group" in message, message
            assert pid_gone(p.pid, within=0)
            assert pid_gone(roles["grandchild"], within=2.0)
            assert elapsed < 0.5 + REPORT_MARGIN + TAKEOVER_GRACE + SLACK


@pytest.mark.slow
def test_wait_with_a_frozen_shepherd_after_the_child_exited_is_bounded() -> None:
    # The child exits; its shepherd, frozen, never reports and SIGCONT
    # does not help: after the bound the owner kills what is left of the
    # group and wait() says the child had exited.
    script = 'sleep 60 & echo "grandchild $!"; echo "sh $$"; read x; exit 0'
    with netrunner.spawn(["sh", "-c", script]) as p:
        roles = read_roles(p, 2)
        shepherd = parent_of(p.pid)
        with frozen(shepherd):
            p.close_stdin()
            _, error, elapsed = bounded(lambda: p.wait())
            assert isinstance(error, netrunner.ShepherdError), repr(error)
            message = str(error)
            assert f"the shepherd (pid {shepherd}) did not report the child's exit" in message, message
            assert "the child had already exited" in message, message
            assert pid_gone(roles["grandchild"], within=2.0), "the grandchild in the child's group survived"
            assert elapsed < NUDGE_AFTER + SILENT_BOUND + TAKEOVER_GRACE + SLACK


# ------------------------- 4. owner SIGKILLed with its shepherd stopped
@pytest.mark.slow
def test_owner_sigkill_with_a_stopped_shepherd_under_a_subreaper(tmp_path: Path) -> None:
    # A subreaper in the owner's session adopts the fork server, so the
    # kernel sends no orphaned-group SIGCONT; the fork server continues its
    # shepherds itself when its owner's channel closes.
    kill_timeout = 0.5
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    with open(tmp_path / "owner.stderr", "wb") as err:
        wrapper = subprocess.Popen(
            [sys.executable, str(HELPERS / "subreaper.py"), str(write_end), "--", sys.executable,
             str(HELPERS / "promise_owner.py"), str(write_end), str(kill_timeout), "sleep"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, pass_fds=(write_end,), env=env,
        )  # fmt: skip
    os.close(write_end)
    shepherd = 0
    watch: list[int] = []
    try:
        data = b""
        deadline = time.monotonic() + BOUND
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([read_end], [], [], left)[0], (tmp_path / "owner.stderr").read_text()
            chunk = os.read(read_end, 65536)
            assert chunk, (tmp_path / "owner.stderr").read_text()
            data += chunk
        report = json.loads(data)
        (child,) = report["pids"]["sleep:child"]
        (shepherd,) = report["shepherds"]
        watch = [os.pidfd_open(child)]
        os.kill(shepherd, signal.SIGSTOP)
        killed_at = time.monotonic()
        os.kill(report["owner"], signal.SIGKILL)
        gone = select.select(watch, [], [], kill_timeout + 1.0 + SLACK)[0]
        assert gone, f"the child outlived its owner by {time.monotonic() - killed_at:.1f} s (shepherd stopped)"
    finally:
        for fd in watch:
            os.close(fd)
        os.close(read_end)
        if shepherd:
            with contextlib.suppress(OSError):
                os.kill(shepherd, signal.SIGCONT)
        assert wrapper.stdin is not None
        wrapper.stdin.close()
        wrapper.wait(BOUND)


# ---------------------------------------------- 5. fork server stopped
def test_a_stopped_fork_server_does_not_stall_spawns(fresh_fork_server: None) -> None:
    # The spare is taken at once; the next spawn's shepherd is never forked
    # by a stopped server.  Each spawn is bounded by the nudge (SIGCONT to
    # the server) instead of the 30 s handshake bound.
    assert netrunner.run(["true"]).returncode == 0  # a server, and a spare, exist
    server = FORK_SERVER.pid
    os.kill(server, signal.SIGSTOP)
    try:

        def three() -> list[int]:
            return [netrunner.run(["echo", str(i)]).returncode for i in range(3)]

        rcs, error, elapsed = bounded(three)
        assert error is None, repr(error)
        assert rcs == [0, 0, 0]
        assert elapsed < 3 * NUDGE_AFTER + SLACK
    finally:
        os.kill(server, signal.SIGCONT)


def test_a_stopped_spare_shepherd_does_not_stall_a_spawn(fresh_fork_server: None) -> None:
    # The whole group of the fork server is stopped: the server and the
    # spare shepherd it forked ahead of need (whether or not that fork is
    # done yet), so the spawn's request reaches a stopped shepherd.  The
    # handshake's nudge continues the server and its children.
    assert netrunner.run(["true"]).returncode == 0
    server = FORK_SERVER.pid
    os.killpg(server, signal.SIGSTOP)
    try:
        rc, error, elapsed = bounded(lambda: netrunner.run(["sh", "-c", "exit 3"]).returncode)
        assert error is None, repr(error)
        assert rc == 3
        assert elapsed < NUDGE_AFTER + SLACK
    finally:
        os.killpg(server, signal.SIGCONT)
