"""End-to-end tests of the no-orphan promise.

Real processes, real signals, real kills.  Nothing here waits with sleeps:
children announce themselves (``ROLE PID`` lines written once their traps
are installed), and "gone" is observed with pidfds against a deadline.  A
pidfd becomes readable when the process exits, zombie or not; the only
processes of ours to reap here are the owner interpreters, which the tests
reap themselves.  The timing bounds are the spec's (``kill_timeout + 1 s``,
``timeout + kill_timeout + 0.5 s``, "within a second").
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import gc
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import read_fifo_line

import netrunner
from netrunner._launch import FORK_SERVER

OWNER = Path(__file__).resolve().parent / "helpers" / "promise_owner.py"
SRC = str(Path(netrunner.__file__).resolve().parent.parent)
TOKEN_KEY = "NR_PROMISE_TOKEN"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
REPORT_WAIT = 30.0  # how long an owner may take to start everything (noisy box)


# --------------------------------------------------------------- helpers
def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command (state, ppid, pgrp,
    session, ...), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def parent_of(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[1])


def ignores_term(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    raise AssertionError(f"no SigIgn line for pid {pid}")


def describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    fields = stat_fields(pid)
    state = "gone" if fields is None else f"state={fields[0]} ppid={fields[1]} pgrp={fields[2]} sid={fields[3]}"
    return f"{pid} [{cmd}] {state}"


def with_token(env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """A fresh marker for the environment of one test's children."""
    token = uuid.uuid4().hex
    return token, {**os.environ, **(env or {}), TOKEN_KEY: token}


def carrying(token: str) -> list[str]:
    """Live processes whose environment carries ``token`` (zombies have no
    environment left, and are dead)."""
    needle = f"{TOKEN_KEY}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(describe(int(entry.name)))
        except OSError:
            continue
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields is not None and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(name))
    return members


def children_of(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            kids |= {int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return kids


class PidWatch:
    """pidfds for a set of processes, opened while they are known to run
    (so a recycled pid can never be mistaken for one of them)."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}

    def __enter__(self) -> PidWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def add(self, pid: int) -> None:
        assert pid > 0 and pid not in self.fds
        try:
            self.fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            raise AssertionError(f"pid {pid} was already gone before the test acted") from None
        # A pidfd turns readable at exit, zombie or not: that means "gone"
        # only for processes that are not ours to reap.
        assert parent_of(pid) != os.getpid(), f"{describe(pid)} is our own child"
        assert self.is_alive(pid), f"pid {pid} had already exited before the test acted: {describe(pid)}"

    def is_alive(self, pid: int) -> bool:
        return not select.select([self.fds[pid]], [], [], 0)[0]

    def alive(self, timeout: float = 0) -> list[int]:
        """Watched pids still running after waiting up to ``timeout`` for
        all of them to exit."""
        return self.wait_gone(time.monotonic() + timeout)

    def wait_gone(self, deadline: float) -> list[int]:
        """Block until every watched process has exited or ``deadline``
        (monotonic) passes; returns those still running."""
        pending = {fd: pid for pid, fd in self.fds.items() if self.is_alive(pid)}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(pending), [], [], left)
            for fd in ready:
                del pending[fd]
        return sorted(pending.values())


def announcements(proc: netrunner.Process, lines: int) -> dict[str, list[int]]:
    """Read ``lines`` ``ROLE PID`` lines from the child's stdout."""
    data = b""
    while data.count(b"\n") < lines:
        chunk = proc.read(timeout=REPORT_WAIT)
        assert chunk, f"{proc.args!r} closed stdout after {data!r}"
        data += chunk
    roles: dict[str, list[int]] = {}
    for line in data.decode().splitlines():
        role, pid = line.split()
        roles.setdefault(role, []).append(int(pid))
    return roles


def parse_announcements(data: bytes) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {}
    for line in data.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            roles.setdefault(parts[0], []).append(int(parts[1]))
    return roles


@contextlib.contextmanager
def owner_process(
    tmp_path: Path, scenario: str, kill_timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """An owner interpreter running tests/helpers/promise_owner.py; yields
    (Popen, read end of its report pipe, its stderr file).  Always killed
    and reaped on the way out."""
    read_end, write_end = os.pipe()
    err_path = tmp_path / f"owner-{uuid.uuid4().hex[:8]}.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(OWNER), str(write_end), str(kill_timeout), scenario],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(write_end,),
                env=env,
            )
    finally:
        os.close(write_end)
    try:
        yield proc, read_end, err_path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
        os.close(read_end)


def read_reports(fd: int, count: int, err_path: Path) -> list[dict]:
    """``count`` JSON lines from a report pipe, waited for with select."""
    data = b""
    deadline = time.monotonic() + REPORT_WAIT
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no report from the owner within {REPORT_WAIT} s; stderr:\n{err_path.read_text()}")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"the owner died before reporting; stderr:\n{err_path.read_text()}")
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines()]


def kill_and_reap(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL an owner, reap it; returns the monotonic time of the kill."""
    killed_at = time.monotonic()
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return killed_at


def check_scenario(report: dict) -> None:
    """Before the kill: the processes really are what the scenario says
    (TERM ignored, daemons in their own sessions), so a pass means
    something."""
    pids = report["pids"]
    for key in ("ignore:ignoring", "ignore:ignoring-grandchild", "ignore-daemon:daemon"):
        for pid in pids.get(key, []):
            assert ignores_term(pid), f"{key} {describe(pid)} does not ignore SIGTERM"
    for name in ("daemon", "ignore-daemon"):
        if f"{name}:child" not in pids:
            continue
        child_sid = stat_fields(pids[f"{name}:child"][0])[3]  # type: ignore[index]
        leaders, double_forked = [], []
        for pid in pids[f"{name}:daemon"]:
            fields = stat_fields(pid)
            assert fields is not None
            assert fields[3] != child_sid, f"daemon {describe(pid)} did not leave the child's session"
            (leaders if int(fields[3]) == pid else double_forked).append(pid)
        assert len(leaders) == 1 and len(double_forked) == 1, [describe(p) for p in pids[f"{name}:daemon"]]
    for name, group in (("bg", "bg:grandchild"), ("ignore", "ignore:ignoring-grandchild")):
        for pid in pids.get(group, []):
            assert stat_fields(pid)[2] == str(pids[f"{name}:child"][0]), describe(pid)  # type: ignore[index]


def everything_in(report: dict) -> list[int]:
    pids = [pid for group in report["pids"].values() for pid in group]
    return list(dict.fromkeys(pids + report["shepherds"] + [report["fork_server"]]))


# ------------------------------------------------- 1. owner SIGKILLed, 20x
OWNER_KILL_TIMEOUT = 1.0


def owner_scenario(round_: int) -> str:
    # Every round holds a plain child, sh with background grandchildren and
    # two daemons (setsid'd, double-forked); every fifth round also a
    # TERM-ignoring child, grandchild and daemons, which costs kill_timeout.
    if round_ % 5 == 4:
        return "sleep+bg+ignore+ignore-daemon"
    return "sleep+bg+daemon"


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(20))
def test_owner_sigkill_leaves_nothing(tmp_path: Path, round_: int) -> None:
    scenario = owner_scenario(round_)
    with owner_process(tmp_path, scenario, OWNER_KILL_TIMEOUT) as (owner, report_fd, err), PidWatch() as watch:
        (report,) = read_reports(report_fd, 1, err)
        assert report["owner"] == owner.pid
        assert report["fork_server"] > 0 and len(report["shepherds"]) == len(scenario.split("+"))
        for pid in everything_in(report):
            watch.add(pid)
        check_scenario(report)

        killed_at = kill_and_reap(owner)
        deadline = killed_at + OWNER_KILL_TIMEOUT + 1.0
        left = watch.wait_gone(deadline)
        waited = time.monotonic() - killed_at
        assert not left, (
            f"{scenario}: still running {waited:.2f} s after the owner was SIGKILLed "
            f"(kill_timeout {OWNER_KILL_TIMEOUT}): {[describe(p) for p in left]}"
        )


def test_owner_sigkill_ends_a_stopped_child_well_within_kill_timeout(tmp_path: Path) -> None:
    """Owner loss sends SIGTERM then SIGCONT: a stopped worker dies of the
    TERM at once (before: it stayed stopped until the SIGKILL, 30 s on)."""
    kill_timeout = 30.0
    with owner_process(tmp_path, "stopped", kill_timeout) as (owner, report_fd, err), PidWatch() as watch:
        (report,) = read_reports(report_fd, 1, err)
        (child,) = report["pids"]["stopped:child"]
        (worker,) = report["pids"]["stopped:stopped"]
        assert stat_fields(worker)[0] == "T", describe(worker)  # type: ignore[index]
        watch.add(child)
        watch.add(worker)
        killed_at = kill_and_reap(owner)
        left = watch.wait_gone(killed_at + 10.0)
        assert not left, [describe(p) for p in left]


# ------------------------------------------------- 2. shepherd SIGKILLed
def test_shepherd_sigkill_kills_the_group_and_wait_raises() -> None:
    script = (
        'trap "" TERM; sleep 60 & echo "grandchild $!"; sleep 60 & echo "grandchild $!"; '
        'setsid sh -c "$NR_DAEMON" & echo "sh $$"; exec sleep 60'
    )
    _, env = with_token({"NR_DAEMON": 'echo "daemon $$"; exec sleep 60'})
    with netrunner.spawn(["sh", "-c", script], env=env, stdin="devnull") as p, PidWatch() as watch:
        roles = announcements(p, 4)
        assert roles["sh"] == [p.pid]
        shepherd = parent_of(p.pid)
        assert shepherd not in (os.getpid(), FORK_SERVER.pid, 1)
        watch.add(p.pid)
        for pid in roles["grandchild"] + roles["daemon"]:
            watch.add(pid)
        assert set(roles["grandchild"]) | {p.pid} <= set(group_members(p.pid))

        killed_at = time.monotonic()
        os.kill(shepherd, signal.SIGKILL)
        # Nobody calls into p: the fork server (or whatever layer) must act alone.
        left = watch.wait_gone(killed_at + 1.0)
        assert not left, f"still running 1 s after the shepherd died: {[describe(x) for x in left]}"
        assert not group_members(p.pid), [describe(x) for x in group_members(p.pid)]

        started = time.monotonic()
        with pytest.raises(netrunner.ShepherdError):
            p.wait(timeout=10)
        assert time.monotonic() - started < 1.0, "wait() took long to notice the shepherd was gone"
        assert not p.alive


# ------------------------------------------- 3. owner forks, parent dies
@pytest.mark.slow
def test_fork_of_the_owner_does_not_keep_children_alive(tmp_path: Path) -> None:
    kill_timeout = 1.0
    with owner_process(tmp_path, "sleep+bg+ignore+fork", kill_timeout) as (owner, report_fd, err), PidWatch() as watch:
        reports = read_reports(report_fd, 2, err)
        (report,) = [r for r in reports if "owner" in r]
        (forked,) = [r for r in reports if "owner" not in r]
        assert forked["fork"] == report["fork"] and forked["echo"] == "fork-ok"
        for pid in everything_in(report):
            watch.add(pid)
        watch.add(report["fork"])
        watch.add(forked["fork_server"])  # the fork's own, started by its run()
        check_scenario(report)

        killed_at = kill_and_reap(owner)
        watch_children = [pid for pid in watch.fds if pid not in (report["fork"], forked["fork_server"])]
        left = [pid for pid in watch.wait_gone(killed_at + kill_timeout + 1.0) if pid in watch_children]
        assert not left, f"the fork kept the parent's children alive: {[describe(p) for p in left]}"
        assert watch.is_alive(report["fork"]), "the fork died with its parent: the test proved nothing"

        # Let the fork go (EOF on the stdin it shares with the dead parent).
        assert owner.stdin is not None
        owner.stdin.close()
        left = watch.wait_gone(time.monotonic() + 10.0)
        assert not left, [describe(p) for p in left]


# ---------------------------------------- 4. 64 threads, each its own cat
def test_64_threads_each_get_their_own_data_back() -> None:
    count = 64
    barrier = threading.Barrier(count)
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        data = f"thread {i}\n".encode() + os.urandom(100_000 + 997 * i)
        try:
            barrier.wait(timeout=30)
            result = netrunner.run(["cat"], input=data, timeout=30)
            results[i] = (result.stdout == data and result.returncode == 0) or (
                f"rc={result.returncode} got {len(result.stdout)} bytes, want {len(data)}"
            )
        except BaseException as exc:  # reported below
            results[i] = repr(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a run() never returned: a sibling kept its stdin open?"
    bad = {i: r for i, r in results.items() if r is not True}
    assert len(results) == count and not bad, bad


# ------------------------------------- 5. 1,000 runs leak no fd or child
@pytest.mark.slow
def test_1000_runs_leave_fds_and_children_unchanged() -> None:
    netrunner.run(["/bin/true"])  # the fork server exists from here on
    gc.collect()
    server = FORK_SERVER.pid
    fds_before = sorted(os.listdir("/proc/self/fd"))
    kids_before = children_of(os.getpid())
    for _ in range(1000):
        result = netrunner.run(["/bin/true"])
        assert result.returncode == 0
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    assert children_of(os.getpid()) == kids_before
    assert FORK_SERVER.pid == server, "the fork server was restarted"
    # The server reaps each shepherd as it goes: at most the last few may
    # still be finishing, never a pile of a thousand zombies.
    assert len(children_of(server)) <= 8, [describe(p) for p in children_of(server)]


# --------------------------- 6. context exit, garbage collection, Ctrl-C
IGNORING = 'trap "" TERM; sleep 60 & echo "grandchild $!"; echo "ready $$"; wait'


@pytest.mark.parametrize("how", ["normal", "exception"])
def test_context_exit_stops_the_child_before_returning(how: str) -> None:
    class Boom(Exception):
        pass

    with PidWatch() as watch:
        try:
            with netrunner.spawn(["sh", "-c", IGNORING], kill_timeout=0.3, stdin="devnull") as p:
                roles = announcements(p, 2)
                watch.add(p.pid)
                watch.add(roles["grandchild"][0])
                assert ignores_term(p.pid) and ignores_term(roles["grandchild"][0])
                if how == "exception":
                    raise Boom
            left = watch.alive()  # first thing after the with statement
        except Boom:
            left = watch.alive()  # first thing once the exception reached us
        assert not left, f"still running when the with block was left: {[describe(x) for x in left]}"
        assert p.returncode == -signal.SIGKILL


def _spawn_and_drop(watch: PidWatch, cycle: bool) -> weakref.ref[netrunner.Process]:
    p = netrunner.spawn(["sh", "-c", IGNORING], kill_timeout=0.3, stdin="devnull")
    roles = announcements(p, 2)
    watch.add(p.pid)
    watch.add(roles["grandchild"][0])
    if cycle:
        p.self_reference = p  # type: ignore[attr-defined]
    return weakref.ref(p)  # the last strong reference goes with this frame


@pytest.mark.parametrize("cycle", [False, True], ids=["refcount", "cycle"])
def test_garbage_collection_stops_the_child(cycle: bool) -> None:
    with PidWatch() as watch:
        gc.disable()  # so only the collect() below can reclaim the cycle
        try:
            ref = _spawn_and_drop(watch, cycle)
            dropped_at = time.monotonic()
            assert (ref() is not None) == cycle
        finally:
            gc.enable()
        gc.collect()
        assert ref() is None
        left = watch.wait_gone(dropped_at + 0.3 + 1.0)
        assert not left, f"still running after the Process was collected: {[describe(x) for x in left]}"


def test_keyboard_interrupt_in_run_stops_the_child_first() -> None:
    # The child reads its input first: run() writes input only from inside
    # its wait loop, so the SIGINT arrives while run() is waiting on it.
    script = 'trap "" TERM; read line; sleep 60 & kill -INT "$NR_TEST_PID"; wait'
    token, env = with_token({"NR_TEST_PID": str(os.getpid())})
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            netrunner.run(["sh", "-c", script], input=b"go\n", env=env, kill_timeout=0.3, timeout=30)
        left = carrying(token)
        elapsed = time.monotonic() - started
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not left, f"KeyboardInterrupt reached the caller before the child was stopped: {left}"
    # The child ignores TERM: it can only be gone if run() waited out the
    # kill_timeout and the SIGKILL before re-raising.
    assert elapsed >= 0.3 - 0.05


def _interrupted_run(script: str) -> tuple[list[str], str]:
    """One run() that the child interrupts; (processes of it still running
    when KeyboardInterrupt reached us, where the interrupt was raised)."""
    token, env = with_token({"NR_TEST_PID": str(os.getpid())})
    with pytest.raises(KeyboardInterrupt) as info:
        netrunner.run(["sh", "-c", script], env=env, kill_timeout=0.05, timeout=10)
    left = carrying(token)
    frame = info.traceback[-1]
    return left, f"{Path(str(frame.path)).name}:{frame.lineno + 1}"


def test_keyboard_interrupt_at_any_point_of_the_spawn_stops_the_child() -> None:
    # Here the child interrupts us the moment it runs, so the SIGINT lands
    # anywhere from the spawn handshake (STARTED not yet read, or read but
    # not yet recorded) to the wait loop; where exactly is up to the
    # scheduler, hence the repetitions.  Whatever the spot, the TERM-ignoring
    # child must already be dead when the exception reaches us.
    script = 'trap "" TERM; sleep 60 & kill -INT "$NR_TEST_PID"; wait'
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for attempt in range(25):
            left, where = _interrupted_run(script)
            assert not left, f"attempt {attempt}: KeyboardInterrupt raised at {where} reached us while {left} ran"
            # Finalizers of this attempt run now, not inside the next one's
            # window (CPython drops a KeyboardInterrupt raised in __del__).
            gc.collect()
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_when_ready(fifo: Path) -> Callable[..., Any]:
    """A stand-in for one step between a child that runs and a caller that
    holds it: it waits until the child says it ignores SIGTERM (so only a
    stop that waits out kill_timeout and sends SIGKILL can have it gone by
    the time we look), then raises KeyboardInterrupt."""

    def interrupt(*_args: object, **_kwargs: object) -> Any:
        assert read_fifo_line(fifo, 15) == b"ready\n"
        raise KeyboardInterrupt

    return interrupt


# What each front end runs from the moment the request is out until the
# caller holds its object: the spare shepherd for the next spawn is asked
# for, the core is made from STARTED, then the caller's own object(s).
_HANDOVER = ["_core.prepare_spare", "_core.ChildCore"]
_OWNER_OBJECTS = {
    "run": ["_run.RunCore"],
    "aio.run": ["_run.RunCore"],  # (the same flow as run's)
    "stream": ["_stream.StreamJob", "_stream.Stream"],
    "aio.stream": ["aio.StreamJob"],
    "spawn": ["_process.Process"],
    "aio.spawn": ["aio.AsyncProcess"],
}
_WINDOWS = [(front, point) for front, objects in _OWNER_OBJECTS.items() for point in _HANDOVER + objects]


def _start_through(front: str, args: list[str], env: dict[str, str]) -> None:
    from netrunner import aio

    options: dict[str, Any] = {"env": env, "kill_timeout": 0.3}
    if front == "run":
        netrunner.run(args, input=b"", **options)
    elif front == "stream":
        for _ in netrunner.stream(args, **options):
            pass
    elif front == "spawn":
        netrunner.spawn(args, **options).close()
    elif front == "aio.run":
        asyncio.run(aio.run(args, input="in", **options))
    elif front == "aio.stream":

        async def consume() -> None:
            async for _ in aio.stream(args, **options):
                pass

        asyncio.run(consume())
    else:

        async def spawn() -> None:
            await (await aio.spawn(args, **options)).aclose()

        asyncio.run(spawn())


@pytest.mark.parametrize(("front", "point"), _WINDOWS, ids=[f"{f}-{p}" for f, p in _WINDOWS])
def test_an_interrupt_before_the_caller_holds_the_child_stops_it_first(
    front: str, point: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Every front end, every step of the hand-over: the exception reaches
    # us only once the TERM-ignoring child is stopped (SIGKILL after
    # kill_timeout) and reaped, never left to the garbage collector.
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    token, env = with_token({"NR_FIFO": str(fifo)})
    module, name = point.split(".")
    monkeypatch.setattr(importlib.import_module(f"netrunner.{module}"), name, _interrupt_when_ready(fifo))
    args = ["sh", "-c", 'trap "" TERM; echo ready > "$NR_FIFO"; exec sleep 60']
    with pytest.raises(KeyboardInterrupt):
        _start_through(front, args, env)
    left = carrying(token)
    assert not left, f"KeyboardInterrupt reached the caller while {left} ran"


# -------------- 7. timeout with a TERM-ignoring grandchild holding the pipes
TIMEOUT_CASES = {
    # grandchild in the child's group ignores TERM; the child obeys it
    "group-grandchild": ('sh -c "$NR_INNER" & echo "child $$"; wait', False),
    # both ignore TERM and the grandchild has its own session
    "setsid-grandchild": ('trap "" TERM; setsid sh -c "$NR_INNER" & echo "child $$"; wait', True),
    # double-forked daemon (re-parented to the shepherd), child obeys TERM
    "double-fork": ('(setsid sh -c "$NR_INNER" &); echo "child $$"; exec sleep 60', False),
}


@pytest.mark.parametrize("case", list(TIMEOUT_CASES))
def test_timeout_with_term_ignoring_grandchild_holding_the_pipes(case: str, tmp_path: Path) -> None:
    script, child_ignores_term = TIMEOUT_CASES[case]
    timeout, kill_timeout = 1.0, 0.5
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    inner = 'trap "" TERM; echo "grandchild $$"; echo ready > "$NR_FIFO"; exec sleep 60'
    token, env = with_token({"NR_INNER": inner, "NR_FIFO": str(fifo)})

    def until_traps_are_set() -> Iterator[bytes]:
        # run() pulls input from inside its loop, so its timeout cannot fire
        # (nor TERM be sent) before the grandchild's trap is in place; the
        # child's own trap, where there is one, comes before the grandchild.
        read_fifo_line(fifo, 15)
        yield b""

    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        netrunner.run(
            ["sh", "-c", script], env=env, input=until_traps_are_set(), timeout=timeout, kill_timeout=kill_timeout
        )
    elapsed = time.monotonic() - started
    left = carrying(token)
    assert not left, f"left behind after run() returned: {left}"
    roles = parse_announcements(info.value.stdout or b"")
    assert roles.get("child") and roles.get("grandchild"), f"the tree never started: {info.value.stdout!r}"
    assert elapsed <= timeout + kill_timeout + 0.5, f"run() took {elapsed:.2f} s"
    if child_ignores_term:
        assert elapsed >= timeout + kill_timeout - 0.05, f"{elapsed:.2f} s: SIGKILL came before kill_timeout"


# ----------------------- only fds 0, 1 and 2 reach a child, whatever runs
@pytest.mark.parametrize(
    "options",
    [{}, {"stdin": "devnull"}, {"stdin": "inherit"}, {"stderr": "stdout"}, {"stderr": "devnull"}, {"pty": True}],
    ids=["pipes", "devnull", "inherit", "stderr-stdout", "stderr-devnull", "pty"],
)
def test_a_child_holds_only_fds_0_1_2_even_while_other_threads_spawn(options: dict[str, Any]) -> None:
    # Every fd of ours is O_CLOEXEC from birth, so neither our sockets and
    # pipes nor those of spawns running in other threads at the same moment
    # can reach a child (upstream lesson 50).  The shell lists its own fds
    # once it runs commands (a look from outside right after the exec would
    # also see the dynamic loader's passing fd 3).
    found: list[tuple[str, list[int]]] = []
    errors: list[BaseException] = []

    def spawn_and_look(name: str) -> None:
        try:
            for _ in range(10):
                with netrunner.spawn(["sh", "-c", "ls /proc/$$/fd"], **options) as p:
                    out = b""
                    while chunk := p.read(timeout=30):
                        out += chunk
                    assert p.wait(timeout=30) == 0
                found.append((name, sorted(int(fd) for fd in out.split())))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=spawn_and_look, args=(f"thread {i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(found) == 80
    assert all(fds == [0, 1, 2] for _name, fds in found), [x for x in found if x[1] != [0, 1, 2]]


def _trace_driver(on_opcode: Callable[[int], None]) -> Callable[..., Any]:
    """A ``sys.settrace`` function that calls ``on_opcode(offset)`` before
    each instruction of ``drive_flow`` (an exception it raises is raised
    there, as a signal handler's would be)."""
    from netrunner import _drive

    code = _drive.drive_flow.__code__

    def opcode(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            on_opcode(frame.f_lasti)
        else:  # (3.12 takes it from the frame's first line on, not at the call)
            frame.f_trace_opcodes = True
        return opcode

    def calls(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is code:
            frame.f_trace_opcodes = True
            return opcode
        return None

    return calls


def test_an_interrupt_at_any_instruction_of_the_sync_driver_stops_the_child() -> None:
    """The sync driver's own loop is where a Ctrl-C usually lands (the
    child interrupts us while we wait in it).  An interrupt is checked for
    between bytecodes, the loop's back-edge included, and that one lay
    outside the driver's ``try``: the KeyboardInterrupt left the flow
    suspended and reached the caller with the child still running (a CI
    dry run, 1 attempt in 25).  Here a trace function raises it at each
    instruction of ``drive_flow`` that a run passes twice, on the second
    pass (the child runs by then), which is what a signal arriving there
    does."""
    from netrunner import _drive

    script = 'trap "" TERM; exec sleep 0.4'
    passes: dict[int, int] = {}

    def count(offset: int) -> None:
        passes[offset] = passes.get(offset, 0) + 1

    sys.settrace(_trace_driver(count))
    try:
        netrunner.run(["sh", "-c", script])
    finally:
        sys.settrace(None)
    # (Not at a NOP: CPython checks for signals at back-edges, calls and
    # returns, never at an instruction that does nothing.)
    nops = {i.offset for i in dis.get_instructions(_drive.drive_flow) if i.opname == "NOP"}
    if not passes:
        pytest.skip("this Python delivers no opcode trace events (3.12.1 does not)")
    loop = sorted(offset for offset, n in passes.items() if n >= 2 and offset not in nops)
    assert len(loop) > 10
    landed = 0
    for target in loop:
        token, env = with_token()
        seen = 0

        def interrupt(offset: int, target: int = target) -> None:
            nonlocal seen
            if offset == target:
                seen += 1
                if seen == 2:
                    raise KeyboardInterrupt

        sys.settrace(_trace_driver(interrupt))
        try:
            netrunner.run(["sh", "-c", script], env=env, kill_timeout=0.05)
        except KeyboardInterrupt:
            sys.settrace(None)
            landed += 1
            left = carrying(token)
            assert not left, f"an interrupt at offset {target} of drive_flow reached us while {left} ran"
        finally:
            sys.settrace(None)
        gc.collect()
    assert landed >= len(loop) // 2
