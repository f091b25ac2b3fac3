"""stream() as every front end has it (``for``/``async for`` over
``netrunner.stream`` or ``aio.stream``, on asyncio and trio): chunks as
produced, lines, input fed while output is pulled, stderr drained
meanwhile, check and timeout, and leaving early (drop, ``aclose``,
``async with``, an exception) killing the group at once.  Written once
against the facade in frontends.py; what only one front end has (a sync
``break`` ending the stream by itself, a sync stream starting at the call,
the loop's fairness) stays in test_stream.py / test_aio.py."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from frontends import Front
from procs import assert_group_gone, pid_gone, read_fifo_line

import netrunner

KiB = 1 << 10
MiB = 1 << 20
# Ignores SIGTERM and never reads stdin; floods stdout (``yes`` is a second
# process in the group).
TERM_IGNORING_FLOOD = ["sh", "-c", 'trap "" TERM; yes']


def write_fifo(path: Path, data: bytes) -> None:
    """Blocking: open a FIFO for writing (waits for the reader), write, close."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ chunks
async def test_chunks_then_returncode_stderr_and_stats(front: Front) -> None:
    s = front.stream(["sh", "-c", "echo one; echo err >&2; printf 'tw\\0o\\n'; exit 3"], chunk_size=3, timeout=30)
    assert (s.returncode, s.stderr, s.stats) == (None, None, None)
    chunks = [c async for c in s]
    assert all(type(c) is bytes and 0 < len(c) <= 3 for c in chunks)
    assert b"".join(chunks) == b"one\ntw\0o\n"
    assert (s.returncode, s.stderr) == (3, b"err\n")  # a non-zero exit is no error without check
    assert s.stats is not None
    assert (s.stats.returncode, s.stats.bytes_out, s.stats.bytes_err) == (3, 9, 4)
    assert s.stats.duration >= 0 and s.stats.max_rss is not None and s.stats.max_rss > 0
    assert [c async for c in s] == [] and [line async for line in s.lines()] == []  # exhausted stays so
    # pid and args; no output at all; death by a signal.
    s = front.stream(["sh", "-c", "echo $$"])
    out = await s.collect()
    assert s.pid is not None and out == b"%d\n" % s.pid
    assert s.args == ["sh", "-c", "echo $$"]
    s = front.stream(["true"])
    assert (await s.collect(), s.returncode, s.stderr) == (b"", 0, b"")
    s = front.stream(["sh", "-c", "echo x; kill -9 $$"])
    assert (await s.collect(), s.returncode) == (b"x\n", -signal.SIGKILL)
    s = front.stream(["sh", "-c", 'pwd; echo "$FOO"'], cwd="/", env={"FOO": "bar", "PATH": os.environ["PATH"]})
    assert await s.collect() == b"/\nbar\n"


async def test_chunks_arrive_as_produced_not_at_exit(front: Front, tmp_path: Path) -> None:
    # The child blocks until we answer its first line: nothing waits for the exit.
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = 'echo one; read answer < "$1"; echo "two $answer"'
    async with front.stream(["sh", "-c", script, "sh", str(gate)], timeout=60) as s:
        assert await s.__anext__() == b"one\n"
        assert s.returncode is None
        await front.in_thread(write_fifo, gate, b"go\n")
        assert await s.__anext__() == b"two go\n"
        assert await s.collect() == b""
    assert s.returncode == 0


# ------------------------------------------------------------------- lines
async def test_lines_rejoin_what_chunks_split(front: Front, tmp_path: Path) -> None:
    expected = [b"alpha\n", b"beta\n", b"\n", b"gamma delta\r\n", b"b\rc\n", b"\0\n", b"last without newline"]
    data = b"".join(expected)
    for size in (1, 2, 3, 7, 64):
        cmd = ["printf", data.replace(b"\\", b"\\\\").replace(b"\0", b"\\000").replace(b"%", b"%%")]
        lines = [line async for line in front.stream(cmd, chunk_size=size).lines()]
        assert lines == expected, size  # split at b"\n" only, everything kept as is
    # A final newline gives no empty extra line; no output, no line.
    assert [line async for line in front.stream(["printf", r"a\nb\n"], chunk_size=1).lines()] == [b"a\n", b"b\n"]
    assert [line async for line in front.stream(["printf", r"\n"], chunk_size=1).lines()] == [b"\n"]
    assert [line async for line in front.stream(["true"]).lines()] == []
    rng = random.Random(1234)
    pieces = [b"x" * rng.choice([0, 1, 5, 100, 5000]) + b"\n" * rng.choice([0, 1, 2]) for _ in range(400)]
    path = tmp_path / "data"
    path.write_bytes(b"".join(pieces))
    for size in (13, 4096):
        lines = [line async for line in front.stream(["cat", str(path)], chunk_size=size).lines()]
        assert lines == path.read_bytes().splitlines(keepends=True), size
    # The stream's end is recorded when the lines end.
    s = front.stream(["sh", "-c", "echo a; echo err >&2; printf b; exit 4"])
    assert [line async for line in s.lines()] == [b"a\n", b"b"]
    assert (s.returncode, s.stderr) == (4, b"err\n")


async def test_lines_have_no_length_limit(front: Front) -> None:
    script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo mid; head -c 1048576 /dev/zero | tr '\\0' y"
    lines = [line async for line in front.stream(["sh", "-c", script], chunk_size=4096, timeout=60).lines()]
    assert [len(line) for line in lines] == [MiB + 1, 4, MiB]
    assert lines == [b"x" * MiB + b"\n", b"mid\n", b"y" * MiB]


async def test_line_batches_are_the_lines_a_chunk_at_a_time(front: Front, tmp_path: Path) -> None:
    """aio's ``lines().batches()``: the same lines as ``lines()``, as
    non-empty lists (one await per chunk, not per line), however the
    output is cut; the unterminated last line on its own; str with text;
    it continues where the line iterator is; the end is recorded."""
    if not front.is_async:
        pytest.skip("batches() is the async API's (a sync for over lines() needs none)")
    rng = random.Random(4321)
    pieces = [b"x" * rng.choice([0, 1, 5, 100, 70000]) + b"\r\n"[: rng.choice([0, 1, 2])] for _ in range(100)]
    path = tmp_path / "data"
    path.write_bytes(b"".join(pieces) + b"\ntail")
    expected = path.read_bytes().split(b"\n")
    expected = [line + b"\n" for line in expected[:-1]] + [expected[-1]]
    for size in (997, 4096, 65536):
        s = front.stream(["cat", str(path)], chunk_size=size, timeout=60)
        batches = [batch async for batch in s.raw.lines().batches()]
        assert all(type(batch) is list and batch for batch in batches), size
        assert [line for batch in batches for line in batch] == expected, size
        assert batches[-1] == [b"tail"], size
        assert s.returncode == 0
    s = front.stream(["sh", "-c", r"printf 'a\r\nb\303\251\nc\nlast'; echo err >&2; exit 5"], text=True)
    lines = s.raw.lines()
    assert await lines.__anext__() == "a\n"
    assert [batch async for batch in lines.batches()] == [["b\u00e9\n", "c\n"], ["last"]]
    assert [batch async for batch in lines.batches()] == []
    assert (s.returncode, s.stderr) == (5, "err\n")
    s = front.stream(["true"])
    assert [batch async for batch in s.raw.lines().batches()] == []


async def test_line_batches_check_and_drop(front: Front) -> None:
    """``batches()`` with ``check=True`` gives the last line before the
    CalledProcessError, as ``lines()`` does; dropping it (with the stream)
    kills the group at once."""
    if not front.is_async:
        pytest.skip("batches() is the async API's")
    got: list[list[bytes]] = []
    with pytest.raises(netrunner.CalledProcessError) as info:
        async for batch in front.stream(["sh", "-c", "echo a; printf b; exit 2"], check=True).raw.lines().batches():
            got.append(batch)
    assert (got, info.value.returncode) == ([[b"a\n"], [b"b"]], 2)
    s = front.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    batches = s.raw.lines().batches()
    first = await batches.__anext__()
    assert first and set(first) == {b"y\n"}
    pid = s.pid
    assert pid is not None
    started = time.monotonic()
    del s, batches
    gc.collect()
    assert await front.in_thread(pid_gone, pid, 2), "the child outlived its dropped lines().batches()"
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------- input
async def test_input_of_every_kind(front: Front, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "in"
    path.write_bytes(data)
    kinds: list[tuple[Any, bytes]] = [
        (b"some bytes\0", b"some bytes\0"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        ("héllo ✓", "héllo ✓".encode()),  # UTF-8
        ([b"a", b"", b"bc"], b"abc"),
        (iter(["x", b"y"]), b"xy"),
        (io.BytesIO(b"bio"), b"bio"),
        (b"", b""),  # EOF at once
    ]
    for value, expected in kinds:
        assert await front.stream(["cat"], input=value, timeout=60).collect() == expected, value
    with path.open("rb") as f:
        assert await front.stream(["cat"], input=f, timeout=60).collect() == data


async def test_input_is_fed_while_output_is_pulled(front: Front) -> None:
    # In and out both larger than any pipe buffer.
    data = bytes(range(256)) * (8 * MiB // 256)
    h = hashlib.sha256()
    n = 0
    async for chunk in front.stream(["cat"], input=data, chunk_size=32 * KiB, timeout=60):
        h.update(chunk)
        n += len(chunk)
    assert n == len(data) and h.digest() == hashlib.sha256(data).digest()

    def lines_of_x() -> Iterator[bytes]:
        block = (b"x" * 63 + b"\n") * (MiB // 64)
        for _ in range(64):
            yield block

    s = front.stream(["wc", "-c"], input=lines_of_x(), timeout=120)
    assert (await s.collect()).strip() == b"%d" % (64 * MiB)
    assert s.returncode == 0
    assert s.stats is not None and s.stats.bytes_in == 64 * MiB
    # A child that closes its stdin unread is no error.
    s = front.stream(["sh", "-c", "exec 0<&-; echo done"], input=b"x" * (4 * MiB), timeout=60)
    assert (await s.collect(), s.returncode) == (b"done\n", 0)


async def test_input_that_fails_midway_kills_the_group_at_once(front: Front) -> None:
    class Boom(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield b"x" * MiB
        raise Boom

    def wrong_type() -> Iterator[Any]:
        yield b"ok"
        yield 42

    for source, error in ((failing, Boom), (wrong_type, TypeError)):
        s = front.stream(["sh", "-c", 'trap "" TERM; exec cat'], input=source(), kill_timeout=5, timeout=60)
        started = 0.0
        with pytest.raises(error):
            async for _ in s:
                started = started or time.monotonic()
        # SIGKILL at once, not SIGTERM + kill_timeout (the child ignores TERM).
        assert started == 0.0 or time.monotonic() - started < 2
        assert s.pid is not None
        assert_group_gone(s.pid)


# ------------------------------------------------------------------ stderr
async def test_stderr_is_drained_while_only_stdout_is_read(front: Front) -> None:
    script = "i=0; while [ $i -lt 8 ]; do head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero; i=$((i+1)); done"
    s = front.stream(["sh", "-c", script], chunk_size=16 * KiB, timeout=60)
    n = 0
    async for chunk in s:
        n += len(chunk)
    assert (n, s.returncode) == (8 * MiB, 0)
    assert s.stats is not None and s.stats.bytes_err == 8 * MiB
    assert s.stderr is not None and 0 < len(s.stderr) <= 8 * MiB and s.stderr.count(0) == len(s.stderr)
    s = front.stream(["sh", "-c", "head -c 5000000 /dev/zero >&2; echo done"], timeout=60)
    assert await s.collect() == b"done\n"
    assert s.stats is not None and s.stats.bytes_err == 5_000_000


@pytest.mark.parametrize("mode", ["stdout", subprocess.STDOUT, "devnull", subprocess.DEVNULL])
async def test_stderr_merged_or_discarded(front: Front, mode: Any, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    capfdbinary.readouterr()
    s = front.stream(["sh", "-c", "echo out; echo err >&2; echo end"], stderr=mode)
    merged = mode in ("stdout", subprocess.STDOUT)
    assert await s.collect() == (b"out\nerr\nend\n" if merged else b"out\nend\n")
    assert s.stderr == b""
    assert b"err" not in capfdbinary.readouterr().err


# ------------------------------------------------------------- check
async def test_check_raises_after_the_last_chunk_and_the_last_line(front: Front) -> None:
    script = "i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done; echo why >&2; exit 3"
    got: list[bytes] = []
    s = front.stream(["sh", "-c", script], check=True, chunk_size=7)
    with pytest.raises(netrunner.CalledProcessError) as info:
        async for chunk in s:
            got.append(chunk)
    assert b"".join(got) == b"".join(b"line-%d\n" % i for i in range(100))
    exc = info.value
    assert isinstance(exc, subprocess.CalledProcessError)
    assert isinstance(exc, netrunner.NetRunnerError)
    assert (exc.returncode, exc.cmd, exc.stderr) == (3, ["sh", "-c", script], b"why\n")
    assert "why" in str(exc)
    # The stream records how it ended even though the iteration raised.
    assert (s.returncode, s.stderr) == (3, b"why\n")
    assert s.stats is not None and s.stats.returncode == 3
    assert s.pid is not None
    assert_group_gone(s.pid)
    lines: list[bytes] = []
    with pytest.raises(netrunner.CalledProcessError) as info:
        async for line in front.stream(["sh", "-c", "echo a; printf b; exit 2"], check=True).lines():
            lines.append(line)
    assert (lines, info.value.returncode) == ([b"a\n", b"b"], 2)
    with pytest.raises(netrunner.CalledProcessError) as info:
        await front.stream(["sh", "-c", "kill -TERM $$"], check=True).collect()
    assert info.value.returncode == -signal.SIGTERM
    s = front.stream(["echo", "ok"], check=True, timeout=30)
    assert (await s.collect(), s.returncode) == (b"ok\n", 0)


# ----------------------------------------------------------------- timeout
async def test_timeout_raised_by_iteration_with_a_term_ignoring_grandchild(front: Front) -> None:
    # Chunks delivered first, then TimeoutExpired within timeout +
    # kill_timeout + 0.5 s though a TERM-ignoring grandchild holds the
    # pipe; both announce themselves once their trap is set.
    script = 'trap "" TERM; (trap "" TERM; echo grandchild-ready; exec sleep 60) & echo start; exec sleep 60'
    cmd = ["sh", "-c", script]
    timeout, kill_timeout = 1.0, 0.5
    started = time.monotonic()
    s = front.stream(cmd, timeout=timeout, kill_timeout=kill_timeout)
    got: list[bytes] = []
    with pytest.raises(netrunner.TimeoutExpired) as info:
        async for chunk in s:
            got.append(chunk)
    elapsed = time.monotonic() - started
    assert sorted(b"".join(got).splitlines()) == [b"grandchild-ready", b"start"]
    assert timeout + kill_timeout <= elapsed < timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"
    exc = info.value
    assert isinstance(exc, subprocess.TimeoutExpired)
    assert (exc.timeout, exc.cmd) == (timeout, cmd)
    assert s.returncode == -signal.SIGKILL
    assert s.pid is not None
    assert_group_gone(s.pid)


async def test_timeout_bounds_wall_time_even_if_output_keeps_coming(front: Front) -> None:
    started = time.monotonic()
    s = front.stream(["yes"], timeout=0.5, kill_timeout=1, chunk_size=4096)
    n = 0
    with pytest.raises(netrunner.TimeoutExpired):
        async for chunk in s:
            n += len(chunk)
    assert n > 0
    assert time.monotonic() - started < 0.5 + 1 + 0.5
    assert s.pid is not None
    assert_group_gone(s.pid)


# ------------------------------------------------------- leaving early
async def test_a_dropped_stream_kills_the_group_at_once(front: Front) -> None:
    s = front.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    async for chunk in s:
        assert chunk.startswith(b"y\n")
        break
    pid = s.pid
    assert pid is not None
    started = time.monotonic()
    del s
    gc.collect()
    assert await front.in_thread(pid_gone, pid, 2), "the child outlived its dropped stream"
    assert time.monotonic() - started < 2
    # The same when only its lines() were being iterated.
    s = front.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    lines = s.lines()
    assert await lines.__anext__() == b"y\n"
    pid = s.pid
    assert pid is not None
    del s, lines
    gc.collect()
    assert await front.in_thread(pid_gone, pid, 2), "the child outlived its dropped lines()"


async def test_aclose_and_async_with_kill_the_group_at_once(front: Front) -> None:
    s = front.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    await s.__anext__()
    started = time.monotonic()
    await s.aclose()
    assert time.monotonic() - started < 2
    assert s.pid is not None
    assert_group_gone(s.pid)
    assert s.returncode == -signal.SIGKILL
    assert s.stats is not None and s.stats.returncode == -signal.SIGKILL
    await s.aclose()  # idempotent
    async with front.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s2:
        async for _ in s2:
            started = time.monotonic()
            break
    assert time.monotonic() - started < 2
    assert s2.pid is not None
    assert_group_gone(s2.pid)


async def test_a_consumer_exception_leaves_nothing(front: Front) -> None:
    class ConsumerCrashed(Exception):
        pass

    # With async with: gone when the exception leaves the block.
    with pytest.raises(ConsumerCrashed):
        async with front.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s:
            n = 0
            async for chunk in s:
                n += len(chunk)
                if n > MiB:
                    started = time.monotonic()
                    raise ConsumerCrashed
    assert time.monotonic() - started < 2
    assert s.pid is not None
    assert_group_gone(s.pid)
    # Without: gone once the stream is dropped.
    s2 = front.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    with pytest.raises(ConsumerCrashed):
        async for _ in s2.lines():
            raise ConsumerCrashed
    pid = s2.pid
    assert pid is not None
    del s2
    gc.collect()
    assert await front.in_thread(pid_gone, pid, 2)


async def test_leaving_early_kills_the_whole_group_and_a_setsid_daemon(front: Front, tmp_path: Path) -> None:
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    script = (
        'trap "" TERM; (trap "" TERM; exec sleep 60) & bg=$!; '
        'setsid sh -c \'trap "" TERM; echo $$ > "$1"; exec sleep 60\' sh "$1" & '
        "echo $bg; exec yes"
    )
    async with front.stream(["sh", "-c", script, "sh", str(fifo)], kill_timeout=5) as s:
        first = await s.__anext__()
        daemon = int(await front.in_thread(read_fifo_line, fifo, 20))
        background = int(first.split(b"\n", 1)[0])
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert s.pid is not None
    assert_group_gone(s.pid)
    assert pid_gone(background, within=0)
    assert pid_gone(daemon, within=0)


# ---------------------------------------------------------- no truncation
async def test_exit_before_the_pipe_is_drained_never_truncates(front: Front, tmp_path: Path) -> None:
    path = tmp_path / "random"
    path.write_bytes(os.urandom(5_000_000))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    for _ in range(2):  # ``head`` exits while its last output still sits in the pipe
        h = hashlib.sha256()
        s = front.stream(["head", "-c", "5000000", str(path)], chunk_size=1000, timeout=60)
        async for chunk in s:
            assert len(chunk) <= 1000
            hashlib.sha256(chunk * 4).digest()  # some work per chunk: a slow consumer
            h.update(chunk)
        assert h.hexdigest() == expected
        assert s.returncode == 0
        assert s.stats is not None and s.stats.bytes_out == 5_000_000
    # All output in the pipe and the child gone before the rest is asked for.
    small = tmp_path / "small"
    small.write_bytes(os.urandom(60_000))
    s = front.stream(["cat", str(small)], chunk_size=7)
    first = await s.__anext__()
    assert s.pid is not None and await front.in_thread(pid_gone, s.pid, 20)
    assert first + await s.collect() == small.read_bytes()
    assert s.returncode == 0
