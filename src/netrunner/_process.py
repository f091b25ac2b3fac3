"""``spawn()`` and :class:`Process`: a running child under its shepherd."""

from __future__ import annotations

import signal
import time
from typing import Any

from . import _opcodes as op
from . import _options as options
from ._core import ChildCore
from ._errors import ShepherdError, TimeoutExpired
from ._protocol import encode_signal, encode_stop
from ._stats import Stats
from ._sync import start, wait_ready

# How long past its grace a stop may take before we call the shepherd lost:
# the shepherd itself bounds its reaping at 3 s after SIGKILL.
STOP_MARGIN = 5.0


def _deadline(timeout: float | None, what: str = "timeout") -> float | None:
    value = options.seconds(timeout, what, allow_zero=True)
    return None if value is None else time.monotonic() + value


class Process:
    """A child process watched by its own shepherd.

    Methods may be called from several threads at once (one writing while
    another reads is the normal way).  Every blocking call keeps stderr
    drained into a bounded buffer and follows the shepherd, so reading only
    stdout never deadlocks on a child that floods stderr.  Leaving a
    ``with`` block, or garbage collection while the child runs, stops it.
    """

    def __init__(self, core: ChildCore) -> None:
        self._core = core

    # ------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        """The child's pid (its process group id too)."""
        return self._core.pid

    @property
    def args(self) -> Any:
        return self._core.args

    @property
    def returncode(self) -> int | None:
        """Exit code, ``-N`` for signal N, None while running."""
        core = self._core
        with core.lock:
            if not core.done:
                core.service_ctl()
            return core.returncode

    @property
    def alive(self) -> bool:
        """True until the child is reaped (or its shepherd is lost)."""
        core = self._core
        with core.lock:
            if not core.done:
                core.service_ctl()
            return not core.done

    @property
    def stats(self) -> Stats:
        """Live counters while running; final, with rusage, after exit."""
        core = self._core
        with core.lock:
            if not core.done:
                core.service_ctl()
            return core.stats()

    # -------------------------------------------------------------- I/O
    def _service(self, *, stdout: bool) -> None:
        """Non-blocking housekeeping; call with the lock held."""
        core = self._core
        core.service_ctl()
        core.drain_stderr()
        if stdout:
            core.buffer_stdout()

    def read(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stdout as soon as any are there; ``b""`` at
        EOF; :class:`TimeoutError` if none arrive within ``timeout``."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, not {n!r}")
        deadline = _deadline(timeout)
        core = self._core
        while True:
            with core.lock:
                core.check_owner()
                data = core.read_stdout(n)
                if data is not None:
                    return data
                self._service(stdout=False)
                interest = core.interest(stdout=True, stdin=False)
            if not wait_ready(interest, deadline):
                raise TimeoutError(f"no output from pid {core.pid} within {timeout} s")

    def read_stderr(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stderr (from the drained buffer first)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, not {n!r}")
        deadline = _deadline(timeout)
        core = self._core
        while True:
            with core.lock:
                core.check_owner()
                core.drain_stderr()
                if core.err_buf:
                    return core.take_stderr(n)
                if core.err_eof:
                    return b""
                core.service_ctl()
                interest = core.interest(stdout=False, stdin=False)
            if not wait_ready(interest, deadline):
                raise TimeoutError(f"no stderr output from pid {core.pid} within {timeout} s")

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin, waiting as the pipe drains.

        Raises :class:`BrokenPipeError` if the child closed stdin.  While
        waiting it drains stdout into a buffer that :meth:`read` serves
        first, so a filter cannot deadlock a writer that reads later."""
        view = memoryview(data).cast("B")
        core = self._core
        while view:
            with core.lock:
                core.check_owner()
                n = core.write_stdin(view)
                if n is not None:
                    view = view[n:]
                    continue
                self._service(stdout=True)
                interest = core.interest(stdout=True, stdin=True)
            wait_ready(interest, None)

    def close_stdin(self) -> None:
        """The child sees EOF on stdin."""
        with self._core.lock:
            self._core.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to be reaped and return its returncode.

        :class:`TimeoutExpired` if it is still running after ``timeout``;
        :class:`ShepherdError` if its shepherd was lost (the child is then
        already killed)."""
        deadline = _deadline(timeout)
        core = self._core
        while True:
            with core.lock:
                core.check_owner()
                self._service(stdout=True)
                if core.exited is not None:
                    rc = core.returncode
                    assert rc is not None
                    return rc
                if core.lost is not None:
                    raise ShepherdError(f"pid {core.pid}: {core.lost}; the child was killed")
                interest = core.interest(stdout=True, stdin=False)
            if not wait_ready(interest, deadline):
                raise TimeoutExpired(core.args, timeout if timeout is not None else 0.0)

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
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stop(self, grace: float | None = None) -> int:
        """SIGTERM the group, wait ``grace`` (default ``kill_timeout``),
        SIGKILL, reap; returns the returncode.  The escalation runs in the
        shepherd, so it completes even if this thread is interrupted."""
        core = self._core
        if grace is None:
            grace = core.kill_timeout
        grace = options.seconds(grace, "grace", allow_none=False, allow_zero=True) or 0.0
        with core.lock:
            core.check_owner()
            core.service_ctl()
            if not core.done:
                core.send(encode_stop(grace))
        try:
            return self.wait(grace + STOP_MARGIN)
        except TimeoutExpired:
            with core.lock:
                core.abandon()
            raise ShepherdError(f"pid {core.pid} was not reaped within {grace + STOP_MARGIN} s of stop()") from None

    def set_window_size(self, rows: int, cols: int) -> None:
        """Resize the child's terminal (pty mode only)."""
        raise ValueError("set_window_size() needs a process started with pty=True")

    # --------------------------------------------------------- lifetime
    def close(self) -> None:
        """Stop the child if it still runs, then release every fd."""
        core = self._core
        try:
            if not core.forked_away and not core.done:
                self.stop()
        finally:
            with core.lock:
                core.abandon()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.forked_away:
            # Never block in a finalizer: dropping the socket is owner loss,
            # and the shepherd runs the SIGTERM -> SIGKILL escalation itself.
            core.abandon()

    def __repr__(self) -> str:
        core = self._core
        state = f"returncode={core.returncode}" if core.exited is not None else "running"
        return f"<netrunner.Process pid={self.pid} {state} args={self.args!r}>"


def spawn(
    args: Any,
    *,
    stdin: Any = "pipe",
    stderr: Any = "pipe",
    cwd: Any = None,
    env: Any = None,
    pty: bool = False,
    kill_timeout: float = 5.0,
    cgroup: Any = None,
    limits: Any = None,
    rlimits: Any = None,
    rows: int = 24,
    cols: int = 80,
) -> Process:
    """Start ``args`` under its own shepherd and return the :class:`Process`.

    Everything is validated before anything starts; exec failures raise
    ``FileNotFoundError``/``PermissionError``/... with ``filename`` set."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
        if not 0 < value < 65536:
            raise ValueError(f"{name} must be between 1 and 65535, not {value}")
    rq = options.spawn_request(
        args,
        stdin=stdin,
        stdout=op.STDIO_PIPE,
        stderr=stderr,
        cwd_=cwd,
        env=env,
        kill_timeout=kill_timeout,
        rlimits_=rlimits,
    )
    options.unsupported(pty, cgroup, limits)
    return Process(start(args, rq))
