"""``netrunner.subprocess``: the drop-in behaves as the stdlib's module where
users rely on it, and keeps netrunner's promise where the stdlib does not.

Real processes throughout.  Gates are pipes and FIFOs the children write
or read; "gone" is a pidfd turning readable, with a deadline.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import subprocess as std
import sys
import textwrap
import time
from pathlib import Path

import pytest
from procs import pid_gone

from netrunner import subprocess

GONE_WITHIN = 15.0  # a stop is SIGTERM, up to kill_timeout (5 s), SIGKILL; generous for a loaded box


def test_exception_classes_are_the_stdlibs() -> None:
    assert subprocess.CalledProcessError is std.CalledProcessError
    assert subprocess.TimeoutExpired is std.TimeoutExpired
    assert subprocess.SubprocessError is std.SubprocessError
    assert subprocess.CompletedProcess is std.CompletedProcess
    assert (subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL) == (std.PIPE, std.STDOUT, std.DEVNULL)
    with pytest.raises(std.CalledProcessError) as failed:
        subprocess.run(["sh", "-c", "exit 3"], check=True)
    assert failed.value.returncode == 3
    with pytest.raises(std.CalledProcessError) as failed:
        subprocess.check_call(["false"])
    assert failed.value.returncode == 1


def test_run_check_output_and_friends() -> None:
    result = subprocess.run(["sh", "-c", "cat; echo err >&2"], input=b"in", capture_output=True)
    assert isinstance(result, std.CompletedProcess)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"in", b"err\n")
    assert subprocess.check_output("echo $((6*7))", shell=True, text=True) == "42\n"
    assert subprocess.check_output(["sh", "-c", "echo a; echo b >&2"], stderr=subprocess.STDOUT) == b"a\nb\n"
    assert subprocess.call(["sh", "-c", "exit 7"]) == 7
    assert subprocess.getstatusoutput("echo out; exit 2") == (2, "out")
    assert subprocess.getoutput("echo xyzzy") == "xyzzy"
    # A single string without shell is the program's name, as in subprocess.
    assert subprocess.run("true").returncode == 0


def test_run_inherits_stdout_and_stdin_by_default(capfd: pytest.CaptureFixture[str]) -> None:
    """stdlib defaults: the child writes to our stdout (watch ``make``
    live); nothing is captured unless asked."""
    result = subprocess.run(["echo", "live"])
    assert result.stdout is None and result.stderr is None
    assert capfd.readouterr().out == "live\n"


def test_popen_pipes_are_blocking_file_objects() -> None:
    """``p.stdin.write``/``p.stdout.readline`` in a conversation, then
    ``for line in p.stdout`` to the end."""
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1) as p:
        for word in ("ping", "pong"):
            p.stdin.write(word + "\n")  # line buffered: flushed at the newline
            assert p.stdout.readline() == word + "\n"
        p.stdin.write("tail 1\ntail 2\n")
        p.stdin.close()
        assert list(p.stdout) == ["tail 1\n", "tail 2\n"]
    assert p.returncode == 0


def test_closing_stdout_early_gives_the_child_sigpipe() -> None:
    """The pipeline idiom (``p1.stdout.close()`` so p1 gets SIGPIPE when its
    reader goes) needs our end to be the only one: nothing else may hold it."""
    p = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    assert p.stdout.read(10) == b"y\n" * 5
    p.stdout.close()
    assert p.wait(timeout=GONE_WITHIN) == -signal.SIGPIPE


def test_communicate_with_timeout_leaves_the_child_running_and_resumes(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = f'echo first; echo err >&2; read x < "{gate}"; echo "$x"'
    p = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(std.TimeoutExpired) as expired:
        p.communicate(timeout=0.2)
    assert expired.value.timeout == 0.2
    assert p.poll() is None  # as subprocess: a communicate() timeout does not kill
    with open(gate, "w") as w:  # the child is blocked opening the FIFO until now
        w.write("second\n")
    assert p.communicate(timeout=GONE_WITHIN) == (b"first\nsecond\n", b"err\n")
    assert p.returncode == 0
    assert p.stdout.closed and p.stderr.closed


def test_communicate_feeds_and_drains_without_deadlock() -> None:
    """Input and both outputs far beyond a pipe buffer: the core writes while
    it reads, in text mode too."""
    data = "x" * (3 << 20)
    script = "import sys; d = sys.stdin.read(); sys.stdout.write(d); sys.stderr.write(d[:70000])"
    p = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = p.communicate(data)
    assert (len(out), len(err), p.returncode) == (len(data), 70000, 0)


def test_run_timeout_is_the_stdlib_class_and_kills_the_group() -> None:
    started = time.monotonic()
    with pytest.raises(std.TimeoutExpired) as expired:
        subprocess.run(["sh", "-c", "trap '' TERM; echo $$; sleep 1000"], timeout=0.5, stdout=subprocess.PIPE)
    # subprocess kills at once on a timeout (SIGKILL): no kill_timeout grace here.
    assert time.monotonic() - started < 5.0
    pid = int(expired.value.output)
    assert pid_gone(pid, GONE_WITHIN)


def test_preexec_fn_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match=r"preexec_fn .*cannot run Python in the child.*user=") as refused:
        subprocess.Popen(["true"], stdout=subprocess.PIPE, preexec_fn=os.setsid)
    assert "rlimits" in str(refused.value)
    with pytest.raises(ValueError, match="preexec_fn"):
        subprocess.run(["true"], preexec_fn=os.setsid)


def test_close_fds_false_passes_inheritable_fds() -> None:
    r, w = os.pipe()
    try:
        os.set_inheritable(w, True)
        write = [sys.executable, "-c", f"import os; os.write({w}, b'through')"]
        assert subprocess.run(write, close_fds=False).returncode == 0
        assert os.read(r, 100) == b"through"
        # default close_fds=True: the child does not have it
        assert subprocess.run(write, stderr=subprocess.DEVNULL).returncode != 0
    finally:
        os.close(r)
        os.close(w)


def test_exit_waits_and_the_childs_group_is_gone() -> None:
    """As subprocess, leaving ``with Popen`` waits for the child; unlike
    subprocess, what it left behind in its group is gone too."""
    script = "sleep 1000 & echo $!; exit 0"
    with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE) as p:
        leftover = int(p.stdout.readline())
    assert p.returncode == 0
    assert pid_gone(leftover, GONE_WITHIN)


def test_ctrl_c_in_with_block_stops_the_child() -> None:
    """subprocess leaves the child running after a KeyboardInterrupt in the
    ``with`` block; the drop-in stops and reaps it before the exception
    goes on."""
    with pytest.raises(KeyboardInterrupt):
        with subprocess.Popen(["sh", "-c", "echo $$; exec sleep 1000"], stdout=subprocess.PIPE) as p:
            pid = int(p.stdout.readline())
            raise KeyboardInterrupt
    assert p.returncode == -signal.SIGTERM
    assert pid_gone(pid, 0)  # reaped before the exception went on


def test_collected_popen_leaves_the_child_running_as_subprocess_does() -> None:
    """Fire and forget still works: collecting a Popen whose child runs
    warns (ResourceWarning) and leaves the child be, as subprocess does."""
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    stdin, pid = p.stdin, p.pid
    with pytest.warns(ResourceWarning, match=f"subprocess {pid} is still running"):
        del p
        gc.collect()
    assert not pid_gone(pid, 0)
    stdin.close()  # cat sees EOF and exits
    assert pid_gone(pid, GONE_WITHIN)
    (kept,) = subprocess._active
    assert kept.wait(timeout=GONE_WITHIN) == 0  # (its shepherd's report may trail the exit)
    subprocess.Popen(["true"]).wait()  # a new Popen lets go of the ended one (and its fds)
    assert subprocess._active == []


OWNER = textwrap.dedent(
    """
    import sys
    from netrunner import subprocess
    script = "sleep 1000 & echo $!; echo $$; wait"
    if sys.argv[1] == "run":
        subprocess.run(["sh", "-c", script])
    else:
        p = subprocess.Popen(["sh", "-c", script])
        p.wait()
    """
)


@pytest.mark.parametrize("how", ["run", "Popen"])
def test_owner_sigkill_leaves_nothing(how: str) -> None:
    """The promise holds through the drop-in: SIGKILL the interpreter that
    ran ``subprocess.run``/``Popen`` and its child and grandchild go too."""
    src = str(Path(subprocess.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    owner = std.Popen([sys.executable, "-c", OWNER, how], stdout=std.PIPE, env=env)
    try:
        assert owner.stdout is not None
        grandchild = int(owner.stdout.readline())
        child = int(owner.stdout.readline())
        watched = [os.pidfd_open(pid) for pid in (child, grandchild)]
        try:
            owner.kill()
            owner.wait()
            deadline = time.monotonic() + GONE_WITHIN
            for fd in watched:
                assert select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0], (
                    "a process outlived its owner"
                )
        finally:
            for fd in watched:
                os.close(fd)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("env", [os.environ, os.environb], ids=["environ", "environb"])
def test_env_may_be_os_environ_itself(env: object) -> None:
    """``env=os.environ`` (or ``os.environb``) is common in real code; a
    program without a slash is looked up on its PATH.  These mappings
    refuse keys of the other type with TypeError, not KeyError."""
    assert subprocess.check_output(["sh", "-c", "echo ok"], env=env) == b"ok\n"
    assert subprocess.Popen(["true"], env=env).wait() == 0


def test_communicate_returns_all_of_stderr() -> None:
    """``Popen.communicate()`` returns the whole of stderr, as the stdlib
    does (only ``run(capture_output=True)`` keeps a bounded tail, which
    docs/subprocess.md lists); it used to drop all but the last 64 MiB
    without a word."""
    size = 70_000_000
    p = subprocess.Popen(
        ["sh", "-c", f"head -c {size} /dev/zero >&2; echo out"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = p.communicate()
    assert (out, len(err), p.returncode) == (b"out\n", size, 0)


def test_missing_executable_is_named_by_run_as_by_popen() -> None:
    """``executable=`` names what is run: the ``FileNotFoundError`` names
    it (``.filename``), from ``run``/``call``/``check_output`` as from
    ``Popen``, as in the stdlib; ``run`` used to name ``args[0]``."""
    for start in (subprocess.run, subprocess.call, subprocess.check_output, subprocess.Popen):
        with pytest.raises(FileNotFoundError) as failed:
            start(["prog-name"], executable="/no/such/program")
        assert failed.value.filename == "/no/such/program", start


def test_timeout_expired_carries_what_the_stdlib_puts_there() -> None:
    """``TimeoutExpired.timeout`` is the value the caller gave (``timed out
    after 1 seconds``, not ``1.0``: log lines and tests match on it), and
    an output nothing was read from is ``None`` (stdlib code tests
    ``if exc.stderr is None``), from ``run``, ``communicate`` and ``wait``."""
    with pytest.raises(std.TimeoutExpired) as expired:
        subprocess.run(["sleep", "30"], capture_output=True, timeout=1)
    assert (expired.value.timeout, expired.value.stdout, expired.value.stderr) == (1, None, None)
    assert str(expired.value) == "Command '['sleep', '30']' timed out after 1 seconds"
    with pytest.raises(std.TimeoutExpired) as expired:
        subprocess.check_output(["sleep", "30"], timeout=1)
    assert (expired.value.timeout, expired.value.output) == (1, None)
    with subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        with pytest.raises(std.TimeoutExpired) as expired:
            p.communicate(timeout=1)
        assert (expired.value.timeout, expired.value.stdout, expired.value.stderr) == (1, None, None)
        with pytest.raises(std.TimeoutExpired) as expired:
            p.wait(timeout=1)
        assert str(expired.value) == "Command '['sleep', '30']' timed out after 1 seconds"
        p.kill()


def test_args_may_be_any_iterable() -> None:
    """The stdlib takes ``list(args)``: ``run(map(str, argv))`` and
    generators work; the drop-in refused anything but a sequence."""
    assert subprocess.check_output(map(str, ["echo", 42])) == b"42\n"
    assert subprocess.run(a for a in ["sh", "-c", "exit 3"]).returncode == 3
    p = subprocess.Popen(iter(["echo", "x"]), stdout=subprocess.PIPE)
    assert p.communicate() == (b"x\n", None)


def test_the_stdlibs_private_helpers_that_code_reaches_for_are_there() -> None:
    """Code written against the stdlib reaches for a few of its private
    names that have nothing to do with fork/exec: the interpreter's flags
    as arguments (to start ``sys.executable`` alike) and the platform test."""
    assert subprocess._args_from_interpreter_flags() == std._args_from_interpreter_flags()
    assert subprocess._optim_args_from_interpreter_flags() == std._optim_args_from_interpreter_flags()
    assert subprocess._mswindows is std._mswindows is False
    assert subprocess._PIPE_BUF == std._PIPE_BUF


def test_send_signal_0_probes_as_in_the_stdlib() -> None:
    """``p.send_signal(0)`` is ``kill(pid, 0)``, a probe that sends
    nothing: it succeeds on a running child (and is a no-op once it has
    exited) instead of raising ``ValueError``."""
    p = subprocess.Popen(["sleep", "30"])
    try:
        p.send_signal(0)
        assert p.poll() is None
    finally:
        p.kill()
    assert p.wait() == -signal.SIGKILL
    p.send_signal(0)
