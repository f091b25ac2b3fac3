"""Who a child runs as, and what it can do to the processes that watch it.

The watchers (fork server, shepherd) are a child's only supervisors: a
child that could take their sockets could forge an EXITED, or read a
later job's SPAWN request (argv and env secrets).  A child of the same
uid may reach any *dumpable* process of that uid (``pidfd_getfd``,
``ptrace``), so both watchers make themselves non-dumpable.  As root the
owner's watchers are out of reach for unprivileged children anyway, but
root's own tools could still reach them (see docs/architecture.md,
"Threat model").

The unprivileged scenarios run a whole owner interpreter as ``nobody``
(uid 65534): its fork server and shepherds run as ``nobody`` too, and so
does the hostile child, which reports what it could do as one JSON line.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import grp
import json
import os
import pwd
import queue
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import marked_processes
from procs import package_for_other_users

import netrunner
from netrunner import _options as options
from netrunner import aio
from netrunner._launch import FORK_SERVER

NOBODY = 65534
OWNER_BOUND = 120.0  # a whole owner interpreter start + run, on a loaded box

# The hostile child: it runs as the same uid as its watchers and tries to
# reach them.  pidfd_getfd has no Python wrapper (syscall 438 on every
# architecture since 5.6); PTRACE_ATTACH is 16, PTRACE_DETACH 17.
HOSTILE = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

def name(err):
    return errno.errorcode.get(err, str(err))

def getfd(pid):
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(3), ctypes.c_uint(0))
        if fd >= 0:
            os.close(fd)
            return "ok"
        return name(ctypes.get_errno())
    finally:
        os.close(pidfd)

def attach(pid):
    if libc.ptrace(16, pid, None, None) != 0:
        return name(ctypes.get_errno())
    # Attached (the code before the fix): let it go again, or the watcher
    # would stay stopped once the SIGSTOP that attaching sent lands.
    os.waitpid(pid, 0x40000000)  # __WALL
    libc.ptrace(17, pid, None, None)
    return "ok"

def kill(pid):
    try:
        os.kill(pid, 0)
        return "ok"
    except OSError as exc:
        return name(exc.errno)

def ppid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("PPid:")).split()[1])

shepherd = os.getppid()
server = ppid_of(shepherd)
with open("/proc/self/environ", "rb") as f:
    own_environ = len(f.read()) > 0
report = {
    "uid": os.getuid(),
    "shepherd_uid": os.stat(f"/proc/{shepherd}").st_uid,
    "getfd_shepherd": getfd(shepherd),
    "getfd_server": getfd(server),
    "attach_shepherd": attach(shepherd),
    "attach_server": attach(server),
    "kill_shepherd": kill(shepherd),
    # The child itself is dumpable again after its execve, as usual:
    "dumpable": libc.prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
    "proc_self_uid": os.stat("/proc/self").st_uid,
    "own_environ": own_environ,
}
print(json.dumps(report))
"""

OWNER = r"""
import json, sys, netrunner
options = json.loads(sys.argv[1])
try:
    r = netrunner.run([sys.executable, "-c", sys.argv[2]], timeout=60, **options)
except OSError as exc:
    print(json.dumps({"raised": type(exc).__name__, "errno": exc.errno}))
else:
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
"""


@functools.cache
def python_for(uid: int) -> str | None:
    """An interpreter that ``uid`` can run (ours may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import select, ctypes"], user=uid, group=uid, extra_groups=[],
                cwd="/", capture_output=True, timeout=OWNER_BOUND,
            )  # fmt: skip
        except PermissionError:  # e.g. under /root, mode 0700
            continue
        if probe.returncode == 0:
            return candidate
    return None


def run_owner_as(uid: int, child_code: str, **options: Any) -> dict[str, Any]:
    """Run an owner interpreter as ``uid`` whose netrunner.run() child runs
    ``child_code`` (in the same interpreter); return the child's JSON line."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start an owner as another user")
    python = python_for(uid)
    if python is None:
        pytest.skip(f"no Python interpreter that uid {uid} can run")
    keep = ("PATH", "NETRUNNER_TEST_RUN", "NETRUNNER_SHEPHERD")
    env = {key: value for key, value in os.environ.items() if key in keep}
    env["PYTHONPATH"] = package_for_other_users()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [python, "-c", OWNER, json.dumps(options), child_code], user=uid, group=uid, extra_groups=[],
        cwd="/", env=env, capture_output=True, timeout=OWNER_BOUND,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().splitlines()
    assert lines, proc.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


# ------------------------------------------------------ non-dumpable watchers


def test_child_of_the_same_uid_cannot_reach_its_watchers() -> None:
    """An unprivileged owner's child (same uid as its shepherd and fork
    server) can neither take their sockets nor ptrace them; it may still
    signal them (same uid), which only ends in owner-loss handling."""
    report = run_owner_as(NOBODY, HOSTILE)
    assert report["uid"] == NOBODY and report["shepherd_uid"] in (0, NOBODY)
    assert report["getfd_shepherd"] == "EPERM", report
    assert report["getfd_server"] == "EPERM", report
    assert report["attach_shepherd"] == "EPERM", report
    assert report["attach_server"] == "EPERM", report
    # The child itself is an ordinary, dumpable process of its own.
    assert report["dumpable"] == 1, report
    assert report["proc_self_uid"] == NOBODY, report
    assert report["own_environ"] is True, report


# ------------------------------------------------ user, group, extra_groups, ...

ID = ["sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"']
AS_NOBODY = {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("changing to another uid needs root")


async def _aio_run(args: list[str], **kw: Any) -> bytes:
    return (await aio.run(args, **kw)).stdout  # type: ignore[no-any-return]


async def _aio_spawn(args: list[str], **kw: Any) -> bytes:
    async with await aio.spawn(args, **kw) as p:
        out = b""
        while chunk := await p.read():
            out += chunk
        assert await p.wait() == 0
    return out


async def _aio_stream(args: list[str], **kw: Any) -> bytes:
    return b"".join([chunk async for chunk in aio.stream(args, **kw)])


def _spawn(args: list[str], **kw: Any) -> bytes:
    with netrunner.spawn(args, **kw) as p:
        out = b""
        while chunk := p.read():
            out += chunk
        assert p.wait() == 0
    return out


FRONT_ENDS: dict[str, Any] = {
    "run": lambda args, **kw: netrunner.run(args, **kw).stdout,
    "stream": lambda args, **kw: b"".join(netrunner.stream(args, **kw)),
    "spawn": _spawn,
    "aio.run": lambda args, **kw: asyncio.run(_aio_run(args, **kw)),
    "aio.spawn": lambda args, **kw: asyncio.run(_aio_spawn(args, **kw)),
    "aio.stream": lambda args, **kw: asyncio.run(_aio_stream(args, **kw)),
    "Command": lambda args, **kw: netrunner.Command(args[0], args[1:], **kw).run().stdout,
}


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_front_end_runs_the_child_as_the_user_and_groups_asked_for(front_end: str) -> None:
    _needs_root()
    out = FRONT_ENDS[front_end](ID, **AS_NOBODY)
    assert out == b"65534 65534 65534\n"


def test_names_and_extra_groups_are_looked_up_and_all_set() -> None:
    _needs_root()
    user, group = pwd.getpwuid(NOBODY).pw_name, grp.getgrgid(NOBODY).gr_name
    out = netrunner.run(ID, user=user, group=group, extra_groups=[group, 0]).stdout
    assert out.split()[:2] == [b"65534", b"65534"]
    assert sorted(out.split()[2:]) == [b"0", b"65534"]


def test_user_alone_changes_what_subprocess_changes() -> None:
    """Only ``user``: the uid changes, gid and groups stay the owner's
    (subprocess calls setreuid alone).  Compared with subprocess itself."""
    _needs_root()
    ours = netrunner.run(ID, user=NOBODY).stdout
    theirs = subprocess.run(ID, user=NOBODY, capture_output=True, check=True).stdout
    assert ours == theirs
    assert ours.split()[0] == b"65534"


def test_daemon_passes_the_credentials_on() -> None:
    _needs_root()
    got = queue.SimpleQueue[bytes]()
    line = b""
    with netrunner.Daemon(ID, on_output=got.put, **AS_NOBODY):
        while not line.endswith(b"\n"):
            line += got.get(timeout=OWNER_BOUND)
    assert line == b"65534 65534 65534\n"


@pytest.mark.parametrize("mask", [0o027, 0o000, 0o777])
def test_umask_option_is_applied(mask: int) -> None:
    out = netrunner.run(["sh", "-c", "umask"], umask=mask).stdout
    assert int(out, 8) == mask
    # ... and the owner's own umask is left alone.
    assert netrunner.run(["sh", "-c", "umask"]).stdout.strip() == b"%04o" % options.current_umask()


def test_no_new_privs_is_set_only_when_asked() -> None:
    status = ["grep", "NoNewPrivs", "/proc/self/status"]
    assert netrunner.run(status, no_new_privs=True).stdout.split() == [b"NoNewPrivs:", b"1"]
    assert netrunner.run(status).stdout.split() == [b"NoNewPrivs:", b"0"]


def test_no_new_privs_with_another_user() -> None:
    _needs_root()
    out = netrunner.run(["sh", "-c", "id -u; grep NoNewPrivs /proc/self/status"], no_new_privs=True, **AS_NOBODY)
    assert out.stdout.split() == [b"65534", b"NoNewPrivs:", b"1"]


# The child cannot reach a shepherd that runs as another uid at all.
REACH = r"""
import ctypes, errno, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
shepherd = os.getppid()
pidfd = os.pidfd_open(shepherd)
fd = libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(3), ctypes.c_uint(0))
getfd = "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
try:
    os.kill(shepherd, signal.SIGKILL)
    killed = "ok"
except OSError as exc:
    killed = errno.errorcode[exc.errno]
print(json.dumps({"uid": os.getuid(), "getfd": getfd, "kill": killed}))
"""


def test_a_child_under_another_uid_cannot_reach_its_shepherd() -> None:
    _needs_root()
    python = python_for(NOBODY)
    if python is None:
        pytest.skip("no Python interpreter that nobody can run")
    r = netrunner.run([python, "-c", REACH], cwd="/", timeout=60, check=True, **AS_NOBODY)
    assert json.loads(r.stdout) == {"uid": NOBODY, "getfd": "EPERM", "kill": "EPERM"}


def test_an_unprivileged_owner_asking_for_root_gets_permission_error() -> None:
    """As subprocess: the child's setuid fails with EPERM, raised as
    PermissionError by the call that spawns (and nothing is left)."""
    report = run_owner_as(NOBODY, "print('ran')", user=0)
    assert report == {"raised": "PermissionError", "errno": errno.EPERM}
    report = run_owner_as(NOBODY, "print('ran')", extra_groups=[0])
    assert report == {"raised": "PermissionError", "errno": errno.EPERM}


def test_an_unprivileged_owner_lowering_the_niceness_gets_permission_error() -> None:
    """A negative ``nice`` needs CAP_SYS_NICE: the child's setpriority
    fails with EACCES, reported exactly, raised by the call that spawns."""
    report = run_owner_as(NOBODY, "print('ran')", nice=-5)
    assert report == {"raised": "PermissionError", "errno": errno.EACCES}


# ------------------------------------------------------------------ refusals

TOUCH = shutil.which("touch") or "/usr/bin/touch"
NO_SUCH = "netrunner-no-such-name"


def _refusals(sentinel: str) -> list[tuple[str, type[BaseException], Callable[[], Any]]]:
    cmd = [TOUCH, sentinel]
    run, spawn = netrunner.run, netrunner.spawn
    return [
        ("unknown-user", KeyError, lambda: run(cmd, user=NO_SUCH)),
        ("unknown-group", KeyError, lambda: run(cmd, group=NO_SUCH)),
        ("unknown-extra-group", KeyError, lambda: spawn(cmd, extra_groups=["root", NO_SUCH])),
        ("unknown-user-stream", KeyError, lambda: netrunner.stream(cmd, user=NO_SUCH)),
        ("unknown-user-aio", KeyError, lambda: asyncio.run(aio.run(cmd, user=NO_SUCH))),
        ("user-float", TypeError, lambda: run(cmd, user=1.0)),
        ("user-bool", TypeError, lambda: run(cmd, user=True)),
        ("user-bytes", TypeError, lambda: run(cmd, user=b"root")),
        ("user-negative", ValueError, lambda: run(cmd, user=-1)),
        ("user-too-large", ValueError, lambda: run(cmd, user=2**32 - 1)),
        ("user-nul", ValueError, lambda: run(cmd, user="ro\0ot")),
        ("group-negative", ValueError, lambda: spawn(cmd, group=-5)),
        ("group-list", TypeError, lambda: spawn(cmd, group=[0])),
        ("extra-groups-str", TypeError, lambda: run(cmd, extra_groups="root")),
        ("extra-groups-int", TypeError, lambda: run(cmd, extra_groups=0)),
        ("extra-group-float", TypeError, lambda: run(cmd, extra_groups=[0.0])),
        ("extra-group-negative", ValueError, lambda: run(cmd, extra_groups=[0, -1])),
        ("extra-groups-too-many", ValueError, lambda: run(cmd, extra_groups=[0] * 70000)),
        ("umask-negative", ValueError, lambda: run(cmd, umask=-1)),
        ("umask-too-large", ValueError, lambda: spawn(cmd, umask=0o1000)),
        ("umask-str", TypeError, lambda: run(cmd, umask="022")),
        ("umask-bool", TypeError, lambda: run(cmd, umask=False)),
        ("no-new-privs-int", TypeError, lambda: run(cmd, no_new_privs=1)),
        ("no-new-privs-none", TypeError, lambda: spawn(cmd, no_new_privs=None)),
        ("command-unknown-user", KeyError, lambda: netrunner.Command(TOUCH, [sentinel], user=NO_SUCH).run()),
    ]


@pytest.mark.parametrize("case_id", [case[0] for case in _refusals("x")])
def test_bad_credentials_are_refused_before_anything_starts(
    tmp_path: Path, fresh_fork_server: None, case_id: str
) -> None:
    sentinel = tmp_path / "started"
    (case,) = [c for c in _refusals(str(sentinel)) if c[0] == case_id]
    _, expected, call = case
    assert FORK_SERVER.pid == 0
    with pytest.raises(expected):
        call()
    assert FORK_SERVER.pid == 0
    assert marked_processes() == {}
    assert not sentinel.exists()


def test_unknown_user_is_a_lookup_error_naming_it() -> None:
    with pytest.raises(LookupError, match=NO_SUCH):
        netrunner.run(["true"], user=NO_SUCH)


def test_an_owner_in_a_directory_it_cannot_enter_still_spawns(tmp_path: Path) -> None:
    # A fork inherits the cwd with no permission check, so subprocess works
    # for an owner sitting in a directory it may not search (entered before
    # it dropped privileges).  Ours reads its cwd through /proc/self/cwd and
    # the child, refused by fchdir, is already there: it works too.
    if os.geteuid() != 0:
        pytest.skip("needs root to start an owner as another user")
    python = python_for(65534)
    if python is None:
        pytest.skip("no Python interpreter that nobody can run")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    code = "import netrunner; print(netrunner.run(['sh', '-c', 'stat -L -c %i /proc/self/cwd'], text=True).stdout)"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": package_for_other_users(), "PYTHONDONTWRITEBYTECODE": "1"}
    env["NETRUNNER_TEST_RUN"] = os.environ["NETRUNNER_TEST_RUN"]
    proc = subprocess.run(
        [python, "-c", code], user=65534, group=65534, extra_groups=[], cwd=private, env=env,
        capture_output=True, timeout=OWNER_BOUND,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert int(proc.stdout) == private.stat().st_ino
