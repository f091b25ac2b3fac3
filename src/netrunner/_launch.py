"""Getting a shepherd: the per-interpreter fork server and the handshake.

Exec'ing a shepherd per child would cost a second exec on every spawn, so
each Python process starts one small fork server (the same C binary, in
``--fork-server`` mode) on first use.  A spawn sends it one end of a fresh
``socketpair``; the server forks, and the fork becomes that child's own
shepherd, talking only over that socket.  The server keeps no per-child
state beyond its shepherds' pids, and as a subreaper it kills whatever a
shepherd that died abnormally left behind.

The server is restarted after ``os.fork()`` (in the child) and when it is
found dead.  Everything here is blocking-free except :func:`connect_shepherd`
callers that choose to wait on the returned socket.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import threading
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


class ForkServer:
    """The one fork server of this interpreter (per pid: re-made after fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        self._owner = 0

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._pid = spawn_helper("--fork-server", theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._owner = os.getpid()
        return ours

    def _discard(self) -> None:
        """Forget a dead server (and reap it: it is our child)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._pid and self._owner == os.getpid():
            # It may still be finishing its shepherds: reap it later if so.
            _reap_later(self._pid)
        self._pid = 0

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's server without touching it."""
        if self._sock is not None:
            try:
                os.close(self._sock.detach())
            except OSError:
                pass
        self._sock = None
        self._pid = 0
        self._owner = 0
        self._lock = threading.Lock()

    def fork_shepherd(self, shepherd_end: socket.socket) -> None:
        """Have the server fork a shepherd that owns ``shepherd_end``."""
        fds = array.array("i", [shepherd_end.fileno()])
        message = [bytes([op.FS_FORK])]
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        with self._lock:
            for attempt in (1, 2):
                sock = self._sock if self._sock is not None and self._owner == os.getpid() else None
                if sock is None:
                    sock = self._start()
                try:
                    sock.sendmsg(message, ancillary)
                    return
                except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError) as exc:
                    self._discard()
                    if attempt == 2:
                        raise ShepherdError(f"the fork server died: {exc}") from exc

    def close(self, timeout: float = 10.0) -> None:
        """Let the server go: it exits once its shepherds are done.  Waits
        up to ``timeout`` for that and reaps it (else it is reaped later)."""
        with self._lock:
            if self._sock is None or self._owner != os.getpid():
                return
            self._sock.close()
            self._sock = None
            pid, self._pid = self._pid, 0
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
            if pidfd >= 0:
                try:
                    select.select([pidfd], [], [], timeout)
                finally:
                    os.close(pidfd)
            _reap_later(pid)

    @property
    def pid(self) -> int:
        return self._pid if self._owner == os.getpid() else 0


FORK_SERVER = ForkServer()


def connect_shepherd() -> socket.socket:
    """A stream socket whose peer is a brand-new shepherd, non-blocking."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.environ.get("NETRUNNER_FORK_SERVER", "1") == "0":
            _direct_shepherd(theirs)
        else:
            FORK_SERVER.fork_shepherd(theirs)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return ours


_unreaped: set[int] = set()
_unreaped_lock = threading.Lock()


def _reap_later(pid: int) -> None:
    """Remember a helper child of ours and reap every remembered one that
    has exited by now, so none lingers as a zombie."""
    with _unreaped_lock:
        _unreaped.add(pid)
        for old in list(_unreaped):
            try:
                done, _ = os.waitpid(old, os.WNOHANG)
            except ChildProcessError:
                done = old
            if done:
                _unreaped.discard(old)


def _direct_shepherd(theirs: socket.socket) -> None:
    """Without a fork server: exec a shepherd per child (slower, one more
    exec), reaping finished ones as we go so no zombie accumulates."""
    _reap_later(spawn_helper("--shepherd", theirs))
