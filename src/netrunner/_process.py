"""``spawn()`` and :class:`Process`: a running child under its shepherd.

:class:`ProcessBase` holds everything that is not waiting: state, signals,
and each blocking operation written once as an *attempt* (see
:mod:`netrunner._drive`).  :class:`Process` drives the attempts with
``poll``; ``netrunner.aio.AsyncProcess`` drives the same ones on the event
loop.
"""

from __future__ import annotations

import fcntl
import signal
import struct
import termios
import time
import weakref
from collections.abc import Iterable
from typing import Any

from . import _options as options
from ._bounds import CGROUP_TEARDOWN, REPORT_MARGIN, STOP_MARGIN
from ._core import ChildCore
from ._drive import FAIR_READS, POLLIN, Flow, Pending, after_checkpoint, drive_flow, until
from ._errors import ShepherdError, TimeoutExpired
from ._options import (
    Args,
    Cgroup,
    Env,
    Limits,
    Rlimits,
    SpawnOptions,
    StderrSpec,
    StdinSpec,
    StdoutSpec,
    StrOrBytesPath,
)
from ._protocol import encode_signal, encode_stop
from ._start import started
from ._stats import Stats

WRITE_BUDGET = 16  # writes per turn of write() before the lock is let go


def deadline_of(timeout: float | None, what: str = "timeout") -> float | None:
    value = options.seconds(timeout, what, allow_zero=True)
    return None if value is None else time.monotonic() + value


def _check_size(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, not {n!r}")


class ProcessBase:
    """State, signals and the non-blocking attempts behind every method.

    No ``__del__``: when a Process is collected while its child runs, its
    core goes with it, and the core's fds and shepherd socket belong to C
    objects that close them (owner loss: the shepherd runs SIGTERM,
    kill_timeout, SIGKILL itself).  A finalizer written in Python is where
    a KeyboardInterrupt would be swallowed."""

    def __init__(self, core: ChildCore) -> None:
        self._core = core
        self._reads = 0

    # ------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        """The child's pid (its process group id too)."""
        return self._core.pid

    @property
    def args(self) -> Args:
        """The command as given to ``spawn``."""
        args: Args = self._core.args
        return args

    def _followed(self) -> ChildCore:
        """The core, after taking in whatever the shepherd said (non-blocking)."""
        core = self._core
        with core.lock:
            if not core.done:
                core.service_ctl()
                core.tend(None)
        return core

    @property
    def returncode(self) -> int | None:
        """Exit code, ``-N`` for signal N, None while running."""
        return self._followed().returncode

    @property
    def alive(self) -> bool:
        """True until the child is reaped (or its shepherd is lost)."""
        return not self._followed().done

    @property
    def stats(self) -> Stats:
        """Live counters while running; final, with rusage, after exit."""
        return self._followed().stats()

    # -------------------------------------------------------- attempts
    def _housekeeping(self, ready: list[int] | None, *, buffer_stdout: bool) -> None:
        """Non-blocking upkeep while waiting, for the fds that fired (all of
        them when ``ready`` is None); call with the lock held.  Touching only
        what fired keeps a read/write round trip to the syscalls it needs."""
        core = self._core
        if core.sock is not None and (ready is None or core.sock.fileno() in ready):
            core.service_ctl()
        core.tend(ready)
        if core.stderr.fd >= 0 and (ready is None or core.stderr.fd in ready):
            core.drain_stderr()
        if buffer_stdout and core.stdout.fd >= 0 and (ready is None or core.stdout.fd in ready):
            core.buffer_stdout()

    def _read_attempt(self, n: int, deadline: float | None, timeout: float | None) -> Any:
        core = self._core

        def attempt(ready: list[int] | None) -> bytes | Pending:
            with core.lock:
                core.check_owner()
                if ready is None and core.out_starved and not core.out_buf:
                    # The last read found the pipe empty (a request/response
                    # peer): wait first instead of paying for another EAGAIN.
                    return Pending(core.interest(stdout=True, stdin=False), core.due(deadline))
                data = core.read_stdout(n)
                if data is not None:
                    return data
                # Read first; on the first EAGAIN just wait (poll says what to tend).
                self._housekeeping(ready if ready is not None else [], buffer_stdout=False)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no output from pid {core.pid} within {timeout} s")
                return Pending(core.interest(stdout=True, stdin=False), core.due(deadline))

        return attempt

    def _read_stderr_attempt(self, n: int, deadline: float | None, timeout: float | None) -> Any:
        core = self._core

        def attempt(ready: list[int] | None) -> bytes | Pending:
            with core.lock:
                core.check_owner()
                core.drain_stderr()
                if core.err_buf:
                    return core.take_stderr(n)
                if core.err_eof:
                    return b""
                core.service_ctl()
                core.tend(ready)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no stderr output from pid {core.pid} within {timeout} s")
                return Pending(core.interest(stdout=False, stdin=False), core.due(deadline))

        return attempt

    def _write_attempt(self, data: Any, *, wakeable: bool = False) -> Any:
        """``wakeable``: also wait on the core's writer wake-up (the sync
        driver; on asyncio, closing stdin already wakes its waiters)."""
        core = self._core
        view = memoryview(data).cast("B")

        def attempt(ready: list[int] | None) -> Pending | None:
            nonlocal view
            with core.lock:
                core.check_owner()
                # At most WRITE_BUDGET writes per turn: against a reader that
                # keeps up, the lock would otherwise be held for the whole
                # buffer and every other call on this Process would wait
                # (upstream lesson 13).  The next poll returns at once.
                for _ in range(WRITE_BUDGET):
                    if not view:
                        return None
                    n = core.write_stdin(view)
                    if n is None:
                        # While the pipe is full, keep stdout flowing into the
                        # read buffer so a filter cannot deadlock the writer.
                        self._housekeeping(ready if ready is not None else [], buffer_stdout=True)
                        break
                    view = view[n:]
                if not view:
                    return None
                interest = core.interest(stdout=True, stdin=True)
                if wakeable:
                    interest.append(core.writer_wakeup())
                return Pending(interest, core.due(None))

        return attempt

    def _wait_attempt(self, deadline: float | None, timeout: float | None) -> Any:
        core = self._core
        hangup_by: float | None = None

        def attempt(ready: list[int] | None) -> int | Pending:
            nonlocal hangup_by
            with core.lock:
                core.check_owner()
                self._housekeeping(ready, buffer_stdout=True)
                rc = core.returncode
                sock = core.sock
                if rc is not None and (core.cgroup is None or sock is None):
                    return rc
                if rc is not None and sock is not None:
                    # Reaped; the shepherd hangs up once the cgroup is removed.
                    if hangup_by is None:
                        hangup_by = time.monotonic() + CGROUP_TEARDOWN
                        if deadline is not None:
                            hangup_by = min(hangup_by, deadline)  # the caller's timeout bounds it too
                    if time.monotonic() >= hangup_by:
                        return rc
                    return Pending([(sock.fileno(), POLLIN)], hangup_by)
                if core.lost is not None:
                    raise ShepherdError(f"pid {core.pid}: {core.lost}")
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutExpired(core.args, timeout if timeout is not None else 0.0)
                return Pending(core.interest(stdout=True, stdin=False), core.due(deadline))

        return attempt

    def _grace(self, grace: float | None) -> float:
        if grace is None:
            return self._core.kill_timeout
        return options.seconds(grace, "grace", allow_none=False, allow_zero=True) or 0.0

    def _send_stop(self, grace: float) -> None:
        core = self._core
        with core.lock:
            core.check_owner()
            core.service_ctl()
            if not core.done:
                core.send(encode_stop(grace))
                # A shepherd that does not report by then is stopped or
                # wedged: the owner then kills the child itself (verified).
                core.expect_report(grace + REPORT_MARGIN, f"stop(grace={grace:g})")

    def _stop_failed(self, grace: float) -> ShepherdError:
        core = self._core
        with core.lock:
            core.abandon()
        return ShepherdError(f"pid {core.pid} was not reaped within {grace + STOP_MARGIN} s of stop()")

    # ---------------------------------------------------------- signals
    def send_signal(self, sig: int | str | signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group, through the
        shepherd (which holds the zombie, so the pid cannot be reused).
        After the child is reaped this does nothing."""
        number = options.signal_number(sig)
        core = self._core
        with core.lock:
            core.check_owner()
            core.service_ctl()
            if not core.done:
                core.send(encode_signal(number))

    def terminate(self) -> None:
        """SIGTERM to the group."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the group."""
        self.send_signal(signal.SIGKILL)

    def close_stdin(self) -> None:
        """The child sees EOF on stdin; a write() waiting in another thread
        raises BrokenPipeError at once.  (Here, without waiting: on a
        terminal whose input is full the EOF stays pending; the front ends
        below see that it is written.)"""
        with self._core.lock:
            self._core.end_input()

    def _eof_attempt(self) -> Any:
        """Attempt: None once the terminal took the pending EOF (or the
        child is gone); meanwhile stdout is drained, as in write().  It
        holds this object weakly: an AsyncProcess dropped while its EOF
        waits is still collected, which stops the child (and ends this)."""
        core = self._core
        owner = weakref.ref(self)

        def attempt(ready: list[int] | None) -> Pending | None:
            with core.lock:
                process = owner()
                if process is None or core.flush_eof():
                    return None
                process._housekeeping(ready if ready is not None else [], buffer_stdout=True)
                del process
                if core.flush_eof():
                    return None
                return Pending(core.interest(stdout=True, stdin=True), None)

        return attempt

    def set_window_size(self, rows: int, cols: int) -> None:
        """Resize the child's terminal (pty mode only); the kernel sends its
        foreground process group SIGWINCH."""
        options.terminal(True, rows, cols)
        core = self._core
        with core.lock:
            core.check_owner()
            if not core.pty:
                raise ValueError("set_window_size() needs a process started with pty=True")
            fd = core.stdout.fd if core.stdout.fd >= 0 else core.stdin.fd
            if fd >= 0:  # otherwise the terminal is gone with the child
                fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # ------------------------------------------------------------ flows
    # Each method of Process and AsyncProcess is one of these, driven by
    # drive_flow() or awaited through _adrive.adrive_flow().
    def _reading(self, n: int, timeout: float | None) -> Flow[bytes]:
        _check_size(n)
        return self._fair(until(self._read_attempt(n, deadline_of(timeout), timeout)))

    def _reading_stderr(self, n: int, timeout: float | None) -> Flow[bytes]:
        _check_size(n)
        return self._fair(until(self._read_stderr_attempt(n, deadline_of(timeout), timeout)))

    def _fair(self, flow: Flow[bytes]) -> Flow[bytes]:
        self._reads += 1
        return after_checkpoint(flow) if self._reads % FAIR_READS == 0 else flow

    def _writing(self, data: Any, *, wakeable: bool) -> Flow[None]:
        """``wakeable``: also wait on the core's writer wake-up (a sync
        writer; on an event loop, closing stdin already wakes its waiters)."""
        core = self._core
        view = memoryview(data).cast("B")
        if not view:
            return
        with core.lock:  # fast path: the pipe has room for all of it
            core.check_owner()
            n = core.write_stdin(view)
        if n is not None:
            if n == len(view):
                return
            view = view[n:]  # never resend what went out (upstream lesson 10)
        yield from until(self._write_attempt(view, wakeable=wakeable))

    def _waiting(self, timeout: float | None) -> Flow[int]:
        return until(self._wait_attempt(deadline_of(timeout), timeout))

    def _stopping(self, grace: float | None) -> Flow[int]:
        seconds = self._grace(grace)
        self._send_stop(seconds)
        try:
            rc: int = yield from until(self._wait_attempt(deadline_of(seconds + STOP_MARGIN), seconds + STOP_MARGIN))
            return rc
        except TimeoutExpired:
            raise self._stop_failed(seconds) from None

    def _closing(self) -> Flow[None]:
        """Stop the child if it still runs, then release every fd (whatever
        happens: the socket's close is owner loss, the shepherd finishes)."""
        core = self._core
        try:
            if not core.forked_away and not core.done:
                yield from self._stopping(None)
        finally:
            self._release()

    def _release(self) -> None:
        with self._core.lock:
            self._core.abandon()

    def __repr__(self) -> str:
        core = self._core
        state = f"returncode={core.returncode}" if core.exited is not None else "running"
        return f"<netrunner.{type(self).__name__} pid={self.pid} {state} args={self.args!r}>"


class Process(ProcessBase):
    """A child process watched by its own shepherd.

    Methods may be called from several threads at once (one writing while
    another reads is the normal way).  Every blocking call keeps stderr
    drained into a bounded buffer and follows the shepherd, so reading only
    stdout never deadlocks on a child that floods stderr.  Leaving a
    ``with`` block, or garbage collection while the child runs, stops it.
    """

    def read(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stdout as soon as any are there; ``b""`` at
        EOF; :class:`TimeoutError` if none arrive within ``timeout``."""
        return drive_flow(self._reading(n, timeout))

    def read_stderr(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stderr (from the drained buffer first)."""
        return drive_flow(self._reading_stderr(n, timeout))

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin, waiting as the pipe drains.

        Raises :class:`BrokenPipeError` if the child closed stdin, or once
        :meth:`close_stdin` is called (from another thread: at once, not
        when the child exits).  While waiting it drains stdout into a
        buffer that :meth:`read` serves first, so a filter cannot deadlock
        a writer that reads later."""
        drive_flow(self._writing(data, wakeable=True))

    def close_stdin(self) -> None:
        """The child sees EOF on stdin; a write() waiting in another thread
        raises BrokenPipeError at once.

        On a terminal (``pty=True``) the EOF is the terminal's EOF
        character, which is data: like :meth:`write` this waits for room
        if the terminal's input is full (draining stdout meanwhile), until
        the child reads or exits.  It is never dropped."""
        super().close_stdin()
        if self._core.eof_pending:
            drive_flow(until(self._eof_attempt()))

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to be reaped and return its returncode.

        :class:`TimeoutExpired` if it is still running after ``timeout``;
        :class:`ShepherdError` if its shepherd was lost (the child is then
        already killed)."""
        return drive_flow(self._waiting(timeout))

    def stop(self, grace: float | None = None) -> int:
        """SIGTERM the group, wait ``grace`` (default ``kill_timeout``),
        SIGKILL, reap; returns the returncode.  The escalation runs in the
        shepherd, so it completes even if this thread is interrupted."""
        return drive_flow(self._stopping(grace))

    def close(self) -> None:
        """Stop the child if it still runs, then release every fd."""
        drive_flow(self._closing())

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn(
    args: Args,
    *,
    stdin: StdinSpec = "pipe",
    stderr: StderrSpec = "pipe",
    stdout: StdoutSpec = "pipe",
    cwd: StrOrBytesPath | None = None,
    env: Env = None,
    pty: bool = False,
    kill_timeout: float = 5.0,
    cgroup: Cgroup = None,
    limits: Limits = None,
    rlimits: Rlimits = None,
    rows: int = 24,
    cols: int = 80,
    echo: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int | None = None,
    no_new_privs: bool = False,
    nice: int | None = None,
    pass_fds: Iterable[int] = (),
    start_new_session: bool = False,
    process_group: int | None = None,
    shell: bool = False,
) -> Process:
    """Start ``args`` under its own shepherd and return the :class:`Process`.

    Everything is validated before anything starts, and the call returns
    once the child has exec'd (or raises the exec's error).  The Process
    is a context manager: leaving the ``with`` block, or its garbage
    collection while the child runs, stops the child (SIGTERM,
    ``kill_timeout``, SIGKILL) and reaps it.  While you read stdout,
    stderr is drained into a buffer (its last 1 MiB unread is kept, the
    rest counted in ``stats.stderr_dropped``), so a child flooding stderr
    never blocks.  Options mean what they mean for :func:`netrunner.run`,
    with these differences:

    Args:
        args: the command, as for ``run``.
        stdin: ``"pipe"`` (default: fed by ``Process.write()``, ended by
            ``close_stdin()``), ``"devnull"`` or ``"inherit"`` (your own
            stdin); the ``subprocess`` aliases ``PIPE``, ``DEVNULL`` and
            ``None`` (inherit) are accepted.
        stderr: ``"pipe"`` (default: read with ``Process.read_stderr()``),
            ``"stdout"`` (merged into what ``read()`` returns),
            ``"devnull"``, ``"inherit"``, or the aliases ``PIPE``,
            ``STDOUT``, ``DEVNULL``, ``None``; ``stdin`` and ``stderr``
            also take an fd or a file object with ``fileno()``, as for
            ``run``'s ``stderr``.
        stdout: as for ``run``; anything but ``"pipe"`` sends stdout
            elsewhere, and ``Process.read()`` then returns ``b""`` at once
            (end of file: there is nothing of it to read).
        cwd: as for ``run``.
        env: as for ``run``: the complete environment, replacing yours.
        pty: if true, the child gets a pseudo-terminal (``rows`` x
            ``cols``) as stdin, stdout and stderr and as its controlling
            terminal (``stdin`` and ``stderr`` are then not used).
        kill_timeout: seconds (>= 0, default 5.0) between SIGTERM and
            SIGKILL whenever netrunner stops the child, and the default
            grace of ``Process.stop()``.
        cgroup: as for ``run``: ``True`` or a relative path under the
            cgroup2 mount.
        limits: as for ``run`` (controller files only; requires ``cgroup``).
        rlimits: as for ``run``.
        rows, cols: the terminal's initial size with ``pty=True`` (1 to
            65535; default 24 x 80); change it later with
            ``Process.set_window_size()``.
        echo, user, group, extra_groups, umask, no_new_privs, nice, pass_fds,
            start_new_session, process_group, shell: as for ``run`` (and
            ``subprocess``).

    Returns:
        A running :class:`Process` (``pid``, ``read``, ``write``,
        ``wait``, ``send_signal``, ``stop``, ``stats``, ...).

    Raises:
        ValueError, TypeError, KeyError, FileNotFoundError,
        PermissionError, NotADirectoryError, CgroupError, OSError: as for
        ``run``.
        ShepherdError: the shepherd was lost; the child has been killed.
    """
    rq = SpawnOptions.from_call(locals()).request(args)
    return drive_flow(started(args, rq, Process))
