"""The spec's exception table: bad input is refused before anything starts,
and a command that cannot be started raises the OSError subprocess would,
with ``errno`` and ``filename`` set.

"Nothing was started" is checked three ways: the command of every call
would create a sentinel file if it ever ran, the fork server (which every
shepherd comes from) is not even started, and no marked process exists.
"""

from __future__ import annotations

import asyncio
import errno
import io
import math
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import marked_processes

import netrunner
from netrunner._launch import FORK_SERVER
from netrunner._opcodes import MAX_PAYLOAD

TOUCH = shutil.which("touch") or "/usr/bin/touch"
NOT_AN_FD = 1 << 20  # above any RLIMIT_NOFILE: never open


# --------------------------------------------------------------- refusals
def _run_cases(sentinel: str) -> list[tuple[str, type[BaseException], Callable[[], Any]]]:
    """(id, exception, call) for run(); each call would touch ``sentinel``."""
    cmd = [TOUCH, sentinel]
    run = netrunner.run
    return [
        ("args-empty-list", ValueError, lambda: run([])),
        ("args-empty-tuple", ValueError, lambda: run(())),
        ("args-empty-executable", ValueError, lambda: run(["", sentinel])),
        ("args-empty-executable-bytes", ValueError, lambda: run([b"", sentinel])),
        ("args-single-str", TypeError, lambda: run(f"{TOUCH} {sentinel}")),
        ("args-single-bytes", TypeError, lambda: run(os.fsencode(f"{TOUCH} {sentinel}"))),
        ("args-single-pathlike", TypeError, lambda: run(Path(TOUCH))),
        ("args-not-a-sequence", TypeError, lambda: run(42)),
        ("args-none", TypeError, lambda: run(None)),
        ("arg-wrong-type", TypeError, lambda: run([*cmd, 42])),
        ("arg-nul-str", ValueError, lambda: run([*cmd, "a\0b"])),
        ("arg-nul-bytes", ValueError, lambda: run([*cmd, b"a\0b"])),
        ("arg-nul-executable", ValueError, lambda: run([TOUCH + "\0", sentinel])),
        ("env-key-nul", ValueError, lambda: run(cmd, env={"A\0B": "x"})),
        ("env-value-nul", ValueError, lambda: run(cmd, env={"A": "x\0y"})),
        ("env-bytes-value-nul", ValueError, lambda: run(cmd, env={b"A": b"x\0y"})),
        ("env-key-empty", ValueError, lambda: run(cmd, env={"": "x"})),
        ("env-key-with-equals", ValueError, lambda: run(cmd, env={"A=B": "x"})),
        ("env-key-wrong-type", TypeError, lambda: run(cmd, env={1: "x"})),
        ("env-not-a-mapping", TypeError, lambda: run(cmd, env=["A=x"])),
        ("cwd-nul", ValueError, lambda: run(cmd, cwd="/tmp\0x")),
        ("cwd-wrong-type", TypeError, lambda: run(cmd, cwd=3.5)),
        ("timeout-zero", ValueError, lambda: run(cmd, timeout=0)),
        ("timeout-negative", ValueError, lambda: run(cmd, timeout=-1)),
        ("timeout-negative-float", ValueError, lambda: run(cmd, timeout=-0.001)),
        ("timeout-nan", ValueError, lambda: run(cmd, timeout=math.nan)),
        ("timeout-str", TypeError, lambda: run(cmd, timeout="5")),
        ("kill-timeout-negative", ValueError, lambda: run(cmd, kill_timeout=-1)),
        ("stderr-unknown-name", ValueError, lambda: run(cmd, stderr="bogus")),
        ("stderr-unknown-int", ValueError, lambda: run(cmd, stderr=-7)),
        ("stderr-fd-not-open", OSError, lambda: run(cmd, stderr=NOT_AN_FD)),
        ("stderr-file-object-without-fd", ValueError, lambda: run(cmd, stderr=io.StringIO())),
        ("stdout-unknown-name", ValueError, lambda: run(cmd, stdout="bogus")),
        ("stdout-stdout-mode", ValueError, lambda: run(cmd, stdout=subprocess.STDOUT)),
        ("stdout-fd-not-open", OSError, lambda: run(cmd, stdout=NOT_AN_FD)),
        ("stdout-not-a-pipe-with-pty", ValueError, lambda: run(cmd, pty=True, stdout="devnull")),
        ("max-output-negative", ValueError, lambda: run(cmd, max_output_size=-1)),
        ("max-output-float", TypeError, lambda: run(cmd, max_output_size=1.5)),
        ("input-wrong-type", TypeError, lambda: run(cmd, input=12345)),
        ("input-unencodable", UnicodeEncodeError, lambda: run(cmd, input="é", encoding="ascii")),
        ("input-lone-surrogate", UnicodeEncodeError, lambda: run(cmd, input="\ud800")),
        ("encoding-unknown", LookupError, lambda: run(cmd, input=b"", encoding="no-such-codec")),
        ("errors-unknown", LookupError, lambda: run(cmd, errors="no-such-handler")),
        ("rlimit-unknown", ValueError, lambda: run(cmd, rlimits={"RLIMIT_BOGUS": (1, 1)})),
        ("rlimit-negative", ValueError, lambda: run(cmd, rlimits={"RLIMIT_NOFILE": (-5, 64)})),
        ("rlimit-soft-over-hard", ValueError, lambda: run(cmd, rlimits={"RLIMIT_NOFILE": (65, 64)})),
        ("pty-not-a-bool", TypeError, lambda: run(cmd, pty="yes")),
        ("cgroup-absolute", ValueError, lambda: run(cmd, cgroup="/sys/fs/cgroup/x")),
        ("cgroup-dotdot", ValueError, lambda: run(cmd, cgroup="netrunner/../../x")),
        ("cgroup-wrong-type", TypeError, lambda: run(cmd, cgroup=3)),
        ("limits-without-cgroup", ValueError, lambda: run(cmd, limits={"pids.max": 4})),
    ]


def _spawn_cases(sentinel: str) -> list[tuple[str, type[BaseException], Callable[[], Any]]]:
    cmd = [TOUCH, sentinel]
    spawn = netrunner.spawn
    return [
        ("args-empty", ValueError, lambda: spawn([])),
        ("args-empty-executable", ValueError, lambda: spawn(["", sentinel])),
        ("args-single-str", TypeError, lambda: spawn(f"{TOUCH} {sentinel}")),
        ("arg-nul", ValueError, lambda: spawn([*cmd, "a\0b"])),
        ("env-key-nul", ValueError, lambda: spawn(cmd, env={"A\0B": "x"})),
        ("env-value-nul", ValueError, lambda: spawn(cmd, env={"A": "x\0y"})),
        ("cwd-nul", ValueError, lambda: spawn(cmd, cwd=b"/tmp\0x")),
        ("stdin-unknown", ValueError, lambda: spawn(cmd, stdin="bogus")),
        ("stdin-stdout-mode", ValueError, lambda: spawn(cmd, stdin="stdout")),
        ("stdin-fd-not-open", OSError, lambda: spawn(cmd, stdin=NOT_AN_FD)),
        ("stdout-fd-not-open", OSError, lambda: spawn(cmd, stdout=NOT_AN_FD)),
        ("stderr-unknown", ValueError, lambda: spawn(cmd, stderr="bogus")),
        ("kill-timeout-negative", ValueError, lambda: spawn(cmd, kill_timeout=-0.5)),
        ("kill-timeout-nan", ValueError, lambda: spawn(cmd, kill_timeout=math.nan)),
        ("rows-negative", ValueError, lambda: spawn(cmd, rows=-1)),
        ("cols-negative", ValueError, lambda: spawn(cmd, cols=-80)),
        ("rows-zero", ValueError, lambda: spawn(cmd, rows=0)),
        ("rows-wrong-type", TypeError, lambda: spawn(cmd, rows="24")),
        ("pty-rows-zero", ValueError, lambda: spawn(cmd, pty=True, rows=0)),
        ("cgroup-empty-component", ValueError, lambda: spawn(cmd, cgroup="netrunner//job")),
        ("limits-bad-file", ValueError, lambda: spawn(cmd, cgroup=True, limits={"cgroup.procs": 1})),
    ]


_RUN_IDS = [case[0] for case in _run_cases("x")]
_SPAWN_IDS = [case[0] for case in _spawn_cases("x")]


def _assert_refused_before_start(tmp_path: Path, cases: Callable[[str], list[Any]], case_id: str) -> None:
    sentinel = tmp_path / "started"
    (case,) = [c for c in cases(str(sentinel)) if c[0] == case_id]
    _, expected, call = case
    assert FORK_SERVER.pid == 0, "fixture should have stopped the fork server"
    with pytest.raises(expected):
        call()
    # Nothing was started: no fork server was needed, no marked process
    # exists, and the command never ran.
    assert FORK_SERVER.pid == 0
    assert marked_processes() == {}
    assert not sentinel.exists()


@pytest.mark.parametrize("case_id", _RUN_IDS)
def test_run_refuses_bad_input_before_starting(tmp_path: Path, fresh_fork_server: None, case_id: str) -> None:
    _assert_refused_before_start(tmp_path, _run_cases, case_id)


@pytest.mark.parametrize("case_id", _SPAWN_IDS)
def test_spawn_refuses_bad_input_before_starting(tmp_path: Path, fresh_fork_server: None, case_id: str) -> None:
    _assert_refused_before_start(tmp_path, _spawn_cases, case_id)


@pytest.mark.parametrize("front", ["aio.run", "stream", "aio.stream"])
def test_input_that_cannot_be_encoded_is_refused_before_starting(
    tmp_path: Path, fresh_fork_server: None, front: str
) -> None:
    # (run() is in the table above.)  aio.run used to start the child and
    # raise UnicodeEncodeError while it ran on until garbage collection.
    from netrunner import aio

    sentinel = tmp_path / "started"
    cmd = [TOUCH, str(sentinel)]

    def call() -> None:
        if front == "aio.run":
            asyncio.run(aio.run(cmd, input="é", encoding="ascii"))
        elif front == "stream":
            netrunner.stream(cmd, input="\ud800")
        else:
            aio.stream(cmd, input="\ud800")

    assert FORK_SERVER.pid == 0
    with pytest.raises(UnicodeEncodeError):
        call()
    assert FORK_SERVER.pid == 0
    assert marked_processes() == {}
    assert not sentinel.exists()


@pytest.mark.parametrize("stdout", ["inherit", None, "devnull", subprocess.DEVNULL, 1])
def test_stream_refuses_a_stdout_it_cannot_stream(tmp_path: Path, fresh_fork_server: None, stdout: object) -> None:
    # A stream yields stdout: sent anywhere else, there would be nothing to yield.
    from netrunner import aio

    sentinel = tmp_path / "started"
    cmd = [TOUCH, str(sentinel)]
    with pytest.raises(ValueError, match="stdout must be 'pipe'"):
        netrunner.stream(cmd, stdout=stdout)
    with pytest.raises(ValueError, match="stdout must be 'pipe'"):
        aio.stream(cmd, stdout=stdout)
    assert FORK_SERVER.pid == 0
    assert not sentinel.exists()


def test_valid_call_of_the_same_shape_does_run(tmp_path: Path) -> None:
    """The sentinel mechanism above can fail: a good call does touch it."""
    sentinel = tmp_path / "started"
    result = netrunner.run([TOUCH, str(sentinel)], timeout=30, env={"A": "x"}, cwd=tmp_path)
    assert result.returncode == 0
    assert sentinel.exists()


def test_zero_max_output_and_zero_kill_timeout_are_valid() -> None:
    """The boundary: sizes/graces of 0 are allowed (only negatives are not)."""
    result = netrunner.run(["true"], max_output_size=0, kill_timeout=0)
    assert result.returncode == 0


# ------------------------------------------------------------ bad signals
@pytest.mark.parametrize(
    "sig",
    [0, -1, -15, 10_000, "NOPE", "SIGNOPE", "", "15", "SIG", "TERM ", 1.5, None, b"TERM", True, [15]],
    ids=repr,
)
def test_bad_signal_is_valueerror_and_child_untouched(sig: Any) -> None:
    with netrunner.spawn(["cat"]) as p:
        with pytest.raises(ValueError):
            p.send_signal(sig)
        # Nothing was delivered: cat still echoes.
        p.write(b"still here\n")
        assert p.read(timeout=10) == b"still here\n"
        assert p.alive
        p.close_stdin()
        assert p.wait(timeout=10) == 0


# --------------------------------------------------------- exec failures
SPAWNERS = {
    "run": lambda args, **kw: netrunner.run(args, **kw),
    "spawn": lambda args, **kw: netrunner.spawn(args, **kw).close(),
}


@pytest.fixture(params=sorted(SPAWNERS))
def start(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return SPAWNERS[request.param]


def test_missing_executable_by_path(start: Callable[..., Any], tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-program")
    with pytest.raises(FileNotFoundError) as info:
        start([missing, "arg"])
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing


def test_missing_executable_on_path(start: Callable[..., Any]) -> None:
    name = "netrunner-test-no-such-program-3f9a"
    with pytest.raises(FileNotFoundError) as info:
        start([name])
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == name


def test_missing_executable_given_as_pathlike(start: Callable[..., Any], tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as info:
        start([missing])
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(missing)


def test_non_executable_file(start: Callable[..., Any], tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError) as info:
        start([str(script)])
    assert info.value.errno == errno.EACCES
    assert info.value.filename == str(script)


def test_directory_as_executable(start: Callable[..., Any], tmp_path: Path) -> None:
    with pytest.raises(PermissionError) as info:
        start([str(tmp_path)])
    assert info.value.errno == errno.EACCES
    assert info.value.filename == str(tmp_path)


def test_exec_format_error_like_subprocess(start: Callable[..., Any], tmp_path: Path) -> None:
    """An executable file the kernel cannot run: OSError(ENOEXEC), as
    subprocess raises (no silent fallback to a shell)."""
    bogus = tmp_path / "garbage"
    bogus.write_bytes(b"\x7fELF\x00garbage")
    bogus.chmod(0o755)
    with pytest.raises(OSError) as expected:
        subprocess.run([str(bogus)])
    with pytest.raises(OSError) as info:
        start([str(bogus)])
    assert info.value.errno == expected.value.errno == errno.ENOEXEC
    assert info.value.filename == str(bogus)


def test_missing_cwd(start: Callable[..., Any], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError) as info:
        start(["true"], cwd=missing)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(missing)


def test_cwd_is_a_file(start: Callable[..., Any], tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError) as info:
        start(["true"], cwd=str(a_file))
    assert info.value.errno == errno.ENOTDIR
    assert info.value.filename == str(a_file)


def test_exec_errors_are_the_subprocess_ones(tmp_path: Path) -> None:
    """Same exception class, errno and filename as subprocess.run."""
    script = tmp_path / "plain"
    script.write_text("x")
    for args, kw in (
        ([str(tmp_path / "absent")], {}),
        ([str(script)], {}),
        (["true"], {"cwd": str(tmp_path / "absent")}),
        (["true"], {"cwd": str(script)}),
        (["true", "x" * (200 << 10)], {}),  # E2BIG: one argument over 128 KiB (upstream lesson 59)
    ):
        with pytest.raises(OSError) as theirs:
            subprocess.run(args, **kw)
        with pytest.raises(OSError) as ours:
            netrunner.run(args, **kw)
        assert type(ours.value) is type(theirs.value), args
        assert ours.value.errno == theirs.value.errno, args
        assert ours.value.filename == theirs.value.filename, args


# -------------------------------------------------------------- PATH lookup
def _tool(directory: Path, name: str, output: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho {output}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return tool


def test_path_lookup_uses_env_path(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "netrunner-test-tool", "found-in-env-path")
    assert shutil.which("netrunner-test-tool") is None  # not on our own PATH
    env = {"PATH": str(tmp_path / "bin")}
    result = netrunner.run(["netrunner-test-tool"], env=env)
    assert result.stdout == b"found-in-env-path\n"
    with netrunner.spawn(["netrunner-test-tool"], env={b"PATH": os.fsencode(tmp_path / "bin")}) as p:
        assert p.read(timeout=10) == b"found-in-env-path\n"
        assert p.wait(timeout=10) == 0


def test_path_lookup_order_follows_env_path(tmp_path: Path) -> None:
    _tool(tmp_path / "first", "netrunner-test-tool", "first")
    _tool(tmp_path / "second", "netrunner-test-tool", "second")
    env = {"PATH": f"{tmp_path / 'second'}:{tmp_path / 'first'}"}
    assert netrunner.run(["netrunner-test-tool"], env=env).stdout == b"second\n"


def test_env_path_replaces_ours_for_lookup(tmp_path: Path) -> None:
    """``sh`` is on our PATH but not on the child's: not found."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        netrunner.run(["sh", "-c", "true"], env={"PATH": str(empty)})
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "sh"


def test_path_lookup_skips_non_executable_match(tmp_path: Path) -> None:
    """Like execvp/subprocess: a non-executable file earlier on PATH does not
    hide an executable one later."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "netrunner-test-tool").write_text("#!/bin/sh\necho wrong\n")
    _tool(tmp_path / "good", "netrunner-test-tool", "right")
    env = {"PATH": f"{blocked}:{tmp_path / 'good'}"}
    assert netrunner.run(["netrunner-test-tool"], env=env).stdout == b"right\n"


def test_path_lookup_only_non_executable_is_permission_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "netrunner-test-tool").write_text("#!/bin/sh\necho wrong\n")
    with pytest.raises(PermissionError) as info:
        netrunner.run(["netrunner-test-tool"], env={"PATH": str(blocked)})
    assert info.value.errno == errno.EACCES
    assert info.value.filename == "netrunner-test-tool"


def test_name_with_slash_is_not_looked_up(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "tool", "relative")
    result = netrunner.run(["./bin/tool"], cwd=tmp_path, env={"PATH": "/nonexistent"})
    assert result.stdout == b"relative\n"


def test_failed_spawn_leaves_nothing_behind(tmp_path: Path) -> None:
    """Many failures in a row: no fd, process or zombie accumulates (the
    leak guard checks), and the machinery still works afterwards."""
    for _ in range(50):
        with pytest.raises(FileNotFoundError):
            netrunner.run([str(tmp_path / "absent")])
    # A later good spawn still works.
    assert netrunner.run(["true"]).returncode == 0


def test_signal_module_value_is_accepted() -> None:
    """The good side of the signal check, so the refusals above can fail."""
    with netrunner.spawn(["sleep", "60"]) as p:
        p.send_signal(signal.Signals.SIGTERM)
        assert p.wait(timeout=10) == -signal.SIGTERM


# ----------------------------- sizes checked before a shepherd is taken
def _call_front_end(front: str, args: list[str], **options: Any) -> None:
    """Start ``args`` through ``front`` (streams are iterated: aio.stream
    starts on first use)."""
    from netrunner import aio

    if front == "run":
        netrunner.run(args, **options)
    elif front == "spawn":
        netrunner.spawn(args, **options).close()
    elif front == "stream":
        for _ in netrunner.stream(args, **options):
            pass
    elif front == "aio.run":
        asyncio.run(aio.run(args, **options))
    elif front == "aio.spawn":

        async def spawn() -> None:
            await (await aio.spawn(args, **options)).aclose()

        asyncio.run(spawn())
    else:

        async def stream() -> None:
            async for _ in aio.stream(args, **options):
                pass

        asyncio.run(stream())


_OVERSIZED = {
    # an rlimit the protocol's u64 cannot carry (was struct.error after the
    # spare shepherd was taken)
    "rlimit-2**64": {"rlimits": {"RLIMIT_NOFILE": (2**64, 2**64)}},
    "rlimit-hard-over-2**64": {"rlimits": {"RLIMIT_CORE": (0, 2**64 + 5)}},
    # a request over MAX_PAYLOAD (was refused only after taking the spare)
    "env-over-64-mib": {"env": {"BIG": "x" * (MAX_PAYLOAD + 1)}},
    "argv-over-64-mib": {"extra": ["y" * (MAX_PAYLOAD + 1)]},
}


@pytest.mark.parametrize("front", ["run", "spawn", "stream", "aio.run", "aio.spawn", "aio.stream"])
@pytest.mark.parametrize("case", list(_OVERSIZED))
def test_oversized_values_are_refused_without_using_up_the_spare(tmp_path: Path, front: str, case: str) -> None:
    sentinel = tmp_path / "started"
    options = dict(_OVERSIZED[case])
    args = [TOUCH, str(sentinel), *options.pop("extra", [])]
    netrunner.run(["true"])  # a live fork server with a spare shepherd waiting
    server, spares = FORK_SERVER.pid, list(FORK_SERVER._ready)
    assert server and len(spares) == 1
    with pytest.raises(ValueError):
        _call_front_end(front, args, **options)
    # The same spare still waits (its socket untouched), the same server
    # runs, nothing was started, and the next spawn takes that spare.
    assert FORK_SERVER.pid == server
    assert list(FORK_SERVER._ready) == spares and spares[0].fileno() >= 0
    assert marked_processes() == {}
    assert not sentinel.exists()
    assert netrunner.run([TOUCH, str(sentinel)]).returncode == 0
    assert sentinel.exists()


# ------------------------------------------------ Process method arguments
@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.read(-1),
        lambda p: p.read(0),
        lambda p: p.read_stderr(-5),
        lambda p: p.read(timeout=-1),
        lambda p: p.read_stderr(timeout=math.nan),
        lambda p: p.wait(timeout=-1),
        lambda p: p.stop(grace=-1),
    ],
    ids=[
        "read-negative",
        "read-zero",
        "read-stderr-negative",
        "read-timeout-negative",
        "read-stderr-timeout-nan",
        "wait-timeout-negative",
        "stop-grace-negative",
    ],
)
def test_process_method_bad_arguments(call: Callable[[netrunner.Process], Any]) -> None:
    with netrunner.spawn(["cat"]) as p:
        with pytest.raises(ValueError):
            call(p)
        # Nothing happened to the child.
        assert p.alive
        p.write(b"ok\n")
        assert p.read(timeout=10) == b"ok\n"
        p.close_stdin()
        assert p.wait(timeout=10) == 0
