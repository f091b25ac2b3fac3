"""cgroup v2: where the leaf goes, and what is checked before anything runs.

The path rule: ``cgroup="a/b"`` is the directory ``<mount>/a/b`` where
``<mount>`` is the cgroup2 mount read from ``/proc/self/mountinfo`` (hybrid
hierarchies mount it away from ``/sys/fs/cgroup``, e.g. at
``/sys/fs/cgroup/unified``).  ``cgroup=True`` is a fresh leaf
``netrunner/<pid>-<random>``.  Parents are created here if missing (0755,
whatever the umask) and are never removed, and an existing one that another
user owns is refused; the leaf itself is created by the shepherd, which
refuses an existing one (netrunner only ever removes what it made), puts
the child in it before exec, and on exit kills everything in it and
removes it.

Limits (``limits={"memory.max": "100M", "pids.max": 64}``) are written into
the leaf by the shepherd; here we check that each one's controller is
offered by the parent, enabling it in the parent's ``cgroup.subtree_control``
when it is available but not yet enabled.  Anything that cannot be set up
raises :class:`CgroupError` naming the file or controller.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import stat
import time
from collections.abc import Mapping
from typing import Any

from ._bounds import REAP_BOUND
from ._errors import CgroupError

MAX_COMPONENT = 255
MAX_PATH = 4000  # also the shepherd's bound on the leaf's absolute path (MAX_CGROUP_PATH)

# The controllers whose interface files ``limits`` may write, as the shepherd
# checks them too (controller_file): never a ``cgroup.*`` file (cgroup.procs
# would move the shepherd into the leaf, cgroup.freeze wedge the child,
# cgroup.subtree_control reshape the tree), and no name that could leave the
# leaf.  Upper case is allowed for hugetlb's page sizes (hugetlb.2MB.max).
CONTROLLERS = frozenset({"memory", "pids", "cpu", "io", "cpuset", "hugetlb"})
_FILE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def mount_point(mountinfo: str = "/proc/self/mountinfo") -> str:
    """The cgroup2 mount point, or CgroupError if there is none."""
    try:
        with open(mountinfo) as f:
            for line in f:
                # "36 25 0:30 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw"
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return _unescape(left.split()[4])
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot read {mountinfo}: {exc.strerror}") from exc
    raise CgroupError(errno.ENOENT, "no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo)")


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo (octal)
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and len(path[i + 1 : i + 4]) == 3 and all(c in "01234567" for c in path[i + 1 : i + 4]):
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def validate(cgroup: Any) -> str | None:
    """The relative leaf path (``True`` -> a fresh unique one), or None.
    ValueError/TypeError for anything that is not a clean relative path."""
    if cgroup is None or cgroup is False:
        return None
    if cgroup is True:
        return f"netrunner/{os.getpid()}-{secrets.token_hex(6)}"
    if not isinstance(cgroup, str):
        raise TypeError(f"cgroup must be None, True or a relative path, not {type(cgroup).__name__}")
    if "\0" in cgroup:
        raise ValueError("cgroup path contains a NUL byte")
    if cgroup.startswith("/"):
        raise ValueError(f"cgroup path must be relative to the cgroup v2 mount, not absolute: {cgroup!r}")
    parts = cgroup.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"cgroup path must not have empty, '.' or '..' components: {cgroup!r}")
    if any(len(p.encode()) > MAX_COMPONENT for p in parts) or len(cgroup.encode()) > MAX_PATH:
        raise ValueError(f"cgroup path is too long: {cgroup[:60]!r}...")
    return cgroup


def settings(limits: Any) -> list[bytes]:
    """``limits`` as ``b"file=value"`` entries (validated, not yet applied)."""
    if limits is None:
        return []
    if not isinstance(limits, Mapping):
        raise TypeError("limits must be a mapping such as {'memory.max': '100M'}")
    out = []
    for key, value in limits.items():
        if not controller_file(key):
            raise ValueError(
                f"not a controller file: {key!r} (limits take <controller>.<file> with a controller"
                f" in {', '.join(sorted(CONTROLLERS))}; letters, digits, '_' and '.' only)"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(f"limit {key!r} must be a str or an int")
        text = str(value)
        if "\0" in text or "\n" in text:
            raise ValueError(f"limit {key!r} has a NUL or newline")
        out.append(f"{key}={text}".encode())
    return out


def controller_file(name: object) -> bool:
    """Is ``name`` a controller interface file such as ``memory.max``?"""
    if not isinstance(name, str) or not set(name) <= _FILE_CHARS:
        return False
    controller, dot, rest = name.partition(".")
    return controller in CONTROLLERS and bool(dot) and bool(rest)


def prepare(relative: str, limits: list[bytes]) -> bytes:
    """Create the parents, make sure every limit's controller is usable in
    the leaf, and return the leaf's absolute path for the shepherd."""
    root = mount_point()
    leaf = os.path.join(root, relative)
    if len(os.fsencode(leaf)) > MAX_PATH:  # the shepherd would refuse it
        raise ValueError(f"cgroup path is too long under {root}: {relative[:60]!r}...")
    parent = _parents(root, relative.split("/")[:-1])
    if os.path.exists(leaf):
        raise CgroupError(
            errno.EEXIST, f"cgroup {leaf} already exists (netrunner only runs in leaves it creates)", leaf
        )
    wanted = {entry.split(b".", 1)[0].decode() for entry in limits}
    if wanted:
        _enable(parent, wanted)
    return os.fsencode(leaf)


def _parents(root: str, names: list[str]) -> str:
    """Walk from the mount down to the leaf's parent, top-down: create each
    missing directory 0755 whatever the umask (a parent others may write
    lets another user squat a leaf's name, or a parent below it), and
    refuse an existing one owned by neither our euid nor root, before
    anything below it is made: whoever owns a parent controls what is in
    it.  (A delegated subtree is owned by its user; its ancestors by root.)"""
    path, euid = root, os.geteuid()
    for name in names:
        path = os.path.join(path, name)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot create cgroup {path}: {exc.strerror}", path) from exc
        else:
            try:
                os.chmod(path, 0o755)  # mkdir's mode went through the umask
            except OSError as exc:
                raise CgroupError(exc.errno, f"cannot chmod cgroup {path}: {exc.strerror}", path) from exc
            continue
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot stat cgroup {path}: {exc.strerror}", path) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise CgroupError(errno.ENOTDIR, f"cgroup parent {path} is not a directory", path)
        if info.st_uid not in (euid, 0):
            raise CgroupError(
                errno.EPERM,
                f"cgroup parent {path} is owned by uid {info.st_uid}, neither by us (euid {euid}) nor by root:"
                " refusing to run a child in a tree another user controls",
                path,
            )
    return path


def _enable(parent: str, controllers: set[str]) -> None:
    try:
        with open(os.path.join(parent, "cgroup.controllers")) as f:
            offered = set(f.read().split())
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot read the controllers of {parent}: {exc.strerror}", parent) from exc
    for name in sorted(controllers - enabled):
        if name not in offered:
            raise CgroupError(
                errno.ENOTSUP,
                f"the cgroup controller {name!r} is not available in {parent} (offered: {sorted(offered)})",
            )
        try:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{name}")
        except OSError as exc:
            raise CgroupError(
                exc.errno, f"cannot enable the cgroup controller {name!r} in {parent}: {exc.strerror}"
            ) from exc


def teardown(leaf: str, timeout: float = REAP_BOUND) -> None:
    """Kill everything in ``leaf`` and remove it (bounded).  Used when the
    shepherd, which normally does this, died with the leaf in place.  The
    kernel signals each change of ``populated`` as POLLPRI on cgroup.events."""
    deadline = time.monotonic() + timeout
    try:
        with open(os.path.join(leaf, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        return  # gone already, or not ours to kill
    try:
        events = os.open(os.path.join(leaf, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        poller = select.poll()
        poller.register(events, select.POLLPRI)
        saw_empty = False
        while True:
            try:
                os.rmdir(leaf)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or saw_empty:
                    return  # empty yet busy (a sub-cgroup someone made): not ours to force
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if b"populated 0" in os.pread(events, 256, 0):
                saw_empty = True  # emptied since the rmdir: try once more
                continue
            poller.poll(max(1, int(left * 1000)))
    finally:
        os.close(events)
