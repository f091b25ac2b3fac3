"""netrunner: safe OS process execution.

Every child runs under its own small native shepherd that kills the
child's whole process tree the moment its Python owner goes away, even
when Python is SIGKILLed.  See README.md for the guarantees.
"""

from __future__ import annotations

import os as _os

from ._command import Command
from ._core import after_fork_in_child as _after_fork_in_child
from ._daemon import Daemon
from ._errors import (
    CalledProcessError,
    CgroupError,
    NetRunnerError,
    OutputLimitExceeded,
    ShepherdError,
    TimeoutExpired,
)
from ._launch import FORK_SERVER as _FORK_SERVER
from ._launch import close_owned_after_fork as _close_owned_after_fork
from ._launch import forget_reaping_after_fork as _forget_reaping_after_fork
from ._process import Process, spawn
from ._result import Result
from ._run import run
from ._stats import Stats
from ._stream import Stream, stream

__all__ = [
    "CalledProcessError",
    "CgroupError",
    "Command",
    "Daemon",
    "NetRunnerError",
    "OutputLimitExceeded",
    "Process",
    "Result",
    "ShepherdError",
    "Stats",
    "Stream",
    "TimeoutExpired",
    "run",
    "spawn",
    "stream",
]
__version__ = "0.1.0"

# The public classes are defined in private modules; name them by where
# users import them from, so tracebacks and reprs say
# ``netrunner.CalledProcessError``, not ``netrunner._errors.CalledProcessError``
# (pickle finds them there too).
for _public in (
    CalledProcessError,
    CgroupError,
    Command,
    Daemon,
    NetRunnerError,
    OutputLimitExceeded,
    Process,
    Result,
    ShepherdError,
    Stats,
    Stream,
    TimeoutExpired,
):
    _public.__module__ = __name__
del _public


def _forget_parent_state() -> None:
    _after_fork_in_child()
    _FORK_SERVER.forget_after_fork()
    _forget_reaping_after_fork()
    _close_owned_after_fork()


_os.register_at_fork(after_in_child=_forget_parent_state)
