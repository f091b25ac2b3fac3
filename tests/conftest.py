"""Leak guards for every test: no process, fd, zombie, cgroup or thread may
outlive a test.

Every process a test starts inherits ``NETRUNNER_TEST_RUN=<token>`` in its
environment (set here before anything is spawned), so leftovers are found
by scanning ``/proc`` even when they re-parented away (``setsid``, double
fork).  Processes get a bounded grace to finish dying, waited on with
pidfds, never with sleeps.
"""

from __future__ import annotations

import gc
import inspect
import os
import select
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from frontends import FRONTS, Front, make_front

import netrunner
from netrunner._launch import FORK_SERVER, OWNER_CWD

MARK_NAME = "NETRUNNER_TEST_RUN"
MARK = f"{MARK_NAME}={uuid.uuid4().hex}".encode()
os.environ[MARK_NAME] = MARK.split(b"=", 1)[1].decode()
# Processes a test leaves get this long to finish dying (a shepherd stopping
# a TERM-ignoring child waits kill_timeout, 5 s by default).
LEAK_GRACE = 12.0


def _idle_spare(pid: int, server: int) -> bool:
    """A shepherd the fork server made ahead of need: its child, with no
    children of its own (it is waiting for a SPAWN request)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == server and not children.strip()


def marked_processes() -> dict[int, str]:
    """pid -> command line of every live process carrying our marker
    (ourselves, the fork server and its idle spare shepherd excluded)."""
    server = FORK_SERVER.pid
    skip = {os.getpid(), server}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in skip or (server and _idle_spare(pid, server)):
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if MARK not in environ.split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[pid] = cmdline.strip()
    return found


def zombie_children() -> list[int]:
    """Our own children that exited and were not reaped."""
    me = str(os.getpid())
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and fields[1] == me:
            zombies.append(int(entry.name))
    return zombies


def wait_gone(pids: list[int], deadline: float) -> None:
    """Block until every pid has exited or the deadline passes (pidfds)."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            left = deadline - time.monotonic()
            if left > 0:
                select.select([fd], [], [], left)
        finally:
            os.close(fd)


def open_fds() -> set[int]:
    """Our open fds (not counting the one listdir used to read them)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds


def fork_server_fds() -> set[int]:
    """fds netrunner keeps for the whole interpreter, not per child: the
    fork server's channel and spare, and the O_PATH fd of our cwd."""
    return FORK_SERVER.fds() | OWNER_CWD.fds()


def cgroup_leaves() -> set[str]:
    """Directories under <cgroup2 mount>/netrunner (where cgroup=True goes)
    that this test process made."""
    try:
        from netrunner._cgroup import mount_point

        base = Path(mount_point()) / "netrunner"
        # Ours only (cgroup=True and the tests name leaves with our pid):
        # another test run on the machine may have leaves of its own.
        mine = str(os.getpid())
        return {str(p) for p in base.rglob("*") if p.is_dir() and mine in p.name}
    except (OSError, netrunner.CgroupError):
        return set()


# Worker threads that a library keeps idle on purpose, for its next call
# (trio's thread cache, anyio's workers, asyncio's default executor): they
# end on their own, and none of them is ours.
POOLED_THREADS = ("Trio thread", "AnyIO worker thread", "asyncio_")


def new_threads(before: set[threading.Thread], deadline: float) -> list[str]:
    """Threads started during the test and still running at ``deadline``
    (each is joined until then: one that is finishing gets the time)."""
    left = []
    for thread in threading.enumerate():
        if thread in before or thread.name.startswith(POOLED_THREADS):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread.name)
    return left


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves a process, an fd, a zombie, a cgroup or a
    thread behind."""
    gc.collect()
    # What is alive now is older than the test: freeze it, so the collect
    # after the test walks only the test's own objects.  Walking the whole
    # heap (pytest, hypothesis, trio) twice per test was 70 % of the
    # suite's CPU (user time 196 s -> 46 s, wall 315 s -> 166 s).
    gc.freeze()
    fds_before = open_fds() - fork_server_fds()
    cgroups_before = cgroup_leaves()
    threads_before = set(threading.enumerate())
    yield
    gc.collect()
    leftovers = marked_processes()
    if leftovers:
        wait_gone(list(leftovers), time.monotonic() + LEAK_GRACE)
        leftovers = marked_processes()
    problems = []
    if leftovers:
        for pid in leftovers:  # do not let one failure cascade into the next tests
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        problems.append(f"processes left running: {leftovers}")
    cgroups = cgroup_leaves() - cgroups_before
    if cgroups:
        problems.append(f"cgroups left behind: {sorted(cgroups)}")
    threads = new_threads(threads_before, time.monotonic() + LEAK_GRACE)
    if threads:
        problems.append(f"threads left running: {threads}")
    zombies = zombie_children()
    if zombies:
        problems.append(f"unreaped children: {zombies}")
    fds_after = open_fds() - fork_server_fds() - {fd for fd in fds_before}
    leaked = sorted(fds_after)
    if leaked:
        targets = {}
        for fd in leaked:
            try:
                targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                targets[fd] = "?"
        problems.append(f"fds leaked: {targets}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def fresh_fork_server() -> Iterator[None]:
    """Run the test against a fork server started for it (and let it go after)."""
    FORK_SERVER.close()
    yield
    FORK_SERVER.close()


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest) -> Front:
    """The front end a behaviour test runs through (see frontends.py):
    the blocking API, netrunner.aio on asyncio, netrunner.aio on trio."""
    if request.param == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            pytest.skip("trio is not installed (pip install trio): the trio front end is not tested")
    return make_front(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A behaviour test (an ``async def`` taking ``front``) is run by its
    front end: driven without a loop (sync), by asyncio.run or trio.run."""
    front = pyfuncitem.funcargs.get("front")
    if not isinstance(front, Front):
        return None
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        pytest.fail("a test taking `front` is written once, as an `async def`", pytrace=False)
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    front.run_test(pyfuncitem.obj(**kwargs))
    return True


__all__ = ["LEAK_GRACE", "MARK", "marked_processes", "netrunner", "wait_gone"]
