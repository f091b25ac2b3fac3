"""The I/O core of one child: non-blocking steps, no waiting.

Every method here does at most a bounded amount of non-blocking work on
the child's fds and the shepherd socket and returns at once.  Waiting for
readiness is the driver's job (a ``poll`` loop in the sync API, the event
loop in :mod:`netrunner.aio`), so the logic of reading, writing, draining
stderr and following the shepherd exists exactly once.

fd holders follow trio's rule: closing sets the number to -1, so a closed
fd is never closed twice or used after another owner reused its number.

Nothing here has a finalizer (``__del__``): a Python finalizer is where a
KeyboardInterrupt gets lost ("Exception ignored in ..."), since it can
land on any line of it.  A core that is dropped while its child runs is
released by C code alone: its fds belong to C objects that close them when
collected, and closing the shepherd socket is owner loss.
"""

from __future__ import annotations

import array
import enum
import errno
import importlib
import os
import select
import signal
import socket
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from . import _opcodes as op
from ._bounds import COMMAND_SEND_BOUND, NUDGE_AFTER, REPORT_MARGIN, SILENT_BOUND, STOP_BOUND, TAKEOVER_GRACE
from ._cgroup import teardown as cgroup_teardown
from ._drive import POLLIN, POLLOUT, Pending, may_block, notify_closing
from ._errors import CgroupError, ShepherdError, TimeoutExpired
from ._launch import OWNER_CWD, WeakRegistry, drop_spares, prepare_spare, take_shepherd, wake_fork_server
from ._protocol import (
    CgroupStats,
    Decoder,
    Event,
    Exited,
    ProtocolError,
    SpawnFailed,
    SpawnRequest,
    Started,
    encode_spawn,
    encode_stop,
)
from ._stats import Stats

READ_SIZE = 65536
RECV_SIZE = 65536  # shepherd frames are tiny; one read takes all that is queued
STDERR_TAIL = 8192
STDERR_BUFFER = 1 << 20  # unread stderr kept for read_stderr(); older bytes dropped
STDOUT_BUFFER = 64 << 20  # stdout drained while waiting in write()/wait(); then backpressure
DRAIN_BUDGET = 16  # reads per pipe per pass, so one flood cannot starve the rest
PIDFD_SIGNAL_PROCESS_GROUP = 4  # pidfd_send_signal flag, Linux 6.9

_live: WeakRegistry[ChildCore] = WeakRegistry()


def eof_on_eio(exc: OSError) -> bytes:
    """A terminal's master reads EIO once the child side is closed: that
    is its end of file (everything written before is read first)."""
    if exc.errno == errno.EIO:
        return b""
    raise exc


class TailBuffer:
    """The newest ``limit`` bytes of a stream, oldest dropped first, and how
    many were dropped.

    A deque of the chunks as read: dropping from the front never copies
    what is kept (a bytearray trimmed at the front re-copies the whole
    buffer every few reads once it is full), so capturing any amount costs
    ``limit`` plus one chunk of memory, and one join at the end."""

    __slots__ = ("_chunks", "_size", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[bytes | memoryview] = deque()
        self._size = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def append(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        over = self._size - self.limit
        while over > 0:
            first = self._chunks[0]
            if len(first) <= over:
                self._chunks.popleft()
                cut = len(first)
            else:
                self._chunks[0] = memoryview(first)[over:]  # no copy
                cut = over
            self._size -= cut
            self.dropped += cut
            over -= cut

    def take(self, n: int) -> bytes:
        """Up to ``n`` of the oldest bytes kept, removed from the buffer."""
        parts: list[bytes | memoryview] = []
        want = n
        while want > 0 and self._chunks:
            first = self._chunks[0]
            if len(first) <= want:
                parts.append(self._chunks.popleft())
                want -= len(first)
            else:
                view = memoryview(first)
                parts.append(view[:want])
                self._chunks[0] = view[want:]
                want = 0
        data = b"".join(parts)
        self._size -= len(data)
        return data

    def value(self) -> bytes:
        """Everything kept, as one bytes object (joined once, then reused)."""
        if len(self._chunks) == 1 and isinstance(self._chunks[0], bytes):
            return self._chunks[0]
        data = b"".join(self._chunks)
        self._chunks.clear()
        if data:
            self._chunks.append(data)
        return data


class Ended(str):
    """Why a shepherd connection ended (a message), and the errno behind it
    when a socket call said so (0 otherwise): a reset before STARTED means
    our request was never read, a truncated recvmsg that our fd table is
    full."""

    errno = 0

    @classmethod
    def because(cls, why: str, err: int) -> Ended:
        ended = cls(why)
        ended.errno = err
        return ended


# Why the fds sent with STARTED never reached us: MSG_CTRUNC on a control
# buffer large enough for them means the kernel could not install them.
FD_TABLE_FULL = "our fd table is full: the child's pipe ends could not be received"


class Fd:
    """An owned fd; ``fd == -1`` once closed.

    The number is also held by a C object that closes it when collected,
    so dropping a holder that was never closed runs no Python code (a
    finalizer is where a KeyboardInterrupt would be lost).  That object is
    an epoll object made with ``select.epoll.fromfd``: any fd may be wrapped,
    ``close()`` closes it, and collection closes it silently (no "unclosed"
    warning, whose formatting could call Python code)."""

    __slots__ = ("_owner", "fd")

    def __init__(self, fd: int | None) -> None:
        self.fd = -1
        self._owner: select.epoll | None = None
        if fd is not None:
            self.adopt(fd)

    def adopt(self, fd: int) -> None:
        """Own ``fd`` (this holder must be closed)."""
        self._owner = select.epoll.fromfd(fd)
        self.fd = fd

    def take_from(self, other: Fd) -> None:
        """Move ``other``'s fd into this (closed) holder."""
        self._owner, other._owner = other._owner, None
        self.fd, other.fd = other.fd, -1

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        owner, self._owner = self._owner, None
        if fd >= 0:
            notify_closing(fd)
            if owner is not None:
                owner.close()

    def drop_after_fork(self) -> None:
        """In a forked child: close, telling nobody, ignoring errors."""
        self.fd = -1
        owner, self._owner = self._owner, None
        if owner is not None:
            try:
                owner.close()
            except OSError:
                pass

    def __bool__(self) -> bool:
        return self.fd >= 0


_STAGE_NAMES = {
    op.STAGE_FORK: "fork",
    op.STAGE_PIPE: "creating pipes",
    op.STAGE_REQUEST: "reading the request",
    op.STAGE_SETPGID: "setpgid",
    op.STAGE_DUP2: "dup2",
    op.STAGE_CHDIR: "chdir",
    op.STAGE_RLIMIT: "setrlimit",
    op.STAGE_EXEC: "exec",
    op.STAGE_SIGNALS: "resetting signals",
    op.STAGE_PTY: "setting up the terminal",
    op.STAGE_CREDENTIALS: "setgroups/setgid/setuid",
    op.STAGE_PRCTL: "PR_SET_NO_NEW_PRIVS",
    op.STAGE_NICE: "setpriority (nice)",
    op.STAGE_PASS_FDS: "dup2 (pass_fds)",
}


def spawn_error(failed: SpawnFailed, rq: SpawnRequest) -> BaseException:
    """The exception ``subprocess`` would raise for the same failure."""
    message = os.strerror(failed.errno)
    if failed.stage == op.STAGE_EXEC:
        return OSError(failed.errno, message, os.fsdecode(rq.argv[0]))
    if failed.stage == op.STAGE_CHDIR:
        # Without a cwd it was our own directory (by fd) that failed.
        return OSError(failed.errno, message, "." if rq.cwd is None else os.fsdecode(rq.cwd))
    if failed.stage in (op.STAGE_CGROUP, op.STAGE_CGROUP_SET) and rq.cgroup is not None:
        what = (
            "setting " + b", ".join(rq.cgroup_set or []).decode()
            if failed.stage == op.STAGE_CGROUP_SET
            else "no writable cgroup.kill (Linux 5.14+) in"
            if failed.errno == errno.EOPNOTSUPP
            else "setting up"
        )
        return CgroupError(failed.errno, f"{message} ({what} cgroup {os.fsdecode(rq.cgroup)})", os.fsdecode(rq.cgroup))
    stage = _STAGE_NAMES.get(failed.stage, f"stage {failed.stage}")
    if failed.stage == op.STAGE_FORK:
        # Out of processes or memory: what subprocess raises for the same
        # fork failure (EAGAIN is a BlockingIOError); the next call may work.
        return OSError(failed.errno, f"{message} (the shepherd could not fork the child)")
    # As subprocess: the errno's own OSError subclass (PermissionError for
    # EPERM, as a non-root owner asking for another uid gets).
    if failed.stage in (
        op.STAGE_RLIMIT, op.STAGE_DUP2, op.STAGE_SETPGID, op.STAGE_SIGNALS, op.STAGE_CREDENTIALS, op.STAGE_PRCTL,
        op.STAGE_NICE, op.STAGE_PASS_FDS,
    ):  # fmt: skip
        return OSError(failed.errno, f"{message} (in the child, at {stage})")
    return ShepherdError(f"the shepherd could not start the child ({stage}: {message})")


# A peer that is gone, as a send or a receive says it.
_PEER_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN)

_ALL_SIGNALS = signal.valid_signals()
# The C function: signal.pthread_sigmask turns ~60 ints into enums per call.
_sigmask: Callable[[int, Iterable[int]], set[int]] = getattr(
    importlib.import_module("_signal"), "pthread_sigmask", signal.pthread_sigmask
)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _hold_signals() -> set[int] | None:
    """The main thread's signal mask now, or None off the main thread (only
    it runs Python signal handlers).  Changes nothing: block afterwards,
    *inside* the ``try`` whose ``finally`` restores this mask, so that a
    handler that runs as soon as the blocking call returns (a signal taken
    by another thread trips it) still finds the mask restored:

        saved = _hold_signals()
        try:
            if saved is not None:
                _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
            ...  # no KeyboardInterrupt here from a signal to the main thread
        finally:
            if saved is not None:
                _sigmask(signal.SIG_SETMASK, saved)

    Written out at each use, no helper: a Python function can be
    interrupted on entry, before it restores anything (and a ``with``'s
    ``__enter__`` after blocking and before recording)."""
    return _sigmask(signal.SIG_BLOCK, ()) if _in_main_thread() else None


def inherited_fds(rq: SpawnRequest) -> list[int]:
    """The owner's fds that go with the request, in the order the shepherd
    takes them: one per STDIO_INHERIT slot, in slot order, then pass_fds
    (the cwd fd, last, is added at send time)."""
    modes = (rq.stdin, rq.stdout, rq.stderr)
    stdio = [slot if fd is None else fd for slot, fd in enumerate(rq.stdio_fds) if modes[slot] == op.STDIO_INHERIT]
    return stdio + list(rq.pass_fds)


class Handshake:
    """Sending a SPAWN request and waiting for STARTED/SPAWN_FAILED.

    ``want()`` says which readiness to wait for; ``step()`` makes progress
    and returns the :class:`ChildCore` once the child runs.  It raises the
    exec error, or :class:`ShepherdError` if the shepherd disappears."""

    def __init__(self, sock: socket.socket, rq: SpawnRequest, inherit: list[int], request: bytes) -> None:
        self.sock = sock
        self.rq = rq
        self.decoder = Decoder()
        self._out = memoryview(request)
        self._total = len(self._out)
        self._fds = inherit
        self._with_fds = bool(inherit) or rq.cwd_fd  # the first send carries fds
        self.started: Started | None = None
        self.after: list[Event] = []  # events that arrived with STARTED
        self.ended: str | None = None  # and the connection's end, if it came too
        self._sending = False
        # No shepherd ever read a byte of this request (the socket's peer was
        # gone before our first send, or reset with our request unread): no
        # child can exist, so the spawn may go to a fresh shepherd instead.
        self.unreached = False

    def want(self) -> tuple[int, int]:
        return self.sock.fileno(), (POLLOUT if self._out else 0) | POLLIN

    def request_begun(self) -> bool:
        """After an interrupt: may the shepherd have any of the request (so
        a child may exist)?  A send cut short by the interrupt counts."""
        return self._sending or len(self._out) < self._total

    @property
    def sending(self) -> bool:
        """Some of the request is still to be written."""
        return bool(self._out)

    def send(self) -> None:
        """Write what the socket takes of the request (non-blocking).

        The first send carries the STDIO_INHERIT fds and, last, our cwd as
        an ``O_PATH`` fd (FIELD_CWD_FD; see :class:`~netrunner._launch.OwnerCwd`:
        kept open, not opened per spawn).  An error reading our cwd raises
        before any byte is sent."""
        self._sending = True  # stays set if an interrupt cuts the send short
        if self._with_fds and self.rq.cwd_fd:
            with OWNER_CWD.lock:  # (its fd stays valid until this send is done)
                self._send_some([*self._fds, OWNER_CWD.fd()])
        else:
            self._send_some(self._fds if self._with_fds else None)
        self._sending = False

    def _send_some(self, fds: list[int] | None) -> None:
        try:
            if fds is not None:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                n = self.sock.sendmsg([self._out], anc)
                self._with_fds = False
            else:
                n = self.sock.send(self._out)
            self._out = self._out[n:]
        except BlockingIOError:
            pass
        except OSError as exc:
            # A spare whose shepherd never existed (the server could not fork
            # it, or died with it queued) refuses the very first byte.
            if len(self._out) == self._total and exc.errno in _PEER_GONE:
                self.unreached = True
            self._out = memoryview(b"")  # the shepherd is gone: the read side will say why

    def receive_reply(self) -> Started | None:
        """STARTED once it is here (None before); raises the spawn error.
        The caller blocks signals around this: the fds arrive with STARTED."""
        events, ended = receive(self.sock, self.decoder)
        for event in events:
            if self.started is None:
                if isinstance(event, SpawnFailed):
                    raise spawn_error(event, self.rq)
                if not isinstance(event, Started):
                    raise ShepherdError(f"unexpected {event!r} during spawn")
                self.started = event
            else:
                # A fast child's EXITED can share a read with STARTED.
                self.after.append(event)
        if self.started is None:
            if ended:
                if isinstance(ended, Ended) and ended.errno == errno.EMFILE:
                    # The child runs, but its pipe ends were dropped on the way
                    # in: the caller's abort stops and reaps it before this
                    # reaches anybody.
                    raise OSError(errno.EMFILE, f"{os.strerror(errno.EMFILE)} ({ended}; the child was stopped)")
                if isinstance(ended, Ended) and ended.errno == errno.ECONNRESET:
                    # Reset with our request unread: the shepherd never had
                    # all of it, so it started nothing.
                    self.unreached = True
                    return None
                raise ShepherdError(f"{ended} before the child started")
            return None
        self.ended = ended
        return self.started


class Starter:
    """Attempt (see :mod:`netrunner._drive`): take a ready shepherd, send the
    SPAWN request, and return the :class:`ChildCore` once STARTED arrives.

    STARTED comes once the child has exec'd, and a child can hang before
    that (a frozen cgroup, a hung filesystem).  The caller's ``timeout``
    (``run``, ``stream``) bounds the start too: once it passes, the start
    is aborted as after an interrupt (the shepherd stops what started:
    SIGTERM, kill_timeout, SIGKILL) and ``TimeoutExpired`` is raised when
    the shepherd has hung up, at the latest ``kill_timeout`` +
    ``REPORT_MARGIN`` after the timeout.  Without a timeout it waits as
    ``subprocess.Popen`` would, for as long as the exec takes, and stays
    interruptible (ADR 0009).  If it fails or is abandoned (an exception,
    a cancelled task), :meth:`begin_abort` and :meth:`abort_attempt` stop
    whatever did start before the exception goes on."""

    def __init__(
        self,
        args: Any,
        rq: SpawnRequest,
        *,
        stderr_complete: bool = False,
        timeout: float | None = None,
        request: bytes | None = None,
    ) -> None:
        self.args = args
        self.rq = rq
        # stderr is captured (run, stream): a timeout before the start reports b"" for it
        self.stderr_complete = stderr_complete
        self.inherit = inherited_fds(rq)
        now = time.monotonic()
        self.timeout = timeout
        # The caller's timeout counts from here: the start is part of it.
        self.deadline = None if timeout is None else now + timeout
        self.timed_out = False  # the deadline passed before STARTED: aborting
        # No STARTED by then: SIGCONT the fork server and its shepherds, in
        # case one of them is stopped (harmless if not); once only.
        self.nudge_at: float | None = now + NUDGE_AFTER
        # Encoded before a shepherd is taken: a request the protocol cannot
        # carry (over MAX_PAYLOAD) is a ValueError that costs no spare.
        self.request = encode_spawn(rq) if request is None else request
        self.hs: Handshake | None = None
        self.abort_deadline = 0.0
        # The core once made: kept until our caller holds it, so an interrupt
        # between here and there still finds the child to stop.
        self.core: ChildCore | None = None
        self.retried = False

    def __call__(self, ready: list[int] | None) -> ChildCore | Pending:
        if self.timed_out:
            waiting = self.abort_attempt(ready)
            if waiting is True:
                raise self._timeout_error()
            assert isinstance(waiting, Pending)
            return waiting
        if self.hs is None:
            got = take_shepherd(any(fd < 3 for fd in self.inherit))
            if isinstance(got, int):
                return self._pending([(got, POLLOUT)])
            self.hs = Handshake(got, self.rq, self.inherit, self.request)
        hs = self.hs
        if hs.sending:
            if self._late():
                return self._time_up()
            hs.send()
            if hs.unreached and self._retry():
                return self(None)
            if not hs.sending:  # this send finished the request (happens once)
                # The request is out: while its shepherd wakes up and execs
                # the child, have the server fork the next spawn's shepherd.
                # Doing it now, not after STARTED, keeps both off the path of
                # the next spawn (our wake-up for STARTED often waits behind
                # the child for a CPU on these 2-core machines).
                prepare_spare()
            return self._pending([hs.want()])
        # The pipe fds arrive with STARTED and go straight into the core: no
        # Python signal handler (KeyboardInterrupt) may run between their
        # recvmsg and the core owning them, or they leak (or get closed twice).
        saved = _hold_signals()
        try:
            if saved is not None:
                _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
            if hs.receive_reply() is None:
                if hs.unreached and self._retry():
                    return self(None)
                return self._pending([hs.want()])
            core = self.core = ChildCore(self.args, hs)
            core.timeout_at = self.deadline
            self.hs = None
        finally:
            if saved is not None:
                _sigmask(signal.SIG_SETMASK, saved)
        return core

    def _late(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _retry(self) -> bool:
        """Our request never reached a shepherd (see ``Handshake.unreached``):
        a stale spare (its server could not fork it and said so before we
        asked) or a fork server killed with it queued.  Nothing can have
        started, so drop that socket and go once more to a fresh shepherd
        (the server is replaced if it is dead).  False after one retry: then
        the read side's report (the fork failure, the reset) stands."""
        hs = self.hs
        if self.retried or hs is None:
            return False
        self.retried = True
        self.hs = None
        notify_closing(hs.sock.fileno())  # an async driver may hold it registered
        hs.sock.close()
        for fd in hs.decoder.take_unclaimed_fds():
            os.close(fd)
        drop_spares()  # made by the same server: the retry must not take one
        return True

    def _pending(self, interest: list[tuple[int, int]]) -> Pending:
        if self._late():
            return self._time_up()
        if self.nudge_at is not None and time.monotonic() >= self.nudge_at:
            self.nudge_at = None
            wake_fork_server()
        wake = [d for d in (self.deadline, self.nudge_at) if d is not None]
        return Pending(interest, min(wake) if wake else None)

    def _time_up(self) -> Pending:
        """The caller's timeout passed before the child ran: abort as after
        an interrupt (nothing sent: nothing to stop), then wait for the
        shepherd's hang-up within the bound TimeoutExpired promises."""
        assert self.deadline is not None
        self.timed_out = True
        self.begin_abort()
        if self.hs is None:
            raise self._timeout_error()
        self.abort_deadline = self.deadline + self.rq.kill_timeout + REPORT_MARGIN
        return Pending([(self.hs.sock.fileno(), POLLIN)], self.abort_deadline)

    def _timeout_error(self) -> TimeoutExpired:
        """What ``run()`` raises on timeout, with the (empty) partial output."""
        assert self.timeout is not None
        stdout = b"" if self.rq.stdout == op.STDIO_PIPE else None
        return TimeoutExpired(self.args, self.timeout, stdout, b"" if self.stderr_complete else None)

    def begin_abort(self) -> None:
        """Interrupted mid-handshake: if the request went out, a child may
        be running.  Half-close the socket (owner loss for the shepherd,
        which stops the child with the usual escalation), or send STOP if
        the core was already made, and let :meth:`abort_attempt` wait until
        the shepherd is done."""
        core = self.core
        if core is not None:
            if not core.done:
                core.send(encode_stop(self.rq.kill_timeout))
            self.abort_deadline = time.monotonic() + self.rq.kill_timeout + STOP_BOUND
            return
        hs = self.hs
        if hs is None:
            return
        if hs.started is None and not hs.request_begun():
            self.release()  # not a byte of the request went out: nothing started
            return
        # Half-close: however much of the request arrived, the shepherd now
        # reads EOF, which is owner loss (a child that did start is stopped:
        # SIGTERM, kill_timeout, SIGKILL), and it hangs up once all is reaped.
        # A STOP frame could land inside a request cut short by the interrupt.
        try:
            hs.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # gone already: EOF will say so
        self.abort_deadline = time.monotonic() + self.rq.kill_timeout + STOP_BOUND

    def abort_attempt(self, ready: list[int] | None) -> bool | Pending:
        """Attempt: True once the shepherd hung up (it reaps before it
        exits) or the bound passed; fds that still arrive are closed."""
        core = self.core
        if core is not None:
            core.service_ctl()
            if core.done or core.sock is None or time.monotonic() >= self.abort_deadline:
                return True
            return Pending([(core.sock.fileno(), POLLIN)], self.abort_deadline)
        hs = self.hs
        if hs is None:
            return True
        saved = _hold_signals()  # fds arriving with a late STARTED: owned before any handler runs
        try:
            if saved is not None:
                _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
            events, ended = receive(hs.sock, hs.decoder)
            for event in events:
                if isinstance(event, Started) and hs.started is None:
                    hs.started = event  # so release() closes its fds
        finally:
            if saved is not None:
                _sigmask(signal.SIG_SETMASK, saved)
        if ended is not None or time.monotonic() >= self.abort_deadline:
            self.release()
            return True
        return Pending([(hs.sock.fileno(), POLLIN)], self.abort_deadline)

    def release(self) -> None:
        """Close everything the handshake holds (closing the socket is owner
        loss: the shepherd stops whatever did start)."""
        core, self.core = self.core, None
        if core is not None:
            core.abandon()
        hs, self.hs = self.hs, None
        if hs is None:
            return
        notify_closing(hs.sock.fileno())  # an async driver may hold it registered
        hs.sock.close()
        if hs.started is not None:
            for fd in hs.started.fds():
                os.close(fd)
        for fd in hs.decoder.take_unclaimed_fds():
            os.close(fd)


# Plain ints: socket.MSG_* are IntFlag members, and ``int & IntFlag`` runs
# enum's Python __and__ (~3 us, twice a spawn).
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_MSG_CMSG_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_ANC_SPACE = socket.CMSG_SPACE(4 * 8)  # room for 8 fds


def receive(sock: socket.socket, decoder: Decoder) -> tuple[list[Event], str | None]:
    """Every complete event readable now (non-blocking), and why the
    connection ended if it did (EOF, error, garbage), else None.  Events
    decoded before the end are always returned: EXITED followed at once by
    the shepherd's exit must not be lost."""
    events: list[Event] = []
    while True:
        try:
            data, anc, flags, _addr = sock.recvmsg(RECV_SIZE, _ANC_SPACE, _MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return events, None
        except OSError as exc:
            return events, _orphaned(decoder, Ended.because(f"shepherd connection failed: {exc}", exc.errno or 0))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                decoder.add_fds(fds)
        if flags & _MSG_CTRUNC:
            # Room for 8 fds and at most 3 sent: the kernel dropped them
            # because our fd table is full.  The frame that owns them cannot
            # be decoded; the connection is over (owner loss stops the child).
            return events, _orphaned(decoder, Ended.because(FD_TABLE_FULL, errno.EMFILE))
        if not data:
            return events, _orphaned(decoder, "the shepherd exited")
        try:
            events.extend(decoder.feed(data))
        except ProtocolError as exc:
            return events, _orphaned(decoder, f"protocol error from the shepherd: {exc}")
        if len(data) < RECV_SIZE:
            # A short read drained the socket; whatever comes later makes it
            # readable again, so skip the extra recvmsg that would say EAGAIN.
            return events, None


def _orphaned(decoder: Decoder, why: str) -> str:
    for fd in decoder.take_unclaimed_fds():
        os.close(fd)
    return why


def _exited(pidfd: int) -> bool:
    """The process behind ``pidfd`` has exited (zombie or reaped)."""
    return bool(select.select([pidfd], [], [], 0)[0])


def _unreaped(pidfd: int) -> bool:
    """Signal 0 reaches a process until it is reaped, zombies included."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_child_and_group(pidfd: int, pgid: int) -> None:
    """SIGKILL the child and its process group through its pidfd, so no
    recycled pid is ever hit.  The group flag (Linux 6.9) addresses the
    group by the child's own struct pid, which still names it after the
    child is reaped; without it, killpg only while the child is unreaped
    (its zombie pins the group id)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass  # exited and reaped already
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL, None, PIDFD_SIGNAL_PROCESS_GROUP)
        return
    except ProcessLookupError:
        return  # nobody left in the group
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            return
    if _unreaped(pidfd):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def _cgroup_teardown_off_the_loop(leaf: str) -> None:
    """The leaf's teardown (may wait, bounded, for it to empty): inline in
    sync code, on a thread of its own on an event loop (asyncio or trio:
    the driver hook :func:`~netrunner._drive.may_block` says which)."""
    if may_block():
        cgroup_teardown(leaf)
        return
    threading.Thread(target=cgroup_teardown, args=(leaf,), name="netrunner-cgroup-teardown", daemon=True).start()


class Lifecycle(enum.Enum):
    """A child's phases, as its owner knows them.  The :class:`Starter` is
    STARTING; from STARTED on, the :class:`ChildCore` alone holds and moves
    the phase (by :data:`LIFECYCLE`), nobody else writes it."""

    STARTING = "starting"  # the request is out, no STARTED yet (the Starter's)
    RUNNING = "running"  # STARTED came; no exit report yet
    EXITED = "exited"  # EXITED came (reaped); the shepherd may still empty the cgroup
    HUNG_UP = "hung up"  # exited, and the shepherd closed its end: nothing is left
    LOST = "lost"  # no report will come: the owner verified (and killed) the child itself
    FORKED_AWAY = "forked away"  # we are a fork() of the owner: the child is the parent's

    # Members are singletons: hash them by identity, in C.  Enum's own
    # __hash__ is Python code, and ``done`` (a set lookup) is asked ~17
    # times per run() (~10 us of a spawn's owner CPU).
    __hash__ = object.__hash__


# Which phase may follow which.  Later news never overrides the exit
# report: a take-over that concludes after EXITED came leaves it EXITED.
LIFECYCLE: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.STARTING: frozenset({Lifecycle.RUNNING}),
    Lifecycle.RUNNING: frozenset({Lifecycle.EXITED, Lifecycle.LOST, Lifecycle.FORKED_AWAY}),
    Lifecycle.EXITED: frozenset({Lifecycle.HUNG_UP, Lifecycle.FORKED_AWAY}),
    Lifecycle.HUNG_UP: frozenset({Lifecycle.FORKED_AWAY}),
    Lifecycle.LOST: frozenset({Lifecycle.FORKED_AWAY}),
    Lifecycle.FORKED_AWAY: frozenset(),
}
_DONE = frozenset({Lifecycle.EXITED, Lifecycle.HUNG_UP, Lifecycle.LOST, Lifecycle.FORKED_AWAY})


class ChildCore:
    """State and non-blocking steps for one running child.  Its phase
    (:class:`Lifecycle`) and every field below are written by its own
    methods only; the jobs above read them and call those methods."""

    def __init__(self, args: Any, hs: Handshake) -> None:
        started = hs.started
        assert started is not None
        self.args = args
        self.pid = started.pid
        self.kill_timeout = hs.rq.kill_timeout
        self.sock: socket.socket | None = hs.sock
        self.decoder = hs.decoder
        self.stdin = Fd(started.stdin)
        self.stdout = Fd(started.stdout)
        self.stderr = Fd(started.stderr)
        # The shepherd hands the pipe ends over already O_NONBLOCK.
        self.exited: Exited | None = None
        self.cgroup_stats: CgroupStats | None = None
        self.cgroup = None if hs.rq.cgroup is None else os.fsdecode(hs.rq.cgroup)
        self.lost: str | None = None  # why no report will come (LOST, or FORKED_AWAY unreaped)
        self.phase = Lifecycle.RUNNING
        # The caller's timeout deadline, counted from before the start
        # (set by the Starter; RunCore goes on with it).
        self.timeout_at: float | None = None
        # stdout read ahead while a writer or waiter had to drain it
        self.out_buf = bytearray()
        self.out_eof = not self.stdout  # no pipe (inherited, /dev/null, an fd): nothing to read
        self.out_starved = False  # the last read of stdout found it empty
        # pty mode: stdin and stdout are two fds on the terminal's master
        self.pty = hs.rq.pty is not None
        self.pty_hold = Fd(None)  # the master's stdin fd after end_input()
        # The terminal's EOF character(s) still to write: end_input() queues
        # them when the terminal's input is full, flush_eof() writes them.
        self.eof_pending = b""
        # An eventfd made for the first sync writer that has to wait: poll
        # does not return when another thread closes an fd it waits on, so
        # close_stdin() (and closing everything) signals this instead, and
        # a parked write() raises at once (upstream lesson 14).
        self.writer_wake = Fd(None)
        self.line_open = False  # the last byte written to a terminal was not a newline
        # stderr: unread bytes (the newest STDERR_BUFFER, or what run()
        # sets: see TailBuffer) and the last 8 KiB for error messages
        self.err_buf = TailBuffer(STDERR_BUFFER)
        self.err_tail = bytearray()
        self.err_eof = not self.stderr
        self.bytes_in = self.bytes_out = self.bytes_err = 0
        self.read_count = self.write_count = 0
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self.lock = threading.RLock()
        # Watching the watcher (docs/decisions/0010-watcher-failure.md): our
        # own hold on the child, and what we do when its shepherd is lost
        # or stops answering.
        self.pidfd = Fd(started.pidfd)
        self.shepherd_pidfd = Fd(None)  # found only when needed (SIGCONT)
        self.shepherd_pid: int | None = None
        self.child_dead = False  # the pidfd said the child exited (no EXITED yet)
        self.nudge_at: float | None = None  # exit seen, no report: SIGCONT (then take over) at
        self.nudged = False
        self.report_by: float | None = None  # a STOP's report is due by then
        self.report_what = ""
        self.takeover: str | None = None  # why the owner acts itself
        self.dead_before = False  # the child had exited before our SIGKILL
        self.eager = False  # conclude once the child is dead, without waiting for EXITED
        self.verify_by: float | None = None  # our SIGKILL is out: conclude by then
        _live.add(self)
        self._apply(hs.after, hs.ended)

    # ----------------------------------------------------------- state
    @property
    def returncode(self) -> int | None:
        return None if self.exited is None else os.waitstatus_to_exitcode(self.exited.status)

    @property
    def done(self) -> bool:
        """The child is reaped, or its shepherd is gone (child killed)."""
        return self.phase in _DONE

    @property
    def forked_away(self) -> bool:
        return self.phase is Lifecycle.FORKED_AWAY

    def _enter(self, phase: Lifecycle) -> None:
        if phase in LIFECYCLE[self.phase]:
            self.phase = phase

    # What the jobs above report back (they read the pipes themselves on
    # their fast paths; the counts and ends are still the core's to keep).
    def counted_stdout(self, n: int) -> None:
        """``n`` bytes of stdout were read in one read."""
        self.bytes_out += n
        self.read_count += 1

    def end_stdout(self, *, discard: bool = False) -> None:
        """Stdout is at its end (or no longer wanted: ``discard`` drops
        what was read ahead too); the child meets EPIPE if it writes on."""
        self.stdout.close()
        self.out_eof = True
        if discard:
            self.out_buf.clear()

    def end_stderr(self) -> None:
        """Stderr is no longer wanted; the child meets EPIPE if it writes on."""
        self.stderr.close()
        self.err_eof = True

    def adopt_pipes(self, stdin: int | None, stdout: int | None, stderr: int | None) -> None:
        """Own pipe ends the caller made itself and the child has the other
        ends of (``netrunner.subprocess.Popen`` makes its own pipes, as
        ``subprocess`` does, and lends them here for ``communicate()``).
        Each must be non-blocking, and its slot empty (the child was started
        with that stdio going to an fd, not to a pipe of the shepherd's)."""
        for holder, fd in ((self.stdin, stdin), (self.stdout, stdout), (self.stderr, stderr)):
            if fd is not None:
                assert not holder, "adopt_pipes: the slot already holds a pipe"
                holder.adopt(fd)
        if stdout is not None:
            self.out_eof = not self.stdout
        if stderr is not None:
            self.err_eof = not self.stderr

    def capture_stderr(self, limit: int) -> None:
        """Keep the newest ``limit`` bytes of stderr (instead of STDERR_BUFFER)."""
        self.err_buf = TailBuffer(limit)

    def set_grace(self, grace: float) -> None:
        """The grace used when the owner stops the child (its kill_timeout)."""
        self.kill_timeout = grace

    def check_owner(self) -> None:
        if self.forked_away:
            raise ShepherdError("this Process belongs to the parent of a fork()")

    def stats(self) -> Stats:
        ex = self.exited
        cg = self.cgroup_stats
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        return Stats(
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            bytes_err=self.bytes_err,
            read_count=self.read_count,
            write_count=self.write_count,
            duration=end - self.started_at,
            returncode=self.returncode,
            user_time=None if ex is None else ex.utime_us / 1e6,
            system_time=None if ex is None else ex.stime_us / 1e6,
            max_rss=None if ex is None else ex.maxrss_kib * 1024,
            oom_kills=None if cg is None or cg.oom_kills < 0 else cg.oom_kills,
            memory_peak=None if cg is None or cg.memory_peak < 0 else cg.memory_peak,
            stderr_dropped=self.err_buf.dropped,
        )

    # -------------------------------------------------------- shepherd
    def service_ctl(self) -> bool:
        """Take in what the shepherd said; True if anything changed."""
        if self.sock is None:
            return False
        events, ended = receive(self.sock, self.decoder)
        return self._apply(events, ended)

    def _apply(self, events: list[Event], ended: str | None) -> bool:
        for event in events:
            if isinstance(event, Exited) and self.exited is None:
                self.exited = event
                self._enter(Lifecycle.EXITED)
                self.ended_at = time.monotonic()
                # Reaped: our own hold on the child (and on its shepherd)
                # has nothing left to watch; a kept Process keeps no pidfd.
                self.pidfd.close()
                self.shepherd_pidfd.close()
            elif isinstance(event, CgroupStats):
                self.cgroup_stats = event
            else:
                ended = f"unexpected message from the shepherd: {event!r}"
                break
        if ended is not None:
            self._close_sock()
            if self.exited is None and self.lost is None:
                # Nobody reports on the child any more: what we say about it
                # is what we verify ourselves.
                self.take_over(f"shepherd lost ({ended})", eager=True)
        elif self.exited is not None:
            self.release_socket()
        return bool(events) or ended is not None

    # ------------------------------------------------ watching the watcher
    def watch_interest(self) -> list[tuple[int, int]]:
        """The child's pidfd while its exit is still to be seen."""
        if self.pidfd.fd >= 0 and not self.child_dead and not self.done:
            return [(self.pidfd.fd, POLLIN)]
        return []

    def due(self, deadline: float | None) -> float | None:
        """``deadline``, or the watchdog's next one if that is sooner."""
        if self.done:
            return deadline
        for d in (self.nudge_at, self.report_by, self.verify_by):
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        return deadline

    def expect_report(self, within: float, what: str) -> None:
        """A STOP went out: if no EXITED came ``within`` seconds, take over."""
        by = time.monotonic() + within
        if not self.done and (self.report_by is None or by < self.report_by):
            self.report_by = by
            self.report_what = f"within {within:g} s of {what}"

    def tend(self, ready: Collection[int] | None) -> None:
        """The watchdog's non-blocking step, for the fds that fired (call
        with the lock held, after :meth:`service_ctl`): notice the child's
        exit on its pidfd, and act on a deadline that passed."""
        if self.done:
            return
        fd = self.pidfd.fd
        if ready and not self.child_dead and fd >= 0 and fd in ready:
            self.child_dead = True
            if self.verify_by is None:
                self.nudge_at = time.monotonic() + NUDGE_AFTER
        if self.nudge_at is None and self.report_by is None and self.verify_by is None:
            return  # nothing due: the common case, no clock read
        now = time.monotonic()
        if self.verify_by is not None:
            if (self.child_dead and (self.eager or self.sock is None)) or now >= self.verify_by:
                self._conclude(now)
            return
        if self.nudge_at is not None and now >= self.nudge_at:
            if not self.nudged:
                # The child exited a while ago and its shepherd said nothing:
                # a stopped shepherd reports as soon as it runs again.
                self.nudged = True
                self.wake_shepherd()
                self.nudge_at = now + SILENT_BOUND
            else:
                self.take_over(
                    f"the shepherd{self.shepherd_name()} did not report the child's exit within "
                    f"{NUDGE_AFTER + SILENT_BOUND:g} s, even after SIGCONT"
                )
        elif self.report_by is not None and now >= self.report_by:
            self.take_over(f"no exit report from the shepherd{self.shepherd_name()} {self.report_what}")

    def take_over(self, why: str, *, eager: bool = False) -> None:
        """The shepherd is lost or silent: SIGCONT it (if it is still
        there), SIGKILL the child and its group ourselves through the
        pidfd, and conclude once the child is seen dead (``eager``, or the
        shepherd is gone) or an EXITED comes after all, bounded by
        ``TAKEOVER_GRACE``."""
        if self.done or self.verify_by is not None:
            return
        now = time.monotonic()
        self.takeover = why
        self.eager = eager
        self.nudge_at = self.report_by = None
        self.verify_by = now + TAKEOVER_GRACE
        if self.sock is not None:
            self.wake_shepherd()
        fd = self.pidfd.fd
        if fd < 0:
            self._conclude(now)
            return
        if not self.child_dead and _exited(fd):
            self.child_dead = True
        self.dead_before = self.child_dead
        _kill_child_and_group(fd, self.pid)
        if self.child_dead and (eager or self.sock is None):
            self._conclude(now)

    def _conclude(self, now: float) -> None:
        """End of a take-over: say only what we verified; let the shepherd
        go (closing the socket is owner loss, should it ever run again)."""
        fd = self.pidfd.fd
        if fd < 0:
            what = "the owner has no pidfd of the child (no pidfd_open), so it could neither check nor kill it"
        else:
            if not self.child_dead and _exited(fd):
                self.child_dead = True
            if self.dead_before:
                what = "the child had already exited; the owner sent SIGKILL to what was left of its process group"
            elif self.child_dead:
                what = f"the owner killed the child (pid {self.pid}) and its process group"
            else:
                what = (
                    f"the owner sent SIGKILL to the child (pid {self.pid}) and its process group, "
                    f"but the child had not exited {TAKEOVER_GRACE:g} s later"
                )
        self.lost = f"{self.takeover}; {what}"
        self._enter(Lifecycle.LOST)
        self.verify_by = None
        self.ended_at = now
        self._close_sock()
        if self.cgroup is not None:
            # Nobody else will empty and remove the child's leaf now.  That
            # may wait (bounded, REAP_BOUND) for it to empty: fine for a sync
            # caller, never on an event loop's thread.
            _cgroup_teardown_off_the_loop(self.cgroup)

    def wake_shepherd(self) -> None:
        """SIGCONT our shepherd, in case it was stopped (harmless if not)."""
        fd = self._find_shepherd()
        if fd >= 0:
            try:
                signal.pidfd_send_signal(fd, signal.SIGCONT)
            except OSError:
                pass

    def _find_shepherd(self) -> int:
        """A pidfd of the shepherd: the child's parent, read while the child
        is unreaped and re-read after opening it, so the pidfd names the
        parent, not a recycled pid.  (SO_PEERCRED cannot say: our socketpair
        was made by us.)  -1 if it cannot be found any more."""
        if self.shepherd_pidfd.fd >= 0:
            return self.shepherd_pidfd.fd
        child = self.pidfd.fd
        if child < 0 or self.sock is None:
            return -1
        ppid = _parent_of(self.pid)
        if ppid is None or ppid <= 1 or ppid == os.getpid():
            return -1
        try:
            fd = os.pidfd_open(ppid)
        except OSError:
            return -1
        if _parent_of(self.pid) != ppid or not _unreaped(child):
            os.close(fd)
            return -1
        self.shepherd_pidfd.adopt(fd)
        self.shepherd_pid = ppid
        return fd

    def shepherd_name(self) -> str:
        """The shepherd as `` (pid S)`` for messages, once it can be found."""
        self._find_shepherd()
        return "" if self.shepherd_pid is None else f" (pid {self.shepherd_pid})"

    def send(self, data: bytes) -> None:
        """A command to the shepherd; dropped if it is already gone."""
        sock = self.sock
        if sock is None:
            return
        view = memoryview(data)
        deadline = time.monotonic() + COMMAND_SEND_BOUND
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ShepherdError("the shepherd stopped reading commands") from None
                select.select([], [sock], [], remaining)
            except OSError:
                return  # gone: service_ctl() will see EOF

    def _close_sock(self) -> None:
        if self.sock is not None:
            notify_closing(self.sock.fileno())
            self.sock.close()
            self.sock = None
            self._enter(Lifecycle.HUNG_UP)  # (only after EXITED: see LIFECYCLE)

    def release_socket(self) -> None:
        """After the exit report, with no cgroup left to remove: the
        shepherd has nothing more to say (it exits), so our end of the
        socket is closed as EXITED is taken in, rather than when the owner
        object is collected: a kept reaped Process (a job table) holds no
        socket, as a kept ``subprocess.Popen`` holds no fd."""
        if self.exited is not None and self.cgroup is None:
            self._close_sock()

    def abandon(self) -> None:
        """Owner loss on purpose: closing our socket makes the shepherd stop
        the child (SIGTERM, kill_timeout, SIGKILL) without us waiting."""
        self._close_sock()
        self.close_fds()

    def end_input(self) -> None:
        """The child sees EOF on stdin.  On a terminal that is its EOF
        character (VEOF from its own settings), twice if a line is open:
        the first only ends the line; closing our end would not do (the
        other fd keeps the master open) and hanging up would lose output.

        That EOF is data, and the terminal's input can be full: what does
        not fit now stays in ``eof_pending`` (writes are refused from here
        on) and :meth:`flush_eof` writes it once there is room.  Dropping
        it hung ``run(["cat"], input=<big>, pty=True)`` for ever."""
        fd = self.stdin.fd
        if fd >= 0 and self.pty:
            if not self.eof_pending:  # (not queued already by an earlier call)
                try:
                    eof = termios.tcgetattr(fd)[6][termios.VEOF]
                except OSError:
                    eof = b""  # the terminal is gone: nobody is left to read it
                self.eof_pending = eof * (2 if self.line_open else 1)
                if not self.eof_pending:
                    self._hold_master()
            self.flush_eof()
            self._wake_writers()
            return
        self.stdin.close()
        self._wake_writers()

    def flush_eof(self) -> bool:
        """Write what the terminal takes of a pending EOF (non-blocking);
        True once none is pending (written, or nobody is left to read it)."""
        if not self.eof_pending:
            return True
        fd = self.stdin.fd
        if fd >= 0 and not self.done:
            try:
                n = os.write(fd, self.eof_pending)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                n = len(self.eof_pending)  # the terminal is gone
            self.eof_pending = self.eof_pending[n:]
            if self.eof_pending:
                return False
        self.eof_pending = b""
        self._hold_master()
        return True

    def _hold_master(self) -> None:
        # Keep this master fd until the end, out of the stdin slot: closing
        # it was seen to hang up the terminal now and then (SIGHUP to a
        # child that was about to exit 0 on the EOF).
        if self.stdin.fd >= 0:
            self.pty_hold.take_from(self.stdin)

    def writer_wakeup(self) -> tuple[int, int]:
        """The (fd, events) a sync writer parks on besides the pipes; call
        with the lock held."""
        if self.writer_wake.fd < 0:
            # Made once per core, under the blocked mask: a KeyboardInterrupt
            # between the eventfd's birth and its holder would leak it.
            saved = _hold_signals()
            try:
                if saved is not None:
                    _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
                self.writer_wake.adopt(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            finally:
                if saved is not None:
                    _sigmask(signal.SIG_SETMASK, saved)
        return self.writer_wake.fd, POLLIN

    def _wake_writers(self) -> None:
        # Level-triggered and never reset: every writer, parked now or later,
        # finds stdin closed and raises BrokenPipeError.
        if self.writer_wake.fd >= 0:
            os.eventfd_write(self.writer_wake.fd, 1)

    def close_fds(self) -> None:
        self.pidfd.close()
        self.shepherd_pidfd.close()
        self.eof_pending = b""
        self.pty_hold.close()
        self.stdin.close()
        self._wake_writers()
        self.writer_wake.close()
        self.stdout.close()
        self.stderr.close()
        self.out_eof = True
        self.err_eof = True

    def forget_after_fork(self) -> None:
        """In a forked interpreter: this child is the parent's.  Drop every
        fd and the socket without telling anyone (no locks: another thread
        may have held them at fork time)."""
        if self.exited is None:
            self.lost = "owned by the parent process"
        self._enter(Lifecycle.FORKED_AWAY)
        holders = (
            self.stdin,
            self.stdout,
            self.stderr,
            self.pty_hold,
            self.writer_wake,
            self.pidfd,
            self.shepherd_pidfd,
        )
        for holder in holders:
            holder.drop_after_fork()
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self.lock = threading.RLock()

    # ----------------------------------------------------------- pipes
    def drain_stderr(self) -> bool:
        """Read stderr into the buffer (bounded unless complete capture)."""
        fd = self.stderr.fd
        if fd < 0:
            return False
        progress = False
        for _ in range(DRAIN_BUDGET):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return progress
            except InterruptedError:
                continue
            progress = True
            if not data:
                self.stderr.close()
                self.err_eof = True
                return True
            self._keep_stderr(data)
        return progress

    def _keep_stderr(self, data: bytes) -> None:
        self.bytes_err += len(data)
        self.err_buf.append(data)
        tail = self.err_tail
        if len(data) >= STDERR_TAIL:
            tail[:] = data[-STDERR_TAIL:]
        else:
            tail += data
            if len(tail) > STDERR_TAIL:
                del tail[: len(tail) - STDERR_TAIL]

    def take_stderr(self, n: int) -> bytes:
        return self.err_buf.take(n)

    def read_stdout(self, n: int) -> bytes | None:
        """Up to ``n`` bytes of stdout; b"" at EOF; None if none yet."""
        if self.out_buf:
            data = bytes(self.out_buf[:n])
            del self.out_buf[:n]
            return data
        fd = self.stdout.fd
        if fd < 0:
            return b""
        while True:
            try:
                data = os.read(fd, n)
            except BlockingIOError:
                self.out_starved = True
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                data = eof_on_eio(exc)
            self.out_starved = False
            if not data:
                self.stdout.close()
                self.out_eof = True
                return b""
            self.bytes_out += len(data)
            self.read_count += 1
            return data

    def buffer_stdout(self) -> bool:
        """Drain stdout into ``out_buf`` (up to STDOUT_BUFFER), so a child
        blocked on a full stdout pipe can make progress while we wait."""
        fd = self.stdout.fd
        progress = False
        for _ in range(DRAIN_BUDGET):
            if fd < 0 or len(self.out_buf) >= STDOUT_BUFFER:
                return progress
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return progress
            except InterruptedError:
                continue
            except OSError as exc:
                data = eof_on_eio(exc)
            progress = True
            if not data:
                self.stdout.close()
                self.out_eof = True
                return True
            self.bytes_out += len(data)
            self.read_count += 1
            self.out_buf += data
        return progress

    def write_stdin(self, data: memoryview) -> int | None:
        """Write some of ``data``; None if the pipe is full.
        BrokenPipeError once the child's end is gone."""
        fd = self.stdin.fd
        if fd < 0 or self.eof_pending:
            raise BrokenPipeError(errno.EPIPE, "stdin is closed")
        while True:
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            if n == 0:
                return None  # treat as EAGAIN (upstream looped forever here)
            if self.pty:
                self.line_open = data[n - 1] != 0x0A
            self.bytes_in += n
            self.write_count += 1
            return n

    # -------------------------------------------------------- readiness
    def interest(self, *, stdout: bool, stdin: bool) -> list[tuple[int, int]]:
        """fds worth waiting on: the shepherd and stderr always, stdout and
        stdin when the caller needs them, and the terminal while an EOF is
        pending.  That EOF is written first if there is room now, so every
        wait that follows carries it (and a writable terminal is never
        waited on without writing it: no busy loop)."""
        if self.eof_pending and not self.flush_eof():
            stdin = True
        out = self.watch_interest()
        if self.sock is not None:
            out.append((self.sock.fileno(), POLLIN))
        if self.stderr.fd >= 0:
            out.append((self.stderr.fd, POLLIN))
        if stdout and self.stdout.fd >= 0 and len(self.out_buf) < STDOUT_BUFFER:
            out.append((self.stdout.fd, POLLIN))
        if stdin and self.stdin.fd >= 0:
            out.append((self.stdin.fd, POLLOUT))
        return out


def after_fork_in_child() -> None:
    """A forked interpreter must not hold its parent's shepherd sockets or
    pipes: the shepherds would never see their owner die, and a child
    would never see stdin EOF.  No locks here: another thread may have held
    them at fork time."""
    for core in _live.alive_after_fork():
        core.forget_after_fork()
