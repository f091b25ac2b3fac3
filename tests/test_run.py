"""run(): output capture, input of every kind, stderr modes, text mode,
check/timeout/output limit, Result and Stats, cwd/env, and the
process-tree rule as run() users see it."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import io
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fork_server_fds, open_fds
from procs import pid_gone, read_fifo_line, silent_pipe

import netrunner
import netrunner.aio

MiB = 1 << 20
NOT_OPEN = 1 << 20  # above any RLIMIT_NOFILE: never an open fd


# ----------------------------------------------------------------- helpers


# ------------------------------------------------------------------ capture
def test_stdout_and_stderr_captured_separately() -> None:
    result = netrunner.run(["sh", "-c", "echo out; echo err >&2; echo out2; exit 0"])
    assert result.returncode == 0
    assert result.stdout == b"out\nout2\n"
    assert result.stderr == b"err\n"


def test_exit_code_is_returned_not_raised() -> None:
    result = netrunner.run(["sh", "-c", "echo partial; exit 7"])
    assert result.returncode == 7
    assert result.stdout == b"partial\n"


def test_args_may_be_bytes_and_pathlike(tmp_path: Path) -> None:
    (tmp_path / "file with space").write_bytes(b"content")
    result = netrunner.run([b"cat", tmp_path / "file with space"])
    assert result.stdout == b"content"
    result = netrunner.run(("printf", "%s|", "a b", b"\xff", ""))
    assert result.stdout == b"a b|\xff||"


def test_stdin_is_devnull_without_input() -> None:
    """Without input the child does not inherit our stdin (it reads EOF)."""
    result = netrunner.run(["cat"], timeout=30)
    assert result.returncode == 0
    assert result.stdout == b""


# ------------------------------------------------------------- stdout modes
def test_inherited_stdout_reaches_the_owners_fd_1_live(tmp_path: Path) -> None:
    # "You cannot watch make live": with stdout="inherit" the child writes
    # to the owner's own fd 1 (here a file the owner's stdout points to),
    # and Result.stdout is None.  The owner is a separate interpreter so
    # its fd 1 can be a file without touching pytest's.
    out = tmp_path / "owner-stdout"
    script = (
        "import netrunner, sys\n"
        "r = netrunner.run(['sh', '-c', 'echo live; echo err >&2'], stdout='inherit')\n"
        "sys.stderr.write(repr((r.stdout, r.stderr, r.returncode)))\n"
    )
    with open(out, "wb") as f:
        owner = subprocess.run(
            [sys.executable, "-c", script],
            stdout=f,
            stderr=subprocess.PIPE,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    assert out.read_bytes() == b"live\n"
    assert owner.stderr == b"(None, b'err\\n', 0)"


@pytest.mark.parametrize("mode", ["inherit", None])
def test_stdout_inherit(mode: Any, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    result = netrunner.run(["sh", "-c", STDERR_SCRIPT], stdout=mode)
    assert result.stdout is None
    assert result.stderr == b"err\n"
    assert capfd.readouterr().out == "out\nout2\n"


@pytest.mark.parametrize("mode", ["devnull", subprocess.DEVNULL])
def test_stdout_devnull(mode: Any, capfd: pytest.CaptureFixture[str]) -> None:
    result = netrunner.run(["sh", "-c", "x=$(readlink /proc/$$/fd/1); echo $x >&2"], stdout=mode, text=True)
    assert result.stdout is None
    assert result.stderr == "/dev/null\n"
    assert capfd.readouterr().out == ""


def test_stdout_and_stderr_to_a_file_object_and_an_fd(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w+b") as out, open(tmp_path / "err", "w+b") as err:
        result = netrunner.run(["sh", "-c", STDERR_SCRIPT], stdout=out, stderr=err.fileno(), check=True)
        assert (result.stdout, result.stderr) == (None, None)
        assert (tmp_path / "out").read_bytes() == b"out\nout2\n"
        assert (tmp_path / "err").read_bytes() == b"err\n"


def test_stdout_to_a_pipe_we_read_and_the_child_is_reaped_before_eof() -> None:
    r, w = os.pipe()
    try:
        result = netrunner.run(["sh", "-c", "echo through"], stdout=w, timeout=30)
        os.close(w)
        w = -1
        assert result.stdout is None and result.returncode == 0
        assert os.read(r, 100) == b"through\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_stdout_to_a_closed_fd_is_ebadf_before_anything_starts() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        netrunner.run(["true"], stdout=w)
    assert info.value.errno == errno.EBADF


def test_timeout_with_stdout_elsewhere_reports_none_for_it() -> None:
    with pytest.raises(netrunner.TimeoutExpired) as info:
        netrunner.run(["sleep", "30"], stdout="devnull", timeout=0.5, kill_timeout=0)
    assert info.value.stdout is None


# ------------------------------------------------------------------ pass_fds
# The child writes its number to each fd named in argv, then prints which
# of its fds are pipes: what it was given, nothing else (no error pipe, no
# leaked copy of a source).
PIPE_FDS = (
    "import os, sys\n"
    "for a in sys.argv[1:]: os.write(int(a), a.encode() + b' ')\n"
    "fds = [int(fd) for fd in os.listdir('/proc/self/fd')]\n"
    "pipes = []\n"
    "for fd in fds:\n"
    "    try:\n"
    "        if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'): pipes.append(fd)\n"
    "    except OSError: pass\n"
    "print(sorted(pipes), os.getcwd())\n"
)


def test_pass_fds_keep_their_numbers_and_every_other_fd_stays_closed() -> None:
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    try:
        result = netrunner.run([sys.executable, "-c", PIPE_FDS, str(w)], pass_fds=[w], check=True, text=True)
        os.close(w)
        w = -1
        assert os.read(r, 100) == f"{result.args[-1]} ".encode()
        assert result.stdout.startswith(f"[1, 2, {result.args[-1]}]")  # (stdin is /dev/null)
    finally:
        for fd in (r, w, other_r, other_w):
            if fd >= 0:
                os.close(fd)


PASS_MANY_OWNER = """
import os, sys, netrunner
r, w = os.pipe()
open_now = {int(fd) for fd in os.listdir("/proc/self/fd")}
# Every free number 3..70 gets a copy of w: the targets collide with whatever
# numbers the shepherd received them on, its error pipe and the cwd fd.
targets = [n for n in range(3, 71) if n not in open_now]
for n in targets:
    os.dup2(w, n, inheritable=False)
os.close(w)
child = [sys.executable, "-c", sys.argv[1], *map(str, targets)]
result = netrunner.run(child, pass_fds=targets, cwd="sub", check=True, text=True)
for n in targets:
    os.close(n)
got = b""
while chunk := os.read(r, 65536):
    got += chunk
print(sorted(map(int, got.split())) == targets)
print(result.stdout == f"{sorted([1, 2, *targets])} {os.path.abspath('sub')}\\n" or result.stdout)
"""


def test_many_pass_fds_whose_numbers_collide_with_the_shepherds_own(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    owner = subprocess.run(
        [sys.executable, "-c", PASS_MANY_OWNER, PIPE_FDS],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert owner.returncode == 0, owner.stderr.decode()
    assert owner.stdout.decode() == "True\nTrue\n"


@pytest.mark.parametrize(
    ("value", "error", "why"),
    [
        ([1], ValueError, "stdin, stdout or stderr"),
        ([2], ValueError, "stdin, stdout or stderr"),
        ([NOT_OPEN], OSError, "Bad file descriptor"),
        ("3", TypeError, "pass_fds must be"),
        ([3.0], TypeError, "pass_fds must hold ints"),
        (5, TypeError, "pass_fds must be"),
    ],
)
def test_bad_pass_fds_are_refused_before_anything_starts(value: Any, error: type[Exception], why: str) -> None:
    with pytest.raises(error, match=why):
        netrunner.run(["true"], pass_fds=value)


def test_a_pass_fd_given_twice_is_refused() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="duplicate"):
            netrunner.run(["true"], pass_fds=[w, w])
    finally:
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------- shell
def test_shell_runs_a_command_line_with_bin_sh_on_every_front_end() -> None:
    line = "echo $0 | tr a-z A-Z; echo two >&2"
    result = netrunner.run(line, shell=True)
    assert (result.args, result.stdout, result.stderr) == (line, b"/BIN/SH\n", b"two\n")
    assert netrunner.run(b"exit 3", shell=True).returncode == 3
    assert b"".join(netrunner.stream("echo streamed", shell=True)) == b"streamed\n"
    with netrunner.spawn("read x; echo got $x", shell=True) as p:
        p.write(b"it\n")
        p.close_stdin()
        assert p.read() == b"got it\n"
        assert p.wait(timeout=30) == 0

    async def main() -> bytes:
        return (await netrunner.aio.run("echo awaited", shell=True)).stdout

    assert asyncio.run(main()) == b"awaited\n"


def test_shell_with_a_sequence_takes_the_rest_as_dollar_0_and_on() -> None:
    # subprocess's rule: [command line, $0, $1, ...]
    assert netrunner.run(['echo "$0-$1"', "zero", "one"], shell=True).stdout == b"zero-one\n"


def test_a_single_string_without_shell_is_a_type_error_that_names_shell() -> None:
    with pytest.raises(TypeError, match="shell=True"):
        netrunner.run("echo hi")


@pytest.mark.parametrize(
    ("args", "error", "why"),
    [(Path("/bin/true"), TypeError, "path-like"), ([], ValueError, "empty"), (3, TypeError, "with shell=True")],
)
def test_shell_refuses_what_subprocess_refuses(args: Any, error: type[Exception], why: str) -> None:
    with pytest.raises(error, match=why):
        netrunner.run(args, shell=True)


def test_shell_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="shell must be a bool"):
        netrunner.run("true", shell="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------- stderr modes
STDERR_SCRIPT = "echo out; echo err >&2; echo out2"


@pytest.mark.parametrize("mode", ["pipe", subprocess.PIPE])
def test_stderr_pipe(mode: Any, capfd: pytest.CaptureFixture[bytes]) -> None:
    result = netrunner.run(["sh", "-c", STDERR_SCRIPT], stderr=mode)
    assert result.stdout == b"out\nout2\n"
    assert result.stderr == b"err\n"
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("mode", ["stdout", subprocess.STDOUT])
def test_stderr_merged_into_stdout(mode: Any, capfd: pytest.CaptureFixture[bytes]) -> None:
    result = netrunner.run(["sh", "-c", STDERR_SCRIPT], stderr=mode)
    # Same pipe, so the order of the writes is kept.
    assert result.stdout == b"out\nerr\nout2\n"
    assert result.stderr is None
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("mode", ["devnull", subprocess.DEVNULL])
def test_stderr_devnull(mode: Any, capfd: pytest.CaptureFixture[bytes]) -> None:
    result = netrunner.run(["sh", "-c", STDERR_SCRIPT + "; readlink /proc/self/fd/2"], stderr=mode)
    assert result.stdout == b"out\nout2\n/dev/null\n"
    assert result.stderr is None
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("mode", ["inherit", None])
def test_stderr_inherit(mode: Any, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    result = netrunner.run(["sh", "-c", STDERR_SCRIPT], stderr=mode)
    assert result.stdout == b"out\nout2\n"
    assert result.stderr is None
    captured = capfd.readouterr()
    assert captured.err == "err\n"  # went to our own fd 2
    assert captured.out == ""  # stdout was captured, not inherited


def test_stderr_captured_completely_like_subprocess() -> None:
    """Below its bound, run() keeps all of stderr, as subprocess does."""
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i >&2; i=$((i+1)); done"
    ours = netrunner.run(["sh", "-c", script])
    theirs = subprocess.run(["sh", "-c", script], capture_output=True)
    assert ours.stderr == theirs.stderr
    assert len(ours.stderr) > 20000


# --------------------------------------------------------------- text mode
NEWLINES = r"printf 'a\r\nb\rc\nd'"


def test_text_mode_matches_subprocess_universal_newlines() -> None:
    theirs = subprocess.run(["sh", "-c", NEWLINES + r"; printf 'x\r\ny\r' >&2"], capture_output=True, text=True)
    ours = netrunner.run(["sh", "-c", NEWLINES + r"; printf 'x\r\ny\r' >&2"], text=True)
    assert isinstance(ours.stdout, str) and isinstance(ours.stderr, str)
    assert ours.stdout == theirs.stdout == "a\nb\nc\nd"
    assert ours.stderr == theirs.stderr == "x\ny\n"


def test_bytes_mode_keeps_newlines_untouched() -> None:
    assert netrunner.run(["sh", "-c", NEWLINES]).stdout == b"a\r\nb\rc\nd"


def test_encoding_implies_text() -> None:
    result = netrunner.run(["printf", r"caf\351\r\n"], encoding="latin-1")
    assert result.stdout == "café\n"
    assert isinstance(result.stderr, str)


def test_errors_implies_text_and_is_applied() -> None:
    result = netrunner.run(["printf", r"\377ok"], errors="replace")
    assert result.stdout == "\ufffdok"
    result = netrunner.run(["printf", r"\377ok"], errors="surrogateescape")
    assert result.stdout == "\udcffok"


def test_text_default_encoding_is_utf8() -> None:
    result = netrunner.run(["printf", r"\303\251t\303\251"], text=True)
    assert result.stdout == "été"


def test_text_strict_decoding_error_raises_like_subprocess() -> None:
    with pytest.raises(UnicodeDecodeError):
        subprocess.run(["printf", r"\377"], capture_output=True, text=True)
    with pytest.raises(UnicodeDecodeError):
        netrunner.run(["printf", r"\377"], text=True)


def test_str_input_encoded_with_encoding() -> None:
    assert netrunner.run(["cat"], input="é").stdout == b"\xc3\xa9"  # UTF-8 by default
    assert netrunner.run(["cat"], input="é", encoding="latin-1").stdout == "é"
    assert netrunner.run(["od", "-An", "-tx1"], input="é", encoding="latin-1").stdout.split() == ["e9"]
    assert netrunner.run(["cat"], input="hé\n", text=True).stdout == "hé\n"


# ----------------------------------------------------------------- input
def test_input_bytes() -> None:
    assert netrunner.run(["cat"], input=b"hello").stdout == b"hello"


def test_input_bytearray_and_memoryview() -> None:
    assert netrunner.run(["cat"], input=bytearray(b"abc")).stdout == b"abc"
    assert netrunner.run(["cat"], input=memoryview(b"xyzw")[1:3]).stdout == b"yz"


def test_input_empty_bytes_gives_eof() -> None:
    result = netrunner.run(["cat"], input=b"", timeout=30)
    assert result.stdout == b""
    assert result.returncode == 0


def test_input_iterable_of_bytes() -> None:
    assert netrunner.run(["cat"], input=[b"one ", b"", b"two ", bytearray(b"three")]).stdout == b"one two three"


def test_input_generator_many_chunks() -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(2000):
            yield b"%05d\n" % i

    result = netrunner.run(["cat"], input=chunks())
    assert result.stdout == b"".join(b"%05d\n" % i for i in range(2000))
    assert result.stats.bytes_in == 2000 * 6


def test_input_binary_file(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 123)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        result = netrunner.run(["cat"], input=f)
    assert result.stdout == data


def test_input_bytesio() -> None:
    assert netrunner.run(["wc", "-c"], input=io.BytesIO(b"x" * 12345)).stdout.strip() == b"12345"


def test_input_nul_bytes_and_8mib_both_ways() -> None:
    data = (bytes(range(256)) * (8 * MiB // 256)) + b"\0\0tail\0"
    assert data.count(b"\0") > 32000
    result = netrunner.run(["cat"], input=data, timeout=60)
    assert result.returncode == 0
    assert len(result.stdout) == len(data)
    assert result.stdout == data
    assert result.stats.bytes_in == len(data)
    assert result.stats.bytes_out == len(data)


def test_input_larger_than_pipe_to_child_that_reads_it_late() -> None:
    """Input is written while output is read: a filter that produces
    output before reading everything cannot deadlock."""
    data = os.urandom(4 * MiB)
    script = "head -c 2000000 /dev/zero; cat"
    result = netrunner.run(["sh", "-c", script], input=data, timeout=60)
    assert result.stdout == bytes(2000000) + data


def test_input_to_child_that_never_reads_is_not_an_error() -> None:
    """Like communicate(): a child that exits without reading stdin is fine."""
    result = netrunner.run(["sh", "-c", "echo done"], input=b"x" * (4 * MiB), timeout=60)
    assert result.returncode == 0
    assert result.stdout == b"done\n"


def test_nul_bytes_in_output() -> None:
    assert netrunner.run(["printf", r"a\000b\000"]).stdout == b"a\0b\0"


def test_input_iterable_that_raises_propagates_and_child_is_gone(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    seen: list[int] = []

    class Boom(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield b"first chunk\n"
        seen.append(int(read_fifo_line(fifo, 20)))
        raise Boom("input source failed")

    started = time.monotonic()
    with pytest.raises(Boom):
        netrunner.run(["sh", "-c", 'echo $$ > "$1"; exec cat', "sh", str(fifo)], input=chunks(), timeout=60)
    assert time.monotonic() - started < 10
    (pid,) = seen
    assert pid_gone(pid, within=5), "the child outlived the exception"


def test_input_chunk_of_wrong_type_raises_and_child_is_gone() -> None:
    def chunks() -> Iterator[Any]:
        yield b"ok"
        yield 42

    with pytest.raises(TypeError):
        netrunner.run(["cat"], input=chunks(), timeout=60)


# --------------------------------------- input that may block: a pipe, a socket
@pytest.mark.parametrize("front", ["run", "stream"])
def test_a_silent_input_pipe_does_not_defeat_the_timeout(front: str) -> None:
    # The input's writer stays open and says nothing: reading it in the
    # caller's thread blocked past the timeout (still blocked at 10 s with
    # timeout=1).  It is now read only when poll says it is readable.
    timeout, kill_timeout = 1.0, 0.5
    with silent_pipe() as quiet:
        started = time.monotonic()
        with pytest.raises(netrunner.TimeoutExpired):
            if front == "run":
                netrunner.run(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout)
            else:
                for _ in netrunner.stream(["cat"], input=quiet, timeout=timeout, kill_timeout=kill_timeout):
                    pass
        elapsed = time.monotonic() - started
    assert elapsed <= timeout + kill_timeout + 0.5, f"took {elapsed:.2f} s"


def test_a_child_that_ends_without_reading_a_silent_input_pipe_returns_at_once() -> None:
    # No timeout at all: the child's end is the end, whatever the input does.
    with silent_pipe() as quiet:
        started = time.monotonic()
        result = netrunner.run(["sh", "-c", "echo done"], input=quiet)
        elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (0, b"done\n")
    assert elapsed < 5, f"took {elapsed:.2f} s"


def test_input_from_a_pipe_and_a_socket_written_meanwhile_arrives_whole() -> None:
    data = os.urandom(3 * MiB)
    r, w = os.pipe()
    ours, theirs = socket.socketpair()

    def write_both() -> None:
        with os.fdopen(w, "wb") as out:
            for i in range(0, len(data), 100_000):
                out.write(data[i : i + 100_000])
                out.flush()
        with theirs:
            theirs.sendall(data)

    writer = threading.Thread(target=write_both)
    writer.start()
    try:
        with os.fdopen(r, "rb") as pipe_in:
            assert netrunner.run(["cat"], input=pipe_in, timeout=60).stdout == data
        with ours, ours.makefile("rb") as socket_in:
            assert netrunner.run(["cat"], input=socket_in, timeout=60).stdout == data
    finally:
        writer.join()


# ------------------------------------------------------------ stderr flood
def test_stderr_flood_while_stdout_produced() -> None:
    script = "i=0; while [ $i -lt 50 ]; do head -c 100000 /dev/zero >&2; echo out-$i; i=$((i+1)); done"
    result = netrunner.run(["sh", "-c", script], timeout=60)
    assert result.returncode == 0
    assert result.stdout == b"".join(b"out-%d\n" % i for i in range(50))
    assert len(result.stderr) == 5_000_000
    assert result.stats.bytes_err == 5_000_000


def test_stderr_flood_then_stdout() -> None:
    result = netrunner.run(["sh", "-c", "head -c 5000000 /dev/urandom >&2; echo done"], timeout=60)
    assert result.stdout == b"done\n"
    assert len(result.stderr) == 5_000_000


# ------------------------------------------------- stderr capture bounded
def _seq(n: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(1, n + 1))


def _captured(front: str, args: list[str], **options: Any) -> tuple[bytes, bytes, netrunner.Stats]:
    """(stdout, stderr, stats) of ``args`` run through ``front``."""
    from netrunner import aio

    if front == "run":
        r = netrunner.run(args, timeout=120, **options)
        return r.stdout, r.stderr, r.stats
    if front == "aio.run":
        r = asyncio.run(aio.run(args, timeout=120, **options))
        return r.stdout, r.stderr, r.stats
    if front == "stream":
        s = netrunner.stream(args, timeout=120, **options)
        out = b"".join(s)
        assert s.stderr is not None and s.stats is not None
        return out, s.stderr, s.stats

    async def consume() -> tuple[bytes, bytes, netrunner.Stats]:
        s = aio.stream(args, timeout=120, **options)
        out = b"".join([chunk async for chunk in s])
        assert s.stderr is not None and s.stats is not None
        return out, s.stderr, s.stats

    return asyncio.run(consume())


@pytest.mark.parametrize("front", ["run", "aio.run", "stream", "aio.stream"])
def test_captured_stderr_keeps_its_last_64_mib_and_counts_the_rest(front: str) -> None:
    # 64 MiB of zeros, then 100000 numbered lines: more than the default
    # bound, so the kept tail is the end of the zeros and every line.
    lines = _seq(100000)
    script = "head -c 67108864 /dev/zero >&2; seq 1 100000 >&2; echo out"
    out, err, stats = _captured(front, ["sh", "-c", script])
    assert out == b"out\n"
    assert len(err) == 64 * MiB
    assert err.endswith(lines) and err.count(0) == 64 * MiB - len(lines)
    assert stats.stderr_dropped == len(lines)
    assert stats.bytes_err == 64 * MiB + len(lines)


@pytest.mark.parametrize("front", ["run", "aio.run"])
def test_max_output_size_bounds_captured_stderr_too(front: str) -> None:
    lines = _seq(400000)
    out, err, stats = _captured(front, ["sh", "-c", "seq 1 400000 >&2; echo out"], max_output_size=MiB)
    assert out == b"out\n"
    assert err == lines[-MiB:]
    assert stats.stderr_dropped == len(lines) - MiB
    assert stats.bytes_err == len(lines)


@pytest.mark.parametrize("bound", [None, MiB])
def test_a_400_mb_stderr_flood_leaves_the_owner_in_bounded_memory(bound: int | None) -> None:
    # The owner is a Python process of its own, so its peak RSS is its own
    # (this one's has seen everything the suite did).  Before the bound it
    # peaked at ~785 MiB; now the tail (64 MiB, or max_output_size) plus
    # one copy of it to return.
    code = (
        "import resource, sys, netrunner\n"
        "bound = eval(sys.argv[1])\n"
        "r = netrunner.run(['sh', '-c', 'head -c 400000000 /dev/zero >&2'], max_output_size=bound, timeout=120)\n"
        "dropped = getattr(r.stats, 'stderr_dropped', -1)\n"
        "print(len(r.stderr), dropped, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    src = str(Path(netrunner.__file__).resolve().parents[1])
    owner = netrunner.run(
        [sys.executable, "-c", code, repr(bound)],
        env={**os.environ, "PYTHONPATH": src},
        timeout=180,
        check=True,
    )
    kept, dropped, peak = map(int, owner.stdout.split())
    tail = 64 * MiB if bound is None else bound
    # The interpreter and netrunner take ~25 MiB; allow 64 MiB on top of
    # the two copies of the tail (400 MB would be far above either bound).
    assert peak < 2 * tail + 64 * MiB, f"owner peaked at {peak / MiB:.0f} MiB"
    assert (kept, dropped) == (tail, 400_000_000 - tail)


# ------------------------------------------------------------------- check
def test_check_raises_calledprocesserror_with_stderr_tail() -> None:
    script = 'head -c 20000 /dev/zero | tr "\\0" x >&2; echo; echo "the real reason" >&2; echo out; exit 3'
    with pytest.raises(netrunner.CalledProcessError) as info:
        netrunner.run(["sh", "-c", script], check=True)
    err = info.value
    assert isinstance(err, subprocess.CalledProcessError)
    assert isinstance(err, netrunner.NetRunnerError)
    assert err.returncode == 3
    assert err.cmd == ["sh", "-c", script]
    assert err.stdout == err.output == b"\nout\n"
    assert err.stderr.endswith(b"the real reason\n")
    message = str(err)
    assert "exit status 3" in message
    assert "the real reason" in message
    # The last 8 KiB of stderr are in the message.
    assert ("x" * 8000) in message


def test_check_with_text_gives_str_output() -> None:
    with pytest.raises(netrunner.CalledProcessError) as info:
        netrunner.run(["sh", "-c", "echo o; echo e >&2; exit 1"], check=True, text=True)
    assert info.value.stdout == "o\n"
    assert info.value.stderr == "e\n"


def test_check_on_signal_death() -> None:
    with pytest.raises(netrunner.CalledProcessError) as info:
        netrunner.run(["sh", "-c", "kill -TERM $$"], check=True)
    assert info.value.returncode == -signal.SIGTERM
    assert "SIGTERM" in str(info.value)


def test_check_success_returns_result() -> None:
    result = netrunner.run(["sh", "-c", "echo fine"], check=True)
    assert result.stdout == b"fine\n"


def test_check_returncode_method() -> None:
    result = netrunner.run(["sh", "-c", "exit 4"])
    with pytest.raises(netrunner.CalledProcessError) as info:
        result.check_returncode()
    assert info.value.returncode == 4
    netrunner.run(["true"]).check_returncode()


# -------------------------------------------------------------- returncode
def test_returncode_negative_for_signal() -> None:
    assert netrunner.run(["sh", "-c", "kill -TERM $$"]).returncode == -signal.SIGTERM
    assert netrunner.run(["sh", "-c", "kill -USR1 $$"]).returncode == -signal.SIGUSR1


def test_exit_137_is_not_sigkill() -> None:
    exited = netrunner.run(["sh", "-c", "exit 137"])
    killed = netrunner.run(["sh", "-c", "kill -KILL $$"])
    assert exited.returncode == 137
    assert killed.returncode == -signal.SIGKILL
    assert exited.stats.returncode == 137
    assert killed.stats.returncode == -9


def test_exit_codes_up_to_255() -> None:
    for code in (0, 1, 2, 126, 127, 128, 255):
        assert netrunner.run(["sh", "-c", f"exit {code}"]).returncode == code


# ----------------------------------------------------------------- timeout
def test_timeout_raises_with_partial_output() -> None:
    script = "echo partial; echo warn >&2; exec sleep 60"
    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        netrunner.run(["sh", "-c", script], timeout=0.5, kill_timeout=0.5)
    elapsed = time.monotonic() - started
    err = info.value
    assert isinstance(err, subprocess.TimeoutExpired)
    assert isinstance(err, netrunner.NetRunnerError)
    assert err.timeout == 0.5
    assert err.cmd == ["sh", "-c", script]
    assert err.stdout == err.output == b"partial\n"
    assert err.stderr == b"warn\n"
    assert elapsed < 0.5 + 0.5 + 0.5


def test_timeout_partial_output_in_text_mode_is_bytes() -> None:
    """As subprocess: partial output is bytes even with text=True -- it may
    end inside a multi-byte character, which must not turn the timeout
    into a UnicodeDecodeError."""
    with pytest.raises(netrunner.TimeoutExpired) as info:
        netrunner.run(["sh", "-c", r"printf 'a\303'; printf '\303' >&2; exec sleep 60"], timeout=0.3, text=True)
    assert info.value.stdout == b"a\xc3"
    assert info.value.stderr == b"\xc3"


def test_timeout_with_term_ignoring_grandchild_holding_pipes(tmp_path: Path) -> None:
    """The promise: back within timeout + kill_timeout + 0.5 s even when a
    TERM-ignoring grandchild keeps stdout open, and the whole tree is gone."""
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    script = f'trap "" TERM; (trap "" TERM; echo ready > {fifo}; exec sleep 60) & echo $$ $!; sleep 60'
    timeout, kill_timeout = 0.5, 0.5

    def until_traps_are_set() -> Iterator[bytes]:
        read_fifo_line(fifo, 15)  # run() cannot time out while its input blocks
        yield b""

    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        netrunner.run(["sh", "-c", script], input=until_traps_are_set(), timeout=timeout, kill_timeout=kill_timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + kill_timeout + 0.5
    child, grandchild = (int(x) for x in info.value.stdout.split())
    assert pid_gone(child, within=2)
    assert pid_gone(grandchild, within=2)


def test_timeout_not_hit_returns_normally() -> None:
    result = netrunner.run(["sh", "-c", "echo quick"], timeout=30)
    assert result.returncode == 0
    assert result.stdout == b"quick\n"


def test_timeout_child_that_exits_on_term_is_not_waited_for_kill_timeout() -> None:
    """SIGTERM first: a child that obeys it does not cost kill_timeout."""
    started = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired):
        netrunner.run(["sleep", "60"], timeout=0.3, kill_timeout=30)
    assert time.monotonic() - started < 10


# ------------------------------------------------------------ output limit
def test_max_output_size_keeps_first_bytes() -> None:
    limit = 100_000
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        netrunner.run(["yes", "abcdefgh"], max_output_size=limit, timeout=60)
    err = info.value
    assert isinstance(err, netrunner.NetRunnerError)
    assert err.stdout == (b"abcdefgh\n" * (limit // 9 + 1))[:limit]


def test_max_output_size_exact_size_is_allowed() -> None:
    result = netrunner.run(["head", "-c", "1000", "/dev/zero"], max_output_size=1000)
    assert result.stdout == bytes(1000)
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        netrunner.run(["head", "-c", "1001", "/dev/zero"], max_output_size=1000)
    assert info.value.stdout == bytes(1000)


def test_max_output_size_in_text_mode_keeps_bytes() -> None:
    """.stdout holds the first N *bytes*, even when they end inside a
    multi-byte character in text mode."""
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        netrunner.run(["yes", "\u00e9"], max_output_size=4, text=True, timeout=60)
    assert info.value.stdout == b"\xc3\xa9\n\xc3"


def test_max_output_size_zero() -> None:
    assert netrunner.run(["true"], max_output_size=0).stdout == b""
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        netrunner.run(["echo", "x"], max_output_size=0)
    assert info.value.stdout == b""


def test_max_output_size_kills_the_group(tmp_path: Path) -> None:
    """A producer that would run forever is stopped, children included."""
    script = "sleep 60 & echo $!; exec yes"
    with pytest.raises(netrunner.OutputLimitExceeded) as info:
        netrunner.run(["sh", "-c", script], max_output_size=1 << 16, timeout=60)
    background = int(info.value.stdout.split(b"\n", 1)[0])
    assert pid_gone(background, within=5)


# ------------------------------------------------------------ Result/Stats
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


def test_result_is_completedprocess_with_pid_and_stats() -> None:
    args = ["sh", "-c", "echo $$; cat; echo e >&2; exit 5"]
    started = time.monotonic()
    result = netrunner.run(args, input=b"abc")
    elapsed = time.monotonic() - started
    assert isinstance(result, subprocess.CompletedProcess)
    assert isinstance(result, netrunner.Result)
    assert result.args == args
    assert result.returncode == 5
    pid_line, rest = result.stdout.split(b"\n", 1)
    assert result.pid == int(pid_line)
    assert rest == b"abc"
    stats = result.stats
    assert isinstance(stats, netrunner.Stats)
    assert {f.name for f in dataclasses.fields(stats)} == STATS_FIELDS
    assert stats.returncode == 5
    assert stats.oom_kills is None and stats.memory_peak is None and not stats.oom_killed
    assert stats.bytes_in == 3
    assert stats.bytes_out == len(result.stdout)
    assert stats.bytes_err == 2
    assert stats.read_count >= 1
    assert stats.write_count >= 1
    assert 0 < stats.duration <= elapsed
    assert stats.user_time is not None and stats.user_time >= 0
    assert stats.system_time is not None and stats.system_time >= 0
    assert stats.max_rss is not None and stats.max_rss > 0


def test_stats_is_frozen() -> None:
    stats = netrunner.run(["true"]).stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.returncode = 1  # type: ignore[misc]


def test_stats_max_rss_in_bytes() -> None:
    code = "b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    result = netrunner.run([sys.executable, "-c", code], timeout=60)
    assert result.returncode == 0
    assert result.stats.max_rss is not None
    assert 64 * MiB <= result.stats.max_rss < 4096 * MiB


def test_stats_cpu_times_in_seconds() -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    result = netrunner.run([sys.executable, "-c", code], timeout=60)
    stats = result.stats
    assert stats.user_time is not None and stats.system_time is not None
    assert 0.2 <= stats.user_time + stats.system_time < 30


def test_rlimits_applied_in_child() -> None:
    result = netrunner.run(["sh", "-c", "ulimit -n"], rlimits={"RLIMIT_NOFILE": (64, 64)})
    assert result.stdout == b"64\n"
    result = netrunner.run(["sh", "-c", "ulimit -n"], rlimits={resource.RLIMIT_NOFILE: (48, 64)})
    assert result.stdout == b"48\n"


# ---------------------------------------------------------------- cwd / env
def test_cwd_honoured(tmp_path: Path) -> None:
    expected = os.fsencode(os.path.realpath(tmp_path)) + b"\n"
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=tmp_path).stdout == expected
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=str(tmp_path)).stdout == expected
    assert netrunner.run(["sh", "-c", "pwd -P"], cwd=os.fsencode(tmp_path)).stdout == expected


def test_relative_executable_resolved_against_cwd(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho tool-ran\n")
    script.chmod(0o755)
    assert netrunner.run(["./tool"], cwd=tmp_path).stdout == b"tool-ran\n"


def test_env_replaces_environment() -> None:
    result = netrunner.run(["env"], env={"FOO": "bar", "EMPTY": ""})
    assert sorted(result.stdout.splitlines()) == [b"EMPTY=", b"FOO=bar"]


def test_env_empty() -> None:
    assert netrunner.run(["env"], env={}).stdout == b""


def test_env_bytes_and_non_ascii() -> None:
    result = netrunner.run(["env"], env={b"RAW": b"\xff\xfe", "UNI": "é"})
    assert sorted(result.stdout.splitlines()) == [b"RAW=\xff\xfe", "UNI=é".encode()]


def test_env_default_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRUNNER_TEST_VALUE", "from-parent")
    result = netrunner.run(["sh", "-c", 'printf %s "$NETRUNNER_TEST_VALUE"'])
    assert result.stdout == b"from-parent"


# ------------------------------------------------------- the process tree
def test_background_grandchild_holding_stdout_does_not_block_run() -> None:
    started = time.monotonic()
    result = netrunner.run(["sh", "-c", "sleep 60 & echo hi"], timeout=30)
    assert time.monotonic() - started < 5
    assert result.returncode == 0
    assert result.stdout == b"hi\n"


def test_background_grandchild_is_killed_when_child_exits() -> None:
    result = netrunner.run(["sh", "-c", "sleep 60 & echo $!"], timeout=30)
    assert result.returncode == 0
    assert pid_gone(int(result.stdout), within=2)


def test_setsid_grandchild_is_killed_when_child_exits() -> None:
    """A grandchild that left the group (setsid) is still part of the tree."""
    result = netrunner.run(["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"], timeout=30)
    assert result.returncode == 0
    assert pid_gone(int(result.stdout), within=5)


def test_keyboard_interrupt_from_input_stops_child(tmp_path: Path) -> None:
    """Any exception leaving run() -- KeyboardInterrupt included -- stops
    the child before it propagates."""
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    seen: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b"x"
        seen.append(int(read_fifo_line(fifo, 20)))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        netrunner.run(["sh", "-c", 'echo $$ > "$1"; exec sleep 60', "sh", str(fifo)], input=chunks())
    (pid,) = seen
    assert pid_gone(pid, within=5)


def test_a_stderr_drain_cut_short_by_its_budget_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream lesson 61: force the slow path.  With a budget of one read a
    # pass, every pass over an 8 MiB stderr flood ends at the budget, and
    # only resuming on the next wake-up gets all of it (and stdout) in.
    from netrunner import _core

    monkeypatch.setattr(_core, "DRAIN_BUDGET", 1)
    calls = 0
    real = _core.ChildCore.drain_stderr

    def counted(self: Any) -> bool:
        nonlocal calls
        calls += 1
        return bool(real(self))

    monkeypatch.setattr(_core.ChildCore, "drain_stderr", counted)
    r = netrunner.run(["sh", "-c", "head -c 8388608 /dev/zero >&2; echo out"], timeout=60)
    assert (r.returncode, r.stdout, len(r.stderr)) == (0, b"out\n", 8 << 20)
    assert calls >= (8 << 20) // _core.READ_SIZE


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: netrunner.run(["false"], check=True), id="check"),
        pytest.param(lambda: netrunner.run(["sleep", "30"], timeout=0.2, kill_timeout=0.2), id="timeout"),
        pytest.param(lambda: netrunner.run(["yes"], max_output_size=1000), id="output-limit"),
    ],
)
def test_an_exception_from_run_holds_no_fd(call: Callable[[], object]) -> None:
    # The exception (and its traceback, which references run()'s frames) may
    # be kept for a long time by the caller: it must not keep the shepherd
    # socket or a pipe open with it.
    netrunner.run(["true"])  # the fork server and its spare exist already
    before = open_fds() - fork_server_fds()
    with pytest.raises(netrunner.NetRunnerError) as held:
        call()
    assert open_fds() - fork_server_fds() - before == set(), held.value


# ------------------------------------------------- the child's signal state
def test_a_child_that_signals_its_parent_keeps_its_shepherd() -> None:
    # The child's parent is its shepherd: a readiness signal to $PPID (as
    # daemons send) must not kill the shepherd, and so the child with it.
    script = "kill -USR1 $PPID; kill -USR2 $PPID; kill -ALRM $PPID; kill -PROF $PPID; echo alive"
    r = netrunner.run(["sh", "-c", script], timeout=30)
    assert (r.returncode, r.stdout) == (0, b"alive\n")


def test_the_child_starts_with_every_signal_at_its_default() -> None:
    # Nothing ignored (libc's own real-time signals 32 and 33 included,
    # which a posix_spawn'd starter leaves ignored) and nothing blocked,
    # whatever the owner and the shepherd ignore themselves.
    status = netrunner.run(["cat", "/proc/self/status"], timeout=30).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith(("SigIgn", "SigBlk")))
    assert fields == {"SigBlk": "0000000000000000", "SigIgn": "0000000000000000"}
    # And the signals the shepherd ignores for itself kill the child as usual.
    assert netrunner.run(["sh", "-c", "kill -USR1 $$; sleep 30"], timeout=30).returncode == -signal.SIGUSR1
