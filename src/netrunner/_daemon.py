"""``Daemon``: a long-running child, supervised: its output always drained,
restarted by policy with exponential backoff, stopped with the usual
SIGTERM -> grace -> SIGKILL escalation.

Each incarnation is an ordinary :class:`~netrunner.Process` (its own
shepherd, the whole promise), so a Daemon adds only policy on top:

* one **supervisor** thread owns the child's output: it reads until EOF,
  hands each chunk to ``on_output``, waits for the exit, and decides on a
  restart (upstream lesson 25: one reader per pipe);
* one **forwarder** thread does the writes: :meth:`Daemon.write` only
  queues, so a child that stops reading its stdin can never wedge a caller
  or a control call (upstream lesson 33);
* a callback that raises, or a forwarder that fails, stops the Daemon
  instead of leaving a healthy-looking one behind (upstream lesson 35).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _options as options
from ._errors import ShepherdError, TimeoutExpired
from ._keywords import SpawnKeywords
from ._options import StrOrBytesPath
from ._process import Process, spawn
from ._stream import LineSplitter

if TYPE_CHECKING:  # (typing.Unpack is 3.11+; annotations are never evaluated)
    from typing_extensions import Unpack

logger = logging.getLogger("netrunner.daemon")

RESTART_POLICIES = ("never", "on-failure", "always")
OUTPUT_MODES = ("discard", "log")
MAX_BACKOFF = 60.0  # the delay doubles per quick failure up to this
STEADY_RUN = 60.0  # an incarnation that ran this long resets the backoff
_SPAWN_OPTIONS = options.keyword_names(spawn)
_STOP = object()  # tells the forwarder to end
# on_output="log": a line still open after this many bytes is logged in
# pieces (each at most this plus one read), never held whole: a child that
# never ends its line (a progress bar redrawn with \r, binary output)
# would otherwise keep all its output in memory for its whole life.
LOG_LINE_MAX = 64 << 10


class _LogLines(LineSplitter):
    """:class:`LineSplitter` that also knows how long the open line is."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0  # bytes of the line not yet ended

    def feed(self, chunk: Any) -> Any:
        cut = chunk.rfind(b"\n") + 1
        self.open = len(chunk) - cut if cut else self.open + len(chunk)
        return super().feed(chunk)

    def overflow(self) -> bytes | None:
        """The open line, taken out, once it is longer than LOG_LINE_MAX."""
        if self.open <= LOG_LINE_MAX:
            return None
        self.open = 0
        piece: bytes | None = self.finish()
        return piece


class Daemon:
    """A supervised long-running child (see the module docstring).

    ``Daemon(args, ...).start()`` (or ``with Daemon(...) as d:``) spawns
    it; its output is always drained, so the child never blocks on a full
    pipe; :meth:`write` queues input and never blocks; :meth:`stop` (or
    leaving the ``with`` block) stops it for good.  Each incarnation is a
    :class:`netrunner.Process` with its own shepherd.  Nothing starts
    before :meth:`start`.

    Args:
        args: the command, as for :func:`netrunner.spawn`.
        on_output: what to do with the child's output: ``"discard"``
            (default), ``"log"`` (logger ``netrunner.daemon``, INFO, one
            record per line; a line still open after ``LOG_LINE_MAX``
            bytes is logged in pieces, never held whole) or a callable taking ``bytes``, called from
            the Daemon's own thread; if it raises, the Daemon stops and
            ``error`` says why.
        restart: ``"never"`` (default), ``"on-failure"`` (a non-zero exit,
            death by a signal or a lost shepherd) or ``"always"``.
        max_restarts: at most this many restarts (int >= 0), or ``None``
            (default) for no limit.
        backoff: seconds (> 0, default 1.0) before a restart, doubling per
            quick failure up to 60 s; a run of 60 s resets it.
        stop_timeout: seconds (>= 0, default 5.0) between SIGTERM and
            SIGKILL in :meth:`stop`.
        **spawn_options: keyword options of :func:`netrunner.spawn`
            (``stdin``, ``stderr``, ``cwd``, ``env``, ``pty``, ``rows``,
            ``cols``, ``kill_timeout``, ``cgroup``, ``limits``,
            ``rlimits``, ``user``, ``group``, ``extra_groups``, ``umask``,
            ``no_new_privs``, ``nice``, ``echo``, ``stdout``, ``pass_fds``,
            ``start_new_session``, ``process_group``, ``shell``) for every incarnation.  Defaults here:
            ``stdin="pipe"`` (for :meth:`write`) and ``stderr="stdout"``
            (so ``on_output`` sees everything).  Their values are checked
            by :meth:`start`, as ``spawn`` checks them.

    Raises:
        ValueError: empty ``args``, an unknown ``on_output`` or
            ``restart``, a negative ``max_restarts``, ``backoff <= 0`` or
            ``stop_timeout < 0``.
        TypeError: a value of the wrong type, or an option ``spawn`` does
            not take.
    """

    def __init__(
        self,
        args: Sequence[StrOrBytesPath],
        *,
        on_output: str | Callable[[bytes], object] = "discard",
        restart: str = "never",
        max_restarts: int | None = None,
        backoff: float = 1.0,
        stop_timeout: float = 5.0,
        **spawn_options: Unpack[SpawnKeywords],
    ) -> None:
        options.argv(args, spawn_options.get("shell") is True)  # the same checks as spawn(), before anything starts
        if not callable(on_output) and on_output not in OUTPUT_MODES:
            raise ValueError(f"on_output must be one of {OUTPUT_MODES} or a callable, not {on_output!r}")
        if restart not in RESTART_POLICIES:
            raise ValueError(f"restart must be one of {RESTART_POLICIES}, not {restart!r}")
        if max_restarts is not None:
            if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
                raise TypeError(f"max_restarts must be an int or None, not {type(max_restarts).__name__}")
            if max_restarts < 0:
                raise ValueError(f"max_restarts must be >= 0, not {max_restarts}")
        delay = options.seconds(backoff, "backoff", allow_none=False)
        grace = options.seconds(stop_timeout, "stop_timeout", allow_none=False, allow_zero=True)
        assert delay is not None and grace is not None
        unknown = sorted(set(spawn_options) - _SPAWN_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s) for a Daemon: {', '.join(unknown)}")
        self.args = list(args)
        self._on_output = on_output
        self._restart = restart
        self._max_restarts = max_restarts
        self._backoff = delay
        self._stop_timeout = grace
        self._spawn_options: dict[str, Any] = {"stdin": "pipe", "stderr": "stdout", **spawn_options}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: Process | None = None
        self._started = False
        self._returncode: int | None = None
        self._restarts = 0
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._supervisor: threading.Thread | None = None
        self._forwarder: threading.Thread | None = None
        self.error: BaseException | None = None  # why the Daemon stopped itself, if it did

    # ------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        """The current incarnation's pid (None before start or once it ended)."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.alive else None

    @property
    def alive(self) -> bool:
        """True while an incarnation runs."""
        with self._lock:
            proc = self._proc
        return proc is not None and proc.alive

    @property
    def returncode(self) -> int | None:
        """The last incarnation's returncode (None while none has ended)."""
        return self._returncode

    @property
    def restarts(self) -> int:
        """How many times the child was started again."""
        return self._restarts

    # ---------------------------------------------------------- control
    def start(self) -> Daemon:
        """Start the child (exec errors raise here, as from ``spawn``) and
        the two threads; returns self."""
        with self._lock:
            if self._started:
                raise RuntimeError("this Daemon was already started")
            self._started = True
            self._proc = spawn(self.args, **self._spawn_options)
        self._supervisor = threading.Thread(target=self._supervise, name="netrunner-daemon", daemon=True)
        self._forwarder = threading.Thread(target=self._forward, name="netrunner-daemon-stdin", daemon=True)
        self._supervisor.start()
        self._forwarder.start()
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the Daemon has ended for good (its last incarnation
        exited and no restart is coming, or it was stopped).

        Args:
            timeout: seconds (> 0) to wait, or ``None`` (default) to wait
                as long as it takes.

        Returns:
            The last incarnation's returncode (``None`` if none ended).

        Raises:
            netrunner.TimeoutExpired: still running after ``timeout``
                (the Daemon keeps running).
            RuntimeError: the Daemon was never started.
            ValueError, TypeError: a bad ``timeout``.
        """
        seconds = options.seconds(timeout, "timeout")
        supervisor = self._supervisor
        if supervisor is None:
            raise RuntimeError("this Daemon was never started")
        supervisor.join(seconds)
        if supervisor.is_alive():
            assert seconds is not None
            raise TimeoutExpired(self.args, seconds)
        return self._returncode

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the child's stdin and return at once.  What is
        still queued when an incarnation ends is dropped with it."""
        view = memoryview(data)  # TypeError now, not in the forwarder
        if not self._spawn_options.get("pty") and self._spawn_options.get("stdin") != "pipe":
            raise ValueError(f"write() needs stdin='pipe', not {self._spawn_options.get('stdin')!r}")
        supervisor = self._supervisor
        if supervisor is None or not supervisor.is_alive() or self._stopping.is_set():
            raise RuntimeError("the Daemon is not running")
        self._writes.put(bytes(view))

    def stop(self) -> int | None:
        """Stop for good: no more restarts; the running child gets SIGTERM,
        ``stop_timeout``, SIGKILL, and is reaped.  Returns the last
        returncode (None if it never ran).  Bounded; safe to call twice and
        from ``on_output``."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            try:
                proc.stop(self._stop_timeout)
            except Exception as exc:  # ShepherdError after its own bound: the child is killed
                logger.warning("stopping pid %s: %s", proc.pid, exc)
        self._writes.put(_STOP)
        current = threading.current_thread()
        for thread in (self._supervisor, self._forwarder):
            if thread is not None and thread is not current:
                thread.join(self._stop_timeout + 10.0)
        return self._returncode

    def __enter__(self) -> Daemon:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.alive else f"returncode={self._returncode}"
        return f"<netrunner.Daemon {state} restarts={self._restarts} args={self.args!r}>"

    # ---------------------------------------------------------- threads
    def _supervise(self) -> None:
        """The supervisor thread: never dies quietly.  Anything unexpected
        stops the child and is kept in ``error`` (upstream lesson 35)."""
        try:
            self._incarnations()
        except BaseException as exc:
            logger.exception("the supervisor of %r failed; stopping the daemon", self.args)
            self.error = exc
            with self._lock:
                proc = self._proc
            if proc is not None:
                self._give_up(proc)
        finally:
            # The forwarder ends with us, however the Daemon ended: one that
            # ends on its own (no restart due, or a restart failed) is never
            # stop()ped, and a forwarder left waiting for input would hold a
            # thread and this object for the rest of the interpreter's life.
            self._writes.put(_STOP)

    def _incarnations(self) -> None:
        quick_failures = 0
        while True:
            with self._lock:
                proc = self._proc
            assert proc is not None
            started = time.monotonic()
            try:
                if not self._drain(proc):
                    self.error = self.error or RuntimeError("on_output failed")
                    self._give_up(proc)
                    return
                rc: int | None = proc.wait()
            except ShepherdError as exc:  # its shepherd died: the child was killed
                logger.error("pid %s: %s", proc.pid, exc)
                self.error = exc
                rc = None
            self._returncode = rc
            proc.close()  # reaped: release its fds now, not when collected
            if self._stopping.is_set() or not self._wants_restart(rc):
                return
            quick_failures = 0 if time.monotonic() - started >= STEADY_RUN else quick_failures + 1
            delay = min(self._backoff * 2 ** max(quick_failures - 1, 0), MAX_BACKOFF)
            if self._stopping.wait(delay):
                return
            try:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._proc = spawn(self.args, **self._spawn_options)
                    self._restarts += 1
            except Exception as exc:  # the program went away, a cgroup failed, ...
                logger.error("restarting %r failed: %s", self.args, exc)
                self.error = exc
                self._stopping.set()
                return

    def _wants_restart(self, rc: int | None) -> bool:
        """``rc`` None: the incarnation was lost with its shepherd (a failure)."""
        if self._restart == "never" or (self._restart == "on-failure" and rc == 0):
            return False
        return self._max_restarts is None or self._restarts < self._max_restarts

    def _drain(self, proc: Process) -> bool:
        """Read to EOF, handing output on; False if ``on_output`` raised."""
        lines = _LogLines() if self._on_output == "log" else None
        while True:
            chunk = proc.read()
            if not chunk:
                break
            if not self._deliver(proc, chunk, lines):
                return False
        if lines is not None:
            last = lines.finish()
            if last is not None:
                self._log(proc, last)
        return True

    def _deliver(self, proc: Process, chunk: bytes, lines: _LogLines | None) -> bool:
        on_output = self._on_output
        if lines is not None:
            for line in lines.feed(chunk):
                self._log(proc, line)
            piece = lines.overflow()
            if piece is not None:
                self._log(proc, piece)
        elif callable(on_output):
            try:
                on_output(chunk)
            except BaseException as exc:  # contained: the Daemon stops instead
                logger.exception("on_output of pid %s raised; stopping the daemon", proc.pid)
                self.error = exc
                return False
        return True

    @staticmethod
    def _log(proc: Process, line: bytes) -> None:
        logger.info("[%s] %s", proc.pid, line.rstrip(b"\n").decode(errors="replace"))

    def _give_up(self, proc: Process) -> None:
        self._stopping.set()
        try:
            self._returncode = proc.stop(self._stop_timeout)
        except Exception as exc:
            logger.warning("stopping pid %s: %s", proc.pid, exc)
        finally:
            proc.close()
        self._writes.put(_STOP)

    def _forward(self) -> None:
        """The only writer to the child's stdin; a chunk for an incarnation
        that ended (BrokenPipeError) is dropped."""
        while True:
            data = self._writes.get()
            if data is _STOP:
                return
            with self._lock:
                proc = self._proc
            if proc is None:
                continue
            try:
                proc.write(data)
            except BrokenPipeError:
                continue
            except Exception as exc:  # unexpected: do not leave a Daemon that silently drops input
                logger.exception("writing to pid %s failed; stopping the daemon", proc.pid)
                self.error = exc
                self._give_up(proc)
                return
