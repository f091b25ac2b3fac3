"""netrunner on asyncio: ``run``, ``spawn`` -> :class:`AsyncProcess`, ``stream``.

Same semantics as the sync API, driven by the running event loop: every
fd (the pipes, the shepherd socket, the fork server's socket) is waited on
with ``add_reader``/``add_writer``, so there is no thread per process and
no blocking call on the loop; the spawn handshake is awaited too.

The logic is not written twice: ``run`` drives the same
:class:`~netrunner._run.RunCore`, streams the same
:class:`~netrunner._stream.StreamJob`, and :class:`AsyncProcess` the same
attempts as :class:`netrunner.Process`.

Cancellation: cancelling the task that awaits ``run``, ``spawn``, a
method of :class:`AsyncProcess`, a stream, or the body of ``async with``
stops the child's group (SIGTERM, ``kill_timeout``, SIGKILL) and reaps it
*before* ``CancelledError`` propagates; the cleanup is shielded and is
waited for even if the task is cancelled again meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ._bounds import STOP_MARGIN
from ._core import ChildCore, Starter
from ._drive import adrive, asettle, uncancellable
from ._errors import CalledProcessError, NetRunnerError, TimeoutExpired
from ._process import ProcessBase, _check_size, deadline_of, prepare_spawn
from ._protocol import SpawnRequest
from ._result import Result
from ._run import RunCore, _Input, prepare
from ._stats import Stats
from ._stream import LineSplitter, StreamJob, prepare_stream

__all__ = ["AsyncProcess", "AsyncStream", "run", "spawn", "stream"]

T = TypeVar("T")

# A read that finds data waiting returns without suspending, so a consumer
# slower than its producer would never let the loop run (0.6 s for 256 MiB
# from /dev/zero, forever for ``yes``).  Every FAIR_READS-th read of a
# stream or process yields to the loop once first.
FAIR_READS = 16


async def _start(
    args: Any,
    rq: SpawnRequest,
    wrap: Callable[[ChildCore], T],
    *,
    stderr_complete: bool = False,
    timeout: float | None = None,
) -> T:
    """The handshake on the loop; ``wrap`` and ``timeout`` as in
    :func:`netrunner._sync.start` (cancellation before the owner exists
    stops and reaps the child)."""
    starter = Starter(args, rq, stderr_complete=stderr_complete, timeout=timeout)
    try:
        return wrap(await adrive(starter))
    except BaseException:
        await asettle(starter.begin_abort, starter.abort_attempt, starter.release)
        raise


async def run(
    args: Any,
    *,
    input: Any = None,
    timeout: float | None = None,
    check: bool = False,
    max_output_size: int | None = None,
    stderr: Any = "pipe",
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    cwd: Any = None,
    env: Any = None,
    pty: bool = False,
    kill_timeout: float = 5.0,
    cgroup: Any = None,
    limits: Any = None,
    rlimits: Any = None,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int | None = None,
    no_new_privs: bool = False,
) -> Result:
    """:func:`netrunner.run` on the event loop (see its docstring for the
    full text of each option): no thread, no blocking call on the loop.

    Cancelling the task that awaits it stops the child's group (SIGTERM,
    ``kill_timeout``, SIGKILL) and reaps it before ``CancelledError``
    propagates, even if the task is cancelled again meanwhile.

    Args:
        input: as for ``run``: ``bytes``, ``str``, an iterable of
            ``bytes`` or a binary file object.  A file object on a pipe,
            socket or terminal is waited on by the loop; iterables (and
            other file objects) are pulled on the loop, so they must not
            block.
        args, timeout, check, max_output_size, stderr, text, encoding,
            errors, cwd, env, pty, kill_timeout, cgroup, limits, rlimits,
            user, group, extra_groups, umask, no_new_privs: as for
            :func:`netrunner.run` (``stderr``: ``"pipe"``, ``"stdout"``,
            ``"devnull"``, ``"inherit"`` or a ``subprocess`` alias;
            ``env`` replaces the environment; the call returns within
            ``timeout + kill_timeout + 0.5 s``).

    Returns:
        A :class:`netrunner.Result`, as ``run`` does.

    Raises:
        asyncio.CancelledError: the task was cancelled (the child is
            stopped and reaped first).
        Everything ``run`` raises, for the same reasons.
    """
    rq, seconds, limit, capture_stderr, source = prepare(
        args, input=input, timeout=timeout, max_output_size=max_output_size, stderr=stderr,
        cwd=cwd, env=env, pty=pty, kill_timeout=kill_timeout, cgroup=cgroup, limits=limits, rlimits=rlimits,
        user=user, group=group, extra_groups=extra_groups, umask=umask, no_new_privs=no_new_privs,
        encoding=encoding, errors=errors,
    )  # fmt: skip
    # Made inside _start()'s guard, as in the sync run(): no window in which
    # an exception leaves a running child to the garbage collector.
    job = await _start(
        args,
        rq,
        lambda core: RunCore(core, source, timeout=seconds, max_output_size=limit, capture_stderr=capture_stderr),
        stderr_complete=capture_stderr,
        timeout=seconds,
    )
    try:
        await adrive(job.attempt)
    except BaseException:
        await asettle(job.abort, job.reap_attempt, job.core.abandon)
        raise
    return job.result(text or encoding is not None or errors is not None, encoding, errors, check)


class AsyncProcess(ProcessBase):
    """:class:`netrunner.Process` for asyncio: the blocking methods are
    coroutines; cancelling one of them stops the child (see module doc)."""

    _reads = 0
    _eof_task: asyncio.Task[None] | None = None

    def close_stdin(self) -> None:
        """The child sees EOF on stdin (not a coroutine: it never waits).

        On a terminal (``pty=True``) whose input is full, the EOF
        character is queued, never dropped: a task on the running loop
        writes it as soon as the terminal has room (and every method that
        waits on this process writes it too), draining stdout meanwhile."""
        super().close_stdin()
        if self._core.eof_pending and self._eof_task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the next coroutine of this process writes it
            # (The task holds the attempt, which holds us weakly.)
            self._eof_task = loop.create_task(_write_eof(self._eof_attempt()))

    async def _fair(self, attempt: Any) -> Any:
        """``adrive(attempt)``, yielding to the loop first every
        ``FAIR_READS``-th time (see there)."""
        self._reads += 1
        if self._reads % FAIR_READS == 0:
            await asyncio.sleep(0)
        return await adrive(attempt)

    async def _guarded(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except asyncio.CancelledError:
            await uncancellable(self._stop_and_reap(None))
            raise

    async def read(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stdout; ``b""`` at EOF; TimeoutError."""
        _check_size(n)
        result: bytes = await self._guarded(self._fair(self._read_attempt(n, deadline_of(timeout), timeout)))
        return result

    async def read_stderr(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stderr (from the drained buffer first)."""
        _check_size(n)
        result: bytes = await self._guarded(self._fair(self._read_stderr_attempt(n, deadline_of(timeout), timeout)))
        return result

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin; BrokenPipeError if it closed."""
        await self._guarded(adrive(self._write_attempt(data)))

    async def wait(self, timeout: float | None = None) -> int:
        """The returncode once reaped; TimeoutExpired; ShepherdError."""
        result: int = await self._guarded(adrive(self._wait_attempt(deadline_of(timeout), timeout)))
        return result

    async def _stop_and_reap(self, grace: float | None) -> None:
        try:
            await self._stop(grace)
        except Exception:  # cleanup: the socket close below finishes the job
            pass
        finally:
            self._release()

    async def _stop(self, grace: float | None) -> int:
        seconds = self._grace(grace)
        self._send_stop(seconds)
        try:
            result: int = await adrive(self._wait_attempt(deadline_of(seconds + STOP_MARGIN), seconds + STOP_MARGIN))
        except TimeoutExpired:
            raise self._stop_failed(seconds) from None
        return result

    async def stop(self, grace: float | None = None) -> int:
        """SIGTERM, ``grace`` (default ``kill_timeout``), SIGKILL, reap."""
        stopping = asyncio.ensure_future(self._stop(grace))
        try:
            return await asyncio.shield(stopping)
        except asyncio.CancelledError:
            await uncancellable(_finish(stopping))
            raise

    async def aclose(self) -> None:
        """Stop the child if it still runs, then release every fd."""
        core = self._core
        if core.forked_away or core.done:
            self._release()
            return
        await uncancellable(self._stop_and_reap(None))

    async def __aenter__(self) -> AsyncProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _write_eof(attempt: Any) -> None:
    """A queued terminal EOF, written once there is room (see close_stdin)."""
    try:
        await adrive(attempt)
    except (OSError, NetRunnerError):
        pass  # the child or its shepherd is gone: nobody reads the EOF


async def _finish(task: asyncio.Future[Any]) -> None:
    try:
        await task
    except BaseException:  # the caller re-raises its own exception
        pass


async def spawn(
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
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int | None = None,
    no_new_privs: bool = False,
) -> AsyncProcess:
    """:func:`netrunner.spawn` on the event loop: the spawn handshake is
    awaited, never waited for (see ``spawn``'s docstring for each option).

    Cancelling the task while it awaits this, a method of the
    :class:`AsyncProcess`, or the body of its ``async with`` stops the
    child's group (SIGTERM, ``kill_timeout``, SIGKILL) and reaps it before
    ``CancelledError`` propagates.

    Args:
        args, stdin, stderr, cwd, env, pty, kill_timeout, cgroup, limits,
            rlimits, rows, cols, user, group, extra_groups, umask,
            no_new_privs: as for :func:`netrunner.spawn` (``stdin``:
            ``"pipe"``, ``"devnull"``, ``"inherit"``; ``rows``/``cols``:
            the pty's size).

    Returns:
        A running :class:`AsyncProcess`: ``Process``'s methods, the
        blocking ones as coroutines, and ``async with``.

    Raises:
        asyncio.CancelledError: the task was cancelled (the child is
            stopped and reaped first).
        Everything ``spawn`` raises, for the same reasons.
    """
    rq = prepare_spawn(
        args, stdin=stdin, stderr=stderr, cwd=cwd, env=env, pty=pty, kill_timeout=kill_timeout,
        cgroup=cgroup, limits=limits, rlimits=rlimits, rows=rows, cols=cols,
        user=user, group=group, extra_groups=extra_groups, umask=umask, no_new_privs=no_new_privs,
    )  # fmt: skip
    return await _start(args, rq, AsyncProcess)


class AsyncStream:
    """``async for chunk in aio.stream(...)``: stdout chunks with
    backpressure.  The child starts on first use.  Leaving early (``break``
    then garbage collection, an exception, :meth:`aclose`) SIGKILLs the
    group at once; cancelling the consuming task stops it gracefully
    (SIGTERM, ``kill_timeout``, SIGKILL).  After exhaustion ``returncode``,
    ``stderr`` and ``stats`` are set.  Collection runs no Python code (no
    ``__del__``, where an interrupt would be lost): the core's fds and
    socket close in C, and the shepherd SIGKILLs at once on that owner loss
    (see ``prepare_stream``)."""

    def __init__(
        self,
        args: Any,
        rq: SpawnRequest,
        source: _Input | None,
        timeout: float | None,
        chunk_size: int,
        check: bool,
        grace: float,
    ):
        self.args = args
        self._rq = rq
        self._grace = grace
        self._input = source
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._check = check
        self._job: StreamJob | None = None
        self._starting = False
        self._reads = 0
        self.returncode: int | None = None
        self.stderr: bytes | None = None
        self.stats: Stats | None = None

    @property
    def pid(self) -> int | None:
        return None if self._job is None else self._job.core.pid

    async def _job_started(self) -> StreamJob:
        if self._job is None:
            if self._starting:
                raise RuntimeError("this stream is already being started by another task")
            self._starting = True
            self._job = await _start(
                self.args,
                self._rq,
                lambda core: StreamJob(
                    core, self._input, timeout=self._timeout, chunk_size=self._chunk_size, grace=self._grace
                ),
                timeout=self._timeout,
            )
        return self._job

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> bytes:
        job = self._job
        if job is not None and job.ended:
            raise StopAsyncIteration
        try:
            job = await self._job_started()
            self._reads += 1
            if self._reads % FAIR_READS == 0:
                await asyncio.sleep(0)  # see FAIR_READS
            data = job.next_chunk()
            if data is None:
                data = await adrive(job.chunk_attempt)
            if data:
                return data
            await adrive(job.attempt)
            job.ended = True
            self.returncode, self.stderr, self.stats = job.settled()
            job.outcome(self._check)
        except asyncio.CancelledError:
            await uncancellable(self._halt(graceful=True))
            raise
        except BaseException:
            await uncancellable(self._halt(graceful=False))
            raise
        raise StopAsyncIteration

    def lines(self) -> _AsyncLines:
        """Complete lines, newline kept; no length limit."""
        return _AsyncLines(self)

    async def _halt(self, *, graceful: bool) -> None:
        job = self._job
        if job is None or job.ended:
            return
        job.ended = True
        try:
            if not job.core.done:
                if graceful:
                    job.abort()
                else:
                    job.kill_now()
                await adrive(job.reap_attempt)
        finally:
            job.core.abandon()
            self.stats = job.core.stats()
            self.returncode = job.core.returncode

    async def aclose(self) -> None:
        """Stop the child now (SIGKILL to its group) if it still runs."""
        await uncancellable(self._halt(graceful=False))

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _AsyncLines:
    """Async iterator of lines over an :class:`AsyncStream` (a class, not an
    async generator, whose finalizer would run Python code): dropping it,
    with nothing else holding the stream, stops the child at once."""

    def __init__(self, source: AsyncStream) -> None:
        self._source = source
        self._splitter = LineSplitter()
        self._ready: list[bytes] = []
        self._done = False
        self._failed: CalledProcessError | None = None

    def __aiter__(self) -> _AsyncLines:
        return self

    async def __anext__(self) -> bytes:
        while not self._ready:
            if self._failed is not None:
                failed, self._failed = self._failed, None
                self._done = True
                raise failed
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._source.__anext__()
            except StopAsyncIteration:
                self._done = True
                last = self._splitter.finish()
                if last is not None:
                    return last
                raise
            except CalledProcessError as exc:
                # check=True: the output is complete, so its last line comes first.
                last = self._splitter.finish()
                if last is None:
                    self._done = True
                    raise
                self._failed = exc
                return last
            self._ready = self._splitter.feed(chunk)
            self._ready.reverse()
        return self._ready.pop()


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
) -> AsyncStream:
    """:func:`netrunner.stream` for ``async for`` (see its docstring for
    each option).  Not a coroutine: the options are validated now (bad
    ones raise here), the child starts on the first iteration
    (``async with`` only guarantees it is stopped).

    Leaving early (``break`` then collection, an exception, ``aclose()``)
    SIGKILLs the group at once; cancelling the consuming task stops it
    gracefully (SIGTERM, ``kill_timeout``, SIGKILL) and reaps it before
    ``CancelledError`` propagates.

    Args:
        input: as for ``stream``; a file object on a pipe, socket or
            terminal is waited on by the loop, others are pulled on the
            loop and must not block.
        args, stderr, timeout, check, cwd, env, pty, kill_timeout, cgroup,
            limits, rlimits, chunk_size, user, group, extra_groups, umask,
            no_new_privs: as for :func:`netrunner.stream` (``timeout``
            bounds the whole stream; ``chunk_size``: the largest chunk).

    Returns:
        An :class:`AsyncStream`: an async iterator of ``bytes`` chunks with
        ``.lines()``, ``async with``, and ``returncode``, ``stderr`` and
        ``stats`` after exhaustion.

    Raises:
        ValueError, TypeError, KeyError, LookupError, CgroupError: bad
            options (or a cgroup parent that cannot be made), from this
            call, before anything starts.
        asyncio.CancelledError: the consuming task was cancelled.
        Everything else ``stream`` raises, from the iteration (the start's
            errors included).
    """
    rq, seconds, size, grace, source = prepare_stream(
        args, input=input, stderr=stderr, timeout=timeout, cwd=cwd, env=env, pty=pty,
        kill_timeout=kill_timeout, cgroup=cgroup, limits=limits, rlimits=rlimits, chunk_size=chunk_size,
        user=user, group=group, extra_groups=extra_groups, umask=umask, no_new_privs=no_new_privs,
    )  # fmt: skip
    return AsyncStream(args, rq, source, seconds, size, check, grace)
