"""``stream()``: stdout as chunks, pulled by the consumer (backpressure).

The job is :class:`~netrunner._run.RunCore` with collection turned off:
input feeding, stderr draining, timeouts and the exit report work exactly
as in ``run()``; stdout is read only when the consumer asks for the next
chunk, so what it has not asked for stays in the OS pipe and a producer of
any size runs in bounded memory.  :class:`StreamJob` holds that logic once;
:class:`Stream` (here) and ``netrunner.aio``'s async stream only drive it.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._core import ChildCore, eof_on_eio
from ._drive import Pending, drive
from ._errors import CalledProcessError, ShepherdError, TimeoutExpired
from ._run import RunCore, _Input, prepare
from ._stats import Stats
from ._sync import start


class StreamJob(RunCore):
    """A ``RunCore`` whose stdout is pulled chunk by chunk."""

    collect = False

    def __init__(
        self, core: ChildCore, source: _Input | None, *, timeout: float | None, chunk_size: int, grace: float
    ) -> None:
        super().__init__(core, source, timeout=timeout, max_output_size=None)
        # The caller's kill_timeout, for a timeout or a graceful stop; the
        # shepherd's own (owner loss) is 0, see prepare_stream().
        core.kill_timeout = grace
        self.chunk_size = chunk_size
        self.ended = False  # the end was reached and the result recorded

    def next_chunk(self) -> bytes | None:
        """The fast path: one read.  Bytes, ``b""`` at the end of stdout
        (or once the timeout fired), None if the pipe is empty right now."""
        if self.timeout_at is not None and time.monotonic() >= self.timeout_at:
            self._check_time()
        core = self.core
        if self.timed_out:
            core.stdout.close()
            core.out_eof = True
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
                core.stdout.close()
                core.out_eof = True
                return b""
            return None
        except OSError as exc:
            data = eof_on_eio(exc)  # a terminal's end of output
        if data:
            core.bytes_out += len(data)
            core.read_count += 1
            return data
        core.stdout.close()
        core.out_eof = True
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

    def settled(self) -> tuple[int | None, bytes, Stats]:
        """After the end: returncode, captured stderr, stats, without
        raising (a stream records them even when :meth:`outcome` raises)."""
        core = self.core
        return core.returncode, core.err_buf.value(), core.stats()

    def outcome(self, check: bool) -> tuple[int, bytes, Stats]:
        """After the end: returncode, captured stderr, stats; raises like
        ``run()`` (TimeoutExpired, CalledProcessError, ShepherdError)."""
        core = self.core
        # The child is reaped: let go of the shepherd socket too, so an
        # exhausted stream that is kept around holds no fd.
        core.abandon()
        stderr = core.err_buf.value()
        if core.exited is None and not core.child_dead:
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        if self.timed_out:
            assert self.timeout is not None
            raise TimeoutExpired(core.args, self.timeout, None, stderr)
        if core.exited is None:
            raise ShepherdError(f"pid {core.pid}: {core.lost}")
        rc = core.returncode
        assert rc is not None
        if check and rc != 0:
            stats = core.stats()
            raise CalledProcessError(
                rc, core.args, None, stderr, tail=bytes(core.err_tail), oom_killed=stats.oom_killed
            )
        return rc, stderr, core.stats()


class LineSplitter:
    """Complete lines (newline kept) from chunks however they were cut; no
    length limit (unlike asyncio's 64 KiB ``LimitOverrunError``).  A long
    line is kept as a list of parts and joined once.

    Why no loop per line: a Python-level ``find`` per line capped
    ``lines()`` at ~30 MB/s of short lines, a third of ``Popen`` stdout
    iteration (issue 13).  A whole chunk is split by one C call instead:
    ``splitlines(keepends=True)`` when the chunk has no ``\\r`` (for bytes it
    breaks only at ``\\n``, ``\\r\\n`` and ``\\r``, so without a ``\\r``
    it is exactly a split at ``\\n``), else ``split(b"\\n")`` with the
    newlines put back by ``map`` (lines end at ``\\n`` only)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            lines = chunk.split(b"\n")
            tail = lines.pop()
            lines = list(map(operator.add, lines, _NEWLINES))
        else:
            lines = chunk.splitlines(keepends=True)
            tail = lines.pop() if lines and not chunk.endswith(b"\n") else b""
        if lines and self.parts:
            self.parts.append(lines[0])
            lines[0] = b"".join(self.parts)
            self.parts.clear()
        if tail:
            self.parts.append(tail)
        return lines

    def finish(self) -> bytes | None:
        """The final line if it had no newline."""
        if not self.parts:
            return None
        last = b"".join(self.parts)
        self.parts.clear()
        return last


_NEWLINES = itertools.repeat(b"\n")


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines from an iterable of chunks (a final unterminated one too).

    Lines are handed out by ``chain`` over one list per chunk, so going
    from one line to the next runs no Python code (a generator resumed
    per line cost as much as splitting).  Dropping the iterator drops the
    chunk generator with it, as a generator here would."""
    return itertools.chain.from_iterable(_line_lists(chunks))


def _line_lists(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The lines of each chunk as one list, then the unterminated last."""
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


class Stream:
    """Iterate stdout chunks of a running child, with backpressure.

    Leaving early (``break``, an exception, :meth:`close`, garbage
    collection) SIGKILLs the child's group at once and reaps it.  After
    exhaustion ``returncode``, ``stderr`` and ``stats`` are set.

    No ``__del__`` (an interrupt landing in a Python finalizer is lost):
    collection drops the core, whose fds and socket close in C, and the
    shepherd, told to take no grace on owner loss, SIGKILLs at once."""

    def __init__(self, job: StreamJob, check: bool) -> None:
        self._job = job
        self._check = check
        self.returncode: int | None = None
        self.stderr: bytes | None = None
        self.stats: Stats | None = None
        self.pid = job.core.pid
        self.args = job.core.args

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks()

    def lines(self) -> Iterator[bytes]:
        """Complete lines, newline kept (see :func:`split_lines`)."""
        return split_lines(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        job = self._job
        if job.ended:
            return
        next_chunk: Callable[[], bytes | None] = job.next_chunk
        try:
            while True:
                data = next_chunk()
                if data is None:
                    data = drive(job.chunk_attempt)
                if not data:
                    break
                yield data
            drive(job.attempt)
            job.ended = True
        finally:
            if not job.ended:
                self._stop_now()
        self.returncode, self.stderr, self.stats = job.settled()
        job.outcome(self._check)

    def _stop_now(self) -> None:
        job = self._job
        job.ended = True
        try:
            if not job.core.done:
                job.kill_now()
                drive(job.reap_attempt)
        finally:
            job.core.abandon()
            self.stats = job.core.stats()
            self.returncode = job.core.returncode

    def close(self) -> None:
        """Stop the child now (SIGKILL to its group) if it still runs."""
        if not self._job.ended:
            self._stop_now()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(
    args: Any,
    *,
    input: Any = None,
    stderr: Any = "pipe",
    timeout: float | None = None,
    check: bool = False,
    cwd: Any = None,
    env: Any = None,
    pty: bool = False,
    kill_timeout: float = 5.0,
    cgroup: Any = None,
    limits: Any = None,
    rlimits: Any = None,
    chunk_size: int = 65536,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int | None = None,
    no_new_privs: bool = False,
) -> Stream:
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
        cwd: as for ``run``.
        env: as for ``run``: the complete environment, replacing yours.
        pty: as for ``run``: chunks are the terminal's output (24x80).
        kill_timeout: seconds (>= 0, default 5.0) between SIGTERM and
            SIGKILL on ``timeout``; leaving early kills at once.
        cgroup: as for ``run``: ``True`` or a relative path under the
            cgroup2 mount.
        limits: as for ``run`` (controller files only; requires ``cgroup``).
        rlimits: as for ``run``.
        chunk_size: the largest chunk to yield, in bytes (int > 0, default
            65536); a chunk is whatever one read returns, so it may be
            shorter.
        user, group, extra_groups, umask, no_new_privs: as for ``run``
            (and ``subprocess``).

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
    rq, seconds, size, grace, source = prepare_stream(
        args, input=input, stderr=stderr, timeout=timeout, cwd=cwd, env=env, pty=pty,
        kill_timeout=kill_timeout, cgroup=cgroup, limits=limits, rlimits=rlimits, chunk_size=chunk_size,
        user=user, group=group, extra_groups=extra_groups, umask=umask, no_new_privs=no_new_privs,
    )  # fmt: skip
    return start(
        args,
        rq,
        lambda core: Stream(StreamJob(core, source, timeout=seconds, chunk_size=size, grace=grace), check),
        timeout=seconds,
    )


def prepare_stream(
    args: Any, *, chunk_size: Any, **options: Any
) -> tuple[Any, float | None, int, float, _Input | None]:
    """Validate ``stream()``'s options (shared with ``aio.stream``).

    Returns the request, the timeout, the chunk size, the caller's
    ``kill_timeout`` and the input source.  The request asks the shepherd for no grace on owner
    loss: a stream that is dropped unfinished (collected, its owner dead)
    has its group SIGKILLed at once, as leaving one early does, with no
    Python code run at collection.  A timeout or a graceful stop still
    sends the caller's ``kill_timeout`` with its STOP."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, not {chunk_size}")
    rq, seconds, _limit, _complete, source = prepare(args, max_output_size=None, **options)
    return dataclasses.replace(rq, kill_timeout=0.0), seconds, chunk_size, rq.kill_timeout, source
