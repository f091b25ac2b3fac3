"""The value ``run()`` returns."""

from __future__ import annotations

import subprocess
from typing import Generic, TypeVar

from ._errors import CalledProcessError
from ._options import Args
from ._stats import Stats

T = TypeVar("T", bound="bytes | str")


class Result(subprocess.CompletedProcess[T], Generic[T]):
    """A ``subprocess.CompletedProcess`` plus the child's ``pid`` and
    :class:`Stats`.  ``returncode`` is the exit code, or ``-N`` for signal N.

    Generic in its output type, as typeshed's ``CompletedProcess``:
    ``Result[bytes]``, or ``Result[str]`` in text mode (``run``'s overloads
    say which).  As there, ``stdout``/``stderr`` are typed ``T`` though they
    are ``None`` when not captured (``stdout="inherit"``, ...)."""

    def __init__(self, args: Args, returncode: int, stdout: T, stderr: T, *, pid: int, stats: Stats) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.pid = pid
        self.stats = stats

    def check_returncode(self) -> None:
        """Raise :class:`netrunner.CalledProcessError` if the exit was non-zero."""
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)

    def __repr__(self) -> str:
        return f"Result(args={self.args!r}, returncode={self.returncode}, pid={self.pid})"
