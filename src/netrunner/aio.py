"""netrunner on an event loop: ``run``, ``spawn`` -> :class:`AsyncProcess`, ``stream``.

The same functions work when awaited from asyncio, from trio, and from
anyio on either backend (the running library is detected per call; trio
is an optional extra).  Same semantics as the sync API: every fd (the
pipes, the shepherd socket, the fork server's socket) is waited on by the
event loop, so there is no thread per process and no blocking call on the
loop; the spawn handshake is awaited too.

The logic is not written twice: every operation is the same *flow* the
sync API drives (``_run.running``, ``StreamJob.chunk``, ``Process``'s
``_reading``/``_writing``/...); this module only awaits them through
:func:`netrunner._adrive.adrive_flow`.

Cancellation: cancelling the task (or trio cancel scope) that awaits
``run``, ``spawn``, a method of :class:`AsyncProcess`, a stream, or the
body of ``async with`` stops the child's group (SIGTERM, ``kill_timeout``,
SIGKILL) and reaps it *before* the cancellation propagates; the cleanup is
shielded and is waited for even if cancelled again meanwhile.
"""

from __future__ import annotations

from typing import Any

from . import _process, _run, _stream
from ._adrive import adrive_flow, start_background
from ._core import ChildCore
from ._drive import Flow, after_checkpoint, until
from ._errors import CalledProcessError, NetRunnerError
from ._options import SpawnOptions, call_options, same_options
from ._process import ProcessBase
from ._result import Result
from ._run import RunPlan, plan, running
from ._start import started
from ._stats import Stats
from ._stream import LineSplitter, StreamJob, stream_plan

__all__ = ["AsyncProcess", "AsyncStream", "run", "spawn", "stream"]


@same_options(_run.run)
async def run(args: Any, **call: Any) -> Result:
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
        args, timeout, check, max_output_size, stderr, stdout, text, encoding,
            errors, cwd, env, pty, kill_timeout, cgroup, limits, rlimits,
            rows, cols, echo, user, group, extra_groups, umask, no_new_privs, nice, pass_fds,
            start_new_session, process_group, shell: as for
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
    return await adrive_flow(running(args, plan(args, call_options("run", call))))


class AsyncProcess(ProcessBase):
    """:class:`netrunner.Process` on an event loop: the blocking methods are
    coroutines; cancelling one of them stops the child (see module doc)."""

    _eof_writer: object | None = None  # the task writing a queued EOF

    def close_stdin(self) -> None:
        """The child sees EOF on stdin (not a coroutine: it never waits).

        On a terminal (``pty=True``) whose input is full, the EOF
        character is queued, never dropped: on asyncio a task writes it as
        soon as the terminal has room; on trio (no task may outlive its
        nursery) and outside a loop, the next method awaited on this
        process writes it (every method that waits does, draining stdout
        meanwhile)."""
        super().close_stdin()
        if self._core.eof_pending and self._eof_writer is None:
            # (The flow holds the attempt, which holds us weakly.)
            flow = until(self._eof_attempt())  # (made here: the task must not hold self)
            self._eof_writer = start_background(lambda: _write_eof(flow))

    async def _guarded(self, flow: Flow[Any]) -> Any:
        """Await ``flow``; if it is cancelled, stop and reap the child first."""
        return await adrive_flow(_stop_if_interrupted(self, flow))

    async def read(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stdout; ``b""`` at EOF; TimeoutError."""
        result: bytes = await self._guarded(self._reading(n, timeout))
        return result

    async def read_stderr(self, n: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes of stderr (from the drained buffer first)."""
        result: bytes = await self._guarded(self._reading_stderr(n, timeout))
        return result

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin; BrokenPipeError if it closed."""
        await self._guarded(self._writing(data, wakeable=False))

    async def wait(self, timeout: float | None = None) -> int:
        """The returncode once reaped; TimeoutExpired; ShepherdError."""
        result: int = await self._guarded(self._waiting(timeout))
        return result

    async def stop(self, grace: float | None = None) -> int:
        """SIGTERM, ``grace`` (default ``kill_timeout``), SIGKILL, reap.
        Cancelled meanwhile, it still finishes before the cancellation
        goes on."""
        return await adrive_flow(self._stopping(grace), shielded=True)

    async def aclose(self) -> None:
        """Stop the child if it still runs, then release every fd."""
        await adrive_flow(self._closing(), shielded=True)

    async def __aenter__(self) -> AsyncProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _stop_if_interrupted(process: ProcessBase, flow: Flow[Any]) -> Flow[Any]:
    """``flow``, except that what is thrown in while it waits (a
    cancellation) first stops and reaps the child; its own exceptions (a
    read's TimeoutError) go through as they are."""
    ready: list[int] | None = None  # a generator's first send must be None
    thrown: BaseException | None = None
    while True:
        try:
            request = flow.send(ready) if thrown is None else flow.throw(thrown)
        except StopIteration as stop:
            return stop.value
        thrown = None
        try:
            ready = yield request
        except GeneratorExit:  # closed unfinished: owner loss, no waiting now
            flow.close()
            process._release()
            raise
        except BaseException:
            flow.close()
            try:
                yield from process._stopping(None)
            except Exception:  # cleanup: the socket close below finishes the job
                pass
            finally:
                process._release()
            raise


def _done() -> Flow[None]:
    return
    yield  # (a generator: the flow that has nothing to do)


async def _write_eof(flow: Flow[None]) -> None:
    """A queued terminal EOF, written once there is room (see close_stdin)."""
    try:
        await adrive_flow(flow)
    except (OSError, NetRunnerError):
        pass  # the child or its shepherd is gone: nobody reads the EOF


@same_options(_process.spawn)
async def spawn(args: Any, **call: Any) -> AsyncProcess:
    """:func:`netrunner.spawn` on the event loop: the spawn handshake is
    awaited, never waited for (see ``spawn``'s docstring for each option).

    Cancelling the task while it awaits this, a method of the
    :class:`AsyncProcess`, or the body of its ``async with`` stops the
    child's group (SIGTERM, ``kill_timeout``, SIGKILL) and reaps it before
    ``CancelledError`` propagates.

    Args:
        args, stdin, stderr, stdout, cwd, env, pty, kill_timeout, cgroup, limits,
            rlimits, rows, cols, echo, user, group, extra_groups, umask,
            no_new_privs, nice, pass_fds, start_new_session, process_group, shell: as for
            :func:`netrunner.spawn` (``stdin``:
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
    rq = SpawnOptions.from_call(call_options("spawn", call)).request(args)
    return await adrive_flow(started(args, rq, AsyncProcess))


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

    def __init__(self, args: Any, call: RunPlan, chunk_size: int, grace: float, check: bool) -> None:
        self.args = args
        self._call = call
        self._chunk_size = chunk_size
        self._grace = grace
        self._check = check
        self._job: StreamJob | None = None
        self._starting = False
        self.returncode: int | None = None
        self.stderr: Any = None  # bytes, or str with text=True
        self.stats: Stats | None = None

    @property
    def pid(self) -> int | None:
        return None if self._job is None else self._job.core.pid

    def _wrap(self, core: ChildCore) -> StreamJob:
        call = self._call
        return StreamJob(
            core, call.source, timeout=call.timeout, chunk_size=self._chunk_size, grace=self._grace, decode=call.decode
        )

    async def _job_started(self) -> StreamJob:
        if self._job is None:
            if self._starting:
                raise RuntimeError("this stream is already being started by another task")
            self._starting = True
            call = self._call
            self._job = await adrive_flow(started(self.args, call.rq, self._wrap, timeout=call.timeout))
        return self._job

    def _settle(self, job: StreamJob) -> None:
        self.returncode, self.stderr, self.stats = job.settled()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        job = self._job
        if job is not None and job.ended:
            raise StopAsyncIteration
        job = await self._job_started()
        try:
            data = await adrive_flow(job.chunk())
        finally:
            if job.ended:
                self._settle(job)
        if data:
            return data
        job.outcome(self._check)
        raise StopAsyncIteration

    def lines(self) -> _AsyncLines:
        """Complete lines, newline kept; no length limit."""
        return _AsyncLines(self)

    async def aclose(self) -> None:
        """Stop the child now (SIGKILL to its group) if it still runs."""
        job = self._job
        if job is None or job.ended:
            await adrive_flow(after_checkpoint(_done()))  # still a checkpoint, as every await should be
            return
        try:
            await adrive_flow(job.halted(graceful=False), shielded=True)
        finally:
            self._settle(job)

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
        self._ready: list[Any] = []
        self._done = False
        self._failed: CalledProcessError | None = None

    def __aiter__(self) -> _AsyncLines:
        return self

    async def __anext__(self) -> Any:
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


@same_options(_stream.stream)
def stream(args: Any, **call: Any) -> AsyncStream:
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
        args, stderr, stdout, timeout, check, cwd, env, pty, kill_timeout, cgroup,
            limits, rlimits, chunk_size, text, encoding, errors, rows, cols, echo, user, group,
            extra_groups, umask, no_new_privs, nice, pass_fds, start_new_session, process_group, shell:
            as for :func:`netrunner.stream` (``timeout``
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
    options = call_options("stream", call)
    plan_, size, grace = stream_plan(args, options)
    return AsyncStream(args, plan_, size, grace, options["check"])
