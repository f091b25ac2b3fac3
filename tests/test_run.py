"""run() of the blocking API only: what the other front ends do not share
or what is not about the front end (input from a pipe or socket, stderr's
bound in a separate owner, exit codes, Stats units, option forms, the
process tree, KeyboardInterrupt from the input, fds held by an exception).

Behaviour every front end shares (output capture, input of every kind,
stderr modes, text mode, check, timeout and output limit with their
bounds, exec errors, validation) is in test_behaviour_run.py, run for
sync, asyncio and trio."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import mmap
import os
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
from netrunner import _prefault

MiB = 1 << 20
NOT_OPEN = 1 << 20  # above any RLIMIT_NOFILE: never an open fd
STDERR_SCRIPT = "echo out; echo err >&2; echo out2"


# ------------------------------------------------------------------ stderr


def test_stderr_captured_completely_like_subprocess() -> None:
    """Below its bound, run() keeps all of stderr, as subprocess does."""
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i >&2; i=$((i+1)); done"
    ours = netrunner.run(["sh", "-c", script])
    theirs = subprocess.run(["sh", "-c", script], capture_output=True)
    assert ours.stderr == theirs.stderr
    assert len(ours.stderr) > 20000


# --------------------------------------- input that may block: a pipe, a socket


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


# ------------------------------------------------- stderr capture bounded


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


# ------------------------------------------- stdout capture, faulted ahead


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_populate_faults_in_the_range_without_writing_it() -> None:
    # What the collector relies on (netrunner._prefault): one call makes a
    # range of fresh memory resident (whole pages inside it only), and the
    # memory still reads as it was.
    with mmap.mmap(-1, 96 * MiB) as fresh:
        view = memoryview(fresh)
        _prefault.populate(view, 0, 0)  # (loads ctypes first: not counted)
        before = resident_bytes()
        faulted = _prefault.populate(view, MiB + 5, 65 * MiB + 5)
        grown = resident_bytes() - before
        view.release()
        if not faulted and _prefault._state == "off":
            pytest.skip("no MADV_POPULATE_WRITE here (Linux < 5.14) or no ctypes")
        assert faulted
        assert 63 * MiB <= grown <= 64 * MiB, f"{grown / MiB:.2f} MiB became resident"
        assert fresh[:].count(0) == len(fresh)  # nothing written


def test_a_big_capture_without_the_prefault_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where the prefault is unavailable (no ctypes, an old kernel) or fails,
    # the buffer grows by BytesIO's zero-fill alone, to the same bytes.
    data = os.urandom(40 * MiB + 3)
    monkeypatch.setattr(_prefault, "_state", "off")
    assert netrunner.run(["cat"], input=data, timeout=120).stdout == data
    monkeypatch.setattr(_prefault, "_state", "untried")
    monkeypatch.setattr(_prefault, "MADV_POPULATE_WRITE", -1)  # EINVAL: off from then on
    assert netrunner.run(["cat"], input=data, timeout=120).stdout == data
    assert _prefault._state == "off"


def test_a_256_mib_capture_peaks_at_its_size_in_a_fresh_owner() -> None:
    # Faulting in ahead must stay ahead by one step, not by BytesIO's whole
    # spare (12.5 %) or a second buffer: the owner's peak RSS is the output
    # plus the interpreter (~25 MiB) plus at most a few steps of 4 MiB.
    size = 256 * MiB
    code = (
        "import resource, sys, netrunner\n"
        "out = netrunner.run(['head', '-c', sys.argv[1], '/dev/zero'], timeout=120).stdout\n"
        "print(len(out), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    src = str(Path(netrunner.__file__).resolve().parents[1])
    owner = netrunner.run(
        [sys.executable, "-c", code, str(size)], env={**os.environ, "PYTHONPATH": src}, timeout=180, check=True
    )
    got, peak = map(int, owner.stdout.split())
    assert got == size
    assert peak < size + 48 * MiB, f"owner peaked at {peak / MiB:.0f} MiB for {size // MiB} MiB of output"


# ------------------------------------------------------------------- check


def test_check_returncode_method() -> None:
    result = netrunner.run(["sh", "-c", "exit 4"])
    with pytest.raises(netrunner.CalledProcessError) as info:
        result.check_returncode()
    assert info.value.returncode == 4
    netrunner.run(["true"]).check_returncode()


# -------------------------------------------------------------- returncode


def test_exit_codes_up_to_255() -> None:
    for code in (0, 1, 2, 126, 127, 128, 255):
        assert netrunner.run(["sh", "-c", f"exit {code}"]).returncode == code


# ------------------------------------------------------------ Result/Stats


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


def test_env_empty() -> None:
    assert netrunner.run(["env"], env={}).stdout == b""


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


def test_a_kept_output_limit_error_holds_its_output_not_the_read_buffer() -> None:
    """A service that keeps its failures (a log of the last errors) keeps
    each exception, its traceback and so the run's collector.  The
    collector's first read (up to 64 KiB) must not outlive the call: an
    ``OutputLimitExceeded`` with 100 bytes of output held ~72 KiB."""
    import gc
    import tracemalloc

    def failure() -> netrunner.OutputLimitExceeded:
        try:
            netrunner.run(["yes"], max_output_size=100)
        except netrunner.OutputLimitExceeded as exc:
            assert len(exc.stdout) == 100
            return exc
        raise AssertionError("no OutputLimitExceeded")

    failure()  # warm up: fork server, caches
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept = [failure() for _ in range(10)]
        gc.collect()
        per_error = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_error < 32 << 10, f"each kept OutputLimitExceeded holds {per_error / 1024:.1f} KiB"
