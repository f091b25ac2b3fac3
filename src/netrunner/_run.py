"""``run()``: the whole conversation with one child, as one core.

:class:`RunCore` holds the logic (feed input while collecting output,
timeouts, output limit, what to raise) as non-blocking steps; the sync
:func:`run` below only waits for the fds it names.  The asyncio front end
drives the same core from the event loop.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import os
import stat
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _opcodes as op
from . import _options as options
from . import _prefault
from ._bounds import CGROUP_TEARDOWN, EOF_GRACE, REAP_BOUND, REPORT_MARGIN
from ._core import READ_SIZE, ChildCore, eof_on_eio
from ._drive import POLLIN, POLLOUT, Flow, Pending, drive_flow, until
from ._errors import CalledProcessError, OutputLimitExceeded, ShepherdError, TimeoutExpired
from ._keywords import RunKeywords
from ._options import (
    Args,
    Cgroup,
    Env,
    Input,
    Limits,
    Rlimits,
    SpawnOptions,
    StderrSpec,
    StdoutSpec,
    StrOrBytesPath,
)
from ._protocol import SpawnRequest, encode_spawn, encode_stop
from ._result import Result
from ._start import started

if TYPE_CHECKING:  # (typing.Unpack is 3.11+; annotations are never evaluated)
    from typing_extensions import Unpack

INPUT_CHUNK = 1 << 20
INPUT_KINDS = "input must be bytes, str, an iterable of bytes or a binary file"
OUT_READ = 1 << 20
# Captured stderr of run()/stream() without max_output_size: its last 64 MiB
# (a flood must not take the owner's memory with it; Stats.stderr_dropped
# counts the rest).
STDERR_CAPTURE = 64 << 20


def _pollable(value: Any) -> tuple[int, Any]:
    """For a file object whose reads may block (a pipe, a socket, a
    terminal): its fd, for the driver to wait on, and the call that reads at
    most once from it (so a read after readiness cannot block).  ``(-1,
    None)`` for everything else: regular files and devices such as
    ``/dev/zero`` never block (and ``epoll`` refuses them), and an object
    without a usable ``fileno()`` can only be pulled as it is."""
    try:
        fd = value.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError, TypeError):  # io.UnsupportedOperation is both
        return -1, None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))):
        return -1, None
    if isinstance(value, io.RawIOBase):
        return fd, value.read  # one read(2)
    if hasattr(value, "read1"):
        return fd, value.read1  # buffered data first, else at most one read(2)
    binary = getattr(value, "buffer", None)  # a text file: its bytes, not re-encoded
    if binary is not None and hasattr(binary, "read1"):
        return fd, binary.read1
    return -1, None


class _Input:
    """The ``input`` argument as a source of byte chunks, pulled lazily so
    a generator of any size streams through without being materialised.

    A file object on a pipe, socket or terminal is *polled*: ``fd`` is what
    the driver waits on (``poll``, or the event loop), and it is read only
    once that fd is readable, so a writer that goes quiet cannot block the
    caller's thread (or the loop) past ``timeout``.  Everything else is
    pulled in the caller's thread as it stands: iterables and objects
    without such an fd must not block."""

    def __init__(self, value: Any, encoding: str | None, errors: str | None) -> None:
        self._encoding = encoding or "utf-8"
        self._errors = errors or "strict"
        self._chunks: Iterator[Any] | None = None
        self._file: Any = None
        self.view = memoryview(b"")
        self.fd = -1  # polled sources: wait for this to be readable
        self.readable = False  # the driver saw fd readable since the last read
        self._read_once: Any = None
        if isinstance(value, str):
            self.view = memoryview(value.encode(self._encoding, self._errors))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.view = memoryview(value).cast("B")
        elif hasattr(value, "read"):
            self._file = value
            self.fd, self._read_once = _pollable(value)
        elif isinstance(value, Iterable):
            self._chunks = iter(value)
        else:
            raise TypeError(f"{INPUT_KINDS}, not {type(value).__name__}")

    @property
    def waiting(self) -> bool:
        """A polled source with nothing in hand: wait for its fd first."""
        return self.fd >= 0 and not self.view and not self.readable

    def next(self) -> memoryview | None:
        """The unwritten remainder, refilled from the source; None at end;
        empty when a polled source has nothing to give right now."""
        while not self.view:
            if self._read_once is not None:
                if not self.readable:
                    return self.view
                self.readable = False  # one read per readiness: a second may block
                data = self._read_once(INPUT_CHUNK)
                if data is None:  # a non-blocking raw file with nothing after all
                    return self.view
                if not data:
                    return None
            elif self._file is not None:
                data = self._file.read(INPUT_CHUNK)
                if not data:
                    return None
            elif self._chunks is not None:
                try:
                    data = next(self._chunks)
                except StopIteration:
                    return None
            else:
                return None
            if isinstance(data, str):
                data = data.encode(self._encoding, self._errors)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"input chunks must be bytes, not {type(data).__name__}")
            self.view = memoryview(data).cast("B")
        return self.view


# BytesIO.__sizeof__() less this is the length of its buffer (the allocation,
# over-allocation included): the object itself and a bytes object's header.
_BIO_OVERHEAD = io.BytesIO.__basicsize__ + b"".__sizeof__()


class _Collector:
    """stdout into one growing buffer, read straight into its spare room.

    The buffer is an ``io.BytesIO``: it grows with realloc (mremap for big
    sizes, so growing never copies what is already there), ``readv`` fills
    it through ``getbuffer()``, and ``getvalue()`` hands back the internal
    bytes object itself, trimmed in place.  Each byte of output is therefore
    written to fresh memory once; page faults dominate on these VMs, and
    this measured ~2x a list of chunks joined at the end
    (docs/decisions/0004-output-collection.md).  Small outputs never touch
    the buffer: the first read is a plain ``os.read``."""

    GROW = 4 << 20  # zero-filled ahead of the reads, 4 MiB at a time

    def __init__(self, limit: int | None) -> None:
        self.first: bytes | None = None
        self.bio: io.BytesIO | None = None
        self.cap = 0
        self.size = 0
        self.limit = limit

    def read_from(self, fd: int) -> int:
        """One read; returns bytes read (0 = EOF); BlockingIOError if none."""
        if self.first is None and self.bio is None:
            data = os.read(fd, READ_SIZE)
            if data:
                self.first = data
                self.size = len(data)
            return len(data)
        bio = self.bio
        if bio is None:
            # Second read: still a plain read, so output that ends here
            # (most commands) never pays for the 4 MiB buffer below.
            data = os.read(fd, READ_SIZE)
            if not data:
                return 0
            assert self.first is not None
            bio = self.bio = io.BytesIO()
            bio.write(self.first)
            bio.write(data)
            self.first = None
            self.size += len(data)
            return len(data)
        if self.cap - self.size < OUT_READ:
            self._grow(bio)
        with bio.getbuffer() as view:
            n = os.readv(fd, [view[self.size : self.size + OUT_READ]])
        self.size += n
        return n

    def _grow(self, bio: io.BytesIO) -> None:
        """Make room for the next read, writable through ``getbuffer()``.

        ``BytesIO`` grows when written past its end: it reallocs (keeping
        12.5 % spare once big) and zero-fills up to the write, and that
        fill is what faults the new pages in, one by one.  Past
        ``PREFAULT_FROM`` the room for one read (``_prefault.STEP``) is
        faulted in by one system call first (:mod:`netrunner._prefault`),
        right before the read fills it (so the pages are still in cache),
        and the zero-fill runs over present pages: the end of the spare is
        filled, then one byte past it makes BytesIO realloc (mremap:
        nothing is copied or touched), and the new spare is faulted in
        before it is filled in turn."""
        if self.cap < _prefault.PREFAULT_FROM:
            want = self.size + self.GROW
        else:
            want = self.size + _prefault.STEP
        while self.cap >= _prefault.PREFAULT_FROM and self.cap < want:
            room = bio.__sizeof__() - _BIO_OVERHEAD  # the allocation, spare included
            if room < self.cap or room > 2 * want:
                break  # not the layout this relies on: fill as below
            if room == self.cap:
                bio.seek(self.cap)  # realloc with nothing to fill
                bio.write(b"\0")
                self.cap += 1
                continue
            end = min(want, room)
            with bio.getbuffer() as view:
                # (a page further when the allocation has it: the page the
                # step ends in, which whole pages only would leave out)
                faulted = _prefault.populate(view, self.cap, min(room, end + _prefault.PAGE))
            if not faulted:
                break
            bio.seek(end - 1)
            bio.write(b"\0")
            self.cap = end
        if self.cap < want:
            self.cap = want
            bio.seek(want - 1)
            bio.write(b"\0")

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` bytes."""
        self.size = min(self.size, size)

    def peek(self) -> bytes:
        """A copy of what is collected so far; collecting goes on (the
        partial output a resumable ``communicate()`` timeout reports)."""
        if self.bio is None:
            return (self.first or b"")[: self.size]
        with self.bio.getbuffer() as view:
            return bytes(view[: self.size])

    def value(self) -> bytes:
        """The output, once: the buffers are let go (the collector outlives
        the call in a kept exception's traceback; a first read cut to a
        limit would hold its whole 64 KiB there)."""
        if self.bio is None:
            data = (self.first or b"")[: self.size]
            self.first = None
            return data
        self.bio.truncate(self.size)
        data = self.bio.getvalue()
        self.bio = None
        return data


class RunCore:
    """One ``run()``: non-blocking steps plus what to wait for next."""

    collect = True  # stdout is read into the collector (a stream pulls it instead)

    def __init__(
        self,
        core: ChildCore,
        source: _Input | None,
        *,
        timeout: float | None,
        max_output_size: int | None,
        capture_stderr: bool = True,
    ) -> None:
        self.core = core
        self.input = source
        self.out = _Collector(max_output_size)
        # stdout went elsewhere (inherited, /dev/null, a file): Result.stdout is None
        self.capture_stdout = bool(core.stdout)
        # stderr is bounded like stdout (by max_output_size, else
        # STDERR_CAPTURE), keeping the tail: the end says what went wrong.
        self.capture_stderr = capture_stderr
        core.capture_stderr(STDERR_CAPTURE if max_output_size is None else max_output_size)
        self.timeout = timeout
        now = time.monotonic()
        # The timeout counts from before the start (the Starter's deadline).
        self.timeout_at = None if timeout is None else core.timeout_at or now + timeout
        self.giveup_at: float | None = None  # the shepherd must have reported by then
        self.eof_by: float | None = None  # pipes get until then after the exit
        self.hangup_by: float | None = None  # with a cgroup: its removal, until then
        self.stop_sent_at = 0.0
        self.timed_out = False
        self.over_limit = False
        # Aborted (an exception is on its way to the caller): stdout is no
        # longer read or waited on, only the exit report is.  The collector
        # may be what failed (a MemoryError), and no output is returned.
        self.stopping = False
        if self.input is None:
            core.end_input()

    # ---------------------------------------------------------- queries
    @property
    def finished(self) -> bool:
        core = self.core
        if not core.done:
            return False
        now = time.monotonic()
        if self._awaiting_hangup(now):
            # EXITED comes before the shepherd empties and removes the cgroup
            # (slow part last); we return once it is gone: its hang-up.
            return False
        return (core.out_eof and core.err_eof) or (self.eof_by is not None and now >= self.eof_by)

    def wants(self) -> tuple[list[tuple[int, int]], float | None]:
        """fds to wait on, and the next deadline."""
        core = self.core
        fds = core.watch_interest()
        if core.sock is not None:
            fds.append((core.sock.fileno(), POLLIN))
        if core.stdout.fd >= 0 and not self.stopping and (self.collect or not self.timed_out):
            fds.append((core.stdout.fd, POLLIN))
        if core.stderr.fd >= 0:
            fds.append((core.stderr.fd, POLLIN))
        if core.stdin.fd >= 0:
            source = self.input
            if source is not None and source.waiting:
                fds.append((source.fd, POLLIN))  # the input's writer first
            else:
                fds.append((core.stdin.fd, POLLOUT))
        if not core.done:
            deadlines = [d for d in (self.timeout_at, self.giveup_at) if d is not None]
        elif self._awaiting_hangup(time.monotonic()):
            # Only the hang-up (or its bound) can finish us now.  The EOF
            # grace may be spent already (after a timeout it is "now"): a
            # deadline in the past makes the driver return without polling,
            # so the hang-up would never be seen and the owner would spin
            # until hangup_by.
            deadlines = [self.hangup_by] if self.hangup_by is not None else []
        else:
            # timeout_at and giveup_at act only on a running child.
            deadlines = [self.eof_by] if self.eof_by is not None else []
        return fds, core.due(min(deadlines) if deadlines else None)

    def _awaiting_hangup(self, now: float) -> bool:
        """Whether the run waits for the shepherd to hang up (it empties and
        removes the cgroup after EXITED; we return once it is gone)."""
        core = self.core
        return core.cgroup is not None and core.sock is not None and now < (self.hangup_by or now)

    def attempt(self, ready: list[int] | None) -> bool | Pending:
        """Drive to the end (see :mod:`netrunner._drive`): True once the
        child is reaped and its pipes are drained."""
        if ready is None and self.input is None and not self.core.done and self.timeout_at is None:
            # Just started, nothing to write: every read would say EAGAIN.
            ready = []
        self.step(ready)
        if self.finished:
            return True
        fds, deadline = self.wants()
        return Pending(fds, deadline)

    def reap_attempt(self, ready: list[int] | None) -> bool | Pending:
        """After :meth:`abort`: True once the exit report is in (bounded by
        ``giveup_at``, after which the core is abandoned)."""
        self.step(ready)
        if self.core.done:
            return True
        fds, deadline = self.wants()
        return Pending(fds, deadline)

    # ------------------------------------------------------------ steps
    def step(self, ready: Collection[int] | None = None) -> None:
        """Do the non-blocking work that is possible now: for the fds in
        ``ready`` only (what the driver saw fire), or all of them when None.
        Touching only the fd that fired saves a wasted read(2) per pipe per
        wake-up, which is most of the cost when a producer writes little
        chunks (upstream lesson 18)."""
        core = self.core
        was_done = core.done
        was_dead = core.child_dead
        if core.sock is not None and (ready is None or core.sock.fileno() in ready):
            core.service_ctl()
        core.tend(ready)
        if (core.done and not was_done) or (core.child_dead and not was_dead):
            # Reaped, or seen dead on its pidfd: the pipes hold their last
            # bytes and (unless something the child started holds them) EOF
            # now, so they are read without waiting for them to say so.
            ready = None
        read_out = self.collect and not self.stopping and core.stdout.fd >= 0
        tried_out = read_out and (ready is None or core.stdout.fd in ready)
        if tried_out:
            self._read_stdout()
        tried_err = core.stderr.fd >= 0 and (ready is None or core.stderr.fd in ready)
        if tried_err:
            core.drain_stderr()
        # One pipe hung up: the child is most likely exiting and the other
        # pipe (not ready a moment ago) has hung up too by now.  Reading it
        # now saves a poll round per run() when a child's pipes close one
        # by one while the owner is already awake (it wakes on the first);
        # if the child runs on, the cost is one EAGAIN.
        if tried_out and not tried_err and core.out_eof and core.stderr.fd >= 0:
            core.drain_stderr()
        elif tried_err and not tried_out and core.err_eof and read_out and core.stdout.fd >= 0:
            self._read_stdout()
        source = self.input
        fed = source is not None and source.fd >= 0 and ready is not None and source.fd in ready
        if fed:
            assert source is not None
            source.readable = True
        if core.stdin.fd >= 0 and (ready is None or fed or core.stdin.fd in ready):
            self._write_stdin()
        self._check_time()
        if core.done and self.eof_by is None:
            # After a timeout nothing is waited for once the child is dead
            # (the bound is the promise); otherwise the pipes get a grace.
            self.eof_by = time.monotonic() + (0.0 if self.timed_out else EOF_GRACE)
            self.hangup_by = self.eof_by + CGROUP_TEARDOWN

    def _read_stdout(self) -> None:
        core = self.core
        out = self.out
        for _ in range(16):
            fd = core.stdout.fd
            if fd < 0:
                return
            try:
                n = out.read_from(fd)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                n = len(eof_on_eio(exc))  # a terminal's end of output
            if n == 0:
                core.end_stdout()
                return
            short = n < OUT_READ  # the pipe is empty now: wait, do not re-read
            core.counted_stdout(n)
            if out.limit is not None and out.size > out.limit:
                self.over_limit = True
                out.truncate(out.limit)
                self._stop(0.0)
                core.end_stdout()
                return
            if short:
                return

    def _write_stdin(self) -> None:
        core = self.core
        if core.eof_pending:  # a terminal's EOF that did not fit yet
            core.flush_eof()
            return
        source = self.input
        if source is None or core.stdin.fd < 0:
            return
        for _ in range(16):
            view = source.next()
            if view is None:
                self.input = None  # (a polled source's fd is not waited on again)
                core.end_input()
                return
            if not view:
                return  # a polled source with nothing yet: wants() waits for it
            try:
                n = core.write_stdin(view[:INPUT_CHUNK])
            except BrokenPipeError:
                # The child stopped reading: like communicate(), not an error.
                core.end_input()
                return
            if n is None:
                return
            source.view = view[n:]

    def _stop(self, grace: float) -> None:
        core = self.core
        if not core.done:
            core.send(encode_stop(grace))
        if self.giveup_at is None:
            self.stop_sent_at = time.monotonic()
            self.giveup_at = self.stop_sent_at + grace + REPORT_MARGIN + REAP_BOUND

    def _check_time(self) -> None:
        now = time.monotonic()
        core = self.core
        if self.timeout_at is not None and now >= self.timeout_at and not core.done:
            self.timed_out = True
            self.timeout_at = None
            self._stop(core.kill_timeout)
            # The promise: back within timeout + kill_timeout + 0.5 s.
            self.giveup_at = now + core.kill_timeout + REPORT_MARGIN
        if self.giveup_at is not None and now >= self.giveup_at and not core.done:
            # No report: the shepherd is stopped, wedged or gone.  Kill the
            # child and its group ourselves and return once it is seen dead
            # (bounded), never while it may still run.
            what = "the timeout" if self.timed_out else "STOP"
            self.giveup_at = None
            waited = now - self.stop_sent_at
            name = core.shepherd_name()
            core.take_over(f"no exit report from the shepherd{name} within {waited:.1f} s of {what}", eager=True)

    def abort(self) -> None:
        """An exception (or interrupt) is leaving the driver: stop feeding
        input and have the shepherd stop the child; the driver then steps
        until the exit report arrives (bounded by ``giveup_at``), reading
        no more output."""
        self.stopping = True
        self.input = None
        self.core.end_input()
        self.timeout_at = None
        self._stop(self.core.kill_timeout)

    # ------------------------------------------------------------ result
    def result(self, text: bool, encoding: str | None, errors: str | None, check: bool) -> Result[Any]:
        core = self.core
        # Done with the child: let go of the pipes and the shepherd socket
        # now, not when the core is collected (an exception raised below
        # keeps the core alive in its traceback for as long as it is held).
        core.abandon()
        stdout: Any = self.out.value() if self.capture_stdout else None
        stderr: Any = core.err_buf.value() if self.capture_stderr else None
        if core.exited is None and not core.child_dead:
            # Not even a timeout is reported while the child may still run.
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        # Partial output stays bytes even in text mode, as subprocess's
        # TimeoutExpired does: it may end inside a multi-byte character.
        if self.over_limit:
            assert self.out.limit is not None
            raise OutputLimitExceeded(core.args, self.out.limit, stdout, stderr)
        if self.timed_out:
            assert self.timeout is not None
            raise TimeoutExpired(core.args, self.timeout, stdout, stderr)
        if text:
            stdout = None if stdout is None else _decode(stdout, encoding, errors)
            stderr = None if stderr is None else _decode(stderr, encoding, errors)
        if core.exited is None:
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        rc = core.returncode
        assert rc is not None
        stats = core.stats()
        result = Result(core.args, rc, stdout, stderr, pid=core.pid, stats=stats)
        if check and rc != 0:
            raise CalledProcessError(
                rc, core.args, stdout, stderr, tail=bytes(core.err_tail), oom_killed=stats.oom_killed
            )
        return result


def _decode(data: bytes, encoding: str | None, errors: str | None) -> str:
    text = data.decode(encoding or "utf-8", errors or "strict")
    # subprocess's text mode uses universal newlines; match it.
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """``run()``'s (and ``stream()``'s) keywords, validated: everything the
    flow needs besides the child's request."""

    rq: SpawnRequest
    timeout: float | None
    limit: int | None
    capture_stderr: bool  # stderr is a pipe to capture (not merged, not a terminal)
    source: _Input | None
    decode: tuple[bool, str | None, str | None]  # text, encoding, errors
    check: bool
    request: bytes | None = None  # rq encoded, when the plan is a cached one


# The common call, run(args) with every keyword at its default, validated
# once per argv: (argv, environment list, umask) -> its plan, with the
# request encoded.  What a default request depends on besides argv is our
# environment (with PATH: the executables) and umask; the cwd goes as an
# fd at send time.  _options.environment returns the same list object
# while os.environ is unchanged, so the entry is reused only while it is.
_plain_plans: dict[tuple[Any, ...], tuple[RunPlan, list[bytes], int]] = {}
_PLAIN_ARGS = frozenset({str, bytes})
_PLAIN_PLANS_MAX = 64
# Larger requests (a long command line) are not kept: 64 of them at up to
# ARG_MAX each would hold on to megabytes, and encoding them is no longer
# what a spawn costs.
_PLAIN_REQUEST_MAX = 64 << 10


def _plain_key(args: Any, call: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The cache key of a default run of ``args``, or None if it is not one
    (an option given, or args not a list/tuple of plain str/bytes)."""
    if type(args) not in (list, tuple) or not args or not set(map(type, args)) <= _PLAIN_ARGS:
        return None
    if not options.at_defaults("run", call):
        return None
    return tuple(args)


def plan(args: Any, call: Mapping[str, Any]) -> RunPlan:
    """Validate a run's keywords (a front end's ``locals()``).  Input is bad
    input like any other: a str that ``encoding`` cannot encode, or an
    unknown codec or error handler, raises here, before anything starts.
    The request comes last: with a cgroup it creates the parents.

    ``run(args)`` with no option given is validated once per argv (while
    our environment and umask stay the same): that plan is kept, with its
    request encoded (~25 us of a ~300 us spawn)."""
    key = _plain_key(args, call)
    if key is not None:
        cached = _plain_plans.get(key)
        if cached is not None:
            found, env, mask = cached
            if options.environment(None) is env and options.current_umask() == mask:
                return found
        fresh = _plan(args, call)
        rq = fresh.rq
        request = encode_spawn(rq)
        fresh = dataclasses.replace(fresh, request=request)
        if len(request) <= _PLAIN_REQUEST_MAX:
            if len(_plain_plans) >= _PLAIN_PLANS_MAX:
                _plain_plans.clear()
            assert rq.umask is not None
            _plain_plans[key] = (fresh, rq.env, rq.umask)
        return fresh
    return _plan(args, call)


def _plan(args: Any, call: Mapping[str, Any]) -> RunPlan:
    seconds = options.seconds(call["timeout"], "timeout")
    limit = options.size(call.get("max_output_size"), "max_output_size")
    encoding, errors = call.get("encoding"), call.get("errors")
    if encoding is not None:
        codecs.lookup(encoding)  # LookupError (TypeError) now, not after the run
    if errors is not None:
        codecs.lookup_error(errors)
    source = None if call["input"] is None else _Input(call["input"], encoding, errors)
    child = SpawnOptions.from_call(call)
    rq = child.request(args, stdin="devnull" if source is None else "pipe")
    text = bool(call.get("text")) or encoding is not None or errors is not None
    # A terminal merges stderr into its output: nothing separate to capture.
    capture = rq.stderr == op.STDIO_PIPE and rq.pty is None
    return RunPlan(rq, seconds, limit, capture, source, (text, encoding, errors), bool(call["check"]))


def running(args: Any, plan: RunPlan) -> Flow[Result[Any]]:
    """``run()`` as a flow: start, feed and collect to the end, result.
    Whatever interrupts it (an exception, KeyboardInterrupt, a
    cancellation) stops the child and waits until it is reaped (bounded by
    the shepherd's own escalation) before it goes on; a second one while
    we wait drops the socket, which makes the shepherd finish the job."""
    job = yield from started(
        args,
        plan.rq,
        lambda core: RunCore(
            core, plan.source, timeout=plan.timeout, max_output_size=plan.limit, capture_stderr=plan.capture_stderr
        ),
        stderr_complete=plan.capture_stderr,
        timeout=plan.timeout,
        request=plan.request,
    )
    try:
        yield from until(job.attempt)
    except GeneratorExit:  # closed unfinished: owner loss, no waiting now
        job.core.abandon()
        raise
    except BaseException:
        try:
            job.abort()
            yield from until(job.reap_attempt)
        finally:
            job.core.abandon()
        raise
    return job.result(*plan.decode, plan.check)


# overloads of run: generated by tools/gen_frontends.py from the option schema
@overload
def run(
    args: Args,
    *,
    text: Literal[False] = False,
    encoding: None = None,
    errors: None = None,
    **options: Unpack[RunKeywords],
) -> Result[bytes]: ...
@overload
def run(
    args: Args,
    *,
    text: Literal[True],
    encoding: str | None = None,
    errors: str | None = None,
    **options: Unpack[RunKeywords],
) -> Result[str]: ...
@overload
def run(
    args: Args,
    *,
    text: bool = False,
    encoding: str,
    errors: str | None = None,
    **options: Unpack[RunKeywords],
) -> Result[str]: ...
@overload
def run(
    args: Args,
    *,
    text: bool = False,
    encoding: str | None = None,
    errors: str,
    **options: Unpack[RunKeywords],
) -> Result[str]: ...
@overload
def run(
    args: Args,
    *,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    **options: Unpack[RunKeywords],
) -> Result[bytes] | Result[str]: ...


# end of generated overloads


def run(
    args: Args,
    *,
    input: Input = None,
    timeout: float | None = None,
    check: bool = False,
    max_output_size: int | None = None,
    stderr: StderrSpec = "pipe",
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
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
) -> Result[bytes] | Result[str]:
    """Run ``args`` to completion and return its :class:`Result`.

    The child runs under its own shepherd: input is written while output
    is read, so no size deadlocks; whatever the child leaves running is
    killed when it exits; any exception (KeyboardInterrupt included) stops
    and reaps the child before it propagates.  Every option is validated
    before anything starts.

    Args:
        args: the command, a non-empty sequence of ``str``, ``bytes`` or
            ``os.PathLike`` (no shell; a single string is a ``TypeError``
            unless ``shell=True``).
            ``args[0]`` without a slash is looked up on ``PATH`` (that of
            ``env`` when given), as ``subprocess`` does.
        input: what the child reads on stdin: ``bytes``, ``str`` (encoded
            with ``encoding``, default UTF-8), an iterable of ``bytes``
            (a generator of any size is pulled as it goes), or a binary
            file object.  A file object on a pipe, socket or terminal is
            read only when it is readable, so a writer that goes quiet
            never holds off ``timeout``; anything else (regular files,
            iterables) is pulled in the calling thread and must not block.
            ``None`` (default): stdin is ``/dev/null``, so a child that
            reads it sees EOF rather than hanging on your terminal.
        timeout: seconds (> 0) for the whole call, the start included, or
            ``None`` (default) for no limit.  On expiry the child's group
            gets SIGTERM, then SIGKILL after ``kill_timeout``, and
            ``TimeoutExpired`` is raised with the partial output (bytes,
            even in text mode).  The call returns within ``timeout +
            kill_timeout + 0.5 s`` even when a grandchild holds the pipes.
        check: if true, a non-zero returncode raises ``CalledProcessError``
            (its message ends with the last 8 KiB of stderr).
        max_output_size: bytes (int >= 0) of stdout to accept, or ``None``
            (default) for no limit.  Past it the group is killed and
            ``OutputLimitExceeded`` is raised, its ``.stdout`` holding the
            first ``max_output_size`` bytes.  It also bounds captured
            stderr; without it stderr is bounded at 64 MiB.  Either way the
            tail of stderr is kept (its end says what went wrong) and the
            dropped byte count is in ``Result.stats.stderr_dropped``.
        stderr: where the child's stderr goes: ``"pipe"`` (default:
            captured into ``Result.stderr``, bounded as above),
            ``"stdout"`` (merged into stdout), ``"devnull"`` or
            ``"inherit"`` (your own stderr); ``Result.stderr`` is ``None``
            for the last three.  The ``subprocess`` constants ``PIPE``,
            ``STDOUT``, ``DEVNULL`` and ``None`` are accepted as aliases of
            these four, in that order.  An fd (int) or a file object with
            ``fileno()`` sends stderr there (``Result.stderr`` is ``None``);
            an fd that is not open is ``OSError(EBADF)`` before anything
            starts.
        stdout: where the child's stdout goes: ``"pipe"`` (default:
            captured into ``Result.stdout``), ``"inherit"``/``None`` (your
            own stdout: watch ``make`` live), ``"devnull"``/``DEVNULL``, an
            fd, or a file object with ``fileno()`` (written at its fd's
            offset, not through its Python buffer, as ``subprocess``
            does).  Anything but a pipe makes ``Result.stdout`` ``None``
            (and ``max_output_size`` moot).  Must be ``"pipe"`` with
            ``pty=True``.
        text: if true, ``Result.stdout``/``.stderr`` are ``str`` decoded
            with ``encoding``/``errors``, newlines translated as
            ``subprocess``'s universal newlines; otherwise ``bytes``.
        encoding: codec for ``str`` input and text output (default UTF-8);
            giving it implies ``text=True``.  An unknown codec raises
            ``LookupError`` before anything starts.
        errors: codec error handler (default ``"strict"``); giving it
            implies ``text=True``.
        cwd: the child's working directory (``str``, ``bytes`` or
            ``os.PathLike``; a relative one is resolved from yours).
            ``None`` (default): your current directory, taken as an fd at
            the call, so a rename of its path does not move the child.
        env: the child's complete environment, a mapping of ``str``/
            ``bytes`` names to values; it replaces yours, as in
            ``subprocess`` (merge ``os.environ`` yourself to extend it).
            ``None`` (default): a copy of your environment at the call.
        pty: if true, the child gets a pseudo-terminal (``rows`` x
            ``cols``) as stdin,
            stdout and stderr and as its controlling terminal: output has
            ``\\r\\n`` line ends and includes the echo of ``input``, and
            ``Result.stderr`` is ``None``.  Without ``input`` the
            terminal's EOF character is sent at once.
        kill_timeout: seconds (>= 0, default 5.0) between SIGTERM and
            SIGKILL whenever netrunner stops the child (timeout, output
            limit, an exception, your process dying).
        rows, cols: the terminal's size with ``pty=True`` (1 to 65535;
            default 24 x 80).
        echo: with ``pty=True``, whether the terminal echoes what the
            child is sent (default ``True``, as a terminal does).
            ``False`` turns echo off before the child starts (pexpect's
            ``echo=False``), so output holds only what the child writes;
            without ``pty`` it is a ``ValueError``.
        cgroup: ``None`` (default) or ``False``: no cgroup; ``True``: a
            fresh leaf ``netrunner/<pid>-<random hex>``; or a relative path
            such as ``"jobs/build-42"`` (no ``..``, not absolute, must not
            exist yet) under the cgroup v2 mount found in
            ``/proc/self/mountinfo``.  The child is in the leaf before it
            execs, so all it forks is too; at the end everything in it is
            killed and the leaf removed.
        limits: a mapping of cgroup controller files to ``str``/``int``
            values written into the leaf before the child starts, e.g.
            ``{"memory.max": "100M", "pids.max": 64}``.  Only controller
            files are accepted (``memory.*``, ``pids.*``, ``cpu.*``,
            ``io.*``, ``cpuset.*``, ``hugetlb.*``; never ``cgroup.*``).
            Requires ``cgroup``.
        rlimits: a mapping of resource to ``(soft, hard)`` ints, applied in
            the child before exec (no ``preexec_fn`` needed).  Keys are
            names (``"RLIMIT_NOFILE"`` or ``"nofile"``) or ``resource``
            constants; ``-1``/``resource.RLIM_INFINITY`` is unlimited.
        user: the child's user, a name or a uid, as ``subprocess``:
            alone it changes only the uid (pass ``group`` and
            ``extra_groups`` too).  ``None`` (default): yours.
        group: the child's group, a name or a gid; ``None``: yours.
        extra_groups: the child's supplementary groups, an iterable of
            names or gids (``[]`` drops them all); ``None``: yours.
        umask: the child's umask, 0..0o777; ``None`` (default): yours at
            the call.
        no_new_privs: if true, sets ``PR_SET_NO_NEW_PRIVS``: setuid
            binaries and file capabilities no longer raise the child's
            privileges.
        nice: added to the child's niceness as ``nice(1)`` does (-40 to
            40; the kernel keeps the result within -20..19), before the
            child changes user.  Lowering it (negative) needs
            ``CAP_SYS_NICE``, else ``PermissionError``.  ``None``
            (default): the child's niceness is yours.
        pass_fds: fds (ints >= 3) the child gets open under the same
            numbers, as ``subprocess``'s ``pass_fds``; every other fd above
            2 is closed in the child as always.  Each must be open (else
            ``OSError(EBADF)`` before anything starts), none given twice,
            at most 249.
        shell: if true (an explicit opt-in), ``args`` is a command line
            (``str`` or ``bytes``) run by ``/bin/sh -c``, as ``subprocess``
            does; a sequence gives the command line first and the shell's
            ``$0``, ``$1``... after it.  Quote what you interpolate
            (``shlex.quote``).  Without it a single string is a
            ``TypeError``.
        start_new_session: if true, the child calls ``setsid()``: a
            session of its own with no controlling terminal (a terminal's
            ^C no longer reaches it).  It still leads its own process
            group, so netrunner stops it and its descendants as always.
            With ``pty=True`` the child has a session of its own anyway.
        process_group: ``None`` (default) or ``0``: the child leads its own
            process group, as it always does.  Any other value is a
            ``ValueError``: netrunner kills the child's own group when it
            stops it, and joining another group would put other processes
            in that kill radius and let the child's descendants escape it.

    Returns:
        A :class:`Result` (a ``subprocess.CompletedProcess``): ``args``,
        ``returncode`` (exit code, or ``-N`` when killed by signal N),
        ``stdout``, ``stderr``, plus ``pid`` and ``stats`` (:class:`Stats`).

    Raises:
        ValueError, TypeError: a bad argument or option (empty ``args``, a
            NUL byte, ``timeout <= 0``, an unknown stderr mode, a negative
            size, a bad cgroup path or limit), before anything starts.
        KeyError: an unknown user or group name, before anything starts.
        LookupError: an unknown ``encoding`` or ``errors``.
        FileNotFoundError, PermissionError, NotADirectoryError: the
            executable or ``cwd`` cannot be used (``errno`` and
            ``filename`` set); ``PermissionError`` also when the
            credentials may not be taken.
        TimeoutExpired: ``timeout`` passed; the child was stopped.
        OutputLimitExceeded: stdout grew past ``max_output_size``.
        CalledProcessError: ``check=True`` and a non-zero returncode.
        CgroupError: the cgroup could not be set up (an ``OSError``).
        ShepherdError: the shepherd was lost; the child has been killed.
        OSError: out of fds (``EMFILE``) or processes (``BlockingIOError``),
            as ``subprocess`` raises them.
    """
    return drive_flow(running(args, plan(args, locals())))
