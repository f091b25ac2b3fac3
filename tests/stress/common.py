"""What every stress scenario shares: figures, owner subprocesses, and
finding processes by an environment marker (so nothing that re-parented
away is missed), waited on with pidfds against deadlines, never polled."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netrunner

HERE = Path(__file__).resolve().parent
OWNER = HERE / "owner.py"
SRC = str(Path(netrunner.__file__).resolve().parent.parent)
TOKEN_KEY = "NR_STRESS_TOKEN"


@dataclass
class Figure:
    """What one scenario measured.

    ``violations``: a promise that main keeps today was broken (the pytest
    version fails on any).  ``findings``: a gap measured and reported, not
    asserted (its fix lands separately), e.g. a wrong exception type."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in self.values.items()]
        text = f"[{self.name}] ({self.seconds:.1f} s) " + " ".join(parts)
        for v in self.violations:
            text += f"\n    VIOLATION: {v}"
        for f in self.findings:
            text += f"\n    finding: {f}"
        return text

    def check(self, ok: bool, what: str) -> None:
        """Record ``what`` as a violation unless ``ok``."""
        if not ok:
            self.violations.append(what)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


# ------------------------------------------------------------ /proc views
def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parent_of(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else 0


def children_of(pid: int) -> set[int]:
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        with contextlib.suppress(OSError):
            kids |= {int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return kids


def zombies_under(pid: int) -> int:
    return sum(1 for kid in children_of(pid) if (stat_fields(kid) or ["?"])[0] == "Z")


def status_kib(pid: int | str, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmSize, ...), 0 if absent."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and Private (clean + dirty) of a process, in KiB."""
    out = {"rss": 0, "pss": 0, "private": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                continue
            if parts[0] == "Rss:":
                out["rss"] = int(parts[1])
            elif parts[0] == "Pss:":
                out["pss"] = int(parts[1])
            elif parts[0] in ("Private_Clean:", "Private_Dirty:"):
                out["private"] += int(parts[1])
    return out


def fd_count(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# ------------------------------------------------------- marked processes
def new_token() -> str:
    return uuid.uuid4().hex


def owner_env(token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an owner subprocess: our netrunner on its path,
    and the marker every process it starts inherits."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **(extra or {}), "PYTHONPATH": path, TOKEN_KEY: token}


def carriers(token: str, exclude: set[int] | None = None) -> list[int]:
    """Live processes whose environment carries ``token`` (a zombie has no
    environment left: it is dead, only not yet reaped)."""
    needle = f"{TOKEN_KEY}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or (exclude and int(name) in exclude):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    fields = stat_fields(pid)
    state = "gone" if fields is None else f"state={fields[0]} ppid={fields[1]} pgrp={fields[2]}"
    return f"{pid} [{cmd[:60]}] {state}"


def wait_pids(pids: list[int], deadline: float) -> tuple[list[int], float]:
    """Wait (pidfds) until every pid has exited or ``deadline``; returns
    (still running, monotonic time the last one was seen to exit)."""
    fds: dict[int, int] = {}
    last = time.monotonic()
    try:
        for pid in pids:
            with contextlib.suppress(OSError):
                fds[os.pidfd_open(pid)] = pid
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                os.close(fd)
                del fds[fd]
                last = time.monotonic()
        return sorted(fds.values()), last
    finally:
        for fd in fds:
            os.close(fd)


def wait_marked_gone(token: str, deadline: float, exclude: set[int] | None = None) -> tuple[list[int], float]:
    """Wait until no live process carries ``token``: wait on every one
    found, then look again (one may have been born meanwhile), until a
    look finds none or ``deadline`` passes.  Returns (survivors, time the
    last one exited)."""
    last = time.monotonic()
    while True:
        found = carriers(token, exclude)
        if not found:
            return [], last
        left, last = wait_pids(found, deadline)
        if left or time.monotonic() >= deadline:
            return carriers(token, exclude), last


def kill_marked(token: str) -> None:
    """Last resort so a failed scenario leaves nothing: SIGKILL carriers."""
    for pid in carriers(token, {os.getpid()}):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def cgroup_leaves_of(pid: int) -> list[str]:
    """cgroup=True leaves (``netrunner/<pid>-<hex>``) made for owner ``pid``."""
    try:
        from netrunner._cgroup import mount_point

        base = Path(mount_point()) / "netrunner"
        return sorted(str(p) for p in base.glob(f"{pid}-*") if p.is_dir())
    except (OSError, netrunner.CgroupError):
        return []


def cgroup_usable() -> bool:
    try:
        netrunner.run(["true"], cgroup=True, timeout=30)
        return True
    except (OSError, netrunner.NetRunnerError):
        return False


# ------------------------------------------------------ owner subprocesses
class Owner:
    """``python tests/stress/owner.py MODE ARGS...`` with a report pipe: the
    owner writes lines (often JSON) on its fd ``REPORT`` and we read them
    with deadlines.  Its stdin is a pipe it may block on; stderr goes to a
    file we can show."""

    def __init__(self, token: str, mode: str, *args: str, user: int | None = None) -> None:
        self.token = token
        self.what = " ".join((mode, *args))[:80]
        read_end, write_end = os.pipe()
        self.fd = read_end
        self.buf = b""
        self.err_path = Path(f"/tmp/nr-stress-{token[:8]}-{uuid.uuid4().hex[:6]}.stderr")
        try:
            with open(self.err_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, str(OWNER), mode, str(write_end), *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    pass_fds=(write_end,),
                    env=owner_env(token),
                    user=user,
                    start_new_session=False,
                )
        finally:
            os.close(write_end)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def read_raw(self, deadline: float) -> bytes:
        """Whatever arrives before ``deadline`` (b"" at EOF or timeout)."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            return b""
        try:
            return os.read(self.fd, 65536)
        except OSError:
            return b""

    def line(self, within: float) -> str | None:
        """The next line (None on EOF or when ``within`` runs out)."""
        deadline = time.monotonic() + within
        while b"\n" not in self.buf:
            chunk = self.read_raw(deadline)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def json(self, within: float) -> dict[str, Any]:
        line = self.line(within)
        if line is None:
            raise RuntimeError(f"owner {self.what} said nothing within {within} s:\n{self.stderr()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def drain(self) -> bytes:
        """Everything left in the pipe (the owner is dead: no wait)."""
        data = self.buf
        self.buf = b""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def kill(self, sig: int = signal.SIGKILL) -> float:
        """Send ``sig``; returns the monotonic time it was sent."""
        at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        return at

    def finish(self, within: float = 30.0) -> int:
        """Close its stdin (its cue to exit), wait up to ``within``, then
        SIGKILL; reaped either way.  Returns its returncode."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self.err_path.unlink()

    def __enter__(self) -> Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def marked(figure: Figure, what: str = "processes left") -> Iterator[str]:
    """A fresh token for one scenario; on the way out, every process that
    carries it must be gone within a bound (else a violation, and they
    are killed so the next scenario starts clean)."""
    token = new_token()
    try:
        yield token
    finally:
        left, _ = wait_marked_gone(token, time.monotonic() + 15.0, {os.getpid()})
        if left:
            figure.violations.append(f"{what}: {[describe(p) for p in left]}")
            kill_marked(token)
            wait_marked_gone(token, time.monotonic() + 5.0, {os.getpid()})
