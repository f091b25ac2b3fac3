"""The command line: ``python -m netrunner -- CMD`` (and the ``netrunner``
console script when installed), run as a real subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import pid_gone

import netrunner

SRC = str(Path(netrunner.__file__).resolve().parent.parent)
STATS_FIELDS = {f.name for f in dataclasses.fields(netrunner.Stats)}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _launchers() -> list[pytest.param]:
    params = [pytest.param([sys.executable, "-m", "netrunner"], id="python-m")]
    script = shutil.which("netrunner")
    if script is not None:
        params.append(pytest.param([script], id="console-script"))
    else:
        params.append(
            pytest.param(None, id="console-script", marks=pytest.mark.skip(reason="netrunner script not installed"))
        )
    return params


@pytest.fixture(params=_launchers())
def cli(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


def nr(
    cli: list[str], *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with ``args``; stdin is /dev/null unless ``input``."""
    return subprocess.run(
        [*cli, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=_env(),
        timeout=timeout,
    )


# ---------------------------------------------------------- pass-through
def test_stdout_passes_through(cli: list[str]) -> None:
    done = nr(cli, "--", "echo", "hello", "world")
    assert done.returncode == 0
    assert done.stdout == b"hello world\n"
    assert done.stderr == b""


def test_stdin_passes_through(cli: list[str]) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB with NULs
    done = nr(cli, "--", "cat", input=data)
    assert done.returncode == 0
    assert done.stdout == data


def test_stderr_passes_through(cli: list[str]) -> None:
    done = nr(cli, "--", "sh", "-c", "echo out; echo err >&2")
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"


def test_arguments_are_not_reparsed(cli: list[str]) -> None:
    """Everything after -- belongs to CMD, options-looking words included."""
    done = nr(cli, "--", "printf", "%s|", "--timeout", "1", "--stats", "a b", "")
    assert done.returncode == 0
    assert done.stdout == b"--timeout|1|--stats|a b||"
    assert done.stderr == b""


def test_environment_and_cwd_inherited(cli: list[str], tmp_path: Path) -> None:
    env = _env()
    env["NETRUNNER_CLI_VALUE"] = "inherited"
    done = subprocess.run(
        [*cli, "--", "sh", "-c", 'pwd -P; printf "%s\\n" "$NETRUNNER_CLI_VALUE"'],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.stdout == os.fsencode(os.path.realpath(tmp_path)) + b"\ninherited\n"


# ------------------------------------------------------------ exit codes
@pytest.mark.parametrize("code", [0, 1, 3, 42, 125, 137, 255])
def test_exit_status_is_the_commands(code: int) -> None:
    done = nr([sys.executable, "-m", "netrunner"], "--", "sh", "-c", f"exit {code}")
    assert done.returncode == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGINT])
def test_exit_status_128_plus_signal(cli: list[str], sig: signal.Signals) -> None:
    done = nr(cli, "--", "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert done.returncode == 128 + sig


def test_timeout_exits_124(cli: list[str]) -> None:
    started = time.monotonic()
    done = nr(cli, "--timeout", "0.5", "--", "sh", "-c", "echo before; exec sleep 60")
    assert time.monotonic() - started < 0.5 + 10
    assert done.returncode == 124
    assert done.stdout == b"before\n"


def test_timeout_with_term_ignoring_grandchild(cli: list[str]) -> None:
    """--kill-timeout bounds the escalation, and a grandchild holding
    stdout does not keep the CLI (or our read of its stdout) waiting."""
    script = 'trap "" TERM; (trap "" TERM; sleep 60) & echo $!; sleep 60'
    started = time.monotonic()
    done = nr(cli, "--timeout", "0.5", "--kill-timeout", "0.5", "--", "sh", "-c", script)
    assert time.monotonic() - started < 0.5 + 0.5 + 10
    assert done.returncode == 124
    assert pid_gone(int(done.stdout), within=2)


def test_timeout_not_reached(cli: list[str]) -> None:
    done = nr(cli, "--timeout", "30", "--", "sh", "-c", "echo fine; exit 2")
    assert done.returncode == 2
    assert done.stdout == b"fine\n"


def test_not_executable_exits_126(cli: list[str], tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    done = nr(cli, "--", str(script))
    assert done.returncode == 126
    assert done.stdout == b""
    assert str(script).encode() in done.stderr


def test_not_found_exits_127_with_one_line_message(cli: list[str]) -> None:
    name = "netrunner-cli-test-no-such-command"
    done = nr(cli, "--", name, "arg")
    assert done.returncode == 127
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0]


def test_missing_absolute_path_exits_127(cli: list[str], tmp_path: Path) -> None:
    done = nr(cli, "--", str(tmp_path / "absent"))
    assert done.returncode == 127
    assert len(done.stderr.decode().splitlines()) == 1


def test_no_command_is_an_error(cli: list[str]) -> None:
    done = nr(cli, "--")
    assert done.returncode not in (0, 124, 126, 127)
    assert done.stderr


def test_bad_timeout_is_an_error_and_runs_nothing(cli: list[str], tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    done = nr(cli, "--timeout", "0", "--", "touch", str(sentinel))
    assert done.returncode != 0
    assert done.stderr
    assert not sentinel.exists()


@pytest.mark.parametrize("option", [["--cgroup", "../escape"], ["--cgroup", "/abs"]], ids=["dotdot", "absolute"])
def test_bad_cgroup_paths_are_refused_before_anything_runs(cli: list[str], option: list[str], tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    done = nr(cli, *option, "--", "touch", str(sentinel))
    assert done.returncode == 125
    assert done.stderr
    assert not sentinel.exists()


def test_pty_gives_cmd_a_terminal_fed_from_our_stdin(cli: list[str]) -> None:
    done = nr(cli, "--pty", "--", "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty; cat", input=b"line\n")
    assert done.returncode == 0, done
    # the terminal echoes our line and cat copies it (CR LF from onlcr); the
    # echo may come before or after "tty", as the terminal gets our input
    lines = done.stdout.split(b"\r\n")
    assert b"tty" in lines and lines.count(b"line") == 2, done.stdout


# --------------------------------------------------------------- --stats
def _stats_line(stderr: bytes) -> dict[str, object]:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr
    stats = json.loads(lines[0])
    assert isinstance(stats, dict)
    return stats


def test_stats_prints_one_json_line(cli: list[str]) -> None:
    done = nr(cli, "--stats", "--", "cat", input=b"12345")
    assert done.returncode == 0
    assert done.stdout == b"12345"
    stats = _stats_line(done.stderr)
    assert set(stats) == STATS_FIELDS
    assert stats["returncode"] == 0
    assert stats["bytes_out"] == 5
    assert stats["bytes_err"] == 0
    assert isinstance(stats["duration"], float) and stats["duration"] >= 0
    assert isinstance(stats["user_time"], float)
    assert isinstance(stats["system_time"], float)
    assert isinstance(stats["max_rss"], int) and stats["max_rss"] > 0


def test_stats_after_failure_and_signal(cli: list[str]) -> None:
    done = nr(cli, "--stats", "--", "sh", "-c", "exit 3")
    assert done.returncode == 3
    assert _stats_line(done.stderr)["returncode"] == 3
    done = nr(cli, "--stats", "--", "sh", "-c", "kill -TERM $$")
    assert done.returncode == 128 + 15
    assert _stats_line(done.stderr)["returncode"] == -15


def test_stats_is_the_last_stderr_line(cli: list[str]) -> None:
    done = nr(cli, "--stats", "--", "sh", "-c", "echo warning >&2; echo out")
    assert done.stdout == b"out\n"
    first, last = done.stderr.decode().splitlines()
    assert first == "warning"
    assert set(json.loads(last)) == STATS_FIELDS


def test_stats_on_timeout(cli: list[str]) -> None:
    done = nr(cli, "--stats", "--timeout", "0.3", "--", "sleep", "60")
    assert done.returncode == 124
    assert _stats_line(done.stderr)["returncode"] == -15


def test_stats_large_output_copied_intact(cli: list[str]) -> None:
    data = os.urandom(3 << 20)
    done = nr(cli, "--stats", "--", "cat", input=data)
    assert done.stdout == data
    assert _stats_line(done.stderr)["bytes_out"] == len(data)


# ---------------------------------------------------------- --max-output
def test_max_output_truncates_and_fails(cli: list[str]) -> None:
    done = nr(cli, "--max-output", "1000", "--", "yes", "abcdefgh")
    assert done.stdout == (b"abcdefgh\n" * 112)[:1000]
    assert done.returncode == 125
    assert b"1000" in done.stderr


def test_max_output_not_exceeded(cli: list[str]) -> None:
    done = nr(cli, "--max-output", "1000", "--", "head", "-c", "1000", "/dev/zero")
    assert done.returncode == 0
    assert done.stdout == bytes(1000)


def test_max_output_kills_the_tree(cli: list[str]) -> None:
    done = nr(cli, "--max-output", "100000", "--", "sh", "-c", "sleep 60 & echo $!; exec yes")
    assert done.returncode == 125
    background = int(done.stdout.split(b"\n", 1)[0])
    assert pid_gone(background, within=5)


# -------------------------------------------------- closed stdout reader
@pytest.mark.parametrize(
    "copy", [[], ["--stats"], ["--max-output", "100000000"]], ids=["direct", "stats", "max-output"]
)
def test_reader_of_stdout_going_away_is_sigpipe_for_cmd(cli: list[str], copy: list[str]) -> None:
    """``netrunner ... -- yes | head -1``: CMD dies of SIGPIPE (141) as it
    would without netrunner, whether or not netrunner copies its stdout."""
    proc = subprocess.Popen(
        [*cli, *copy, "--", "yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"y\n"
        proc.stdout.close()
        assert proc.wait(60) == 128 + signal.SIGPIPE
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# ----------------------------------------------------- owner goes away
def test_killed_cli_takes_its_command_with_it(cli: list[str]) -> None:
    """SIGKILL to the CLI: its shepherd stops CMD (the no-orphan promise)."""
    proc = subprocess.Popen(
        [*cli, "--kill-timeout", "0.5", "--", "sh", "-c", 'trap "" TERM; echo $$; exec sleep 60'],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the command did not start"
        child = int(proc.stdout.readline())
        proc.kill()
        proc.wait(30)
        assert pid_gone(child, within=0.5 + 3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("argv", [["--timeout", "abc", "--", "true"], ["--bogus", "--", "true"], []])
def test_usage_errors_exit_125_not_argparse_2(argv: list[str]) -> None:
    # Like coreutils timeout: our own failures never look like CMD's status 2.
    out = subprocess.run([sys.executable, "-m", "netrunner", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 125, out
    assert "netrunner" in out.stderr
