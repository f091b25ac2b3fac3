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

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import netrunner

SRC = str(Path(netrunner.__file__).resolve().parent.parent)
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


@functools.lru_cache(maxsize=None)
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
    if not os.access(SRC, os.R_OK) or os.stat(SRC).st_mode & 0o005 != 0o005:
        pytest.skip(f"{SRC} is not readable by other users")
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "NETRUNNER_TEST_RUN", "NETRUNNER_SHEPHERD")}
    env["PYTHONPATH"] = SRC
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
