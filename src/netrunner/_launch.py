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

import array
import os
import resource
import select
import signal
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

from . import _opcodes as op
from ._errors import ShepherdError

_BINARY_ENV = "NETRUNNER_SHEPHERD"


def shepherd_binary() -> str:
    """The shepherd executable: ``$NETRUNNER_SHEPHERD`` (e.g. a sanitizer
    build) or the one the package build compiled next to this module."""
    override = os.environ.get(_BINARY_ENV)
    if override:
        return override
    return str(Path(__file__).resolve().parent / "_bin" / "netrunner-shepherd")


def _default_signals() -> set[signal.Signals]:
    skip = {signal.SIGKILL, signal.SIGSTOP}
    return {s for s in signal.valid_signals() if isinstance(s, signal.Signals) and s not in skip}


def spawn_helper(mode: str, sock: socket.socket) -> int:
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
        raise ShepherdError(f"cannot start the shepherd {binary!r}: {exc}") from exc


# Every owner-side socket to a shepherd or the server, wherever it is (a
# spare, a handshake in progress, a live child): a forked interpreter must
# close them all, or a shepherd never sees its owner die while the fork lives.
_owned_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def _owned(sock: socket.socket) -> socket.socket:
    _owned_sockets.add(sock)
    return sock


def close_owned_after_fork() -> None:
    """In a forked child: close every owner-side socket (no locks taken)."""
    for sock in list(_owned_sockets):
        try:
            fd = sock.detach()
        except OSError:
            continue
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


_RLIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))


def _inherited_state() -> tuple[object, ...]:
    """What a child inherits from the fork server rather than from us (env,
    cwd and umask are sent with every request instead): credentials and
    resource limits.  When ours change, the server is replaced, so a
    process that drops privileges never spawns with its old ones."""
    return (os.getresuid(), os.getresgid(), os.getgroups(), tuple(map(resource.getrlimit, _RLIMITS)))


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


def _shepherd_pair(hand_over: Callable[[socket.socket], object]) -> socket.socket:
    """A socketpair whose other end ``hand_over`` gives to a shepherd (and
    may raise); ours comes back registered for fork safety, non-blocking.
    Our copy of their end is closed whatever happens."""
    # Non-blocking from birth (the shepherd sets its end so anyway).
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
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

    def _start(self) -> socket.socket:
        reserve_std_fds()
        _reap_later(0)
        self._state = _inherited_state()
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
                    os.close(sock.detach())
                except OSError:
                    pass
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
                    if sock is not None and _inherited_state() != self._state:
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

    def _adopt(self, sock: socket.socket) -> socket.socket | None:
        """A socketpair whose other end the server forks a shepherd for
        (FS_ADOPT, no reply); None if the server's queue is full."""

        reserve_std_fds()  # (our new sockets must not take fd 0, 1 or 2)

        def adopt(theirs: socket.socket) -> None:
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
        return {s.fileno() for s in [self._sock, *self._ready] if s is not None and s.fileno() >= 0}


FORK_SERVER = ForkServer()


def prepare_spare() -> None:
    """See :meth:`ForkServer.prepare_spare` (a no-op until a fork server runs)."""
    FORK_SERVER.prepare_spare()


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
