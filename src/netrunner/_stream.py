"""``stream()``: stdout as chunks, pulled by the consumer (backpressure).

The job is :class:`~netrunner._run.RunCore` with collection turned off:
input feeding, stderr draining, timeouts and the exit report work exactly
as in ``run()``; stdout is read only when the consumer asks for the next
chunk, so what it has not asked for stays in the OS pipe and a producer of
any size runs in bounded memory.  :class:`StreamJob` holds that logic once;
:class:`Stream` (here) and ``netrunner.aio``'s async stream only drive it.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import itertools
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._core import ChildCore, eof_on_eio
from ._drive import CHECKPOINT, FAIR_READS, Flow, Pending, drive_flow, until
from ._errors import CalledProcessError, ShepherdError, TimeoutExpired
from ._keywords import StreamKeywords
from ._options import Args, Cgroup, Env, Input, Limits, Rlimits, StderrSpec, StdoutSpec, StrOrBytesPath
from ._run import RunCore, RunPlan, _decode, _Input, plan
from ._start import started
from ._stats import Stats

if TYPE_CHECKING:  # (typing.Unpack is 3.11+; annotations are never evaluated)
    from typing_extensions import Unpack


class StreamJob(RunCore):
    """A ``RunCore`` whose stdout is pulled chunk by chunk."""

    collect = False

    def __init__(
        self,
        core: ChildCore,
        source: _Input | None,
        *,
        timeout: float | None,
        chunk_size: int,
        grace: float,
        decode: tuple[bool, str | None, str | None] = (False, None, None),
    ) -> None:
        super().__init__(core, source, timeout=timeout, max_output_size=None)
        # text=True: chunks are decoded as they come, by an incremental
        # decoder (a character cut between two reads is held back until its
        # end arrives) under universal newlines, as run(text=True) decodes
        # (a "\r" at a chunk's end waits to see whether "\n" follows).
        text, encoding, errors = decode
        self.encoding = (encoding or "utf-8", errors or "strict") if text else None
        self.decoder: io.IncrementalNewlineDecoder | None = None
        if self.encoding is not None:
            inner = codecs.getincrementaldecoder(self.encoding[0])(self.encoding[1])
            self.decoder = io.IncrementalNewlineDecoder(inner, translate=True)
        # The caller's kill_timeout, for a timeout or a graceful stop; the
        # shepherd's own (owner loss) is 0, see prepare_stream().
        core.set_grace(grace)
        self.chunk_size = chunk_size
        self.ended = False  # the end was reached and the result recorded
        self.reads = 0

    def next_chunk(self) -> bytes | None:
        """The fast path: one read.  Bytes, ``b""`` at the end of stdout
        (or once the timeout fired), None if the pipe is empty right now."""
        if self.timeout_at is not None and time.monotonic() >= self.timeout_at:
            self._check_time()
        core = self.core
        if self.timed_out:
            core.end_stdout()
            return b""
        fd = core.stdout.fd
        if fd < 0:
            return b""
        try:
            data = os.read(fd, self.chunk_size)
        except (BlockingIOError, InterruptedError):
            if self.eof_by is not None and time.monotonic() >= self.eof_by:
                # Reaped, and whatever still holds the pipe (a process that
                # escaped the tree) had its grace: this is the end of output.
                core.end_stdout()
                return b""
            return None
        except OSError as exc:
            data = eof_on_eio(exc)  # a terminal's end of output
        if data:
            core.counted_stdout(len(data))
            return data
        core.end_stdout()
        return b""

    def chunk_attempt(self, ready: list[int] | None) -> bytes | Pending:
        """Attempt: the next chunk (``b""`` at the end), waiting on stdout
        while feeding stdin, draining stderr and following the shepherd."""
        self.step(ready)
        data = self.next_chunk()
        if data is not None:
            return data
        fds, deadline = self.wants()
        return Pending(fds, deadline)

    def kill_now(self) -> None:
        """Leaving early: SIGKILL the group at once (no kill_timeout wait)."""
        self.stopping = True  # the reap waits for the exit report, not on unread stdout
        self.input = None
        self.core.end_input()
        self.timeout_at = None
        self._stop(0.0)

    def chunk(self) -> Flow[Any]:
        """The next chunk as a flow, ``b""`` once stdout ended and the child
        is reaped (``ended`` is then set; :meth:`outcome` says how it went).
        With text, ``str`` chunks and ``""`` at the end; a read that ends
        inside a character reads on rather than yield an empty chunk.

        Whatever interrupts it (KeyboardInterrupt, a cancellation) stops the
        child gracefully (SIGTERM, ``kill_timeout``, SIGKILL) and waits
        until it is reaped before it goes on, as ``run()`` does; leaving
        early between chunks (``break``, ``close``) is :meth:`halted` with
        no grace.  Every FAIR_READS-th chunk yields a CHECKPOINT first (see
        there)."""
        try:
            self.reads += 1
            if self.reads % FAIR_READS == 0:
                yield CHECKPOINT
            decoder = self.decoder
            while True:
                data = self.next_chunk()
                if data is None:
                    data = yield from until(self.chunk_attempt)
                if decoder is None:
                    if data:
                        return data
                    break
                text: str = decoder.decode(data, final=not data)
                if text:
                    return text
                if not data:
                    break
            yield from until(self.attempt)
            self.ended = True
            return b"" if decoder is None else ""
        except GeneratorExit:  # closed unfinished: owner loss, no waiting now
            self.ended = True
            self.core.abandon()
            raise
        except BaseException:
            yield from self.halted(graceful=True)
            raise

    def halted(self, *, graceful: bool) -> Flow[None]:
        """Stop the child if it still runs (SIGTERM and ``kill_timeout``, or
        SIGKILL at once) and wait until it is reaped; let go of every fd."""
        if self.ended:
            return
        self.ended = True
        try:
            if not self.core.done:
                if graceful:
                    self.abort()
                else:
                    self.kill_now()
                yield from until(self.reap_attempt)
        finally:
            self.core.abandon()

    def stderr_value(self) -> Any:
        """Captured stderr: ``bytes``, or with text ``str`` decoded as
        ``run(text=True)`` decodes it."""
        data = self.core.err_buf.value()
        return data if self.encoding is None else _decode(data, *self.encoding)

    def settled(self) -> tuple[int | None, Any, Stats]:
        """After the end: returncode, captured stderr, stats, without
        raising (a stream records them even when :meth:`outcome` raises)."""
        core = self.core
        return core.returncode, self.stderr_value(), core.stats()

    def outcome(self, check: bool) -> tuple[int, Any, Stats]:
        """After the end: returncode, captured stderr, stats; raises like
        ``run()`` (TimeoutExpired, CalledProcessError, ShepherdError)."""
        core = self.core
        # The child is reaped: let go of the shepherd socket too, so an
        # exhausted stream that is kept around holds no fd.
        core.abandon()
        stderr = core.err_buf.value()  # bytes in TimeoutExpired, as run() keeps partial output
        if core.exited is None and not core.child_dead:
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        if self.timed_out:
            assert self.timeout is not None
            raise TimeoutExpired(core.args, self.timeout, None, stderr)
        if core.exited is None:
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        rc = core.returncode
        assert rc is not None
        stderr = self.stderr_value()
        if check and rc != 0:
            stats = core.stats()
            raise CalledProcessError(
                rc, core.args, None, stderr, tail=bytes(core.err_tail), oom_killed=stats.oom_killed
            )
        return rc, stderr, core.stats()


class LineSplitter:
    """Complete lines (newline kept) from chunks however they were cut; no
    length limit (unlike asyncio's 64 KiB ``LimitOverrunError``).  A long
    line is kept as a list of parts and joined once.  Chunks are ``bytes``,
    or ``str`` from a text stream (its newlines already translated); lines
    end at ``\n`` only (not at ``\r`` or ``str.splitlines``' other breaks).

    Why this shape (issue 13): a Python-level ``find`` per line capped
    ``lines()`` at ~30 MB/s of short lines, a third of ``Popen`` stdout
    iteration.  Then one ``splitlines`` per chunk made all of a chunk's
    line objects at once (7,700 for a 64 KiB chunk of ``seq``), which a
    consumer then walks through and frees cold.  Now :meth:`feed` finds the
    chunk's last newline (one C ``rfind``) and returns a ``BytesIO`` (or
    ``StringIO``) over the complete lines: iterating it makes each line in C
    when it is asked for, and a consumer that drops it frees it at once, so
    the next line reuses the same, cache-hot memory (37.6 -> 34.1 ns a line
    in memory; 539 -> 450 ms of CPU for ``seq 1 12500000`` end to end).
    Both split at ``\n`` only, and a ``BytesIO`` over a whole ``bytes``
    chunk shares it rather than copying; a chunk that does not end at a
    newline costs one copy of its complete part."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def feed(self, chunk: Any) -> Iterator[Any]:
        """An iterator over the lines that ``chunk`` completes (each once)."""
        is_bytes = isinstance(chunk, bytes)
        newline = b"\n" if is_bytes else "\n"
        cut = chunk.rfind(newline) + 1
        parts = self.parts
        if not cut:  # no line ends here: all of it belongs to a later line
            if chunk:
                parts.append(chunk)
            return iter(())
        reader = io.BytesIO if is_bytes else io.StringIO
        if len(parts) > 1:
            # A line carried over several chunks (maybe a long one) is
            # joined on its own: in one buffer with the chunk's other lines
            # it would be copied again out of it (and a StringIO keeps 4
            # bytes a character), peaking at 3-6x its size instead of 2x.
            start = chunk.find(newline) + 1
            parts.append(chunk[:start])
            first = chunk[:0].join(parts)
            parts.clear()
            if cut < len(chunk):
                parts.append(chunk[cut:])
            return itertools.chain((first,), reader(chunk[start:cut]))
        if parts or cut < len(chunk):
            # One copy: the carried tail and the complete part together (a
            # memoryview slice of bytes is joined without a copy of its own).
            head = memoryview(chunk)[:cut] if is_bytes else chunk[:cut]
            whole = chunk[:0].join([*parts, head])
            parts.clear()
            if cut < len(chunk):
                parts.append(chunk[cut:])
        else:
            whole = chunk
        return reader(whole)

    def finish(self) -> Any:
        """The final line if it had no newline (None if there is none)."""
        if not self.parts:
            return None
        last = self.parts[0][:0].join(self.parts)
        self.parts.clear()
        return last


def split_lines(chunks: Iterable[Any]) -> Iterator[Any]:
    """Lines from an iterable of chunks (a final unterminated one too).

    Lines are handed out by ``chain`` over one iterator per chunk, so going
    from one line to the next runs no Python code (a generator resumed per
    line cost as much as splitting).  Dropping the iterator drops the chunk
    generator with it, as a generator here would."""
    return itertools.chain.from_iterable(_chunk_lines(chunks))


def _chunk_lines(chunks: Iterable[Any]) -> Iterator[Iterable[Any]]:
    """The lines of each chunk as one iterator, then the unterminated last."""
    splitter = LineSplitter()
    try:
        for chunk in chunks:
            yield splitter.feed(chunk)
    except CalledProcessError:
        # check=True: the output is complete, so its last line comes first.
        last = splitter.finish()
        if last is not None:
            yield [last]
        raise
    last = splitter.finish()
    if last is not None:
        yield [last]


T = TypeVar("T")


class Stream(Generic[T]):
    """Iterate stdout chunks of a running child, with backpressure.

    Leaving early (``break``, an exception, :meth:`close`, garbage
    collection) SIGKILLs the child's group at once and reaps it.  After
    exhaustion ``returncode``, ``stderr`` and ``stats`` are set.
    Generic in its chunk type: ``Stream[bytes]``, or ``Stream[str]`` in
    text mode (``stream``'s overloads say which).

    No ``__del__`` (an interrupt landing in a Python finalizer is lost):
    collection drops the core, whose fds and socket close in C, and the
    shepherd, told to take no grace on owner loss, SIGKILLs at once."""

    def __init__(self, job: StreamJob, check: bool) -> None:
        self._job = job
        self._check = check
        self.returncode: int | None = None
        self.stderr: T | None = None  # bytes, or str with text=True
        self.stats: Stats | None = None
        self.pid = job.core.pid
        self.args = job.core.args

    def __iter__(self) -> Iterator[T]:
        return self._chunks()

    def lines(self) -> Iterator[T]:
        """Complete lines, newline kept (see :func:`split_lines`)."""
        return split_lines(self._chunks())

    def _chunks(self) -> Iterator[T]:
        job = self._job
        try:
            while not job.ended:
                data = drive_flow(job.chunk())
                if not data:
                    break
                yield data
        finally:
            if not job.ended:  # left early: no grace
                drive_flow(job.halted(graceful=False))
            self.returncode, self.stderr, self.stats = job.settled()
        job.outcome(self._check)

    def close(self) -> None:
        """Stop the child now (SIGKILL to its group) if it still runs."""
        job = self._job
        if not job.ended:
            drive_flow(job.halted(graceful=False))
            self.returncode, self.stderr, self.stats = job.settled()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# overloads of stream: generated by tools/gen_frontends.py from the option schema
@overload
def stream(
    args: Args,
    *,
    text: Literal[False] = False,
    encoding: None = None,
    errors: None = None,
    **options: Unpack[StreamKeywords],
) -> Stream[bytes]: ...
@overload
def stream(
    args: Args,
    *,
    text: Literal[True],
    encoding: str | None = None,
    errors: str | None = None,
    **options: Unpack[StreamKeywords],
) -> Stream[str]: ...
@overload
def stream(
    args: Args,
    *,
    text: bool = False,
    encoding: str,
    errors: str | None = None,
    **options: Unpack[StreamKeywords],
) -> Stream[str]: ...
@overload
def stream(
    args: Args,
    *,
    text: bool = False,
    encoding: str | None = None,
    errors: str,
    **options: Unpack[StreamKeywords],
) -> Stream[str]: ...
@overload
def stream(
    args: Args,
    *,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    **options: Unpack[StreamKeywords],
) -> Stream[bytes] | Stream[str]: ...


# end of generated overloads


def stream(
    args: Args,
    *,
    input: Input = None,
    stderr: StderrSpec = "pipe",
    timeout: float | None = None,
    check: bool = False,
    chunk_size: int = 65536,
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
) -> Stream[bytes] | Stream[str]:
    """Start ``args`` and return a :class:`Stream` of its stdout chunks.

    Iterating yields ``bytes`` chunks as the child writes them;
    :meth:`Stream.lines` yields complete lines (newline kept).  Stdout is
    read only when you ask for the next chunk, so what you have not asked
    for stays in the OS pipe (backpressure): a producer of any size runs
    in bounded memory.  Leaving early (``break``, an exception,
    ``close()``, the ``with`` block, garbage collection) SIGKILLs the
    child's group at once, with no ``kill_timeout`` wait, and reaps it.
    After the last chunk ``returncode``, ``stderr`` (captured bytes) and
    ``stats`` are set on the Stream.  Options mean what they mean for
    :func:`netrunner.run`, with these differences:

    Args:
        args: the command, as for ``run``.
        input: as for ``run`` (fed concurrently with the iteration); a
            file object on a pipe, socket or terminal is waited on, others
            must not block.
        stderr: ``"pipe"`` (default: captured into ``Stream.stderr``,
            keeping its last 64 MiB, the rest counted in
            ``stats.stderr_dropped``), ``"stdout"``, ``"devnull"``,
            ``"inherit"``, or the ``subprocess`` aliases ``PIPE``,
            ``STDOUT``, ``DEVNULL``, ``None``.
        timeout: seconds (> 0) bounding the whole stream's wall time, the
            start included (``None``: no limit).  On expiry the child is
            stopped (SIGTERM, ``kill_timeout``, SIGKILL) and the iteration
            (or this call, if the start hangs) raises ``TimeoutExpired``.
        check: if true, a non-zero exit raises ``CalledProcessError`` at
            the end of the iteration, after the last chunk.
        stdout: only ``"pipe"`` (the default; what the stream yields):
            anything else is a ``ValueError``.
        cwd: as for ``run``.
        env: as for ``run``: the complete environment, replacing yours.
        pty: as for ``run``: chunks are the terminal's output.
        rows, cols: the terminal's size with ``pty=True``, as for ``run``.
        kill_timeout: seconds (>= 0, default 5.0) between SIGTERM and
            SIGKILL on ``timeout``; leaving early kills at once.
        cgroup: as for ``run``: ``True`` or a relative path under the
            cgroup2 mount.
        limits: as for ``run`` (controller files only; requires ``cgroup``).
        rlimits: as for ``run``.
        chunk_size: the largest chunk to yield, in bytes (int > 0, default
            65536); a chunk is whatever one read returns, so it may be
            shorter.
        text: if true, chunks (and ``lines()``, and ``Stream.stderr``) are
            ``str``, decoded as they arrive with ``encoding``/``errors`` by
            an incremental decoder: a character cut between two reads comes
            whole in the later chunk.  Newlines are translated as
            ``run(text=True)`` does (``\\r\\n`` and ``\\r`` become ``\\n``, even
            across reads).  An undecodable byte under ``errors="strict"``
            raises ``UnicodeDecodeError`` from the iteration, after the
            child is stopped.
        encoding: as for ``run``: the codec (default UTF-8) of text chunks
            and of ``str`` input; giving it implies ``text=True``.
        errors: as for ``run``; giving it implies ``text=True``.
        echo, user, group, extra_groups, umask, no_new_privs, nice, pass_fds,
            start_new_session, process_group, shell: as for ``run`` (and
            ``subprocess``).

    Returns:
        A :class:`Stream`: iterable of ``bytes``, a context manager, with
        ``pid``, ``args`` and (after exhaustion) ``returncode``,
        ``stderr`` and ``stats``.

    Raises:
        ValueError, TypeError, KeyError, LookupError, FileNotFoundError,
        PermissionError, CgroupError: as for ``run``, from this call.
        TimeoutExpired: on ``timeout``, from the iteration.
        CalledProcessError: ``check=True`` and a non-zero exit, at its end.
        ShepherdError: the shepherd was lost; the child has been killed.
    """
    call, size, grace = stream_plan(args, locals())

    def wrap(core: ChildCore) -> Stream[Any]:
        job = StreamJob(core, call.source, timeout=call.timeout, chunk_size=size, grace=grace, decode=call.decode)
        return Stream(job, check)

    return drive_flow(started(args, call.rq, wrap, timeout=call.timeout))


def stream_plan(args: Any, call: Mapping[str, Any]) -> tuple[RunPlan, int, float]:
    """Validate ``stream()``'s keywords (shared with ``aio.stream``).

    Returns the plan, the chunk size and the caller's ``kill_timeout``.
    The plan's request asks the shepherd for no grace on owner loss: a
    stream that is dropped unfinished (collected, its owner dead) has its
    group SIGKILLed at once, as leaving one early does, with no Python code
    run at collection.  A timeout or a graceful stop still sends the
    caller's ``kill_timeout`` with its STOP."""
    chunk_size = call["chunk_size"]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, not {chunk_size}")
    if call["stdout"] not in ("pipe", subprocess.PIPE):
        # What a stream yields is stdout: there is nothing to stream otherwise.
        raise ValueError(f"stream() streams the child's stdout: stdout must be 'pipe', not {call['stdout']!r}")
    validated = plan(args, call)
    rq = validated.rq
    return dataclasses.replace(validated, rq=dataclasses.replace(rq, kill_timeout=0.0)), chunk_size, rq.kill_timeout
