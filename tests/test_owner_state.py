"""The owner's current state reaches every child, and signals sent to the
owner's process group cannot orphan one.

Children are forked from a long-lived fork server, not from the owner, so
everything a child would normally inherit from its parent at spawn time
must be sent or checked explicitly (cwd, umask, credentials, limits), and
the watchers must not share the fate of the owner's process group.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import MARK

import netrunner

OWNER = textwrap.dedent(
    """
    import os, signal, sys, netrunner
    # Ctrl-C's default even when our starter ignores SIGINT (a test run in
    # the background of a non-interactive shell inherits SIG_IGN, and Python
    # keeps an inherited ignore): the test is about the signal arriving.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    p = netrunner.spawn(["sleep", "60"], kill_timeout=float(sys.argv[1]))
    os.write(1, b"%d\\n" % p.pid)
    sys.stdin.read()  # block until the test kills us (or closes our stdin)
    """
)


def _gone_by(pid: int, deadline: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0])
    finally:
        os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_owners_process_group_does_not_orphan_the_child(sig: signal.Signals) -> None:
    # Ctrl-C at a terminal, `timeout`, `kill -- -PGID` all signal the owner's
    # whole group.  The fork server and shepherds must survive it long
    # enough to stop the child, which lives in a group of its own.
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, "0.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own group, so killpg cannot reach pytest
    )
    assert owner.stdout is not None and owner.stdin is not None
    try:
        child = int(owner.stdout.readline())
        os.killpg(owner.pid, sig)
        owner.wait(timeout=10)
        assert _gone_by(child, time.monotonic() + 0.5 + 2.0), f"child {child} outlived its owner after {sig.name}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdin.close()
        owner.stdout.close()


def test_children_see_the_owners_current_cwd_and_umask(tmp_path: Path) -> None:
    netrunner.run(["true"])  # the fork server now exists, with the old state
    old_cwd, old_mask = os.getcwd(), os.umask(0o077)
    try:
        os.chdir(tmp_path)
        out = netrunner.run(["sh", "-c", "pwd; umask"], text=True).stdout.split()
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)
    assert out == [str(tmp_path), "0077"]


def test_children_see_the_owners_current_rlimits() -> None:
    netrunner.run(["true"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 777)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        out = netrunner.run(["sh", "-c", "ulimit -n"], text=True).stdout.strip()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert out == str(lowered)
    assert netrunner.run(["sh", "-c", "ulimit -n"], text=True).stdout.strip() == str(soft)


def test_a_forked_owner_checks_its_own_rlimits_not_its_parents() -> None:
    # The limits are read through a kept fd of /proc/self/limits, which
    # names the process that opened it: a fork must read its own file, or
    # a limit it lowers after its first spawn would never be seen.
    script = textwrap.dedent(
        """
        import os, resource, netrunner
        netrunner.run(["true"])  # the parent's server and its limits fd
        pid = os.fork()
        if pid == 0:
            netrunner.run(["true"])  # the child's own server
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 555), hard))
            out = netrunner.run(["sh", "-c", "ulimit -n"], text=True).stdout.strip()
            os._exit(0 if out == "555" else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


CLOSE_STDIN = {
    # With fd 0 closed, the next socket we create would take number 0, and
    # stdin="inherit" would hand the child our own shepherd channel.
    "before-any-spawn": "os.close(0)",
    # The spare adopted by the second run is made after fd 0 was closed:
    # its socket must not take number 0 either.
    "between-spawns": 'netrunner.run(["true"])\nos.close(0)\nnetrunner.run(["true"])',
}


@pytest.mark.parametrize("when", list(CLOSE_STDIN))
def test_a_closed_stdin_is_never_replaced_by_one_of_our_sockets(when: str) -> None:
    script = (
        "import os, netrunner\n"
        + CLOSE_STDIN[when]
        + textwrap.dedent(
            """
        p = netrunner.spawn(["readlink", "/proc/self/fd/0"], stdin="inherit")
        out = p.read()
        p.wait()
        print(out.decode().strip())
        """
        )
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "/dev/null"


def test_marker_is_inherited_by_test_children() -> None:
    # The leak guard relies on it; make sure it is what we think.
    assert MARK.split(b"=", 1)[1].decode() == os.environ["NETRUNNER_TEST_RUN"]


def test_a_stop_signal_to_an_idle_spare_does_not_stop_the_next_child() -> None:
    from netrunner._launch import FORK_SERVER

    spares: list[int] = []
    for _ in range(50):  # each run adopts a spare; the server forks it soon after
        netrunner.run(["true"])
        server = FORK_SERVER.pid
        spares = [int(p) for p in Path(f"/proc/{server}/task/{server}/children").read_text().split()]
        if spares:
            break
    assert spares, "no spare shepherd appeared"
    for pid in spares:
        os.kill(pid, signal.SIGTERM)
    assert netrunner.run(["sh", "-c", "exit 3"]).returncode == 3
