"""Black-box tests of the C shepherd, speaking its raw protocol.

Each test starts the binary itself (``spawn_helper``), so the shepherd or
fork server is our direct child: we reap it and check its exit status.  The
owner side is a plain socket plus the sans-IO decoder; nothing is mocked.
Every test runs twice: against the release binary and against an
ASan+UBSan build made once per session, which must leave no sanitizer log.

Synchronisation is by fds only (sockets, pipes, pidfds with deadlines);
``sleep N`` appears only inside child commands, meaning "runs long".
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from procs import SHEPHERD_SRC, cgroup_events, compile_c, frozen_cgroup

import netrunner
from netrunner import _launch
from netrunner import _opcodes as op
from netrunner._cgroup import mount_point
from netrunner._protocol import (
    Decoder,
    Event,
    Exited,
    SpawnFailed,
    SpawnRequest,
    Started,
    encode_signal,
    encode_spawn,
    encode_stop,
    frame,
)

PROMPT = 15.0  # generous upper bound for anything that should happen promptly
MS_SLACK = 0.005  # the shepherd's clock is CLOCK_MONOTONIC truncated to whole ms
SANITIZER_FLAGS = [
    "-std=c11",
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-Wall",
    "-Wextra",
    "-Werror",
]

# ------------------------------------------------------------------ binaries


def _build(tmp_path_factory: pytest.TempPathFactory, what: str, flags: list[str]) -> Path:
    """Compile shepherd.c with ``flags`` into a session temp dir."""
    out = tmp_path_factory.mktemp("shepherd") / "netrunner-shepherd"
    return compile_c(out, f"{what} shepherd", [*flags, str(SHEPHERD_SRC)])


@pytest.fixture(scope="session")
def asan_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shepherd built with ASan+UBSan, once per session."""
    return _build(tmp_path_factory, "ASan+UBSan", SANITIZER_FLAGS)


@pytest.fixture(scope="session")
def dynamic_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release build, but dynamically linked: valgrind cannot follow
    malloc inside a static libc (it reports glibc's own start-up)."""
    return _build(tmp_path_factory, "dynamic", ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror"])


@contextmanager
def shepherd_binary_swapped(binary: Path | None) -> Iterator[None]:
    """Run ``binary`` as the shepherd (None: the built one) inside the block,
    fork server included (restarted on the way in and out if it changes)."""
    previous = _launch.use_shepherd_binary(binary)
    try:
        yield
    finally:
        _launch.use_shepherd_binary(previous)


@pytest.fixture
def sanitized(asan_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make spawn_helper start the sanitizer build; fail if it logs anything."""
    logdir = tmp_path / "sanitizer-logs"
    logdir.mkdir()
    log = logdir / "san"
    monkeypatch.setenv("ASAN_OPTIONS", f"log_path={log}:detect_leaks=1")
    monkeypatch.setenv("UBSAN_OPTIONS", f"log_path={log}:halt_on_error=1:print_stacktrace=1")
    # Leaving the block lets a sanitized fork server go (and waits for it),
    # so its exit report is in the log before we look.
    with shepherd_binary_swapped(asan_binary):
        yield asan_binary
    reports = sorted(logdir.iterdir())
    if reports:
        text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in reports)
        pytest.fail(f"sanitizer reports from the shepherd:\n{text}", pytrace=False)


@pytest.fixture(params=["release", "asan"])
def variant(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The shepherd binary spawn_helper will start for this test."""
    if request.param == "release":
        with shepherd_binary_swapped(None):  # even if $NETRUNNER_SHEPHERD named another
            binary = Path(_launch.shepherd_binary())
            assert binary.is_file(), f"no release shepherd at {binary} (run tools/dev-build.sh)"
            yield binary
        return
    binary = request.getfixturevalue("sanitized")
    assert isinstance(binary, Path)
    yield binary


# ------------------------------------------------------------- small helpers


def readable(fd: int | socket.socket, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    return bool(ready)


def pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None if it is already gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def wait_dead(fd: int | None, timeout: float) -> bool:
    """True once the process behind ``fd`` has exited (None: already gone)."""
    return fd is None or readable(fd, timeout)


def proc_stat(pid: int) -> tuple[str, int, int, int]:
    """(state, ppid, pgrp, session) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def read_until(fd: int, lines: int | None, timeout: float = PROMPT) -> bytes:
    """Read from a (non-blocking) pipe until ``lines`` newlines have arrived
    or EOF (``lines=None``: to EOF); fail if the deadline passes first."""
    deadline = time.monotonic() + timeout
    out = b""
    while True:
        if lines is not None and out.count(b"\n") >= lines:
            return out
        assert readable(fd, deadline - time.monotonic()), f"pipe silent for {timeout} s; got {out!r}"
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return out
        out += chunk


def read_to_eof(fd: int, timeout: float = PROMPT) -> bytes:
    return read_until(fd, None, timeout)


def spawn_frame(
    argv: list[str],
    *,
    exe: list[str] | None = None,
    cwd: str | None = None,
    stdin: int = op.STDIO_PIPE,
    stdout: int = op.STDIO_PIPE,
    stderr: int = op.STDIO_PIPE,
    kill_timeout: float = 2.0,
    rlimits: list[tuple[int, int, int]] | None = None,
    cwd_fd: bool = False,
    cgroup: str | None = None,
) -> bytes:
    if exe is None:
        found = shutil.which(argv[0])
        assert found, argv[0]
        exe = [found]
    return encode_spawn(
        SpawnRequest(
            argv=[os.fsencode(a) for a in argv],
            env=[k + b"=" + v for k, v in os.environb.items()],
            executables=[os.fsencode(x) for x in exe],
            cwd=None if cwd is None else os.fsencode(cwd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            kill_timeout=kill_timeout,
            rlimits=rlimits or [],
            cwd_fd=cwd_fd,
            cgroup=None if cgroup is None else os.fsencode(cgroup),
        )
    )


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack("<HI", tag, len(value)) + value


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def raw_frame(opcode: int, payload: bytes = b"", reserved: int = 0) -> bytes:
    return struct.pack("<IHH", len(payload), opcode, reserved) + payload


# ------------------------------------------------------------------- owner


class Owner:
    """Our side of one shepherd's socket: send commands, decode events,
    keep every fd that arrives so none leaks, reap the shepherd if it is
    our child."""

    def __init__(self, sock: socket.socket, pid: int | None) -> None:
        self.sock = sock
        self.pid = pid
        self.pidfd = os.pidfd_open(pid) if pid is not None else None
        self.decoder = Decoder()
        self.events: deque[Event] = deque()
        self.eof = False
        self.fds: set[int] = set()
        self.status: int | None = None

    # -- sending
    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        if fds:
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def send_in_pieces(self, data: bytes, size: int = 1) -> None:
        for i in range(0, len(data), size):
            self.sock.sendall(data[i : i + size])

    def hang_up(self) -> None:
        self.sock.close()

    # -- receiving
    def _receive(self, timeout: float) -> None:
        if not readable(self.sock, timeout):
            return
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(4 * 8), socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            data, anc = b"", []
        fds = array.array("i")
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        self.fds.update(fds)
        self.decoder.add_fds(fds)
        if not data:
            self.eof = True
        else:
            self.events.extend(self.decoder.feed(data))

    def event(self, timeout: float = PROMPT) -> Event:
        deadline = time.monotonic() + timeout
        while not self.events:
            assert not self.eof, "the shepherd closed its socket instead of reporting"
            left = deadline - time.monotonic()
            assert left > 0, f"no frame from the shepherd within {timeout} s"
            self._receive(left)
        return self.events.popleft()

    def expect(self, kind: type, timeout: float = PROMPT) -> Event:
        event = self.event(timeout)
        assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
        return event

    def expect_eof(self, timeout: float = PROMPT) -> None:
        """The shepherd closes the socket, saying nothing more."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            assert left > 0, f"the shepherd kept its socket open for {timeout} s"
            self._receive(left)
        assert not self.events, f"unexpected frames: {list(self.events)}"
        assert not self.decoder.take_unclaimed_fds(), "fds arrived that no frame claimed"

    # -- fds
    def close_fd(self, fd: int | None) -> None:
        if fd is not None and fd in self.fds:
            self.fds.discard(fd)
            os.close(fd)

    # -- the shepherd process (when it is our child)
    def wait(self, timeout: float = PROMPT) -> int:
        assert self.pid is not None and self.pidfd is not None
        if self.status is None:
            assert readable(self.pidfd, timeout), f"shepherd {self.pid} still running after {timeout} s"
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def assert_clean_exit(self, timeout: float = PROMPT) -> None:
        status = self.wait(timeout)
        assert os.WIFEXITED(status), f"shepherd died: {describe(status)}"
        assert os.WEXITSTATUS(status) == 0, f"shepherd: {describe(status)}"

    def cleanup(self) -> None:
        for fd in list(self.fds):
            self.close_fd(fd)
        self.sock.close()
        try:
            if self.pid is not None and self.status is None:
                # Hang-up makes it stop its child (kill_timeout of our requests
                # is short); if it does not go, kill it and fail the test.
                if not readable(self.pidfd, PROMPT):  # type: ignore[arg-type]
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    pytest.fail(f"shepherd {self.pid} did not exit after hang-up")
                _, self.status = os.waitpid(self.pid, 0)
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def assert_killed_by(event: Event, sig: int) -> None:
    assert isinstance(event, Exited), event
    assert os.WIFSIGNALED(event.status), describe(event.status)
    assert os.WTERMSIG(event.status) == sig, describe(event.status)


def assert_exit_code(event: Event, code: int) -> None:
    assert isinstance(event, Exited), event
    assert os.WIFEXITED(event.status), describe(event.status)
    assert os.WEXITSTATUS(event.status) == code, describe(event.status)


@contextmanager
def direct_shepherd(umask: int | None = None) -> Iterator[Owner]:
    """One shepherd started directly (``--shepherd``), our child; with
    ``umask``, the shepherd starts with that umask (ours is restored)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    old = None if umask is None else os.umask(umask)
    try:
        pid = _launch.spawn_helper("--shepherd", theirs)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if old is not None:
            os.umask(old)
    owner = Owner(ours, pid)
    try:
        yield owner
    finally:
        owner.cleanup()


def pump(owner: Owner, started: Started, data: bytes, timeout: float = PROMPT) -> bytes:
    """Write ``data`` to the child's stdin (then close it) while reading its
    stdout to EOF; returns what was read."""
    assert started.stdin is not None and started.stdout is not None
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    out = bytearray()
    stdin: int | None = started.stdin
    while True:
        if stdin is not None and not view:
            owner.close_fd(stdin)
            stdin = None
        left = deadline - time.monotonic()
        assert left > 0, f"round trip stuck after {len(out)} of {len(data)} bytes"
        r, w, _ = select.select([started.stdout], [] if stdin is None else [stdin], [], left)
        if w:
            try:
                view = view[os.write(stdin, view[:65536]) :]  # type: ignore[arg-type]
            except BlockingIOError:
                pass
        if r:
            try:
                chunk = os.read(started.stdout, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return bytes(out)
            out += chunk


TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 30']


def start_ready(sh: Owner, argv: list[str], **options: float) -> Started:
    """Spawn ``argv`` (which prints "ready" once its traps are set) and wait
    for that line, so a signal sent next cannot beat the trap."""
    sh.send(spawn_frame(argv, **options))
    started = sh.expect(Started)
    assert isinstance(started, Started)
    assert read_until(started.stdout, 1) == b"ready\n"  # type: ignore[arg-type]
    return started


# ------------------------------------------------------------ direct shepherd


def test_cat_round_trip(variant: Path) -> None:
    with direct_shepherd() as sh:
        assert Path(f"/proc/{sh.pid}/exe").resolve() == variant.resolve()
        sh.send(spawn_frame(["cat"]))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        fds = (started.stdin, started.stdout, started.stderr)
        assert None not in fds and len(set(fds)) == 3
        # The child is the shepherd's own child and leads its own group.
        _state, ppid, pgrp, _sid = proc_stat(started.pid)
        assert (ppid, pgrp) == (sh.pid, started.pid)
        data = bytes(range(256)) * 2048 + b"\0 the end \0"
        assert pump(sh, started, data) == data
        assert read_to_eof(started.stderr) == b""  # type: ignore[arg-type]
        exited = sh.expect(Exited)
        assert_exit_code(exited, 0)
        assert isinstance(exited, Exited)
        assert exited.maxrss_kib > 0 and exited.utime_us >= 0 and exited.stime_us >= 0
        sh.expect_eof()
        sh.assert_clean_exit()


def test_spawn_frame_split_into_single_bytes(variant: Path) -> None:
    with direct_shepherd() as sh:
        sh.send_in_pieces(spawn_frame(["echo", "split", "ok"], stdin=op.STDIO_DEVNULL, stderr=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert started.stdin is None and started.stderr is None and started.stdout is not None
        assert read_to_eof(started.stdout) == b"split ok\n"
        assert_exit_code(sh.expect(Exited), 0)
        sh.expect_eof()
        sh.assert_clean_exit()


def test_stderr_merged_into_stdout(variant: Path) -> None:
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", "echo out; echo err >&2; exit 5"], stderr=op.STDIO_STDOUT))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert started.stderr is None
        sh.close_fd(started.stdin)
        assert read_to_eof(started.stdout) == b"out\nerr\n"  # type: ignore[arg-type]
        assert_exit_code(sh.expect(Exited), 5)
        sh.assert_clean_exit()


# Takes its signals with sigwait, not handlers: two signals that arrive
# together are then seen one at a time, lowest number first (SIGUSR1, then
# SIGTERM), where Python could run the TERM handler before the USR1
# handler's write.
SIGNAL_CHILD = r"""
import os, signal
wanted = {signal.SIGUSR1, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
os.write(1, b"ready\n")
while True:
    if signal.sigwait(wanted) == signal.SIGUSR1:
        os.write(1, b"usr1\n")
    else:
        os.write(1, b"term\n")
        os._exit(7)
"""


def test_signal_and_stop_coalesced_in_one_send(variant: Path) -> None:
    with direct_shepherd() as sh:
        started = start_ready(sh, [sys.executable, "-c", SIGNAL_CHILD], kill_timeout=30)
        # Both commands in one write: the shepherd must act on each of them.
        # A 30 s grace: only the SIGTERM of STOP can end the child promptly.
        sh.send(encode_signal(signal.SIGUSR1) + encode_stop(30))
        assert read_to_eof(started.stdout) == b"usr1\nterm\n"  # type: ignore[arg-type]
        assert_exit_code(sh.expect(Exited), 7)
        sh.expect_eof()
        sh.assert_clean_exit()


def test_commands_coalesced_with_the_spawn_request(variant: Path) -> None:
    """SPAWN and STOP(0) in one write: the STOP must not wait in the
    shepherd's buffer until more bytes happen to arrive."""
    with direct_shepherd() as sh:
        t0 = time.monotonic()
        sh.send(spawn_frame(["sleep", "30"], kill_timeout=30) + encode_stop(0))
        sh.expect(Started)
        assert_killed_by(sh.expect(Exited, timeout=PROMPT), signal.SIGKILL)
        assert time.monotonic() - t0 < PROMPT
        sh.expect_eof()
        sh.assert_clean_exit()


def test_signal_goes_to_the_child(variant: Path) -> None:
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sleep", "30"]))
        sh.expect(Started)
        sh.send(encode_signal(signal.SIGTERM))
        assert_killed_by(sh.expect(Exited), signal.SIGTERM)
        sh.expect_eof()
        sh.assert_clean_exit()


def test_stop_zero_kills_at_once(variant: Path) -> None:
    with direct_shepherd() as sh:
        start_ready(sh, TERM_IGNORING, kill_timeout=30)
        t0 = time.monotonic()
        sh.send(encode_stop(0))
        assert_killed_by(sh.expect(Exited), signal.SIGKILL)
        assert time.monotonic() - t0 < 10  # not the 30 s grace
        sh.expect_eof()
        sh.assert_clean_exit()


def test_stop_escalates_after_the_grace(variant: Path) -> None:
    with direct_shepherd() as sh:
        start_ready(sh, TERM_IGNORING, kill_timeout=30)
        t0 = time.monotonic()
        sh.send(encode_stop(0.3))
        assert_killed_by(sh.expect(Exited), signal.SIGKILL)
        # SIGTERM was ignored: it waited the grace (the shepherd counts whole ms).
        assert time.monotonic() - t0 >= 0.3 - MS_SLACK
        sh.expect_eof()
        sh.assert_clean_exit()


def _switches_and_cpu(pid: int) -> tuple[int, int]:
    """(voluntary context switches, utime + stime in ticks) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return switches, int(fields[11]) + int(fields[12])


def test_the_grace_before_sigkill_is_slept_not_polled(variant: Path) -> None:
    # Upstream lesson 46: the shepherd waits out the grace in one poll()
    # against a monotonic deadline.  A 100 ms polling loop would wake ten
    # times a second; a spin would burn the CPU.
    with direct_shepherd() as sh:
        assert sh.pid is not None
        start_ready(sh, TERM_IGNORING, kill_timeout=30)
        before = _switches_and_cpu(sh.pid)
        sh.send(encode_stop(1.0))
        assert_killed_by(sh.expect(Exited), signal.SIGKILL)
        after = _switches_and_cpu(sh.pid)  # still there: we reap it below
        sh.expect_eof()
        sh.assert_clean_exit()
    wakeups, ticks = after[0] - before[0], after[1] - before[1]
    assert wakeups <= 6, f"{wakeups} wake-ups during a 1 s grace"
    assert ticks <= 10, f"{ticks} clock ticks of CPU during a 1 s grace"


def fdinfo(fd: int) -> dict[str, str]:
    """/proc/self/fdinfo/FD as a dict."""
    lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_started_carries_a_pidfd_of_the_child(variant: Path) -> None:
    # FDMASK_PIDFD: the owner's own hold on the child, for when its shepherd
    # is lost or stops answering.  It names the child (not a pid that could
    # be reused), is close-on-exec, and turns readable when the child exits.
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sleep", "30"], stdin=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert started.pidfd is not None, "no pidfd in STARTED"
        assert started.pidfd not in (started.stdin, started.stdout, started.stderr)
        assert fdinfo(started.pidfd)["Pid"] == str(started.pid)
        assert fcntl.fcntl(started.pidfd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert not readable(started.pidfd, 0), "the pidfd says a running child exited"
        sh.send(encode_stop(0))
        assert_killed_by(sh.expect(Exited), signal.SIGKILL)
        assert readable(started.pidfd, 0), "the pidfd did not see the child exit"
        sh.expect_eof()
        sh.assert_clean_exit()


def test_hang_up_stops_a_term_ignoring_child(variant: Path) -> None:
    with direct_shepherd() as sh:
        started = start_ready(sh, TERM_IGNORING, kill_timeout=0.5)
        child = pidfd(started.pid)
        try:
            t0 = time.monotonic()
            sh.hang_up()
            assert wait_dead(child, PROMPT), "child survived its owner's hang-up"
            # TERM ignored -> kill_timeout, then SIGKILL (the shepherd counts whole ms)
            assert time.monotonic() - t0 >= 0.5 - MS_SLACK
        finally:
            if child is not None:
                os.close(child)
        sh.assert_clean_exit()


def test_hang_up_terminates_first(variant: Path) -> None:
    """Owner loss sends SIGTERM first: an obedient child goes at once, long
    before the (30 s) kill_timeout."""
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sleep", "30"], kill_timeout=30))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        child = pidfd(started.pid)
        try:
            sh.hang_up()
            assert wait_dead(child, 10), "SIGTERM did not end the child"
        finally:
            if child is not None:
                os.close(child)
        sh.assert_clean_exit(10)


def test_hang_up_before_any_request(variant: Path) -> None:
    with direct_shepherd() as sh:
        sh.hang_up()
        sh.assert_clean_exit()


def test_hang_up_in_the_middle_of_a_request(variant: Path) -> None:
    with direct_shepherd() as sh:
        request = spawn_frame(["cat"])
        sh.send(request[: len(request) // 2])
        sh.sock.shutdown(socket.SHUT_WR)
        # No child was started: at most a REQUEST failure, then EOF.
        expect_request_refused(sh)


OWNER_NONSENSE = {
    "garbage": (b"this is not a frame!", None),
    "all-ones": (b"\xff" * 12, None),
    "unknown-opcode": (raw_frame(99, u32(1)), None),
    "second-spawn": (raw_frame(op.OP_SPAWN, u32(1)), None),
    "shepherd-opcode": (raw_frame(op.OP_EXITED, u32(0)), None),
    "reserved-nonzero": (raw_frame(op.OP_SIGNAL, u32(signal.SIGCONT), reserved=1), None),
    "oversize-length": (struct.pack("<IHH", op.MAX_PAYLOAD + 1, op.OP_SIGNAL, 0), None),
    "short-signal": (raw_frame(op.OP_SIGNAL, b"\x12\x00"), None),
    "long-stop": (raw_frame(op.OP_STOP, u32(0) + u32(0)), None),
    "signal-zero": (raw_frame(op.OP_SIGNAL, u32(0)), None),
    "signal-too-big": (raw_frame(op.OP_SIGNAL, u32(1000)), None),
    "valid-frame-carrying-an-fd": (encode_signal(signal.SIGCONT), "fd"),
}


@pytest.mark.parametrize("nonsense", OWNER_NONSENSE.values(), ids=OWNER_NONSENSE.keys())
def test_nonsense_after_started_is_owner_loss(variant: Path, nonsense: tuple[bytes, str | None]) -> None:
    data, extra = nonsense
    with direct_shepherd() as sh:
        # A 30 s kill_timeout: only the SIGTERM of the owner-loss path can end
        # ``sleep`` promptly, so a prompt death shows it was taken.
        sh.send(spawn_frame(["sleep", "30"], kill_timeout=30))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        child = pidfd(started.pid)
        try:
            if extra == "fd":
                null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    sh.send(data, [null])
                finally:
                    os.close(null)
            else:
                sh.send(data)
            sh.expect_eof(10)  # no EXITED: the shepherd considers us gone
            assert wait_dead(child, 10), "child left running"
        finally:
            if child is not None:
                os.close(child)
        sh.assert_clean_exit(10)


def test_an_owner_that_stopped_reading_is_not_a_sigpipe(variant: Path) -> None:
    # Upstream lesson 42: writing EXITED to an owner that shut its reading
    # side is EPIPE for the shepherd (SIGPIPE ignored, MSG_NOSIGNAL), which
    # still finishes and exits 0 instead of dying of the signal.
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", "read x"]))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        sh.sock.shutdown(socket.SHUT_RD)
        sh.close_fd(started.stdin)  # EOF: the child exits; its report has nowhere to go
        sh.assert_clean_exit()


@pytest.mark.parametrize("case", ["missing", "not-executable", "path-search", "directory", "not-a-program"])
def test_exec_failure_reports_the_errno(variant: Path, case: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # no x bit: EACCES, even for root
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01 neither ELF nor script\n")
    junk.chmod(0o755)
    exe, err = {
        "missing": ([str(tmp_path / "no-such-program")], errno.ENOENT),
        "not-executable": ([str(script)], errno.EACCES),
        # Like a PATH search: a later "no such file" must not hide EACCES.
        "path-search": ([str(tmp_path / "a" / "x"), str(script), str(tmp_path / "b" / "x")], errno.EACCES),
        "directory": ([str(tmp_path)], errno.EACCES),
        "not-a-program": ([str(junk)], errno.ENOEXEC),
    }[case]
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["prog"], exe=exe))
        assert sh.event() == SpawnFailed(op.STAGE_EXEC, err)
        sh.expect_eof()
        status = sh.wait()
        assert os.WIFEXITED(status), describe(status)


@pytest.mark.parametrize("case", ["missing", "file"])
def test_chdir_failure(variant: Path, case: str, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    cwd, err = {"missing": (str(tmp_path / "nowhere"), errno.ENOENT), "file": (str(a_file), errno.ENOTDIR)}[case]
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["true"], cwd=cwd))
        assert sh.event() == SpawnFailed(op.STAGE_CHDIR, err)
        sh.expect_eof()
        status = sh.wait()
        assert os.WIFEXITED(status), describe(status)


def test_cwd_and_rlimit_are_applied(variant: Path, tmp_path: Path) -> None:
    import resource

    with direct_shepherd() as sh:
        sh.send(
            spawn_frame(
                ["sh", "-c", "pwd; ulimit -n"],
                cwd=str(tmp_path),
                stdin=op.STDIO_DEVNULL,
                rlimits=[(resource.RLIMIT_NOFILE, 77, 77)],
            )
        )
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert read_to_eof(started.stdout) == f"{tmp_path}\n77\n".encode()  # type: ignore[arg-type]
        assert_exit_code(sh.expect(Exited), 0)
        sh.assert_clean_exit()


def _dir_fd(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def test_cwd_fd_then_a_relative_cwd(variant: Path, tmp_path: Path) -> None:
    """FIELD_CWD_FD: fchdir to the last fd sent (after the INHERIT ones),
    then chdir(FIELD_CWD) from there."""
    (tmp_path / "sub").mkdir()
    r, w = os.pipe2(os.O_CLOEXEC)
    cwd = _dir_fd(tmp_path)
    try:
        with direct_shepherd() as sh:
            sh.send(
                spawn_frame(["pwd", "-P"], cwd="sub", cwd_fd=True, stdin=op.STDIO_DEVNULL, stdout=op.STDIO_INHERIT),
                [w, cwd],
            )
            os.close(w)
            w = -1
            assert isinstance(sh.expect(Started), Started)
            assert_exit_code(sh.expect(Exited), 0)
            assert read_to_eof(r) == os.fsencode(os.path.realpath(tmp_path / "sub")) + b"\n"
            sh.assert_clean_exit()
    finally:
        for fd in (r, w, cwd):
            if fd >= 0:
                os.close(fd)


def test_cwd_fd_failures(variant: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_a_dir = os.open(a_file, os.O_PATH | os.O_CLOEXEC)
    try:
        with direct_shepherd() as sh:  # the fd is not a directory
            sh.send(spawn_frame(["true"], cwd_fd=True), [not_a_dir])
            assert sh.event() == SpawnFailed(op.STAGE_CHDIR, errno.ENOTDIR)
            sh.expect_eof()
            sh.assert_clean_exit()
    finally:
        os.close(not_a_dir)
    with direct_shepherd() as sh:  # no fd came with the request
        sh.send(spawn_frame(["true"], cwd_fd=True))
        assert sh.event() == SpawnFailed(op.STAGE_REQUEST, errno.EBADF)
        sh.expect_eof()
        sh.assert_clean_exit()


@pytest.fixture
def frozen_leaf() -> Iterator[Path]:
    """A leaf path under a frozen cgroup: the child stops as it joins it,
    between its fork and its exec."""
    with frozen_cgroup("frozen-shepherd") as parent:
        yield parent / "leaf"


def test_stop_reaches_a_child_frozen_before_its_exec(variant: Path, frozen_leaf: Path) -> None:
    # The shepherd must not sit in vfork while the child hangs before its
    # exec: it still reads STOP, kills the child, reaps it, removes the leaf.
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["true"], cgroup=frozen_leaf, kill_timeout=30))
        cgroup_events(frozen_leaf.parent, b"populated 1", PROMPT)
        sh.send(encode_stop(0.2))
        # No exec error came: it counts as started, then ended by our stop.
        assert isinstance(sh.expect(Started), Started)
        event = sh.expect(Exited)
        assert isinstance(event, Exited) and os.WIFSIGNALED(event.status), event
        assert os.WTERMSIG(event.status) in (signal.SIGTERM, signal.SIGKILL), describe(event.status)
        sh.expect_eof()
        sh.assert_clean_exit()
    assert not frozen_leaf.exists()


def test_hang_up_reaches_a_child_frozen_before_its_exec(variant: Path, frozen_leaf: Path) -> None:
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["true"], cgroup=frozen_leaf, kill_timeout=0.2))
        cgroup_events(frozen_leaf.parent, b"populated 1", PROMPT)
        sh.sock.shutdown(socket.SHUT_WR)  # owner loss
        sh.expect_eof()  # nobody to report to: no STARTED, no EXITED
        sh.assert_clean_exit()
    assert not frozen_leaf.exists()


def test_rlimit_failure(variant: Path) -> None:
    import resource

    with direct_shepherd() as sh:
        sh.send(spawn_frame(["true"], rlimits=[(resource.RLIMIT_NOFILE, 100, 50)]))  # soft > hard
        assert sh.event() == SpawnFailed(op.STAGE_RLIMIT, errno.EINVAL)
        sh.expect_eof()
        status = sh.wait()
        assert os.WIFEXITED(status), describe(status)


def _request_fields() -> dict[str, bytes]:
    return {
        "argv": tlv(op.FIELD_ARGV, b"true"),
        "exec": tlv(op.FIELD_EXEC, b"/bin/true"),
        "io": tlv(op.FIELD_STDIN, u32(1)) + tlv(op.FIELD_STDOUT, u32(1)) + tlv(op.FIELD_STDERR, u32(1)),
        "pty": tlv(op.FIELD_PTY, struct.pack("<HH", 24, 80)),
    }


F = _request_fields()
MALFORMED_REQUESTS = {
    "empty-payload": raw_frame(op.OP_SPAWN, b""),
    "truncated-tlv-header": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + b"\x01\x00\x05"),
    "value-past-the-end": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + struct.pack("<HI", 1, 100) + b"abc"),
    "huge-field-length": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + struct.pack("<HI", 1, 0xFFFFFFFF)),
    "unknown-tag": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(77, b"x")),
    "tag-zero": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(0, b"")),
    "no-argv": raw_frame(op.OP_SPAWN, F["exec"] + F["io"]),
    "no-exec": raw_frame(op.OP_SPAWN, F["argv"] + F["io"]),
    "nul-in-argv": raw_frame(op.OP_SPAWN, tlv(op.FIELD_ARGV, b"a\0b") + F["exec"]),
    "nul-in-env": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_ENV, b"A=\0")),
    "nul-in-cwd": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_CWD, b"/\0")),
    "two-cwds": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_CWD, b"/") + tlv(op.FIELD_CWD, b"/")),
    "stdin-as-stdout": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_STDIN, u32(op.STDIO_STDOUT))),
    "unknown-mode": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_STDOUT, u32(99))),
    "short-mode": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_STDERR, b"\0\0")),
    "short-kill-timeout": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_KILL_TIMEOUT, b"\0\0\0")),
    "short-rlimit": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_RLIMIT, b"\0" * 19)),
    "too-many-rlimits": raw_frame(
        op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_RLIMIT, struct.pack("<IQQ", 7, 64, 64)) * 33
    ),
    "short-uid": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_UID, b"\0\0\0")),
    "uid-minus-one": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_UID, u32(0xFFFFFFFF))),
    "two-gids": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_GID, u32(1)) * 2),
    "groups-not-whole-u32s": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_GROUPS, b"\0" * 5)),
    "too-many-groups": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_GROUPS, b"\0" * 4 * 65537)),
    "two-group-lists": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_GROUPS, b"") * 2),
    "no-new-privs-with-a-value": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NO_NEW_PRIVS, b"\1")),
    "short-nice": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NICE, b"\5\0")),
    "nice-beyond-any-range": raw_frame(
        op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NICE, struct.pack("<i", -(2**31)))
    ),
    "no-echo-without-a-pty": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_PTY_NO_ECHO, b"")),
    "no-echo-with-a-value": raw_frame(
        op.OP_SPAWN,
        F["argv"] + F["exec"] + tlv(op.FIELD_PTY, struct.pack("<HH", 24, 80)) + tlv(op.FIELD_PTY_NO_ECHO, b"\0"),
    ),
    "two-nices": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NICE, struct.pack("<i", 1)) * 2),
    "short-pass-fd": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_PASS_FD, b"\5\0")),
    "pass-fd-onto-stderr": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_PASS_FD, u32(2))),
    "pass-fd-beyond-int": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_PASS_FD, u32(2**31))),
    "pass-fd-twice-the-same": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_PASS_FD, u32(7)) * 2),
    "too-many-pass-fds": raw_frame(
        op.OP_SPAWN, F["argv"] + F["exec"] + b"".join(tlv(op.FIELD_PASS_FD, u32(fd)) for fd in range(3, 253))
    ),
    "new-session-with-a-value": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NEW_SESSION, b"\1")),
    "two-new-sessions": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"] + tlv(op.FIELD_NEW_SESSION, b"") * 2),
    "not-a-spawn-first": encode_signal(signal.SIGTERM),
    "reserved-nonzero": raw_frame(op.OP_SPAWN, F["argv"] + F["exec"], reserved=2),
    "oversize-length": struct.pack("<IHH", op.MAX_PAYLOAD + 1, op.OP_SPAWN, 0),
    "garbage": b"GET / HTTP/1.1\r\nHost: shepherd\r\n\r\n",
}


def expect_request_refused(sh: Owner) -> None:
    """SPAWN_FAILED(REQUEST, EINVAL) or nothing, then EOF and a clean exit."""
    deadline = time.monotonic() + PROMPT
    while not sh.eof and not sh.events:
        assert time.monotonic() < deadline, "no answer to a malformed request"
        sh._receive(deadline - time.monotonic())
    if sh.events:
        assert sh.event() == SpawnFailed(op.STAGE_REQUEST, errno.EINVAL)
    sh.expect_eof()
    status = sh.wait()
    assert os.WIFEXITED(status), f"shepherd crashed: {describe(status)}"


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_spawn_request(variant: Path, request_bytes: bytes) -> None:
    with direct_shepherd() as sh:
        sh.send(request_bytes)
        expect_request_refused(sh)


@pytest.mark.parametrize("case", ["applied", "invalid-group"])
def test_credentials_in_the_child(variant: Path, case: str) -> None:
    """UID/GID/GROUPS/NO_NEW_PRIVS reach the child (setgroups, setgid,
    setuid, then the prctl); a failure comes back as (CREDENTIALS, errno)."""
    if os.geteuid() != 0:
        pytest.skip("changing to another uid needs root")
    sh_path = shutil.which("sh")
    assert sh_path
    groups = [65534, 0] if case == "applied" else [0xFFFFFFFF]  # (gid_t)-1: EINVAL from setgroups
    rq = SpawnRequest(
        argv=[b"sh", b"-c", b'echo "$(id -u) $(id -g) $(id -G)"; grep NoNewPrivs /proc/self/status'],
        env=[k + b"=" + v for k, v in os.environb.items()],
        executables=[os.fsencode(sh_path)],
        cwd=b"/", stdin=op.STDIO_DEVNULL, stdout=op.STDIO_PIPE, stderr=op.STDIO_PIPE,
        kill_timeout=2.0, rlimits=[], uid=65534, gid=65534, groups=groups, no_new_privs=True,
    )  # fmt: skip
    with direct_shepherd() as sh:
        sh.send(encode_spawn(rq))
        if case == "invalid-group":
            assert sh.event() == SpawnFailed(op.STAGE_CREDENTIALS, errno.EINVAL)
            sh.expect_eof()
            assert os.WIFEXITED(sh.wait())
            return
        started = sh.expect(Started)
        assert isinstance(started, Started)
        ids, status = read_to_eof(started.stdout).splitlines()  # type: ignore[arg-type]
        uid, gid, *gids = ids.split()
        assert (uid, gid, sorted(set(gids))) == (b"65534", b"65534", [b"0", b"65534"])
        assert status.split() == [b"NoNewPrivs:", b"1"]
        assert_exit_code(sh.expect(Exited), 0)
        sh.assert_clean_exit()


# ------------------------------------------------------------ cgroup fields

try:
    CGROUP_MOUNT: str | None = mount_point()
except netrunner.CgroupError:  # pragma: no cover - depends on the machine
    CGROUP_MOUNT = None
M = CGROUP_MOUNT or "/sys/fs/cgroup"
CGROUP_WRITABLE = CGROUP_MOUNT is not None and os.access(CGROUP_MOUNT, os.W_OK)


def cgroup_request(leaf: str, *settings: bytes) -> bytes:
    """A well-formed request (stdio on /dev/null) but for its cgroup fields."""
    fields = F["argv"] + F["exec"] + F["io"] + tlv(op.FIELD_CGROUP, os.fsencode(leaf))
    return raw_frame(op.OP_SPAWN, fields + b"".join(tlv(op.FIELD_CGROUP_SET, s) for s in settings))


def expect_refused_unharmed(sh: Owner) -> None:
    expect_request_refused(sh)
    status = sh.wait()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


# An audit sent the first two: cgroup.procs=0 moved the shepherd into the
# leaf (cgroup.kill then killed it), cgroup.freeze=1 froze the child before
# its exec (the shepherd waited for it for ever).  Only <controller>.<file>
# of the controllers netrunner knows may be written.
REFUSED_CGROUP_SETTINGS = {
    "cgroup.procs": b"cgroup.procs=0",
    "cgroup.freeze": b"cgroup.freeze=1",
    "cgroup.subtree_control": b"cgroup.subtree_control=+pids",
    "cgroup.kill": b"cgroup.kill=1",
    "dotdot-slash": b"../x=1",
    "dotdot": b"..=1",
    "unknown-controller": b"rdma.max=1",
    "controller-only": b"memory=1",
    "controller-dot": b"memory.=1",
    "space": b"memory. max=1",
    "empty-name": b"=1",
}


@pytest.mark.skipif(CGROUP_MOUNT is None, reason="no cgroup v2 mount")
@pytest.mark.parametrize("setting", REFUSED_CGROUP_SETTINGS.values(), ids=REFUSED_CGROUP_SETTINGS.keys())
def test_cgroup_settings_other_than_controller_files_are_refused(variant: Path, setting: bytes) -> None:
    leaf = Path(M) / "netrunner" / f"refused-{os.getpid()}"
    with direct_shepherd() as sh:
        sh.send(cgroup_request(str(leaf), setting))
        expect_refused_unharmed(sh)
    assert not leaf.exists()


def _refused_leaves(tmp: Path) -> dict[str, str]:
    up = "/.." * (len(Path(M).parts) - 1)  # from the mount up to /
    name = f"refused-{os.getpid()}"
    return {
        "outside-the-mount": f"{tmp}/evil",
        "dotdot-out-of-the-mount": f"{M}{up}{tmp}/evil",
        "the-mount-itself": M,
        "trailing-slash": f"{M}/netrunner/{name}/",
        "empty-component": f"{M}/netrunner//{name}",
        "dot-component": f"{M}/./netrunner/{name}",
        "dotdot-inside": f"{M}/netrunner/{name}/../{name}-2",
        "sibling-of-the-mount": f"{M}x/{name}",
        "relative": f"netrunner/{name}",
        "too-long": f"{M}/netrunner/" + "/".join(["d" * 200] * 20),
    }


@pytest.mark.parametrize("case", list(_refused_leaves(Path("/tmp"))))
def test_cgroup_paths_other_than_leaves_below_the_mount_are_refused(variant: Path, case: str, tmp_path: Path) -> None:
    leaf = _refused_leaves(tmp_path)[case]
    with direct_shepherd() as sh:
        sh.send(cgroup_request(leaf))
        expect_refused_unharmed(sh)
    assert not (tmp_path / "evil").exists()
    assert not (Path(M) / "netrunner" / f"refused-{os.getpid()}").exists()


@pytest.mark.skipif(not CGROUP_WRITABLE, reason="no writable cgroup v2 mount")
def test_the_leaf_is_0755_whatever_the_shepherds_umask(variant: Path) -> None:
    parent = Path(M) / "netrunner"
    parent.mkdir(mode=0o755, exist_ok=True)
    leaf = parent / f"mode-{os.getpid()}"
    with direct_shepherd(umask=0o077) as sh:
        sh.send(spawn_frame(["sh", "-c", 'stat -c %a "$1"; cat /proc/self/cgroup', "sh", str(leaf)], cgroup=str(leaf)))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        out = read_to_eof(started.stdout).decode()  # type: ignore[arg-type]
        assert out.splitlines()[0] == "755", out
        assert f"0::/{leaf.relative_to(M)}" in out.splitlines()
        assert_exit_code(sh.expect(Exited), 0)
        sh.expect_eof()
        sh.assert_clean_exit()
    assert not leaf.exists()


def test_too_many_fds_with_the_request(variant: Path) -> None:
    """More fds than a request can use (SCM_MAX_FD, 253: one sendmsg's
    worth), sent over two sends: refused, and none of them kept."""
    nulls = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(130)]
    try:
        with direct_shepherd() as sh:
            frame = spawn_frame(["true"])
            sh.send(frame[:10], nulls)
            sh.send(frame[10:], nulls)
            expect_request_refused(sh)
    finally:
        for fd in nulls:
            os.close(fd)


def test_large_request_arrives_in_many_reads(variant: Path) -> None:
    """A 1.5 MiB SPAWN frame: the shepherd's buffer grows across reads."""
    args = [chr(ord("a") + i) * 100_000 for i in range(15)]
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", "echo $# ${#1} ${#15}", "sh", *args], stdin=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert read_to_eof(started.stdout) == b"15 100000 100000\n"  # type: ignore[arg-type]
        assert_exit_code(sh.expect(Exited), 0)
        sh.assert_clean_exit()


def test_inherit_without_an_fd(variant: Path) -> None:
    """STDIO_INHERIT needs an fd with the request; without one the shepherd
    reports PIPE/EBADF (and must not touch fds it never opened)."""
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["true"], stdin=op.STDIO_INHERIT))
        assert sh.event() == SpawnFailed(op.STAGE_PIPE, errno.EBADF)
        sh.expect_eof()
        status = sh.wait()
        assert os.WIFEXITED(status), describe(status)


def test_inherited_fd_reaches_the_child(variant: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with direct_shepherd() as sh:
            sh.send(spawn_frame(["echo", "inherited"], stdin=op.STDIO_DEVNULL, stdout=op.STDIO_INHERIT), [w])
            os.close(w)
            w = -1
            started = sh.expect(Started)
            assert isinstance(started, Started)
            assert started.stdin is None and started.stdout is None and started.stderr is not None
            assert_exit_code(sh.expect(Exited), 0)
            assert read_to_eof(r) == b"inherited\n"
            sh.assert_clean_exit()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


TREE = r"""
sleep 30 &
echo $!
setsid sleep 30 &
echo $!
sh -c 'setsid sleep 30 & echo $!'
sh -c 'trap "" TERM; exec sleep 30' &
echo $!
exit 3
"""


def test_descendants_die_with_the_child(variant: Path) -> None:
    """The process-tree rule: when the child exits, everything it left —
    in its group, in a new session, double-forked, TERM-ignoring — is
    killed and reaped before EXITED is reported."""
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", TREE], stdin=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        lines = read_until(started.stdout, 4).split()  # type: ignore[arg-type]
        pids = [int(p) for p in lines]
        assert len(pids) == 4
        watch = [pidfd(p) for p in pids]
        try:
            assert_exit_code(sh.expect(Exited), 3)
            for pid, fd in zip(pids, watch, strict=True):
                assert wait_dead(fd, 0), f"descendant {pid} outlived the EXITED report"
            # All holders of the pipes are gone: EOF at once.
            assert read_to_eof(started.stdout, 5.0) == b""  # type: ignore[arg-type]
            assert read_to_eof(started.stderr, 5.0) == b""  # type: ignore[arg-type]
        finally:
            for fd in watch:
                if fd is not None:
                    os.close(fd)
        sh.expect_eof()
        sh.assert_clean_exit()


def test_descendants_die_when_the_child_is_stopped(variant: Path) -> None:
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", "setsid sleep 30 & echo $!; exec sleep 30"], stdin=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        grandchild = pidfd(int(read_until(started.stdout, 1)))  # type: ignore[arg-type]
        try:
            sh.send(encode_stop(5))
            assert_killed_by(sh.expect(Exited), signal.SIGTERM)
            assert wait_dead(grandchild, 0), "setsid grandchild outlived the stop"
        finally:
            if grandchild is not None:
                os.close(grandchild)
        sh.assert_clean_exit()


def test_more_descendants_than_one_proc_read_holds(variant: Path) -> None:
    """1000 orphans re-parented to the shepherd: more than one read of
    /proc/self/task/*/children returns (4 KiB), so the kill loop must keep
    going until none is left."""
    script = "i=0; while [ $i -lt 1000 ]; do setsid sleep 30 & i=$((i+1)); done; echo spawned"
    with direct_shepherd() as sh:
        sh.send(spawn_frame(["sh", "-c", script], stdin=op.STDIO_DEVNULL))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        assert read_until(started.stdout, 1, timeout=60) == b"spawned\n"  # type: ignore[arg-type]
        assert_exit_code(sh.expect(Exited, timeout=60), 0)
        # Every sleep held the pipe: EOF now means every one is dead.
        assert read_to_eof(started.stdout, 5.0) == b""  # type: ignore[arg-type]
        sh.expect_eof()
        sh.assert_clean_exit()


# --------------------------------------------------------------- fork server


class ForkServer:
    """Our side of a ``--fork-server`` (our child) on a SEQPACKET socket."""

    def __init__(self) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.pid = _launch.spawn_helper("--fork-server", theirs)
        except BaseException:
            self.ctl.close()
            raise
        finally:
            theirs.close()
        self.pidfd = os.pidfd_open(self.pid)
        self.status: int | None = None
        self.owners: list[Owner] = []

    def new_shepherd(self) -> Owner:
        """FS_ADOPT one end of a fresh socketpair; the server forks its shepherd."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            fds = array.array("i", [theirs.fileno()])
            self.ctl.sendmsg([bytes([op.FS_ADOPT])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        owner = Owner(ours, None)
        self.owners.append(owner)
        return owner

    def shepherds(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]

    def running(self) -> bool:
        return not readable(self.pidfd, 0)

    def wait(self, timeout: float = PROMPT) -> int:
        if self.status is None:
            assert readable(self.pidfd, timeout), f"fork server still running after {timeout} s"
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def cleanup(self) -> None:
        for owner in self.owners:
            owner.cleanup()
        self.ctl.close()
        try:
            if self.status is None:
                if not readable(self.pidfd, PROMPT):
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    pytest.fail("the fork server did not exit after its owner left")
                _, self.status = os.waitpid(self.pid, 0)
        finally:
            os.close(self.pidfd)


@contextmanager
def fork_server() -> Iterator[ForkServer]:
    server = ForkServer()
    try:
        yield server
    finally:
        server.cleanup()


def test_fork_server_round_trip_and_exit(variant: Path) -> None:
    with fork_server() as fs:
        sh = fs.new_shepherd()
        sh.send(spawn_frame(["cat"]))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        # A separate shepherd per child, forked by the server.
        _state, shepherd_pid, pgrp, _sid = proc_stat(started.pid)
        assert pgrp == started.pid
        assert proc_stat(shepherd_pid)[1] == fs.pid
        # The owner lets the server go: it stays while its shepherd works.
        fs.ctl.close()
        assert fs.running()
        assert pump(sh, started, b"via the fork server\n" * 1000) == b"via the fork server\n" * 1000
        assert_exit_code(sh.expect(Exited), 0)
        sh.expect_eof()
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


def test_fork_server_serves_many(variant: Path) -> None:
    with fork_server() as fs:
        owners = [fs.new_shepherd() for _ in range(4)]
        for i, sh in enumerate(owners):
            sh.send(spawn_frame(["sh", "-c", f"read x; exit {i}"], stdout=op.STDIO_DEVNULL))
        started = [sh.expect(Started) for sh in owners]
        # Each child has a shepherd of its own, and each is the server's child.
        parents = {proc_stat(s.pid)[1] for s in started}  # type: ignore[union-attr]
        assert len(parents) == 4 and parents <= set(fs.shepherds())
        for i, (sh, st) in enumerate(zip(owners, started, strict=True)):
            sh.close_fd(st.stdin)  # type: ignore[union-attr]
            assert_exit_code(sh.expect(Exited), i)
            sh.expect_eof()
        fs.ctl.close()
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


def test_fork_server_kills_what_a_killed_shepherd_left(variant: Path) -> None:
    script = "setsid sleep 30 & echo $!; trap '' TERM; echo ready; exec sleep 30"
    with fork_server() as fs:
        sh = fs.new_shepherd()
        sh.send(spawn_frame(["sh", "-c", script], stdin=op.STDIO_DEVNULL, kill_timeout=30))
        started = sh.expect(Started)
        assert isinstance(started, Started)
        first, ready = read_until(started.stdout, 2).split()  # type: ignore[arg-type]
        assert ready == b"ready"
        shepherd_pid = proc_stat(started.pid)[1]
        assert shepherd_pid in fs.shepherds()
        watch = [pidfd(started.pid), pidfd(int(first))]
        try:
            os.kill(shepherd_pid, signal.SIGKILL)
            # The orphaned TERM-ignoring child and its setsid grandchild are
            # SIGKILLed by the fork server, not after any kill_timeout.
            for fd in watch:
                assert wait_dead(fd, 10), "the fork server left an orphan running"
        finally:
            for fd in watch:
                if fd is not None:
                    os.close(fd)
        sh.expect_eof()
        fs.ctl.close()
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


def test_fork_server_continues_a_stopped_shepherd_when_its_owner_leaves(variant: Path) -> None:
    # The owner goes (both its sockets close) while a shepherd is SIGSTOPped:
    # the server SIGCONTs its live shepherds on its own EOF, so the stopped
    # one sees its hang-up and stops its child (no kernel orphaned-group
    # SIGCONT here: the server's parent, us, lives on in the same session).
    with fork_server() as fs:
        sh = fs.new_shepherd()
        started = start_ready(sh, TERM_IGNORING, kill_timeout=0.5)
        shepherd_pid = proc_stat(started.pid)[1]
        assert shepherd_pid in fs.shepherds()
        child = pidfd(started.pid)
        # Once kill() returns the stop is pending: the shepherd runs no code
        # of its own again before a SIGCONT, so it cannot see the hang-up.
        os.kill(shepherd_pid, signal.SIGSTOP)
        try:
            sh.hang_up()
            fs.ctl.close()
            assert wait_dead(child, PROMPT), "a stopped shepherd kept its child after the owner left"
        finally:
            with contextlib.suppress(ProcessLookupError):  # gone: it did its job
                os.kill(shepherd_pid, signal.SIGCONT)
            if child is not None:
                os.close(child)
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


def test_fork_server_serves_an_adopted_shepherd_after_its_channel_closes(variant: Path) -> None:
    # Messages are handled in order: the adoption is served before the EOF
    # that follows it, and the server stays until that shepherd is done.
    with fork_server() as fs:
        sh = fs.new_shepherd()
        fs.ctl.close()
        sh.send(spawn_frame(["true"], stdin=op.STDIO_DEVNULL, stdout=op.STDIO_DEVNULL, stderr=op.STDIO_DEVNULL))
        sh.expect(Started)
        assert_exit_code(sh.expect(Exited), 0)
        sh.expect_eof()
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


def test_fork_server_exits_once_an_idle_spare_is_released(variant: Path) -> None:
    with fork_server() as fs:
        spare = fs.new_shepherd()
        fs.ctl.close()
        spare.hang_up()  # EOF before any request: the spare exits 0
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


BAD_FS_REQUESTS = {
    "unknown-byte": (b"\x07", False),
    "two-bytes": (bytes([op.FS_ADOPT, op.FS_ADOPT]), False),
    "empty-datagram": (b"", False),
    "adopt-without-an-fd": (bytes([op.FS_ADOPT]), False),
    "unknown-byte-with-an-fd": (b"\x07", True),
}


@pytest.mark.parametrize("bad", BAD_FS_REQUESTS.values(), ids=BAD_FS_REQUESTS.keys())
def test_fork_server_treats_nonsense_as_owner_loss(variant: Path, bad: tuple[bytes, bool]) -> None:
    data, with_fd = bad
    with fork_server() as fs:
        if with_fd:
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fs.ctl.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null]))])
            finally:
                os.close(null)
        else:
            fs.ctl.send(data)
        # It hangs up on us and, having no shepherds, exits.
        assert readable(fs.ctl, PROMPT)
        assert fs.ctl.recv(16) == b""
        status = fs.wait()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


# ------------------------------------------------------- memcheck (optional)

VALGRIND = shutil.which("valgrind")


@pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed (optional memcheck of failure paths)")
@pytest.mark.parametrize("case", ["inherit-without-fd", "exec-failure", "chdir-failure", "malformed"])
def test_failure_paths_under_memcheck(case: str, dynamic_binary: Path, tmp_path: Path) -> None:
    """ASan cannot see reads of uninitialised memory; memcheck can.  The
    early-failure paths of a spawn clean up fds they may never have opened."""
    release = dynamic_binary
    wrapper = tmp_path / "shepherd-under-memcheck"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {VALGRIND} -q --error-exitcode=99 --child-silent-after-fork=yes "
        f'--log-file={tmp_path}/memcheck.%p.log {release} "$@"\n'
    )
    wrapper.chmod(0o755)
    request, expected = {
        "inherit-without-fd": (spawn_frame(["true"], stdin=op.STDIO_INHERIT), SpawnFailed(op.STAGE_PIPE, errno.EBADF)),
        "exec-failure": (
            spawn_frame(["x"], exe=[str(tmp_path / "missing")]),
            SpawnFailed(op.STAGE_EXEC, errno.ENOENT),
        ),
        "chdir-failure": (
            spawn_frame(["true"], cwd=str(tmp_path / "missing")),
            SpawnFailed(op.STAGE_CHDIR, errno.ENOENT),
        ),
        "malformed": (MALFORMED_REQUESTS["too-many-rlimits"], SpawnFailed(op.STAGE_REQUEST, errno.EINVAL)),
    }[case]
    with shepherd_binary_swapped(wrapper), direct_shepherd() as sh:
        sh.send(request)
        assert sh.event(timeout=60) == expected
        sh.expect_eof(timeout=60)
        status = sh.wait(timeout=60)
    reports = "".join(p.read_text() for p in tmp_path.glob("memcheck.*.log"))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) != 99, f"memcheck errors:\n{reports}"
    assert not reports.strip(), reports


# ------------------------------------------------- the library on ASan+UBSan


def test_library_calls_on_the_sanitized_fork_server(sanitized: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETRUNNER_FORK_SERVER", raising=False)
    # (sanitized let the old fork server go: the next spawn starts one from the ASan binary)
    try:
        result = netrunner.run(["echo", "hello"])
        assert (result.returncode, result.stdout) == (0, b"hello\n")
        assert Path(f"/proc/{_launch.FORK_SERVER.pid}/exe").resolve() == sanitized.resolve()
        data = os.urandom(300_000)
        assert netrunner.run(["cat"], input=data).stdout == data
        assert netrunner.run(["false"]).returncode == 1
        merged = netrunner.run(["sh", "-c", "echo a; echo b >&2"], stderr="stdout", text=True)
        assert merged.stdout == "a\nb\n"
        with pytest.raises(netrunner.TimeoutExpired):
            netrunner.run(["sleep", "30"], timeout=0.5)
        with pytest.raises(FileNotFoundError):
            netrunner.run(["/nonexistent/netrunner-test-program"])
        with netrunner.spawn(["cat"]) as proc:
            proc.write(b"spawned\n")
            assert proc.read(timeout=PROMPT) == b"spawned\n"
            proc.close_stdin()
            assert proc.wait(timeout=PROMPT) == 0
    finally:
        _launch.FORK_SERVER.close()


# ------------------------------------------- which binary runs ($NETRUNNER_SHEPHERD)

SRC = Path(netrunner.__file__).resolve().parent.parent
# In a fresh interpreter: spawn, then say which binary the fork server runs.
WHICH_BINARY = (
    "import sys; sys.path.insert(0, sys.argv[1]); import netrunner, os; from netrunner import _launch; "
    "r = netrunner.run(['echo', 'ok']); "
    "print(r.stdout.decode().strip(), os.path.realpath(f'/proc/{_launch.FORK_SERVER.pid}/exe'))"
)


def run_python(*flags: str, env: dict[str, str], code: str = WHICH_BINARY, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code, str(SRC)], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def built_binary() -> str:
    with shepherd_binary_swapped(None):
        return os.path.realpath(_launch.shepherd_binary())


def decoy(tmp_path: Path) -> Path:
    """A shepherd that works but is not the built one: a copy of it."""
    copy = tmp_path / "bin" / "netrunner-shepherd"
    copy.parent.mkdir()
    shutil.copy2(built_binary(), copy)
    return copy


def test_a_relative_netrunner_shepherd_is_refused(tmp_path: Path) -> None:
    # Relative to the cwd of the next fork-server start, it could name a
    # different program from one moment to the next (here it names a
    # working copy, and it used to run).
    decoy(tmp_path)
    env = {**os.environ, "NETRUNNER_SHEPHERD": "bin/netrunner-shepherd"}
    code = "import sys; sys.path.insert(0, sys.argv[1]); import netrunner; netrunner.run(['true'])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SRC)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "ShepherdError" in proc.stderr and "must be an absolute path" in proc.stderr, proc.stderr


def test_an_absolute_netrunner_shepherd_is_used_when_set_before_import(tmp_path: Path) -> None:
    copy = decoy(tmp_path)
    assert run_python(env={**os.environ, "NETRUNNER_SHEPHERD": str(copy)}) == f"ok {copy}\n"


def test_netrunner_shepherd_set_after_import_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = os.path.realpath(_launch.shepherd_binary())
    monkeypatch.setenv("NETRUNNER_SHEPHERD", str(decoy(tmp_path)))
    monkeypatch.delenv("NETRUNNER_FORK_SERVER", raising=False)
    _launch.FORK_SERVER.close()  # the next spawn starts a fork server: from which binary?
    try:
        assert netrunner.run(["echo", "ok"]).stdout == b"ok\n"
        assert os.path.realpath(f"/proc/{_launch.FORK_SERVER.pid}/exe") == expected
    finally:
        _launch.FORK_SERVER.close()


def test_netrunner_shepherd_is_ignored_under_python_e(tmp_path: Path) -> None:
    env = {**os.environ, "NETRUNNER_SHEPHERD": str(decoy(tmp_path))}
    assert run_python("-E", env=env) == f"ok {built_binary()}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run with real and effective gids apart")
def test_netrunner_shepherd_is_ignored_when_real_and_effective_ids_differ(tmp_path: Path) -> None:
    # As a setgid program would run: the environment is someone else's.
    env = {**os.environ, "NETRUNNER_SHEPHERD": str(decoy(tmp_path))}
    code = "import os; os.setresgid(0, 65534, 0); " + WHICH_BINARY
    assert run_python(env=env, code=code) == f"ok {built_binary()}\n"


def test_frame_helper_matches_the_encoder() -> None:
    """The raw builder used above agrees with the library's framing."""
    assert raw_frame(op.OP_SIGNAL, u32(15)) == frame(op.OP_SIGNAL, u32(15)) == encode_signal(15)
