"""A child's lifecycle: one enum, moved by its core alone, by one table.

The phases a user's calls depend on (``alive``, ``returncode``, what
``wait()`` raises) all derive from ``ChildCore.phase``; these tests walk a
real child through each phase and check the table's promises (nothing
overrides the exit report, nothing leaves FORKED_AWAY).
"""

from __future__ import annotations

import os
import signal

import pytest

import netrunner
from netrunner._core import LIFECYCLE, Lifecycle

BOUND = 30


def test_a_child_runs_exits_and_its_shepherd_hangs_up() -> None:
    with netrunner.spawn(["cat"]) as p:
        assert p._core.phase is Lifecycle.RUNNING and p.alive
        p.close_stdin()
        assert p.wait(timeout=BOUND) == 0
        assert p._core.phase in (Lifecycle.EXITED, Lifecycle.HUNG_UP)
        assert not p.alive
    assert p._core.phase is Lifecycle.HUNG_UP  # released: nothing is left


def test_a_lost_shepherd_is_lost_and_the_owner_says_why() -> None:
    with netrunner.spawn(["sleep", "60"], stdin="devnull") as p:
        shepherd = int(open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[1])
        os.kill(shepherd, signal.SIGKILL)
        with pytest.raises(netrunner.ShepherdError, match="shepherd lost"):
            p.wait(timeout=BOUND)
        assert p._core.phase is Lifecycle.LOST
        assert p.returncode is None and not p.alive


# Python 3.12+ warns when it forks while another thread exists: here that
# is an idle worker an earlier trio test left in trio's thread cache (it
# lingers 10 s), holding nothing the forked child uses.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_interpreter_sees_the_child_as_its_parents() -> None:
    with netrunner.spawn(["sleep", "60"], stdin="devnull") as p:
        pid = os.fork()
        if pid == 0:  # the fork: the child belongs to the parent
            code = 3
            try:
                ok = p._core.phase is Lifecycle.FORKED_AWAY and not p.alive
                try:
                    p.wait(timeout=1)
                    code = 2
                except netrunner.ShepherdError:
                    code = 0 if ok else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert p._core.phase is Lifecycle.RUNNING and p.alive  # ours is untouched


def test_the_table_never_lets_later_news_override_the_exit_report() -> None:
    assert LIFECYCLE[Lifecycle.STARTING] == {Lifecycle.RUNNING}
    assert Lifecycle.LOST not in LIFECYCLE[Lifecycle.EXITED]
    assert Lifecycle.RUNNING not in LIFECYCLE[Lifecycle.EXITED] | LIFECYCLE[Lifecycle.HUNG_UP]
    assert LIFECYCLE[Lifecycle.FORKED_AWAY] == frozenset()
    # Every phase but FORKED_AWAY can still be forked away from.
    assert all(
        Lifecycle.FORKED_AWAY in after
        for phase, after in LIFECYCLE.items()
        if phase is not Lifecycle.STARTING and phase is not Lifecycle.FORKED_AWAY
    )
