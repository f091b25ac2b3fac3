"""Getting a shepherd: the per-interpreter fork server.

Exec'ing a shepherd per child would cost a second exec on every spawn, so
each Python process starts one small fork server (the same C binary, in
``--fork-server`` mode) on first use.  Each child still gets its own
shepherd and its own socketpair; the server only forks them and keeps no
per-child state beyond their pids, and as a subreaper it kills whatever a
shepherd that died abnormally left behind.

One message only, over a SOCK_SEQPACKET socket: FS_ADOPT hands the server
one end of a socketpair we made, and it forks a shepherd for it (no reply,
so nothing we could wait on).  We adopt one *spare* ahead of need, so a
spawn finds its shepherd already forked and waiting for its request.  No
socket is ever left in flight towards us (that would make every close of
a Unix socket in this process run the kernel's SCM_RIGHTS garbage
collector).  The server is restarted after ``os.fork()`` (in the child),
when found dead, and when our credentials or limits change.  Nothing here
blocks.
"""

from __future__ import annotations

import _socket
import array
import errno
import os
import resource
import select
import signal
import socket
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from . import _opcodes as op
from ._errors import ShepherdError

_BINARY_ENV = "NETRUNNER_SHEPHERD"


def _binary_from_environment() -> str | None:
    """``$NETRUNNER_SHEPHERD``, for tests only (a sanitizer build, say),
    read once, at import.  Ignored under ``python -E`` and when our real
    and effective ids differ (setuid/setgid): whoever sets our environment
    must not choose the program we run, and run with our privileges, and
    the owner's later ``os.environ`` (or a child's) must not either."""
    if sys.flags.ignore_environment or os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return None
    return os.environ.get(_BINARY_ENV) or None


_binary_override = _binary_from_environment()


def shepherd_binary() -> str:
    """The shepherd executable: the one the package build compiled next to
    this module, unless a test swapped it (``$NETRUNNER_SHEPHERD`` at
    import, or :func:`use_shepherd_binary`).  A relative override is
    refused: resolved against whatever the cwd is at the next fork-server
    start, it would name a different program from one moment to the next."""
    override = _binary_override
    if override is None:
        return str(Path(__file__).resolve().parent / "_bin" / "netrunner-shepherd")
    if not os.path.isabs(override):
        raise ShepherdError(f"${_BINARY_ENV} must be an absolute path, not {override!r} (it is for tests only)")
    return override


def _default_signals() -> set[signal.Signals]:
    skip = {signal.SIGKILL, signal.SIGSTOP}
    return {s for s in signal.valid_signals() if isinstance(s, signal.Signals) and s not in skip}


def spawn_helper(mode: str, sock: _socket.socket) -> int:
    """posix_spawn the shepherd binary in ``mode`` with ``sock`` as its fd 3.

    No Python code runs between fork and exec; the helper starts with every
    signal at its default and an empty mask (CPython ignores SIGPIPE)."""
    binary = shepherd_binary()
    try:
        return os.posix_spawn(
            binary,
            [binary, mode],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, sock.fileno(), 3)],
            setsigdef=_default_signals(),
            setsigmask=(),
        )
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            # Out of processes or memory, not a broken install: the error
            # subprocess raises for the same fork failure.
            raise OSError(exc.errno, f"{exc.strerror} (starting the shepherd {binary!r})") from exc
        raise ShepherdError(f"cannot start the shepherd {binary!r}: {exc}") from exc


T = TypeVar("T")


class WeakRegistry(Generic[T]):
    """Objects to find again after a fork, held by weak references *without*
    callbacks: an object's death then runs no Python code.  (A WeakSet's
    removal callback is Python, and a KeyboardInterrupt raised inside it is
    printed as "Exception ignored" and lost.)  Dead references are pruned
    as the list grows."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref[T]] = []
        self._limit = 64
        self._lock = threading.Lock()

    def add(self, obj: T) -> None:
        with self._lock:
            refs = self._refs
            refs.append(weakref.ref(obj))
            if len(refs) > self._limit:
                self._refs = refs = [r for r in refs if r() is not None]
                self._limit = max(64, 2 * len(refs))

    def alive_after_fork(self) -> list[T]:
        """In a forked child: the live objects (no lock taken: another thread
        may have held it at fork time; it is replaced)."""
        self._lock = threading.Lock()
        found = [r() for r in self._refs]
        return [obj for obj in found if obj is not None]


class OwnerSocket(socket.socket):
    """Our end of a shepherd's socketpair, safe to drop while it is open.

    A dropped Process (owner loss on purpose) lets its socket be collected
    open.  A socket's own finalizer then formats an "unclosed" warning
    before it closes, and on that path a pending KeyboardInterrupt is run
    and silently discarded (in a loop dropping open sockets: ~1 interrupt
    in 5 with socket.socket's Python repr, ~1 in 70 with the C one).
    So the fd belongs to ``_owner``, an epoll object made with
    ``select.epoll.fromfd`` whose collection closes it silently in C, and
    the socket's finalizer is ``socket.detach`` itself, a C function: it
    only forgets the fd.  No Python code runs when one is collected."""

    __slots__ = ("_owner",)
    __del__ = _socket.socket.detach

    def __init__(self, family: int, kind: int, fileno: int) -> None:
        super().__init__(family, kind, 0, fileno)
        self._owner: select.epoll | None = select.epoll.fromfd(fileno)

    def close(self) -> None:
        """Close the fd (through its owner, so it is closed exactly once)."""
        super().detach()
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()

    def detach(self) -> int:
        raise TypeError("an OwnerSocket's fd is closed by close(), never detached")


# Every owner-side socket to a shepherd or the server, wherever it is (a
# spare, a handshake in progress, a live child): a forked interpreter must
# close them all, or a shepherd never sees its owner die while the fork lives.
_owned_sockets: WeakRegistry[socket.socket] = WeakRegistry()


def _owned(sock: socket.socket) -> socket.socket:
    _owned_sockets.add(sock)
    return sock


def close_owned_after_fork() -> None:
    """In a forked child: close every owner-side socket (no locks taken)."""
    for sock in _owned_sockets.alive_after_fork():
        try:
            sock.close()
        except OSError:
            pass


# (sorted and unique: RLIMIT_OFILE is RLIMIT_NOFILE again)
_RLIMITS = tuple(sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}))
_LIMITS_FILE = "/proc/self/limits"
_LIMITS_READ = 8192  # the file is ~1.3 KiB; a read that fills this is not trusted


def _open_limits() -> select.epoll | None:
    """``/proc/self/limits`` kept open (owned by an epoll object, which
    closes it in C when dropped), or None without /proc."""
    try:
        return select.epoll.fromfd(os.open(_LIMITS_FILE, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        return None


def _inherited_state(limits: int = -1) -> tuple[object, ...]:
    """What a child inherits from the fork server rather than from us (env,
    cwd and umask are sent with every request instead): credentials and
    resource limits.  When ours change, the server is replaced, so a
    process that drops privileges never spawns with its old ones.

    Asked at every spawn, so it is cheap: 3 syscalls for the ids, and every
    RLIMIT_* in one ``pread`` of ``/proc/self/limits`` (``limits``, an fd
    of it opened by this process; the kernel formats the file afresh at
    each read from offset 0), ~6 us, instead of a ``getrlimit`` each (16
    syscalls, ~16 us).  Without it (no /proc), the ``getrlimit`` calls."""
    ids = (os.getresuid(), os.getresgid(), os.getgroups())
    if limits >= 0:
        try:
            text = os.pread(limits, _LIMITS_READ, 0)
        except OSError:
            pass
        else:
            if 0 < len(text) < _LIMITS_READ:
                return (*ids, text)
    return (*ids, tuple(map(resource.getrlimit, _RLIMITS)))


def reserve_std_fds() -> None:
    """Make sure fds 0-2 are open (``/dev/null`` if closed), so none of our
    sockets can take one of those numbers and be handed to a child as its
    "inherited" stdin/stdout/stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            if null != fd:
                os.dup2(null, fd, inheritable=True)
                os.close(null)
            else:
                os.set_inheritable(fd, True)


def _shepherd_pair(hand_over: Callable[[_socket.socket], object]) -> socket.socket:
    """A socketpair whose other end ``hand_over`` gives to a shepherd (and
    may raise); ours comes back registered for fork safety, non-blocking.
    Our copy of their end is closed whatever happens.

    Neither end may be fd 0, 1 or 2 (a child inheriting "our stdin" would
    get a shepherd's socket).  New fds take the lowest free numbers, so a
    pair above 2 proves 0-2 were open: only a pair that took one of them
    costs the check (:func:`reserve_std_fds`) and a second pair."""
    # Non-blocking from birth (the shepherd sets its end so anyway).
    kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    a, b = _socket.socketpair(socket.AF_UNIX, kind)
    if a.fileno() < 3 or b.fileno() < 3:
        a.close()
        b.close()
        reserve_std_fds()
        a, b = _socket.socketpair(socket.AF_UNIX, kind)
    ours = OwnerSocket(socket.AF_UNIX, kind, a.detach())
    theirs = b  # (a bare _socket.socket: a socket.socket would getsockname it again)
    _owned(ours)
    try:
        hand_over(theirs)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours


class ForkServer:
    """The one fork server of this interpreter (per pid: re-made after fork).

    It makes shepherds ahead of need: one spare is adopted while each
    spawn's child runs, so the next spawn usually takes a shepherd that is
    already forked and waiting for its SPAWN request, and the only process
    a spawn wakes is that shepherd."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        self._owner = 0
        self._ready: deque[socket.socket] = deque()
        self._state: tuple[object, ...] = ()
        self._limits: select.epoll | None = None  # /proc/self/limits, for _inherited_state

    def _limits_fd(self) -> int:
        limits = self._limits
        return -1 if limits is None else limits.fileno()

    def _start(self) -> socket.socket:
        reserve_std_fds()
        _reap_later(0)
        if self._limits is None:
            self._limits = _open_limits()
        self._state = _inherited_state(self._limits_fd())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _owned(ours)
        try:
            self._pid = spawn_helper("--fork-server", theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._owner = os.getpid()
        return ours

    def _discard(self, grace: float = 0.0) -> None:
        """Let the current server go: close our sockets (the spares exit on
        EOF, and the server once its shepherds are done), wait up to
        ``grace`` for it to exit, and reap it: it is our child.  One still
        busy (always, with no grace: a replacement during a spawn must not
        block, and may run on an event loop) is reaped by a thread that
        waits for it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for spare in self._ready:
            spare.close()
        self._ready.clear()
        limits, self._limits = self._limits, None
        if limits is not None:
            limits.close()
        pid, self._pid = self._pid, 0
        if pid and self._owner == os.getpid():
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
            exited = True
            if pidfd >= 0:
                try:
                    exited = bool(select.select([pidfd], [], [], grace)[0])
                finally:
                    os.close(pidfd)
            if exited:
                _reap_later(pid)
            else:
                _reap_when_it_exits(pid)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's server and spare shepherd
        sockets without talking to them (no locks: another thread may have
        held ours at fork time)."""
        for sock in [self._sock, *self._ready]:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        if self._limits is not None:
            # the parent's /proc/<pid>/limits: ours is opened by the next start
            self._limits.close()
            self._limits = None
        self._sock = None
        self._ready = deque()
        self._pid = 0
        self._owner = 0
        self._lock = threading.Lock()

    def try_take(self, inherits: bool = False) -> socket.socket | int:
        """A connected, non-blocking socket to a fresh shepherd waiting for
        its request; or, if the server cannot take a request right now,
        the fd to wait on (for writability) before trying again.

        The shepherd is usually a spare adopted ahead of need (see
        :meth:`prepare_spare`)."""
        with self._lock:
            for attempt in (1, 2):
                sock = self._sock if self._sock is not None and self._owner == os.getpid() else None
                try:
                    if sock is not None and _inherited_state(self._limits_fd()) != self._state:
                        self._discard()  # stale credentials or limits: a new server
                        sock = None
                    if sock is None:
                        sock = self._start()
                    if inherits:
                        reserve_std_fds()  # the owner may have closed one since
                    shepherd = self._ready.popleft() if self._ready else self._adopt(sock)
                    if shepherd is None:
                        return sock.fileno()
                    return shepherd
                except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError) as exc:
                    self._discard()
                    if attempt == 2:
                        raise ShepherdError(f"the fork server died: {exc}") from exc
            raise AssertionError("unreachable")

    def prepare_spare(self) -> None:
        """Adopt the next spawn's shepherd now.  Called once a spawn's child
        runs, so the server's fork overlaps that child's run instead of
        delaying anybody's request."""
        with self._lock:
            sock = self._sock
            if sock is None or self._owner != os.getpid() or self._ready:
                return
            try:
                spare = self._adopt(sock)
            except OSError:
                return  # a dead server is found (and replaced) by the next take
            if spare is not None:
                self._ready.append(spare)

    def drop_spares(self) -> None:
        """Let the ready spare go: a request found that one of this server's
        shepherds never existed (the server could not fork it, or died with
        it queued), so the spare made after it may be just as dead.  The
        next take adopts afresh, and so finds a dead server (and replaces
        it) instead of another dead spare."""
        with self._lock:
            for spare in self._ready:
                spare.close()
            self._ready.clear()

    def _adopt(self, sock: socket.socket) -> socket.socket | None:
        """A socketpair whose other end the server forks a shepherd for
        (FS_ADOPT, no reply); None if the server's queue is full."""

        def adopt(theirs: _socket.socket) -> None:  # (_shepherd_pair keeps fds 0-2 out)
            fds = array.array("i", [theirs.fileno()])
            sock.sendmsg([bytes([op.FS_ADOPT])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])

        try:
            return _shepherd_pair(adopt)
        except BlockingIOError:
            return None

    def wake(self) -> None:
        """SIGCONT the server and its children (our shepherds, spares
        included): a spawn got no answer for a while, and a stopped one
        would never give it (harmless to those that run)."""
        pid = self.pid
        if not pid:
            return
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            children = []
        for target in [pid, *children]:
            try:
                os.kill(target, signal.SIGCONT)
            except OSError:
                pass

    def close(self, timeout: float = 10.0) -> None:
        """Let the server go: it exits once its shepherds are done.  Waits
        up to ``timeout`` for that and reaps it (else it is reaped later)."""
        with self._lock:
            if self._owner == os.getpid():
                self._discard(timeout)

    @property
    def pid(self) -> int:
        return self._pid if self._owner == os.getpid() else 0

    def fds(self) -> set[int]:
        """fds this server holds in this process (for leak accounting)."""
        if self._owner != os.getpid():
            return set()
        held = {s.fileno() for s in [self._sock, *self._ready] if s is not None and s.fileno() >= 0}
        return held | ({self._limits.fileno()} if self._limits is not None else set())


FORK_SERVER = ForkServer()


def use_shepherd_binary(path: str | os.PathLike[str] | None) -> str | None:
    """For tests only: run ``path`` (absolute; None: the built one) as the
    shepherd from now on, and let the current fork server go, so the next
    spawn starts one from it.  Returns the previous override, to restore.
    (Nothing else swaps the binary: the environment is read once, at import.)"""
    global _binary_override
    new = None if path is None else os.fspath(path)
    previous = _binary_override  # (a relative one is refused when it is used, by shepherd_binary)
    if new != previous:
        _binary_override = new
        FORK_SERVER.close()
    return previous


def prepare_spare() -> None:
    """See :meth:`ForkServer.prepare_spare` (a no-op until a fork server runs)."""
    FORK_SERVER.prepare_spare()


def drop_spares() -> None:
    """See :meth:`ForkServer.drop_spares`."""
    FORK_SERVER.drop_spares()


def wake_fork_server() -> None:
    """See :meth:`ForkServer.wake` (a no-op without a fork server)."""
    FORK_SERVER.wake()


def take_shepherd(inherits: bool = False) -> socket.socket | int:
    """A non-blocking stream socket whose peer is a brand-new shepherd, or
    an fd to wait on for writability (see :meth:`ForkServer.try_take`).
    ``inherits``: the request passes our fd 0, 1 or 2 to the child, so
    they are checked to be open (``/dev/null`` if not) first."""
    if os.environ.get("NETRUNNER_FORK_SERVER", "1") == "0":
        # No fork server: exec a shepherd for this child (one more exec).
        reserve_std_fds()
        return _shepherd_pair(lambda theirs: _reap_later(spawn_helper("--shepherd", theirs)))
    return FORK_SERVER.try_take(inherits)


_unreaped: set[int] = set()
_unreaped_lock = threading.Lock()


def _reap_when_it_exits(pid: int) -> None:
    """A thread that blocks in ``waitpid`` until the old server ``pid``
    exits (once its last shepherd is done), so it never lingers as a
    zombie and nobody polls for it."""

    def reap() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped elsewhere (_reap_later)
        with _unreaped_lock:
            _unreaped.discard(pid)

    with _unreaped_lock:
        _unreaped.add(pid)
    threading.Thread(target=reap, name=f"netrunner-reap-{pid}", daemon=True).start()


def _reap_later(pid: int) -> None:
    """Remember a helper child of ours (0: none) and reap every remembered
    one that has exited by now, so none lingers as a zombie."""
    with _unreaped_lock:
        if pid:
            _unreaped.add(pid)
        for old in list(_unreaped):
            try:
                done, _ = os.waitpid(old, os.WNOHANG)
            except ChildProcessError:
                done = old
            if done:
                _unreaped.discard(old)


# /proc/self/cwd jumps to the directory itself: unlike ".", it needs no
# search permission on it (as a fork, which inherits the cwd, needs none:
# an owner may sit in a directory it cannot read).  "." without /proc.
_CWD_WHERE = "/proc/self/cwd" if os.path.exists("/proc/self/cwd") else "."


class OwnerCwd:
    """An ``O_PATH`` fd of our working directory, sent with each request
    (``FIELD_CWD_FD``) so the child ``fchdir``s to exactly the directory we
    are in, never to whatever its path names by then.

    Kept open and reused while ``stat(".")`` names the same directory (a
    ``stat`` of "." is our cwd itself, not a path walk), so a spawn opens
    and closes nothing: an fd that exists only as a number in a local
    variable is one an interrupt can leak, and a KeyboardInterrupt can land
    between any two C calls (masking signals in one thread does not stop
    Python from running the handler there when another thread received the
    signal).  It is reopened only after the cwd changed.  The lock covers
    the send that carries it, so no thread closes it under another's
    ``sendmsg``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._fd = -1
        self._id: tuple[int, int] = (0, 0)
        self._owner: select.epoll | None = None  # closes the fd in C if dropped

    def fd(self) -> int:
        """Our cwd as an fd; call with :attr:`lock` held, use it before
        releasing it."""
        where = _CWD_WHERE
        try:
            st = os.stat(".")  # (half the cost of the /proc walk; needs search permission)
        except PermissionError:
            st = os.stat(where)
        if self._fd < 0 or (st.st_dev, st.st_ino) != self._id:
            fresh = select.epoll.fromfd(os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            old, self._owner = self._owner, fresh
            self._fd = fresh.fileno()
            self._id = (st.st_dev, st.st_ino)
            if old is not None:
                old.close()
        return self._fd

    def fds(self) -> set[int]:
        """The fd it keeps (for leak accounting)."""
        return {self._fd} if self._fd >= 0 else set()

    def forget_after_fork(self) -> None:
        """In a forked child: the fd is still ours (same cwd), the lock may
        have been held by a thread that did not come along."""
        self.lock = threading.Lock()


OWNER_CWD = OwnerCwd()


def forget_reaping_after_fork() -> None:
    """In a forked child: start the reaping state afresh.  Another thread
    of the parent may have held ``_unreaped_lock`` at the moment of the
    fork; in the child nobody would ever release it, and the first spawn
    (``_start`` calls :func:`_reap_later`) would wait for it for ever.  The
    pids remembered are the parent's children, not ours, and the threads
    that would reap them did not come along."""
    global _unreaped, _unreaped_lock
    _unreaped = set()
    _unreaped_lock = threading.Lock()
    OWNER_CWD.forget_after_fork()
