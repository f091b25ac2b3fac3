"""run() as every front end has it (``netrunner.run``, ``await aio.run``
on asyncio and on trio): output capture, Result and Stats, text mode,
input of every kind written while output is read, stderr modes, check,
timeout and output limit with their bounds, exec errors with errno,
validation before anything starts, and the child's tree gone when a
failed call returns.  Written once against the facade in frontends.py;
what only one front end has stays in test_run.py / test_aio.py."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from frontends import Front, marked_env, processes_with
from procs import assert_group_gone, pid_gone, silent_pipe

import netrunner

MiB = 1 << 20
# Ignores SIGTERM, announces itself, then sleeps (exec keeps the ignore).
TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60']
STATS_FIELDS = {
    "bytes_in",
    "bytes_out",
    "bytes_err",
    "read_count",
    "write_count",
    "duration",
    "returncode",
    "user_time",
    "system_time",
    "max_rss",
    # cgroup memory accounting (None without cgroup= and a memory controller)
    "oom_kills",
    "memory_peak",
    # captured stderr beyond its bound (the tail is kept)
    "stderr_dropped",
}
# What ``seq 1 N`` prints, made once at import: building it inside a test
# would count as the asyncio front end's loop being blocked.
SEQ_100000 = b"".join(b"%d\n" % i for i in range(1, 100001))
SEQ_400000 = b"".join(b"%d\n" % i for i in range(1, 400001))


# ------------------------------------------------------------------ capture
async def test_result_is_completedprocess_with_output_pid_and_stats(front: Front) -> None:
    args = ["sh", "-c", "echo $$; cat; echo err >&2; exit 5"]
    started = time.monotonic()
    r = await front.run(args, input=b"abc")
    elapsed = time.monotonic() - started
    assert isinstance(r, netrunner.Result)
    assert isinstance(r, subprocess.CompletedProcess)
    assert r.args == args
    assert r.returncode == 5  # returned, not raised
    pid_line, rest = r.stdout.split(b"\n", 1)
    assert r.pid == int(pid_line)
    assert rest == b"abc"
    assert r.stderr == b"err\n"  # captured separately
    stats = r.stats
    assert isinstance(stats, netrunner.Stats)
    assert {f.name for f in dataclasses.fields(stats)} == STATS_FIELDS
    assert stats.returncode == 5
    assert stats.oom_kills is None and stats.memory_peak is None and not stats.oom_killed
    assert (stats.bytes_in, stats.bytes_out, stats.bytes_err) == (3, len(r.stdout), 4)
    assert stats.read_count >= 1 and stats.write_count >= 1
    assert 0 < stats.duration <= elapsed
    assert stats.user_time is not None and stats.user_time >= 0
    assert stats.system_time is not None and stats.system_time >= 0
    assert stats.max_rss is not None and stats.max_rss > 0


async def test_returncode_follows_subprocess_for_signals(front: Front) -> None:
    assert (await front.run(["sh", "-c", "kill -TERM $$"])).returncode == -signal.SIGTERM
    killed = await front.run(["sh", "-c", "kill -KILL $$"])
    exited = await front.run(["sh", "-c", "exit 137"])
    assert (killed.returncode, killed.stats.returncode) == (-signal.SIGKILL, -signal.SIGKILL)
    assert (exited.returncode, exited.stats.returncode) == (137, 137)


async def test_args_may_be_bytes_and_pathlike(front: Front, tmp_path: Path) -> None:
    (tmp_path / "file with space").write_bytes(b"content")
    assert (await front.run([b"cat", tmp_path / "file with space"])).stdout == b"content"
    assert (await front.run(("printf", "%s|", "a b", b"\xff", ""))).stdout == b"a b|\xff||"


# --------------------------------------------------------------- text mode
async def test_text_mode_universal_newlines_and_encoding(front: Front) -> None:
    script = r"printf 'a\r\nb\rc\nd'; printf 'x\r\ny\r' >&2"
    theirs = await front.in_thread(subprocess.run, ["sh", "-c", script], capture_output=True, text=True)
    r = await front.run(["sh", "-c", script], text=True)
    assert (r.stdout, r.stderr) == (theirs.stdout, theirs.stderr) == ("a\nb\nc\nd", "x\ny\n")
    assert (await front.run(["sh", "-c", script])).stdout == b"a\r\nb\rc\nd"  # bytes mode: untouched
    assert (await front.run(["printf", r"\303\251t\303\251"], text=True)).stdout == "été"  # UTF-8 by default
    r = await front.run(["printf", r"caf\351\r\n"], encoding="latin-1")  # encoding implies text
    assert (r.stdout, r.stderr) == ("café\n", "")
    assert (await front.run(["printf", r"\377ok"], errors="replace")).stdout == "\ufffdok"
    assert (await front.run(["printf", r"\377ok"], errors="surrogateescape")).stdout == "\udcffok"


async def test_undecodable_output_raises_like_subprocess_and_leaves_nothing(front: Front) -> None:
    # aio.run once leaked its child here (issue 10); the leak guard and the
    # token scan both check nothing is left.
    with pytest.raises(UnicodeDecodeError):
        await front.in_thread(subprocess.run, ["printf", r"\377"], capture_output=True, text=True)
    token, env = marked_env()
    with pytest.raises(UnicodeDecodeError):
        await front.run(["printf", r"\377"], text=True, env=env)
    assert processes_with(token) == []


# ----------------------------------------------------------------- input
async def test_input_of_every_kind(front: Front, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 123)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    kinds: list[tuple[Any, bytes]] = [
        (b"bytes\0", b"bytes\0"),
        ("strs ✓", "strs ✓".encode()),  # UTF-8 by default
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"xyzw")[1:3], b"yz"),
        ([b"one ", b"", b"two ", bytearray(b"three")], b"one two three"),
        (io.BytesIO(b"bio"), b"bio"),
        (b"", b""),  # EOF at once
    ]
    for value, expected in kinds:
        r = await front.run(["cat"], input=value, timeout=60)
        assert (r.returncode, r.stdout) == (0, expected), value
    with path.open("rb") as f:
        assert (await front.run(["cat"], input=f, timeout=60)).stdout == data
    # str input is encoded with ``encoding``.
    assert (await front.run(["od", "-An", "-tx1"], input="é", encoding="latin-1")).stdout.split() == ["e9"]
    assert (await front.run(["cat"], input="hé\n", text=True)).stdout == "hé\n"


async def test_stdin_is_devnull_without_input(front: Front) -> None:
    r = await front.run(["sh", "-c", "readlink /proc/self/fd/0; cat"], timeout=30)
    assert (r.returncode, r.stdout) == (0, b"/dev/null\n")


async def test_input_generator_is_fed_while_output_is_read(front: Front) -> None:
    def small() -> Iterator[bytes]:
        for i in range(2000):
            yield b"%05d\n" % i

    r = await front.run(["cat"], input=small())
    assert r.stdout == b"".join(b"%05d\n" % i for i in range(2000))
    assert r.stats.bytes_in == 2000 * 6

    def big() -> Iterator[bytes]:
        block = (b"x" * 63 + b"\n") * (MiB // 64)
        for _ in range(64):
            yield block

    r = await front.run(["grep", "-c", "x"], input=big(), timeout=60)
    assert r.stdout == b"%d\n" % MiB
    assert r.stats.bytes_in == 64 * MiB


async def test_no_pipe_deadlock_whatever_the_child_reads_or_writes(front: Front) -> None:
    # In and out both larger than any pipe buffer, NUL bytes included.
    data = bytes(range(256)) * (8 * MiB // 256) + b"\0\0tail\0"
    r = await front.run(["cat"], input=data, timeout=60)
    assert (r.returncode, len(r.stdout)) == (0, len(data))
    assert r.stdout == data
    assert (r.stats.bytes_in, r.stats.bytes_out) == (len(data), len(data))
    # A filter that writes 2 MB before it reads anything.
    late = os.urandom(4 * MiB)
    r = await front.run(["sh", "-c", "head -c 2000000 /dev/zero; cat"], input=late, timeout=60)
    assert r.stdout == bytes(2000000) + late
    # A child that never reads its input is no error (as communicate()).
    r = await front.run(["sh", "-c", "echo done"], input=b"x" * (4 * MiB), timeout=60)
    assert (r.returncode, r.stdout) == (0, b"done\n")


# 72 MiB and 4097 bytes, none alike in any 1 MiB stretch: past the size where
# the collector starts faulting its buffer in ahead (_prefault.PREFAULT_FROM,
# 32 MiB) and across several of BytesIO's reallocs (12.5 % each) after it.
BIG_OUTPUT = 72 * MiB + 4097


@pytest.fixture(scope="module")
def big_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(BIG_OUTPUT)
    path = tmp_path_factory.mktemp("big") / "out"
    path.write_bytes(data)
    return path, data


def _sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


async def test_a_capture_across_the_growth_steps_returns_exactly_the_bytes(
    front: Front, big_output: tuple[Path, bytes]
) -> None:
    path, data = big_output
    # The checks of 72 MiB are hashes in a thread: hashlib lets the GIL go
    # while it hashes, so the loop runs meanwhile.  Comparing the bytes, even
    # in a thread, holds the GIL for the whole memcmp (and a slice copies
    # into fresh memory), which stalled the loop 120-150 ms in CI dry runs
    # with two suites on 2 cores: the test's stall, not run()'s.
    r = await front.run(["cat", str(path)], timeout=120)
    assert len(r.stdout) == len(data)
    assert await front.in_thread(_sha256, r.stdout) == await front.in_thread(_sha256, data)
    assert r.stats.bytes_out == len(data)
    # Cut by the limit past the point where the buffer is faulted in ahead:
    # the first `limit` bytes exactly, the rest never kept.
    limit = 40 * MiB + 7
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        await front.run(["cat", str(path)], max_output_size=limit, timeout=120)
    kept = info.value.stdout
    assert len(kept) == limit
    assert await front.in_thread(_sha256, kept) == await front.in_thread(_sha256, memoryview(data)[:limit])


@pytest.mark.parametrize("entry", ["run", "stream"])
async def test_a_silent_input_pipe_does_not_defeat_the_timeout(front: Front, entry: str) -> None:
    # The input's writer stays open and says nothing: reading it blocked
    # past the timeout (sync), or blocked the loop (asyncio, where the
    # LoopWatch of the front end fails a 100 ms stall).
    timeout, kill_timeout = 1.0, 0.5
    with silent_pipe() as quiet:
        started = time.monotonic()
        with pytest.raises(netrunner.TimeoutExpired):
            if entry == "run":
                await front.run(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout)
            else:
                await front.stream(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout).collect()
        elapsed = time.monotonic() - started
    assert elapsed <= timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"


async def test_input_that_fails_midway_raises_and_leaves_nothing(front: Front) -> None:
    class Boom(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield b"first chunk\n"
        raise Boom("input source failed")

    def wrong_type() -> Iterator[Any]:
        yield b"ok"
        yield 42

    for source, error in ((failing, Boom), (wrong_type, TypeError)):
        token, env = marked_env()
        with pytest.raises(error):
            await front.run(["sh", "-c", 'trap "" TERM; exec cat'], input=source(), env=env, timeout=60)
        assert processes_with(token) == [], "the child outlived the exception"


# --------------------------------------------------------------- stderr
@pytest.mark.parametrize(
    ("mode", "stdout", "stderr", "on_our_stderr"),
    [
        ("pipe", b"out\nout2\n", b"err\n", False),
        (subprocess.PIPE, b"out\nout2\n", b"err\n", False),
        ("stdout", b"out\nerr\nout2\n", None, False),  # one pipe: the order of the writes is kept
        (subprocess.STDOUT, b"out\nerr\nout2\n", None, False),
        ("devnull", b"out\nout2\n/dev/null\n", None, False),
        (subprocess.DEVNULL, b"out\nout2\n/dev/null\n", None, False),
        ("inherit", b"out\nout2\n", None, True),
        (None, b"out\nout2\n", None, True),
    ],
)
async def test_stderr_modes(
    front: Front,
    mode: Any,
    stdout: bytes,
    stderr: bytes | None,
    on_our_stderr: bool,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    capfdbinary.readouterr()
    script = "echo out; echo err >&2; echo out2"
    if stdout.endswith(b"/dev/null\n"):
        script += "; readlink /proc/self/fd/2"
    r = await front.run(["sh", "-c", script], stderr=mode)
    assert (r.stdout, r.stderr) == (stdout, stderr)
    captured = capfdbinary.readouterr()
    assert captured.err == (b"err\n" if on_our_stderr else b"")  # inherit: our own fd 2
    assert captured.out == b""  # stdout is captured, never inherited


async def test_stderr_flood_while_stdout_is_produced(front: Front) -> None:
    script = "i=0; while [ $i -lt 20 ]; do head -c 262144 /dev/zero >&2; echo out-$i; i=$((i+1)); done"
    r = await front.run(["sh", "-c", script], timeout=60)
    assert r.returncode == 0
    assert r.stdout == b"".join(b"out-%d\n" % i for i in range(20))
    assert len(r.stderr) == r.stats.bytes_err == 20 * 262144
    r = await front.run(["sh", "-c", "head -c 5000000 /dev/urandom >&2; echo done"], timeout=60)
    assert (r.stdout, len(r.stderr)) == (b"done\n", 5_000_000)


@pytest.mark.parametrize("entry", ["run", "stream"])
async def test_captured_stderr_keeps_its_last_64_mib_and_counts_the_rest(front: Front, entry: str) -> None:
    # 64 MiB of zeros, then 100000 numbered lines: more than the default
    # bound, so the kept tail is the end of the zeros and every line.
    # On an event loop, the turn that ends the call joins the 64 MiB kept
    # into one bytes (a copy into fresh memory: ~45 ms of the loop's CPU
    # when quiet, 200 ms seen with two suites and pip on 2 cores): that
    # turn may take 0.5 s; the checks of 64 MiB below run off the loop.
    front.stall_limit = 0.5
    lines = SEQ_100000
    cmd = ["sh", "-c", "head -c 67108864 /dev/zero >&2; seq 1 100000 >&2; echo out"]
    if entry == "run":
        r = await front.run(cmd, timeout=120)
        out, err, stats = r.stdout, r.stderr, r.stats
    else:
        s = front.stream(cmd, timeout=120)
        out = await s.collect()
        err, stats = s.stderr, s.stats
        assert err is not None and stats is not None
    assert out == b"out\n"
    assert len(err) == 64 * MiB

    def zeros_then_every_line(data: bytes) -> bool:
        return data.endswith(lines) and data.startswith(bytes(64 * MiB - len(lines)))

    assert await front.in_thread(zeros_then_every_line, err)
    assert stats.stderr_dropped == len(lines)
    assert stats.bytes_err == 64 * MiB + len(lines)


async def test_max_output_size_bounds_captured_stderr_too(front: Front) -> None:
    lines = SEQ_400000
    r = await front.run(["sh", "-c", "seq 1 400000 >&2; echo out"], max_output_size=MiB, timeout=120)
    assert r.stdout == b"out\n"
    assert r.stderr == lines[-MiB:]  # the tail is kept
    assert r.stats.stderr_dropped == len(lines) - MiB
    assert r.stats.bytes_err == len(lines)


# ------------------------------------------------------------------- check
async def test_check_raises_calledprocesserror_with_output_and_stderr_tail(front: Front) -> None:
    script = 'head -c 20000 /dev/zero | tr "\\0" x >&2; echo; echo "the real reason" >&2; echo out; exit 3'
    with pytest.raises(netrunner.CalledProcessError) as info:
        await front.run(["sh", "-c", script], check=True)
    err = info.value
    assert isinstance(err, subprocess.CalledProcessError)
    assert isinstance(err, netrunner.NetRunnerError)
    assert (err.returncode, err.cmd) == (3, ["sh", "-c", script])
    assert err.stdout == err.output == b"\nout\n"
    assert err.stderr.endswith(b"the real reason\n")
    message = str(err)
    assert "exit status 3" in message and "the real reason" in message
    assert ("x" * 8000) in message  # the last 8 KiB of stderr
    # text=True gives str output; death by a signal is named; success returns.
    with pytest.raises(netrunner.CalledProcessError) as info:
        await front.run(["sh", "-c", "echo o; echo e >&2; exit 1"], check=True, text=True)
    assert (info.value.stdout, info.value.stderr) == ("o\n", "e\n")
    with pytest.raises(netrunner.CalledProcessError) as info:
        await front.run(["sh", "-c", "kill -TERM $$"], check=True)
    assert info.value.returncode == -signal.SIGTERM and "SIGTERM" in str(info.value)
    assert (await front.run(["sh", "-c", "echo fine"], check=True)).stdout == b"fine\n"


# ----------------------------------------------------------------- timeout
async def test_timeout_stops_the_group_with_partial_output_within_its_bound(front: Front) -> None:
    script = 'trap "" TERM; echo partial; echo warn >&2; exec sleep 60'
    timeout, kill_timeout = 0.5, 0.5
    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        await front.run(["sh", "-c", script], timeout=timeout, kill_timeout=kill_timeout)
    elapsed = time.monotonic() - started
    err = info.value
    assert isinstance(err, subprocess.TimeoutExpired)
    assert isinstance(err, netrunner.NetRunnerError)
    assert (err.timeout, err.cmd) == (timeout, ["sh", "-c", script])
    assert err.stdout == err.output == b"partial\n"
    assert err.stderr == b"warn\n"
    # TERM is ignored: only SIGKILL after kill_timeout ends it.
    assert timeout <= elapsed < timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"


async def test_timeout_with_a_term_ignoring_grandchild_holding_the_pipes(front: Front) -> None:
    # The promise: back within timeout + kill_timeout + 0.5 s even when a
    # grandchild keeps stdout open and ignores TERM, and the whole group is
    # dead and reaped by then.  Both announce themselves once their trap is
    # set, and the test checks the announcements came before the timeout.
    script = 'trap "" TERM; (trap "" TERM; echo grandchild-ready >&2; exec sleep 60) & echo $$; exec sleep 60'
    timeout, kill_timeout = 1.0, 0.5
    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        await front.run(["sh", "-c", script], timeout=timeout, kill_timeout=kill_timeout)
    elapsed = time.monotonic() - started
    assert info.value.stderr == b"grandchild-ready\n", "the grandchild had not set its trap in time"
    assert timeout + kill_timeout <= elapsed < timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"
    assert_group_gone(int(info.value.stdout))


async def test_timeout_partial_output_in_text_mode_is_bytes(front: Front) -> None:
    # As subprocess: it may end inside a multi-byte character, which must
    # not turn the timeout into a UnicodeDecodeError.
    with pytest.raises(netrunner.TimeoutExpired) as info:
        await front.run(["sh", "-c", r"printf 'a\303'; printf '\303' >&2; exec sleep 60"], timeout=0.3, text=True)
    assert (info.value.stdout, info.value.stderr) == (b"a\xc3", b"\xc3")


async def test_timeout_not_hit_and_a_term_obeying_child_cost_no_kill_timeout(front: Front) -> None:
    assert (await front.run(["sh", "-c", "echo quick"], timeout=30)).stdout == b"quick\n"
    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired):
        await front.run(["sleep", "60"], timeout=0.3, kill_timeout=30)
    assert time.monotonic() - started < 10


# ------------------------------------------------------------ output limit
async def test_max_output_size_keeps_the_first_bytes_and_kills_the_group(front: Front) -> None:
    limit = 100_000
    script = "sleep 60 & echo $!; exec yes abcdefgh"
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        await front.run(["sh", "-c", script], max_output_size=limit, timeout=60)
    err = info.value
    assert isinstance(err, netrunner.NetRunnerError)
    background, rest = err.stdout.split(b"\n", 1)
    assert len(err.stdout) == limit
    assert rest == (b"abcdefgh\n" * (limit // 9 + 1))[: len(rest)]
    assert await front.in_thread(pid_gone, int(background), 5), "the producer's group outlived the limit"
    # Exactly the limit is allowed; in text mode the kept bytes stay bytes.
    assert (await front.run(["head", "-c", "1000", "/dev/zero"], max_output_size=1000)).stdout == bytes(1000)
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        await front.run(["head", "-c", "1001", "/dev/zero"], max_output_size=1000)
    assert info.value.stdout == bytes(1000)
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        await front.run(["yes", "\u00e9"], max_output_size=4, text=True, timeout=60)
    assert info.value.stdout == b"\xc3\xa9\n\xc3"
    assert (await front.run(["true"], max_output_size=0)).stdout == b""
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        await front.run(["echo", "x"], max_output_size=0)
    assert info.value.stdout == b""


# ------------------------------------------------------ where it runs
async def test_cwd_env_and_rlimits(front: Front, tmp_path: Path) -> None:
    r = await front.run(
        ["sh", "-c", 'pwd -P; echo "$FOO"; ulimit -n'],
        cwd=tmp_path,
        env={"FOO": "bar", "PATH": os.environ["PATH"]},
        rlimits={"RLIMIT_NOFILE": (64, 64)},
    )
    assert r.stdout == os.fsencode(os.path.realpath(tmp_path)) + b"\nbar\n64\n"
    r = await front.run(["env"], env={b"RAW": b"\xff\xfe", "UNI": "é", "EMPTY": ""})  # env replaces ours
    assert sorted(r.stdout.splitlines()) == [b"EMPTY=", b"RAW=\xff\xfe", "UNI=é".encode()]
    r = await front.run(["sh", "-c", "ulimit -n"], rlimits={resource.RLIMIT_NOFILE: (48, 64)})
    assert r.stdout == b"48\n"


# ------------------------------------------------------- errors up front
@pytest.mark.parametrize("entry", ["run", "stream", "spawn"])
async def test_exec_failures_carry_errno_and_filename(front: Front, entry: str, tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")

    async def start(args: list[str], **options: Any) -> None:
        if entry == "run":
            await front.run(args, **options)
        elif entry == "stream":
            await front.stream(args, **options).collect()
        else:
            await (await front.spawn(args, **options)).aclose()

    with pytest.raises(FileNotFoundError) as missing:
        await start(["/nonexistent/netrunner-test"])
    assert (missing.value.errno, missing.value.filename) == (2, "/nonexistent/netrunner-test")
    with pytest.raises(PermissionError) as denied:
        await start([str(script)])
    assert denied.value.filename == str(script)
    with pytest.raises(FileNotFoundError) as nocwd:
        await start(["true"], cwd=tmp_path / "missing")
    assert nocwd.value.filename == str(tmp_path / "missing")


async def test_bad_arguments_are_refused_before_anything_starts(front: Front) -> None:
    for args, options, error in [
        ([], {}, ValueError),
        (["a\0b"], {}, ValueError),
        (["true"], {"timeout": 0}, ValueError),
        (["true"], {"timeout": -1}, ValueError),
        (["true"], {"stderr": "sideways"}, ValueError),
        (["true"], {"max_output_size": -1}, ValueError),
        (["cat"], {"input": 42}, TypeError),
    ]:
        with pytest.raises(error):
            await front.run(args, **options)
    for options, error in [
        ({"chunk_size": 0}, ValueError),
        ({"chunk_size": -1}, ValueError),
        ({"chunk_size": True}, TypeError),
        ({"chunk_size": 1.5}, TypeError),
        ({"chunk_size": "10"}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"input": 42}, TypeError),
    ]:
        with pytest.raises(error):
            front.stream(["cat"], **options)  # refused by the call, even where the child starts later
    with pytest.raises(ValueError):
        await front.spawn(["a\0b"])
