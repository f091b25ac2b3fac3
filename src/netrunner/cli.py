"""``netrunner [options] -- CMD [ARG...]``: run one command under a shepherd.

stdin and stderr are passed through; stdout too, unless ``--max-output`` or
``--stats`` needs to count it (then it is copied).  Exit status follows
coreutils ``timeout``: CMD's own status, 128+N when killed by signal N, 124
on timeout, 126 when CMD cannot be executed, 127 when it is not found, and
125 when netrunner itself failed or stopped CMD for its output limit.
SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to netrunner are forwarded to
CMD's process group (which is not the terminal's foreground group).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from . import _opcodes as op
from . import _options as options
from ._errors import NetRunnerError, TimeoutExpired
from ._process import Process
from ._sync import start

EXIT_TIMEOUT = 124
EXIT_INTERNAL = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; like coreutils ``timeout`` we keep our
    own failures apart from CMD's statuses: 125."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INTERNAL, f"netrunner: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="netrunner",
        description="Run CMD under a netrunner shepherd: nothing it starts outlives it.",
        usage="netrunner [options] -- CMD [ARG...]",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="stop CMD after S seconds (exit 124)")
    p.add_argument(
        "--kill-timeout", type=float, default=5.0, metavar="S", help="seconds between SIGTERM and SIGKILL (default 5)"
    )
    p.add_argument("--max-output", type=int, metavar="BYTES", help="kill CMD once its stdout exceeds BYTES (exit 125)")
    p.add_argument("--cgroup", metavar="PATH", help="run CMD in a new cgroup v2 leaf PATH (relative to the mount)")
    p.add_argument("--pty", action="store_true", help="give CMD a pseudo-terminal (our stdin is copied to it)")
    p.add_argument("--stats", action="store_true", help="print the Stats as one JSON line to stderr at the end")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    return p


def _fail(message: str, status: int) -> int:
    print(f"netrunner: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _fail("no command given (usage: netrunner [options] -- CMD [ARG...])", EXIT_INTERNAL)
    copy_stdout = args.max_output is not None or args.stats or args.pty
    rows, cols = _terminal_size() if args.pty else (24, 80)
    try:
        timeout = options.seconds(args.timeout, "--timeout")
        options.size(args.max_output, "--max-output")
        rq = options.spawn_request(
            command,
            stdin="inherit",
            stdout=op.STDIO_PIPE if copy_stdout else op.STDIO_INHERIT,
            stderr="inherit",
            cwd_=None,
            env=None,
            kill_timeout=args.kill_timeout,
            rlimits_=None,
            cgroup=args.cgroup,
            pty=args.pty,
            rows=rows,
            cols=cols,
        )
    except (ValueError, TypeError, NetRunnerError) as exc:
        return _fail(str(exc), EXIT_INTERNAL)
    # Signals that arrive while CMD starts are held back, then forwarded
    # once the handlers are in place (never lost, never fatal to us alone).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        try:
            proc = start(command, rq, Process, timeout=timeout)  # the timeout bounds the start too
        except TimeoutExpired:  # CMD never reached its exec in time; it is stopped and reaped
            return EXIT_TIMEOUT
        except NetRunnerError as exc:  # CgroupError is an OSError too: before the exec errors
            return _fail(str(exc), EXIT_INTERNAL)
        except FileNotFoundError as exc:
            return _fail(f"{command[0]}: command not found ({exc.strerror})", EXIT_NOT_FOUND)
        except OSError as exc:
            return _fail(f"{command[0]}: cannot execute ({exc.strerror})", EXIT_CANNOT_EXECUTE)
        with proc, _terminal_relay(proc) if args.pty else contextlib.nullcontext():
            status = _supervise(proc, timeout, args.max_output, copy_stdout, mask)
            if args.stats:
                print(json.dumps(dataclasses.asdict(proc.stats)), file=sys.stderr)
        return status
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _supervise(
    proc: Process, timeout: float | None, max_output: int | None, copy_stdout: bool, mask: set[int | signal.Signals]
) -> int:
    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # held-back signals are forwarded now
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        written = 0
        while copy_stdout:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                chunk = proc.read(65536, timeout=left) if left != 0.0 else None
            except TimeoutError:
                chunk = None
            if chunk is None:
                proc.stop()
                return EXIT_TIMEOUT
            if not chunk:
                break
            if max_output is not None and written + len(chunk) > max_output:
                chunk = chunk[: max_output - written]
                with contextlib.suppress(BrokenPipeError):
                    _write_all(chunk)
                proc.stop(0)
                print(f"netrunner: output limit of {max_output} bytes exceeded", file=sys.stderr)
                return EXIT_INTERNAL
            written += len(chunk)
            try:
                _write_all(chunk)
            except BrokenPipeError:
                # Whoever read our stdout is gone: close CMD's stdout pipe so
                # CMD meets EPIPE/SIGPIPE itself, as it would writing there
                # directly, and report its status as usual.
                with proc._core.lock:
                    proc._core.stdout.close()
                    proc._core.out_eof = True
                break
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = proc.wait(left)
        except TimeoutExpired:
            proc.stop()
            return EXIT_TIMEOUT
        except NetRunnerError as exc:
            return _fail(str(exc), EXIT_INTERNAL)
        return 128 - rc if rc < 0 else rc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(1)
    except OSError:
        return 24, 80
    return max(1, size.lines), max(1, size.columns)


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
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
