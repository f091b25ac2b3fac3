"""``netrunner [options] -- CMD [ARG...]``: run one command under a shepherd.

Streams.  stdin is passed through (with ``--pty``: copied into CMD's
terminal).  stdout and stderr are passed through as well, unless an option
must count them: ``--max-output`` counts stdout, ``--stats`` counts stdout
and stderr.  A counted stream is a pipe that netrunner copies to its own
fd, one chunk at a time, so a slow reader slows CMD down as it would
without netrunner.  A stream that is a terminal is never turned into a
pipe, since that changes what CMD prints (``ls`` columns and colours,
compiler colours, progress bars):

* ``--stats`` passes a terminal through and reports its byte count as
  ``null`` (``bytes_in`` is ``null`` too unless ``--pty`` copies stdin;
  ``bytes_err`` is ``null`` with ``--pty``, where stderr is the terminal);
* ``--max-output`` with stdout on a terminal is refused (exit 125): the
  limit could not be kept.  Redirect stdout, or add ``--pty`` (CMD then
  gets a terminal of its own whose output netrunner copies and counts).

Exit status, as coreutils ``timeout``: CMD's own status, 128+N when CMD was
killed by signal N, 124 on timeout, 126 when CMD cannot be executed, 127
when it is not found, and 125 when netrunner itself failed or stopped CMD
for its output limit.

Signals.  SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to netrunner are
forwarded to CMD's process group (which is not the terminal's foreground
group); the shepherd follows each with SIGCONT, so a stopped CMD acts on
it.  When CMD then dies of the SIGINT, SIGTERM or SIGHUP netrunner
received, netrunner dies of that same signal (so a calling shell sees
it: bash goes on with a script after Ctrl-C unless the command it waited
for died of SIGINT).  SIGHUP is also owner loss: CMD is stopped (SIGTERM
and SIGCONT, ``--kill-after``, SIGKILL) and netrunner dies of SIGHUP,
whatever CMD made of the SIGHUP.  The forwarding runs in a thread of its
own, fed by ``signal.set_wakeup_fd``, so a signal is never acted on in the
middle of the main thread's own work on the child.

The terminal stays with netrunner's process group: CMD is not made the
foreground group (no ``tcsetpgrp``).  Handing it over would let an
interactive CMD read the terminal, but Ctrl-Z would then stop CMD while
the shell kept waiting for netrunner (the shepherd reports exits, not
stops), a pipeline partner such as ``less`` would lose the terminal, and
Ctrl-C would no longer reach the calling shell.  A CMD that reads the
terminal is stopped by SIGTTIN; Ctrl-C (forwarded, then SIGCONT) or a
hang-up still ends it, and ``--pty`` gives it a terminal of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from . import __version__
from . import _options as options
from ._bounds import DEFAULT_KILL_TIMEOUT
from ._core import ChildCore
from ._drive import Pending, drive
from ._errors import NetRunnerError, TimeoutExpired
from ._process import Process
from ._start import start

EXIT_TIMEOUT = 124
EXIT_INTERNAL = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Signals netrunner dies of when CMD died of the one it forwarded.  Not
# SIGQUIT: its default action would dump netrunner's core.
DIE_OF = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
# The shepherd follows these with SIGCONT itself.
CONTINUED_BY_SHEPHERD = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
COPY_SIZE = 65536
DEFAULT_ROWS, DEFAULT_COLS = 24, 80
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?P<unit>[smhd]?)")

EPILOG = """\
DURATION is a number of seconds, or a number with a unit as in timeout(1):
1.5, 5s, 2m, 1h, 1d.  --timeout 0 means no timeout; -k 0 sends SIGKILL right
after the stop signal.  SIG is a signal name (TERM, SIGINT, ...) or number.

exit status:
  CMD's own   CMD exited
  124         --timeout expired (CMD stopped: SIG, SIGCONT, --kill-after, SIGKILL)
  125         netrunner itself failed (usage, bad option, shepherd lost),
              or CMD's stdout passed --max-output
  126         CMD was found but could not be executed
  127         CMD was not found
  128+N       CMD was killed by signal N

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to netrunner are forwarded to CMD's
process group (then SIGCONT); if CMD dies of the SIGINT, SIGTERM or SIGHUP,
netrunner dies of it too.  SIGHUP also stops CMD, and netrunner dies of it.
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; like coreutils ``timeout`` we keep our
    own failures apart from CMD's statuses: 125."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INTERNAL, f"netrunner: {message}\n")


def duration(text: str) -> float:
    """``1.5``, ``5s``, ``2m``, ``1h``, ``1d`` -> seconds (as timeout(1));
    a bad one is a usage error (exit 125)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 1.5, 5s, 2m, 1h, 1d)")
    return float(match["number"]) * _UNITS[match["unit"]]


def signal_spec(text: str) -> int:
    """A signal name (``TERM``, ``SIGTERM``, any case) or number."""
    try:
        return options.signal_number(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="netrunner",
        description="Run CMD under a netrunner shepherd: nothing it starts outlives it.",
        usage="netrunner [options] -- CMD [ARG...]",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--timeout", type=duration, metavar="DURATION", help="stop CMD after DURATION (exit 124)")
    p.add_argument(
        "-k",
        "--kill-after",
        "--kill-timeout",
        dest="kill_after",
        type=duration,
        default=DEFAULT_KILL_TIMEOUT,
        metavar="DURATION",
        help="time between the stop signal and SIGKILL whenever CMD is stopped (default 5s)",
    )
    p.add_argument(
        "-s",
        "--signal",
        type=signal_spec,
        default=int(signal.SIGTERM),
        metavar="SIG",
        help="the signal sent on --timeout (default TERM)",
    )
    p.add_argument("--max-output", type=int, metavar="BYTES", help="kill CMD once its stdout exceeds BYTES (exit 125)")
    p.add_argument("--cgroup", metavar="PATH", help="run CMD in a new cgroup v2 leaf PATH (relative to the mount)")
    p.add_argument("--pty", action="store_true", help="give CMD a pseudo-terminal (our stdin is copied to it)")
    p.add_argument("--stats", action="store_true", help="print the Stats as one JSON line to stderr at the end")
    p.add_argument("--version", action="version", version=f"netrunner {__version__}")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    return p


def _fail(message: str, status: int) -> int:
    print(f"netrunner: {message}", file=sys.stderr)
    return status


@dataclasses.dataclass
class _Plan:
    """What the run does with each stream, decided before anything starts."""

    timeout: float | None
    timeout_signal: int
    kill_after: float
    max_output: int | None
    copy_stdout: bool
    copy_stderr: bool


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _fail("no command given (usage: netrunner [options] -- CMD [ARG...])", EXIT_INTERNAL)
    if args.max_output is not None and not args.pty and os.isatty(1):
        return _fail(
            "--max-output: stdout is a terminal, and turning it into a pipe would change what CMD prints; "
            "redirect stdout, or add --pty",
            EXIT_INTERNAL,
        )
    plan = _Plan(
        timeout=None,
        timeout_signal=args.signal,
        kill_after=args.kill_after,
        max_output=args.max_output,
        copy_stdout=args.pty or ((args.max_output is not None or args.stats) and not os.isatty(1)),
        copy_stderr=args.stats and not args.pty and not os.isatty(2),
    )
    rows, cols = _terminal_size() if args.pty else (DEFAULT_ROWS, DEFAULT_COLS)
    try:
        # As timeout(1): a duration of 0 disables the timeout.  (-k 0 is
        # SIGKILL right after the stop signal: the KILL is never left out.)
        plan.timeout = None if args.timeout == 0 else options.seconds(args.timeout, "--timeout")
        options.size(args.max_output, "--max-output")
        child = options.SpawnOptions(
            stdin="inherit",
            stdout="pipe" if plan.copy_stdout else "inherit",
            stderr="pipe" if plan.copy_stderr else "inherit",
            kill_timeout=args.kill_after,
            cgroup=args.cgroup,
            pty=args.pty,
            rows=rows,
            cols=cols,
        )
        rq = child.request(command)
    except (ValueError, TypeError, NetRunnerError) as exc:
        return _fail(str(exc), EXIT_INTERNAL)
    # Signals that arrive while CMD starts are held back, then forwarded
    # once the forwarder runs (never lost, never fatal to us alone).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    die_of: int | None = None
    try:
        try:
            # stderr_complete: nothing read from CMD's stderr is dropped
            # before it is copied; the timeout bounds the start too.
            proc = start(command, rq, Process, stderr_complete=True, timeout=plan.timeout)
        except TimeoutExpired:  # CMD never reached its exec in time; it is stopped and reaped
            return EXIT_TIMEOUT
        except NetRunnerError as exc:  # CgroupError is an OSError too: before the exec errors
            return _fail(str(exc), EXIT_INTERNAL)
        except FileNotFoundError as exc:
            return _fail(f"{command[0]}: command not found ({exc.strerror})", EXIT_NOT_FOUND)
        except OSError as exc:
            return _fail(f"{command[0]}: cannot execute ({exc.strerror})", EXIT_CANNOT_EXECUTE)
        with proc, _terminal_relay(proc) if args.pty else contextlib.nullcontext():
            with _Forwarder(proc, mask) as forwarder:
                status = _supervise(proc, plan)
            rc = proc.returncode
            received = forwarder.got
            if signal.SIGHUP in received:
                die_of = signal.SIGHUP  # owner loss: CMD was stopped, we go too
            elif rc is not None and rc < 0 and -rc in received and -rc in DIE_OF:
                die_of = -rc
            if args.stats:
                _print_stats(proc, args.pty, plan)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if die_of is not None:
        _die_of(die_of)
    return status


def _print_stats(proc: Process, pty: bool, plan: _Plan) -> None:
    """One JSON line; a stream that was passed through, not counted, is null."""
    stats: dict[str, Any] = dataclasses.asdict(proc.stats)
    if not pty:
        stats["bytes_in"] = None
    if not plan.copy_stdout:
        stats["bytes_out"] = None
    if not plan.copy_stderr:
        stats["bytes_err"] = None
    with contextlib.suppress(OSError):
        print(json.dumps(stats), file=sys.stderr, flush=True)


def _die_of(sig: int) -> None:
    """End this process by ``sig`` itself, so whoever waits for us (a shell)
    sees the signal rather than an exit status."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    # A default-action signal to ourselves is delivered before kill returns.
    os._exit(128 + sig)


class _Forwarder:
    """Forwards the signals netrunner receives to CMD's group from a thread
    of its own.  The signals' Python handlers do nothing; their numbers
    arrive as bytes on a wake-up pipe (``signal.set_wakeup_fd``) that the
    thread reads.  So forwarding never runs inside the main thread's own
    work on the child (a handler can interrupt any bytecode), and it still
    happens while the main thread is blocked writing CMD's output."""

    def __init__(self, proc: Process, mask: set[int | signal.Signals]) -> None:
        self.proc = proc
        self.mask = mask
        self.received: set[int] = set()
        self._lock = threading.Lock()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # set_wakeup_fd needs that
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._thread = threading.Thread(target=self._run, name="netrunner-signals", daemon=True)

    def __enter__(self) -> _Forwarder:
        self._thread.start()
        self._previous = {sig: signal.signal(sig, _ignore) for sig in FORWARDED}
        self._previous_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)  # held-back signals come through now
        return self

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        signal.set_wakeup_fd(self._previous_wakeup)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._write)  # the thread reads EOF once the pipe is drained
        self._thread.join(10)
        os.close(self._read)

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except InterruptedError:
                continue
            if not data:
                return
            for number in data:
                if number in FORWARDED:
                    self._forward(number)

    def _forward(self, sig: int) -> None:
        with self._lock:
            self.received.add(sig)
        with contextlib.suppress(NetRunnerError, OSError):
            self.proc.send_signal(sig)  # the shepherd adds SIGCONT
            if sig == signal.SIGHUP:
                # Our terminal (or owner) is gone: stop CMD as on owner
                # loss, SIGTERM + SIGCONT, kill_timeout, SIGKILL.
                self.proc._send_stop(self.proc._core.kill_timeout)

    @property
    def got(self) -> set[int]:
        with self._lock:
            return set(self.received)


def _ignore(_signum: int, _frame: Any) -> None:
    """A handler that does nothing: the number reaches the wake-up fd."""


def _supervise(proc: Process, plan: _Plan) -> int:
    """Copy what is counted, enforce the timeout and the output limit, and
    return the exit status (the caller turns a forwarded signal's death
    into our own)."""
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    written = 0
    core = proc._core
    try:
        while plan.copy_stdout or plan.copy_stderr:
            try:
                which, chunk = drive(_next_chunk(core, deadline))
            except TimeoutError:
                _time_out(proc, plan)
                return EXIT_TIMEOUT
            if which == 0:
                break
            if which == 2:
                if not _copy(2, chunk):
                    with core.lock:  # CMD meets EPIPE/SIGPIPE itself, as it would writing there
                        core.end_stderr()
                continue
            if plan.max_output is not None and written + len(chunk) > plan.max_output:
                _copy(1, chunk[: plan.max_output - written])
                proc.stop(0)
                print(f"netrunner: output limit of {plan.max_output} bytes exceeded", file=sys.stderr)
                return EXIT_INTERNAL
            written += len(chunk)
            if not _copy(1, chunk):
                # Whoever read our stdout is gone: close CMD's stdout pipe so
                # CMD meets EPIPE/SIGPIPE itself, as it would writing there
                # directly, and report its status as usual.
                with core.lock:
                    core.end_stdout(discard=True)
        try:
            rc = proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except TimeoutExpired:
            _time_out(proc, plan)
            return EXIT_TIMEOUT
    except NetRunnerError as exc:
        return _fail(str(exc), EXIT_INTERNAL)
    return 128 - rc if rc < 0 else rc


def _next_chunk(core: ChildCore, deadline: float | None) -> Callable[[list[int] | None], Any]:
    """An attempt: ``(1, bytes)`` from CMD's stdout or ``(2, bytes)`` from
    its stderr, whichever has some; ``(0, b"")`` once both copied streams
    are at their end; TimeoutError at ``deadline``.  Nothing more is read
    from a stream until its last chunk was written out (backpressure)."""

    def attempt(_ready: list[int] | None) -> tuple[int, bytes] | Pending:
        with core.lock:
            core.check_owner()
            if core.stdout.fd >= 0 or core.out_buf:
                data = core.read_stdout(COPY_SIZE)
                if data:
                    return 1, data
            if core.stderr.fd >= 0 and not core.err_buf:
                core.drain_stderr()
            if core.err_buf:
                return 2, core.take_stderr(len(core.err_buf))
            if core.stdout.fd < 0 and not core.out_buf and core.stderr.fd < 0:
                return 0, b""
            core.service_ctl()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            return Pending(core.interest(stdout=True, stdin=False), deadline)

    return attempt


def _time_out(proc: Process, plan: _Plan) -> None:
    """--timeout expired: the signal (SIGTERM unless -s), SIGCONT, then
    SIGKILL after --kill-after.  With SIGTERM the shepherd runs the whole
    escalation (it completes even if we die meanwhile); another signal is
    sent from here, and our own death would still be owner loss."""
    sig = plan.timeout_signal
    if sig == signal.SIGTERM:
        proc.stop(plan.kill_after)
        return
    proc.send_signal(sig)
    if sig not in CONTINUED_BY_SHEPHERD and sig not in (signal.SIGKILL, signal.SIGCONT):
        proc.send_signal(signal.SIGCONT)
    try:
        proc.wait(plan.kill_after)
    except TimeoutExpired:
        proc.stop(0)


def _terminal_size() -> tuple[int, int]:
    """Our terminal's size for CMD's; 24x80 when there is none, or when it
    says 0 (a terminal nobody sized, e.g. a fresh pty or a serial line)."""
    try:
        size = os.get_terminal_size(1)
    except OSError:
        return DEFAULT_ROWS, DEFAULT_COLS
    return size.lines or DEFAULT_ROWS, size.columns or DEFAULT_COLS


@contextlib.contextmanager
def _terminal_relay(proc: Process) -> Iterator[None]:
    """--pty: our stdin goes to CMD's terminal (our own terminal, if any, in
    raw mode so keys reach CMD's line discipline as typed), our window size
    follows along, and EOF on our stdin is the terminal's EOF for CMD."""
    raw = os.isatty(0)
    saved = termios.tcgetattr(0) if raw else None

    def copy_stdin() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                proc.write(data)
            proc.close_stdin()
        except (OSError, NetRunnerError):
            pass  # CMD is gone: nothing more to feed

    def resize(_signum: int, _frame: Any) -> None:
        rows, cols = _terminal_size()
        with contextlib.suppress(OSError, ValueError, NetRunnerError):
            proc.set_window_size(rows, cols)

    previous = signal.signal(signal.SIGWINCH, resize)
    if raw:
        tty.setraw(0)
    # A daemon thread: a blocking read of our stdin must not keep us alive.
    threading.Thread(target=copy_stdin, name="netrunner-stdin", daemon=True).start()
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            # A hung-up terminal (EIO) has no settings left to restore.
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _copy(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to our ``fd``; False once its reader is gone
    (EPIPE, or EIO from a terminal that hung up)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        return False
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
