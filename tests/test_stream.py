"""stream() of the blocking API only: the child starts at the call, a
plain ``break`` (or an exception through a ``for``) ends it at once
without waiting for the stream to be dropped, no read-ahead and bounded
memory, no fd held after the end, threads.

Behaviour every front end shares (chunks as produced, lines, input fed
while output is pulled, stderr drained, check, timeout, leaving early by
drop, close or ``with``) is in test_behaviour_stream.py, run for sync,
asyncio and trio."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procs import assert_group_gone, pid_gone

import netrunner
from netrunner import aio
from netrunner._launch import FORK_SERVER, OWNER_CWD
from netrunner._stream import LineSplitter, split_lines

MiB = 1 << 20
GiB = 1 << 30
# Ignores SIGTERM and never reads stdin; writes as fast as it can.  Its
# ``yes`` is a second process in the same group (not exec'd).
TERM_IGNORING_FLOOD = ["sh", "-c", 'trap "" TERM; yes']


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


# ------------------------------------------------------------------ chunks


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
# Every byte that bytes.splitlines (or str.splitlines) treats as a break.
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
        fed = list(splitter.feed(chunk))  # an iterator over the chunk's complete lines
        assert all(line.endswith(b"\n") for line in fed)
        got += fed
    last = splitter.finish()
    assert last == (tail or None)
    assert splitter.finish() is None
    assert got + ([last] if last is not None else []) == expected
    assert list(split_lines(iter(chunks))) == expected
    # A text stream's chunks (str, newlines already translated) split the
    # same way: at "\n" only, not at str.splitlines' dozen line breaks.
    text = [chunk.decode("latin-1") for chunk in chunks]
    assert list(split_lines(iter(text))) == [line.decode("latin-1") for line in expected]


@pytest.mark.parametrize("text", [False, True])
def test_a_long_line_costs_its_parts_and_itself(text: bool) -> None:
    """A 64 MiB line (carried over 1,000 chunks) peaks at its parts plus
    the joined line (2x its size), not 6x as when it went through a
    StringIO (4 bytes a character) with the chunk's other lines.  Counted
    by tracemalloc: what Python allocates, whatever the C allocator keeps."""
    script = "head -c 67108864 /dev/zero | tr '\\0' x; echo; echo end"
    tracemalloc.start()
    try:
        lengths = [len(line) for line in netrunner.stream(["sh", "-c", script], text=text, timeout=60).lines()]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lengths == [64 * MiB + 1, 4]
    assert peak < 2.5 * 64 * MiB, f"{peak / MiB:.0f} MiB at the peak for a 64 MiB line"


def test_lines_break_kills_at_once() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    started = time.monotonic()
    for line in s.lines():
        assert line == b"y\n"
        break
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)


# ------------------------------------------------------- leaving early


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


def test_close_before_iterating_kills_group() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 2
    assert_group_gone(s.pid)
    assert list(s) == []


def test_garbage_collection_before_iterating_kills_group() -> None:
    s = netrunner.stream(TERM_IGNORING_FLOOD, kill_timeout=5)
    pid = s.pid
    started = time.monotonic()
    del s
    gc.collect()
    assert pid_gone(pid, within=2), "the child outlived its garbage-collected stream"
    assert time.monotonic() - started < 2


# ------------------------------------------------------------- validation
def test_exec_failure_raised_by_stream_call() -> None:
    with pytest.raises(FileNotFoundError) as info:
        netrunner.stream(["/nonexistent/netrunner-test-binary"])
    assert info.value.errno == 2
    assert info.value.filename == "/nonexistent/netrunner-test-binary"


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


# ----------------------------------------------------------------- text=True
# printf's octal escapes: é (2 bytes), € (3), 😀 (4); chunk_size=1 makes
# every read one byte, so every multi-byte character is cut between reads.
MULTIBYTE = r"printf 'a\303\251b\342\202\254c\360\237\230\200\n'"


def test_text_chunks_survive_characters_cut_between_reads() -> None:
    chunks = list(netrunner.stream(["sh", "-c", MULTIBYTE], text=True, chunk_size=1))
    assert "".join(chunks) == "aéb€c😀\n"
    assert all(isinstance(c, str) and c for c in chunks)


def test_text_stream_translates_newlines_as_run_does_even_across_reads() -> None:
    script = r"printf 'one\r\ntwo\rthree\n\r'"
    expected = netrunner.run(["sh", "-c", script], text=True).stdout
    assert expected == "one\ntwo\nthree\n\n"
    for size in (1, 2, 65536):
        assert "".join(netrunner.stream(["sh", "-c", script], text=True, chunk_size=size)) == expected


def test_text_stream_lines_are_str() -> None:
    s = netrunner.stream(["sh", "-c", r"printf 'x\r\ny\303\251\nlast'"], text=True, chunk_size=1)
    assert list(s.lines()) == ["x\n", "yé\n", "last"]


def test_encoding_and_errors_imply_text_and_stderr_is_decoded_too() -> None:
    s = netrunner.stream(["sh", "-c", r"printf '\351\n'; printf 'err\r\n' >&2"], encoding="latin-1")
    assert list(s) == ["é\n"]
    assert s.stderr == "err\n"
    s = netrunner.stream(["sh", "-c", r"printf 'a\377b'"], errors="replace", chunk_size=1)
    assert "".join(s) == "a\ufffdb"


def test_undecodable_output_raises_and_the_child_is_stopped() -> None:
    script = r"printf '\377'; exec sleep 60"
    with netrunner.stream(["sh", "-c", script], text=True, kill_timeout=0) as s:
        with pytest.raises(UnicodeDecodeError):
            list(s)
        assert s.returncode is not None  # stopped and reaped before the error reached us


def test_aio_stream_text_shares_the_same_decoding() -> None:
    async def main() -> tuple[list[str], list[str]]:
        chunks = [c async for c in aio.stream(["sh", "-c", MULTIBYTE], text=True, chunk_size=1)]
        lines = [line async for line in aio.stream(["sh", "-c", r"printf 'p\r\nq'"], text=True).lines()]
        return chunks, lines

    chunks, lines = asyncio.run(main())
    assert "".join(chunks) == "aéb€c😀\n"
    assert lines == ["p\n", "q"]
