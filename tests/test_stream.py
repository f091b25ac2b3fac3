"""stream(): stdout chunks pulled by the consumer (backpressure), lines,
input of every kind fed concurrently, stderr drained meanwhile, check and
timeout, and leaving early (break, exception, close(), ``with``, garbage
collection) killing the group at once."""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procs import assert_group_gone, pid_gone, read_fifo_line

import netrunner
from netrunner._launch import FORK_SERVER, OWNER_CWD
from netrunner._stream import LineSplitter, split_lines

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
# Ignores SIGTERM and never reads stdin; writes as fast as it can.  Its
# ``yes`` is a second process in the same group (not exec'd).
TERM_IGNORING_FLOOD = ["sh", "-c", 'trap "" TERM; yes']
# Ignores SIGTERM, prints one line, then sleeps in its group.
TERM_IGNORING_SLEEPER = ["sh", "-c", 'trap "" TERM; echo start; exec sleep 60']


# ----------------------------------------------------------------- helpers


def own_fds() -> set[int]:
    """Our open fds, not counting the fork server's (it keeps a spare)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds - FORK_SERVER.fds() - OWNER_CWD.fds()


def write_fifo(path: Path, data: bytes) -> None:
    """Write to a FIFO a child has (or will have) open for reading."""
    fd = os.open(path, os.O_WRONLY)  # blocks until the child opens it: no polling
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ chunks
def test_chunks_arrive_as_produced_not_at_exit(tmp_path: Path) -> None:
    """The first chunk is handed out while the child is still running and
    blocked until we answer it: nothing waits for the exit."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = 'echo one; read answer < "$1"; echo "two $answer"'
    with netrunner.stream(["sh", "-c", script, "sh", str(gate)], timeout=60) as s:
        it = iter(s)
        assert next(it) == b"one\n"
        assert s.returncode is None
        write_fifo(gate, b"go\n")
        assert next(it) == b"two go\n"
        assert list(it) == []
    assert s.returncode == 0


def test_chunk_size_bounds_every_chunk() -> None:
    chunks = list(netrunner.stream(["head", "-c", "100000", "/dev/zero"], chunk_size=1000))
    assert all(0 < len(c) <= 1000 for c in chunks)
    assert b"".join(chunks) == b"\0" * 100000
    assert len(chunks) >= 100


def test_chunks_are_bytes_with_nul_bytes() -> None:
    chunks = list(netrunner.stream(["printf", r"a\000b\000"]))
    assert all(type(c) is bytes for c in chunks)
    assert b"".join(chunks) == b"a\0b\0"


def test_empty_output_yields_nothing() -> None:
    s = netrunner.stream(["true"])
    assert list(s) == []
    assert s.returncode == 0
    assert s.stderr == b""


def test_exhausted_stream_iterates_empty_again() -> None:
    s = netrunner.stream(["echo", "hi"])
    assert b"".join(s) == b"hi\n"
    assert list(s) == []
    assert list(s.lines()) == []
    assert s.returncode == 0


def test_exhausted_or_closed_stream_holds_no_fd() -> None:
    """Once the end is reached (or the stream is closed) nothing is held,
    even while the Stream object itself is kept."""
    netrunner.run(["true"])  # the fork server and its spare exist already
    before = own_fds()
    kept = []
    for cmd, check in ((["echo", "hi"], False), (["sh", "-c", "echo x; exit 1"], True)):
        s = netrunner.stream(cmd, check=check)
        try:
            list(s)
        except netrunner.CalledProcessError:
            pass
        kept.append(s)
    s = netrunner.stream(TERM_IGNORING_FLOOD)
    for _ in s:
        break
    kept.append(s)
    s = netrunner.stream(TERM_IGNORING_FLOOD)
    s.close()
    kept.append(s)
    assert own_fds() - before == set()
    assert [k.returncode for k in kept] == [0, 1, -signal.SIGKILL, -signal.SIGKILL]


def test_pid_and_args() -> None:
    with netrunner.stream(["sh", "-c", "echo $$"]) as s:
        assert isinstance(s.pid, int) and s.pid > 0
        assert s.args == ["sh", "-c", "echo $$"]
        assert b"".join(s) == b"%d\n" % s.pid


def test_no_read_ahead_beyond_the_chunk_handed_out() -> None:
    """What was read equals what was delivered: the rest stays in the pipe."""
    s = netrunner.stream(["head", "-c", "3G", "/dev/zero"], chunk_size=4096)
    delivered = 0
    for i, chunk in enumerate(s):
        delivered += len(chunk)
        if i == 9:
            break
    assert s.stats is not None
    assert s.stats.bytes_out == delivered
    assert delivered <= 10 * 4096
    assert_group_gone(s.pid)


_RSS_PROBE = """
import resource, sys
import netrunner
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = 0
for chunk in netrunner.stream(["head", "-c", "3G", "/dev/zero"]):
    total += len(chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(total, (after - before) * 1024)
"""


@pytest.mark.slow
def test_three_gib_stream_in_bounded_memory() -> None:
    """3 GiB through stream() adds < 200 MiB to the consumer's peak RSS.
    Measured in a fresh interpreter, so an earlier test's peak cannot hide
    the growth (ru_maxrss is a high-water mark)."""
    src = str(Path(netrunner.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    probe = subprocess.run([sys.executable, "-c", _RSS_PROBE], capture_output=True, env=env, timeout=240)
    assert probe.returncode == 0, probe.stderr.decode(errors="replace")
    total, growth = map(int, probe.stdout.split())
    assert total == 3 * GiB
    assert growth < 200 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"


# ------------------------------------------------------------------- lines
def test_lines_rejoin_lines_split_across_tiny_chunks() -> None:
    data = b"alpha\nbeta\n\ngamma delta\nlast without newline"
    for size in (1, 2, 3, 7, 64):
        lines = list(netrunner.stream(["printf", "%s", data], chunk_size=size).lines())
        assert lines == data.splitlines(keepends=True), size


def test_lines_final_newline_gives_no_empty_extra_line() -> None:
    assert list(netrunner.stream(["printf", r"a\nb\n"], chunk_size=1).lines()) == [b"a\n", b"b\n"]
    assert list(netrunner.stream(["printf", r"\n"], chunk_size=1).lines()) == [b"\n"]
    assert list(netrunner.stream(["true"]).lines()) == []


def test_lines_keep_crlf_and_bytes_as_is() -> None:
    lines = list(netrunner.stream(["printf", r"a\r\nb\rc\n\000\n"], chunk_size=3).lines())
    assert lines == [b"a\r\n", b"b\rc\n", b"\0\n"]


def test_lines_random_data_matches_splitlines(tmp_path: Path) -> None:
    rng = __import__("random").Random(1234)
    pieces = [b"x" * rng.choice([0, 1, 5, 100, 5000]) + b"\n" * rng.choice([0, 1, 2]) for _ in range(400)]
    data = b"".join(pieces)
    path = tmp_path / "data"
    path.write_bytes(data)
    for size in (13, 4096):
        lines = list(netrunner.stream(["cat", str(path)], chunk_size=size).lines())
        assert lines == data.splitlines(keepends=True), size


# Bytes that str/bytes splitlines() treat as line breaks, NUL, a plain byte and
# a long run, so lines cross many chunks and every splitlines() trap shows up.
LINE_PIECES = [b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85", b"\0", b"a"]


@given(
    data=st.lists(st.sampled_from([*LINE_PIECES, b"x" * 5000]), max_size=60).map(b"".join) | st.binary(max_size=300),
    choice=st.data(),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_line_splitter_any_chunking_gives_lines_ended_by_newline_only(data: bytes, choice: st.DataObject) -> None:
    """However the output is cut (empty chunks, one byte each, long lines
    over many chunks), lines end at b"\\n" and nowhere else, and joined
    they are the output again, so nothing is lost or reordered."""
    cuts = sorted(choice.draw(st.lists(st.integers(0, len(data)), max_size=40)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    *whole, tail = data.split(b"\n")
    expected = [line + b"\n" for line in whole] + ([tail] if tail else [])

    splitter = LineSplitter()
    got: list[bytes] = []
    for chunk in chunks:
        fed = splitter.feed(chunk)
        assert all(line.endswith(b"\n") for line in fed)
        got += fed
    last = splitter.finish()
    assert last == (tail or None)
    assert splitter.finish() is None
    assert got + ([last] if last is not None else []) == expected
    assert list(split_lines(iter(chunks))) == expected


def test_lines_one_mib_line_has_no_limit() -> None:
    """A 1 MiB line (and one 1 MiB line without newline at the end) comes
    out whole: no LimitOverrunError-style cap."""
    script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo mid; head -c 1048576 /dev/zero | tr '\\0' y"
    lines = list(netrunner.stream(["sh", "-c", script], chunk_size=4096, timeout=60).lines())
    assert [len(line) for line in lines] == [MiB + 1, 4, MiB]
    assert lines[0] == b"x" * MiB + b"\n"
    assert lines[1] == b"mid\n"
    assert lines[2] == b"y" * MiB


def test_lines_sets_returncode_and_stderr_after_the_end() -> None:
    s = netrunner.stream(["sh", "-c", "echo a; echo err >&2; printf b; exit 4"])
    assert list(s.lines()) == [b"a\n", b"b"]
    assert s.returncode == 4
    assert s.stderr == b"err\n"


def test_lines_check_raises_after_the_last_line() -> None:
    got: list[bytes] = []
    with pytest.raises(netrunner.CalledProcessError) as info:
        for line in netrunner.stream(["sh", "-c", "echo a; printf b; exit 2"], check=True).lines():
            got.append(line)
    assert got == [b"a\n", b"b"]
    assert info.value.returncode == 2


def test_lines_break_kills_at_once() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    started = time.monotonic()
    for line in s.lines():
        assert line == b"y\n"
        break
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)


# ------------------------------------------------------------------- input
def test_input_bytes() -> None:
    assert b"".join(netrunner.stream(["cat"], input=b"some bytes\0")) == b"some bytes\0"


def test_input_bytearray_and_memoryview() -> None:
    assert b"".join(netrunner.stream(["cat"], input=bytearray(b"ba"))) == b"ba"
    assert b"".join(netrunner.stream(["cat"], input=memoryview(b"mv"))) == b"mv"


def test_input_str_is_utf8() -> None:
    assert b"".join(netrunner.stream(["cat"], input="héllo ✓")) == "héllo ✓".encode()


def test_input_iterable_of_bytes_and_str() -> None:
    assert b"".join(netrunner.stream(["cat"], input=[b"a", b"", b"bc"])) == b"abc"
    assert b"".join(netrunner.stream(["cat"], input=iter(["x", b"y"]))) == b"xy"


def test_input_binary_file(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "in"
    path.write_bytes(data)
    with path.open("rb") as f:
        out = b"".join(netrunner.stream(["cat"], input=f, timeout=60))
    assert out == data
    assert b"".join(netrunner.stream(["wc", "-c"], input=io.BytesIO(b"12345"))).strip() == b"5"


def test_input_empty_gives_eof() -> None:
    assert b"".join(netrunner.stream(["wc", "-c"], input=b"")).strip() == b"0"


def test_input_is_fed_while_output_is_read_both_larger_than_pipes() -> None:
    """8 MiB in and out through cat: only possible if input is written
    while the consumer pulls output."""
    data = bytes(range(256)) * (8 * MiB // 256)
    h = hashlib.sha256()
    n = 0
    for chunk in netrunner.stream(["cat"], input=data, chunk_size=32 * KiB, timeout=60):
        h.update(chunk)
        n += len(chunk)
    assert n == len(data)
    assert h.digest() == hashlib.sha256(data).digest()


def _lines_of_x(total: int) -> Iterator[bytes]:
    block = (b"x" * 63 + b"\n") * (MiB // 64)
    for _ in range(total // MiB):
        yield block


def test_input_generator_256_mib_through_wc() -> None:
    s = netrunner.stream(["wc", "-c"], input=_lines_of_x(256 * MiB), timeout=120)
    assert b"".join(s).strip() == b"%d" % (256 * MiB)
    assert s.returncode == 0
    assert s.stats is not None and s.stats.bytes_in == 256 * MiB


def test_input_generator_256_mib_through_grep() -> None:
    s = netrunner.stream(["grep", "-c", "x"], input=_lines_of_x(256 * MiB), timeout=120)
    assert b"".join(s).strip() == b"%d" % (256 * MiB // 64)
    assert s.returncode == 0


def test_input_to_child_that_never_reads_is_not_an_error() -> None:
    s = netrunner.stream(["sh", "-c", "exec 0<&-; echo done"], input=b"x" * (4 * MiB), timeout=60)
    assert b"".join(s) == b"done\n"
    assert s.returncode == 0


def test_input_iterable_that_raises_stops_child_and_reraises(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    seen: list[int] = []

    class Boom(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield b"first\n"
        seen.append(int(read_fifo_line(fifo, 20)))
        raise Boom("input source failed")

    script = 'trap "" TERM; echo $$ > "$1"; exec cat'
    s = netrunner.stream(["sh", "-c", script, "sh", str(fifo)], input=chunks(), kill_timeout=5, timeout=60)
    got = []
    started = 0.0
    with pytest.raises(Boom):
        for chunk in s:
            got.append(chunk)
            started = started or time.monotonic()
    (pid,) = seen
    assert pid == s.pid
    assert_group_gone(pid)
    # A SIGKILL at once, not SIGTERM + kill_timeout (the child ignores TERM).
    assert started == 0.0 or time.monotonic() - started < 2
    assert b"".join(got) in (b"", b"first\n")


def test_input_chunk_of_wrong_type_raises_and_child_is_gone() -> None:
    def chunks() -> Iterator[object]:
        yield b"ok"
        yield 42

    s = netrunner.stream(["cat"], input=chunks(), timeout=60)
    with pytest.raises(TypeError):
        list(s)
    assert_group_gone(s.pid)


def test_input_of_wrong_type_is_rejected_before_start() -> None:
    with pytest.raises(TypeError):
        netrunner.stream(["cat"], input=42)


# ------------------------------------------------------------------ stderr
def test_stderr_captured_and_set_after_exhaustion() -> None:
    s = netrunner.stream(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert s.stderr is None and s.returncode is None and s.stats is None
    assert b"".join(s) == b"out\n"
    assert s.stderr == b"err\n"
    assert s.returncode == 3
    assert s.stats is not None
    assert s.stats.returncode == 3
    assert s.stats.bytes_out == 4
    assert s.stats.bytes_err == 4
    assert s.stats.duration >= 0
    assert s.stats.max_rss is not None and s.stats.max_rss > 0


def test_stderr_flood_while_stdout_produced_does_not_deadlock() -> None:
    """Megabytes of stderr interleaved with stdout: the consumer reads
    only stdout, so stderr must be drained meanwhile."""
    script = "i=0; while [ $i -lt 8 ]; do head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero; i=$((i+1)); done"
    s = netrunner.stream(["sh", "-c", script], chunk_size=16 * KiB, timeout=60)
    assert sum(len(c) for c in s) == 8 * MiB
    assert s.returncode == 0
    assert s.stats is not None and s.stats.bytes_err == 8 * MiB
    # Drained into a bounded buffer: what is kept is some of what was written.
    assert s.stderr is not None and 0 < len(s.stderr) <= 8 * MiB
    assert s.stderr.count(0) == len(s.stderr)


def test_stderr_flood_before_any_stdout() -> None:
    s = netrunner.stream(["sh", "-c", "head -c 5000000 /dev/zero >&2; echo done"], timeout=60)
    assert b"".join(s) == b"done\n"
    assert s.stats is not None and s.stats.bytes_err == 5_000_000


@pytest.mark.parametrize("mode", ["stdout", subprocess.STDOUT])
def test_stderr_merged_into_stdout(mode: object) -> None:
    s = netrunner.stream(["sh", "-c", "echo out; echo err >&2; echo end"], stderr=mode)
    assert b"".join(s) == b"out\nerr\nend\n"
    assert s.stderr == b""


@pytest.mark.parametrize("mode", ["devnull", subprocess.DEVNULL])
def test_stderr_devnull(mode: object, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    s = netrunner.stream(["sh", "-c", "echo out; echo err >&2"], stderr=mode)
    assert b"".join(s) == b"out\n"
    assert s.stderr == b""
    assert b"err" not in capfdbinary.readouterr().err


# ------------------------------------------------------------ exit status
def test_returncode_of_signal_death() -> None:
    s = netrunner.stream(["sh", "-c", "echo x; kill -9 $$"])
    assert b"".join(s) == b"x\n"
    assert s.returncode == -signal.SIGKILL


def test_nonzero_exit_without_check_is_not_an_error() -> None:
    s = netrunner.stream(["sh", "-c", "echo a; exit 7"])
    assert b"".join(s) == b"a\n"
    assert s.returncode == 7


def test_check_raises_after_the_last_chunk() -> None:
    """All chunks are delivered first, then CalledProcessError."""
    script = "i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done; echo why >&2; exit 3"
    got: list[bytes] = []
    s = netrunner.stream(["sh", "-c", script], check=True, chunk_size=7)
    with pytest.raises(netrunner.CalledProcessError) as info:
        for chunk in s:
            got.append(chunk)
    assert b"".join(got) == b"".join(b"line-%d\n" % i for i in range(100))
    exc = info.value
    assert isinstance(exc, subprocess.CalledProcessError)
    assert isinstance(exc, netrunner.NetRunnerError)
    assert exc.returncode == 3
    assert exc.cmd == ["sh", "-c", script]
    assert exc.stderr == b"why\n"
    assert "why" in str(exc)
    # The stream records how it ended even though the iteration raised.
    assert (s.returncode, s.stderr) == (3, b"why\n")
    assert s.stats is not None and s.stats.returncode == 3
    assert_group_gone(s.pid)


def test_check_on_signal_death() -> None:
    with pytest.raises(netrunner.CalledProcessError) as info:
        list(netrunner.stream(["sh", "-c", "kill -TERM $$"], check=True))
    assert info.value.returncode == -signal.SIGTERM


def test_check_success_is_silent() -> None:
    s = netrunner.stream(["echo", "ok"], check=True)
    assert b"".join(s) == b"ok\n"
    assert s.returncode == 0


# ----------------------------------------------------------------- timeout
def test_timeout_raised_by_iteration_after_delivered_chunks() -> None:
    timeout, kill_timeout = 1.0, 1.0
    started = time.monotonic()
    s = netrunner.stream(TERM_IGNORING_SLEEPER, timeout=timeout, kill_timeout=kill_timeout)
    got: list[bytes] = []
    with pytest.raises(netrunner.TimeoutExpired) as info:
        for chunk in s:
            got.append(chunk)
    elapsed = time.monotonic() - started
    assert got == [b"start\n"]
    assert elapsed < timeout + kill_timeout + 0.5, elapsed
    assert elapsed >= timeout
    exc = info.value
    assert isinstance(exc, subprocess.TimeoutExpired)
    assert exc.timeout == timeout
    assert exc.cmd == TERM_IGNORING_SLEEPER
    assert s.returncode == -signal.SIGKILL  # TERM ignored: killed after kill_timeout
    assert_group_gone(s.pid)


def test_timeout_with_term_ignoring_grandchild_holding_the_pipes() -> None:
    script = 'trap "" TERM; (trap "" TERM; exec sleep 60) & echo start; exec sleep 60'
    started = time.monotonic()
    s = netrunner.stream(["sh", "-c", script], timeout=0.5, kill_timeout=0.5)
    with pytest.raises(netrunner.TimeoutExpired):
        for _ in s:
            pass
    assert time.monotonic() - started < 0.5 + 0.5 + 0.5
    assert_group_gone(s.pid)


def test_timeout_bounds_wall_time_even_if_output_keeps_coming() -> None:
    started = time.monotonic()
    s = netrunner.stream(["yes"], timeout=0.5, kill_timeout=1, chunk_size=4096)
    n = 0
    with pytest.raises(netrunner.TimeoutExpired):
        for chunk in s:
            n += len(chunk)
    assert n > 0
    assert time.monotonic() - started < 0.5 + 1 + 0.5
    assert_group_gone(s.pid)


def test_timeout_not_hit_returns_normally() -> None:
    s = netrunner.stream(["echo", "quick"], timeout=30)
    assert b"".join(s) == b"quick\n"
    assert s.returncode == 0


# ------------------------------------------------------- leaving early
def _first_chunk_then(s: netrunner.Stream) -> Iterator[bytes]:
    it = iter(s)
    first = next(it)
    assert first.startswith(b"y\n")
    return it


def test_break_kills_group_at_once_and_reaps() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    for chunk in s:
        assert chunk.startswith(b"y\n")
        started = time.monotonic()
        break
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)
    assert s.returncode == -signal.SIGKILL
    assert s.stats is not None and s.stats.returncode == -signal.SIGKILL


def test_consumer_exception_kills_group_at_once_and_reaps() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)

    class ConsumerFailed(Exception):
        pass

    started = 0.0
    with pytest.raises(ConsumerFailed):
        for _chunk in s:
            started = time.monotonic()
            raise ConsumerFailed
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)


def test_close_kills_group_at_once_and_reaps() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    it = _first_chunk_then(s)
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)
    assert s.returncode == -signal.SIGKILL
    s.close()  # idempotent
    del it


def test_close_before_iterating_kills_group() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)
    assert list(s) == []


def test_with_exit_kills_group_at_once_and_reaps() -> None:
    with netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s:
        _first_chunk_then(s)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)


def test_with_exit_on_exception_kills_group_at_once() -> None:
    with pytest.raises(KeyError):
        with netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5) as s:
            next(iter(s))
            started = time.monotonic()
            raise KeyError("consumer")
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)


def test_garbage_collection_mid_iteration_kills_group() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    pid = s.pid
    it = _first_chunk_then(s)
    started = time.monotonic()
    del s, it
    gc.collect()
    assert pid_gone(pid, within=2), "the child outlived its garbage-collected stream"
    assert time.monotonic() - started < 2


def test_garbage_collection_before_iterating_kills_group() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    pid = s.pid
    started = time.monotonic()
    del s
    gc.collect()
    assert pid_gone(pid, within=2), "the child outlived its garbage-collected stream"
    assert time.monotonic() - started < 2


def test_kill_on_leaving_reaches_the_whole_group(tmp_path: Path) -> None:
    """Background members of the group (and a setsid daemon) die too."""
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    script = (
        'trap "" TERM; (trap "" TERM; exec sleep 60) & bg=$!; '
        'setsid sh -c \'trap "" TERM; echo $$ > "$1"; exec sleep 60\' sh "$1" & '
        "echo $bg; exec yes"
    )
    s = netrunner.stream(["sh", "-c", script, "sh", str(fifo)], kill_timeout=5)
    it = iter(s)
    first = next(it)
    daemon = int(read_fifo_line(fifo, 20))
    background = int(first.split(b"\n", 1)[0])
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)
    assert pid_gone(background, within=0)
    assert pid_gone(daemon, within=0)
    del it


# ---------------------------------------------------------- no truncation
def test_exit_before_pipes_drained_never_truncates(tmp_path: Path) -> None:
    """``head`` exits while its last output still sits in the pipe; a slow
    consumer with small chunks still gets every byte."""
    path = tmp_path / "random"
    path.write_bytes(os.urandom(5_000_000))
    cmd = ["head", "-c", "5000000", str(path)]
    expected = hashlib.sha256(subprocess.run(cmd, capture_output=True, check=True).stdout).hexdigest()
    for _ in range(3):
        h = hashlib.sha256()
        s = netrunner.stream(cmd, chunk_size=1000, timeout=60)
        for chunk in s:
            assert len(chunk) <= 1000
            hashlib.sha256(chunk * 4).digest()  # some work per chunk: a slow consumer
            h.update(chunk)
        assert h.hexdigest() == expected
        assert s.returncode == 0
        assert s.stats is not None and s.stats.bytes_out == 5_000_000


def test_output_of_exited_child_fully_in_pipe_is_delivered(tmp_path: Path) -> None:
    """The child has exited (and been reaped) before the first chunk is
    asked for; 60 000 bytes wait in the pipe and all arrive, in tiny chunks."""
    data = os.urandom(60_000)
    path = tmp_path / "data"
    path.write_bytes(data)
    s = netrunner.stream(["cat", str(path)], chunk_size=7)
    assert pid_gone(s.pid, within=20)  # exited with everything still in the pipe
    out = b"".join(s)
    assert out == data
    assert s.returncode == 0


# ------------------------------------------------------------- validation
def test_exec_failure_raised_by_stream_call() -> None:
    with pytest.raises(FileNotFoundError) as info:
        netrunner.stream(["/nonexistent/netrunner-test-binary"])
    assert info.value.errno == 2
    assert info.value.filename == "/nonexistent/netrunner-test-binary"


def test_exec_permission_error(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError) as info:
        netrunner.stream([str(script)])
    assert info.value.filename == str(script)


@pytest.mark.parametrize("size", [0, -1])
def test_bad_chunk_size_is_value_error(size: int) -> None:
    with pytest.raises(ValueError):
        netrunner.stream(["true"], chunk_size=size)


@pytest.mark.parametrize("size", [True, 1.5, "10"])
def test_chunk_size_of_wrong_type_is_type_error(size: object) -> None:
    with pytest.raises(TypeError):
        netrunner.stream(["true"], chunk_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1])
def test_bad_timeout_is_value_error(timeout: float) -> None:
    with pytest.raises(ValueError):
        netrunner.stream(["true"], timeout=timeout)


def test_cwd_and_env() -> None:
    s = netrunner.stream(["sh", "-c", 'pwd; echo "$FOO"'], cwd="/", env={"FOO": "bar", "PATH": os.environ["PATH"]})
    assert b"".join(s) == b"/\nbar\n"


def test_a_stream_made_in_one_thread_is_consumed_and_broken_off_in_another() -> None:
    # Upstream lesson 30: nothing binds a stream to the thread that made it.
    whole = netrunner.stream(["head", "-c", str(5 << 20), "/dev/zero"])
    flood = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    results: dict[str, Any] = {}

    def consume() -> None:
        try:
            results["size"] = sum(len(chunk) for chunk in whole)
            for _chunk in flood:
                break
        except BaseException as exc:  # reported below
            results["error"] = exc

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert "error" not in results, results
    assert results["size"] == 5 << 20 and whole.returncode == 0
    assert_group_gone(flood.pid)
    assert flood.returncode == -signal.SIGKILL
