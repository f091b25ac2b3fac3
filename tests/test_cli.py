"""The command line: ``python -m netrunner -- CMD`` (and the ``netrunner``
console script when installed), run as a real subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from procs import pid_gone, read_fifo_line

import netrunner
from netrunner import cli as cli_module

SRC = str(Path(netrunner.__file__).resolve().parent.parent)
STATS_FIELDS = {f.name for f in dataclasses.fields(netrunner.Stats)}
# A child whose worker (in the child's group) is stopped; it writes
# "stopped PID" once waitpid(WUNTRACED) saw the worker stop.
STOPPED_CHILD = str(Path(__file__).resolve().parent / "helpers" / "stopped_child.py")


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


@pytest.mark.parametrize("kill_after", ["--kill-timeout", "--kill-after", "-k"])
def test_timeout_with_term_ignoring_grandchild(cli: list[str], kill_after: str) -> None:
    """--kill-after (alias --kill-timeout, -k) bounds the escalation, and a
    grandchild holding stdout does not keep the CLI (or our read of its
    stdout) waiting."""
    script = 'trap "" TERM; (trap "" TERM; sleep 60) & echo $!; sleep 60'
    started = time.monotonic()
    done = nr(cli, "--timeout", "0.5", kill_after, "0.5", "--", "sh", "-c", script)
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
    done = nr(cli, "--timeout", "1e400", "--", "touch", str(sentinel))
    assert done.returncode == 125
    assert done.stderr
    assert not sentinel.exists()


def test_timeout_0_means_no_timeout_as_in_timeout_1(cli: list[str]) -> None:
    """timeout(1): "a duration of 0 disables the associated timeout"; a
    script moved from `timeout ${T:-0} cmd` keeps working."""
    done = nr(cli, "--timeout", "0", "-k", "0s", "--", "sh", "-c", "read line; echo got $line; exit 3", input=b"x\n")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"got x\n", b"")


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


# ------------------------------------------------------------ durations
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5", 1.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0), (".5", 0.5), ("1e1", 10.0)],
)
def test_durations_read_as_timeout_1_does(text: str, seconds: float) -> None:
    assert cli_module.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-1", "1.5.2", "inf", "nan", "s", "1 m"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    done = nr([sys.executable, "-m", "netrunner"], "--timeout", text, "--", "true")
    assert done.returncode == 125, done
    assert b"duration" in done.stderr


def test_timeout_with_a_unit(cli: list[str]) -> None:
    done = nr(cli, "--timeout", "0.5s", "--", "sleep", "60")
    assert done.returncode == 124


# ------------------------------------------------------------- --signal
@pytest.mark.parametrize("sig", ["USR1", "SIGUSR1", "usr1", str(int(signal.SIGUSR1))])
def test_signal_sent_on_timeout(cli: list[str], sig: str) -> None:
    done = nr(cli, "--stats", "--timeout", "0.3", "-s", sig, "--", "sleep", "60")
    assert done.returncode == 124
    assert _stats_line(done.stderr)["returncode"] == -signal.SIGUSR1


def test_signal_on_timeout_escalates_to_sigkill_after_kill_after(cli: list[str]) -> None:
    """SIGWINCH is ignored by default: -k (here 0.3 s) ends in SIGKILL."""
    started = time.monotonic()
    done = nr(cli, "--stats", "--timeout", "0.3", "--signal", "WINCH", "-k", "0.3", "--", "sleep", "60")
    assert done.returncode == 124
    assert _stats_line(done.stderr)["returncode"] == -signal.SIGKILL
    assert time.monotonic() - started < 0.3 + 0.3 + 10


@pytest.mark.parametrize("sig", ["NOPE", "0", "999", "-9"])
def test_bad_signal_is_a_usage_error(sig: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    done = nr([sys.executable, "-m", "netrunner"], "-s", sig, "--", "touch", str(sentinel))
    assert done.returncode == 125
    assert not sentinel.exists()


# ------------------------------------------------------ --version, --help
def test_version(cli: list[str]) -> None:
    done = nr(cli, "--version")
    assert done.returncode == 0
    assert done.stdout.decode().split() == ["netrunner", netrunner.__version__]


def test_help_lists_the_exit_statuses(cli: list[str]) -> None:
    done = nr(cli, "--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    for status in ("124", "125", "126", "127", "128+N"):
        assert status in text, status
    for option in ("--timeout", "--kill-after", "--signal", "--max-output", "--cgroup", "--pty", "--stats"):
        assert option in text, option


# ----------------------------------------- counting without a pipe on a tty
def _terminal_output(master: int, proc: subprocess.Popen[bytes], within: float = 30) -> bytes:
    """Everything written to the terminal whose master is ``master`` until
    its last writer closed it (EIO), bounded in time."""
    data = b""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([master], [], [], left)[0]:
            raise AssertionError(f"the terminal did not close within {within} s: {data!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_stats_counts_stderr(cli: list[str]) -> None:
    done = nr(cli, "--stats", "--", "sh", "-c", "printf 12345 >&2; printf abc")
    assert done.returncode == 0
    assert done.stdout == b"abc"
    assert done.stderr.startswith(b"12345")
    stats = json.loads(done.stderr[5:])
    assert stats["bytes_err"] == 5
    assert stats["bytes_out"] == 3


def test_stats_counts_a_large_stderr_intact(cli: list[str]) -> None:
    data = os.urandom(3 << 20)
    done = nr(cli, "--stats", "--", "sh", "-c", "cat >&2", input=data)
    assert done.stderr[: len(data)] == data
    assert json.loads(done.stderr[len(data) :])["bytes_err"] == len(data)


def test_stats_leaves_a_terminal_stdout_a_terminal(cli: list[str]) -> None:
    """--stats must not turn a terminal into a pipe (ls would change its
    layout): it passes it through, and its byte count is null."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*cli, "--stats", "--", "sh", "-c", "[ -t 1 ] && echo tty || echo pipe"],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        os.close(slave)
        slave = -1
        output = _terminal_output(master, proc)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert b"tty" in output and b"pipe" not in output, output
    stats = _stats_line(err)
    assert stats["bytes_out"] is None
    assert stats["returncode"] == 0


def test_max_output_on_a_terminal_stdout_is_refused(cli: list[str], tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            [*cli, "--max-output", "100", "--", "touch", str(sentinel)],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 125
    assert b"--max-output" in done.stderr and b"terminal" in done.stderr
    assert not sentinel.exists()


def test_pty_under_a_terminal_of_size_0x0_is_24x80(cli: list[str]) -> None:
    master, slave = os.openpty()  # nobody sized it: 0 rows, 0 columns
    try:
        assert os.get_terminal_size(slave) == (0, 0)
        proc = subprocess.Popen(
            [*cli, "--pty", "--", "stty", "size"],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        os.close(slave)
        slave = -1
        output = _terminal_output(master, proc)
        proc.communicate(timeout=30)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert output.split() == [b"24", b"80"], output


# -------------------------------------------------------------- signals
def _read_line(stream: Any, within: float = 30) -> bytes:
    ready, _, _ = select.select([stream], [], [], within)
    assert ready, "the command did not start"
    line: bytes = stream.readline()
    return line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_reaches_a_stopped_command_and_the_cli_dies_of_it(cli: list[str], sig: signal.Signals) -> None:
    """Forwarded with SIGCONT: the stopped worker dies of it, and so does
    the CLI (before: the CLI ignored the signal for ever)."""
    proc = subprocess.Popen(
        [*cli, "--kill-timeout", "30", "--", sys.executable, STOPPED_CHILD],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        worker = int(_read_line(proc.stdout).split()[1])
        proc.send_signal(sig)
        assert proc.wait(20) == -sig
        assert pid_gone(worker, within=5)
        assert b"Traceback" not in proc.stderr.read()
    finally:
        _end(proc)


def test_sighup_stops_the_command_and_the_cli_dies_of_it(cli: list[str]) -> None:
    """SIGHUP is owner loss: a command that ignores the forwarded SIGHUP is
    stopped (SIGTERM here), and the CLI dies of SIGHUP."""
    proc = subprocess.Popen(
        [*cli, "--kill-timeout", "30", "--", "sh", "-c", 'trap "" HUP; echo $$; exec sleep 60'],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        child = int(_read_line(proc.stdout))
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(20) == -signal.SIGHUP
        assert pid_gone(child, within=5)
    finally:
        _end(proc)


def test_terminal_hang_up_ends_a_command_stopped_by_sigttin(cli: list[str], tmp_path: Path) -> None:
    """The CLI on a terminal (its controlling process), CMD's worker stopped
    by SIGTTIN reading it: closing the terminal ends them all (before: the
    stopped worker and the CLI lived on)."""
    fifo = tmp_path / "stopped"
    os.mkfifo(fifo)
    argv = [*cli, "--kill-timeout", "30", "--", sys.executable, STOPPED_CHILD, "--tty", str(fifo)]
    env = _env()
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the forked child only execs
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    reaped = False
    try:
        worker = int(read_fifo_line(fifo, within=30).split()[1])
        os.close(master)
        master = -1
        assert pid_gone(pid, within=20), "the CLI outlived its terminal"
        _, status = os.waitpid(pid, 0)
        reaped = True
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, status
        assert pid_gone(worker, within=5)
    finally:
        if master >= 0:
            os.close(master)
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_interrupt_stops_a_calling_bash_script(cli: list[str], tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the foreground group: bash and the CLI) while bash
    runs ``netrunner -- CMD; echo next``: the CLI dies of SIGINT, so bash
    stops the script too (before: the CLI exited 130 and bash went on)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    command = " ".join(f"'{word}'" for word in cli)
    script = f"{command} -- sh -c 'echo ready > {fifo}; exec sleep 60'; echo next"
    # bash must take Ctrl-C's default: a test run started in the background
    # of a non-interactive shell has SIGINT ignored, bash would inherit the
    # ignore (and a non-interactive bash cannot undo one it started with),
    # and carry on whatever the CLI does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [bash, "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=_env(),
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        read_fifo_line(fifo, within=30)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert b"next" not in out
        assert proc.returncode == -signal.SIGINT
    finally:
        _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()
