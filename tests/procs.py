"""Process helpers the test files share: waiting on pids with pidfds (no
polling), process groups from /proc, FIFO lines with a deadline,
compiling test builds of the shepherd (or of a shim for it), and frozen
cgroups (a child that hangs before its exec)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

SHEPHERD_SRC = Path(__file__).parent.parent / "shepherd" / "shepherd.c"


def compile_c(out: Path, what: str, args: list[str]) -> Path:
    """``cc ARGS -o OUT``; skips the test without a C compiler."""
    cc = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if cc is None:
        pytest.skip(f"no C compiler (cc, gcc or clang) on PATH: cannot build the {what}")
    proc = subprocess.run([cc, *args, "-o", str(out)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"building the {what} failed:\n{proc.stdout}{proc.stderr}")
    return out


@contextlib.contextmanager
def silent_pipe(bound: float = 15.0) -> Iterator[BinaryIO]:
    """The read end of a pipe, as a file object, whose writer stays open
    and writes nothing while the block runs.  Its writer is closed when the
    block ends, or after ``bound`` seconds at the latest (a condition
    waited on with a deadline): code that wrongly blocks in a read then
    sees EOF, so a test of it fails on its time bound instead of hanging."""
    r, w = os.pipe()
    done = threading.Event()

    def close_writer() -> None:
        done.wait(bound)
        os.close(w)

    closer = threading.Thread(target=close_writer, name="silent-pipe-writer")
    closer.start()
    reader = os.fdopen(r, "rb")
    try:
        yield reader
    finally:
        done.set()
        closer.join()
        reader.close()


def pid_gone(pid: int, within: float) -> bool:
    """True once ``pid`` has exited (waited on with a pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], within)
        return bool(readable)
    finally:
        os.close(fd)


def group_members(pgid: int) -> list[int]:
    """Every process (zombies included) whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            members.append(int(entry.name))
    return members


def assert_group_gone(pid: int) -> None:
    """The child and everything in its group are dead *and* reaped now."""
    assert pid_gone(pid, within=0), f"pid {pid} still running"
    assert group_members(pid) == [], f"group {pid} still has members"


def read_fifo_line(path: Path, within: float) -> bytes:
    """One line a child writes into the FIFO at ``path`` (bounded wait)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        deadline = time.monotonic() + within
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"nothing arrived on {path} within {within} s")
            chunk = os.read(fd, 100)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


def cgroup_events(cgroup: Path, key: bytes, within: float) -> None:
    """Block until ``cgroup``'s cgroup.events shows the line ``key`` (e.g.
    b"populated 1": a process is somewhere in its subtree).  The kernel
    notifies each change with POLLPRI, so this waits, never polls."""
    fd = os.open(cgroup / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        deadline = time.monotonic() + within
        while key not in os.pread(fd, 4096, 0).splitlines():
            left = deadline - time.monotonic()
            assert left > 0, f"{cgroup}/cgroup.events never showed {key!r} within {within} s"
            poller.poll(left * 1000)
    finally:
        os.close(fd)


@contextmanager
def frozen_cgroup(name: str) -> Iterator[Path]:
    """A fresh cgroup ``netrunner/<name>-<our pid>`` under the cgroup2 mount
    with cgroup.freeze=1: a child joining a leaf under it (``cgroup=
    "<that>/leaf"``) stops right after joining, before its chdir and exec.
    Thawed and removed at the end (its leaves must be gone by then).
    Skips the test without a writable cgroup v2."""
    from netrunner import CgroupError
    from netrunner._cgroup import mount_point

    try:
        base = Path(mount_point()) / "netrunner"
        base.mkdir(exist_ok=True)
        parent = base / f"{name}-{os.getpid()}"
        parent.mkdir()
    except (OSError, CgroupError) as exc:
        pytest.skip(f"no writable cgroup v2 here: {exc}")
    try:
        (parent / "cgroup.freeze").write_text("1")
        yield parent
    finally:
        (parent / "cgroup.freeze").write_text("0")
        parent.rmdir()


_shared_copy: list[str] = []


def package_for_other_users() -> str:
    """A directory to put on ``PYTHONPATH`` of an interpreter running as
    another user: a copy of the netrunner under test (its shepherd binary
    included) in a fresh 0755 directory under the system's temp dir.  The
    tree under test may sit where another uid cannot reach it (a checkout
    under /root, an unpacked sdist in a 0700 ``mktemp -d``).  Made once per
    test session and removed at its end."""
    if not _shared_copy:
        import atexit
        import tempfile

        import netrunner

        base = tempfile.mkdtemp(prefix="netrunner-shared-")
        os.chmod(base, 0o755)
        atexit.register(shutil.rmtree, base, True)
        shutil.copytree(
            Path(netrunner.__file__).resolve().parent,
            Path(base) / "netrunner",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for path in Path(base).rglob("*"):
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        _shared_copy.append(base)
    return _shared_copy[0]
