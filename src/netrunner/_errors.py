"""Exceptions.  Each one is also the ``subprocess`` exception a user already
catches, so code moving from ``subprocess`` keeps working unchanged."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._options import Args


class NetRunnerError(Exception):
    """Base of every exception netrunner raises on its own account."""


class CalledProcessError(NetRunnerError, subprocess.CalledProcessError):
    """Non-zero exit with ``check=True``; the message ends with the stderr tail."""

    def __init__(
        self,
        returncode: int,
        cmd: Args,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        tail: bytes = b"",
        oom_killed: bool = False,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.stderr_tail = tail
        self.oom_killed = oom_killed

    def __str__(self) -> str:
        text = subprocess.CalledProcessError.__str__(self)
        if self.oom_killed:
            text = f"{text} (killed by the OOM killer)"
        if self.stderr_tail:
            tail = self.stderr_tail.decode("utf-8", "replace").rstrip()
            text = f"{text}\nstderr (last {len(self.stderr_tail)} bytes):\n{tail}"
        return text


class TimeoutExpired(NetRunnerError, subprocess.TimeoutExpired):
    """The timeout passed; the child was stopped; partial output attached."""

    def __init__(
        self, cmd: Args, timeout: float, output: bytes | str | None = None, stderr: bytes | str | None = None
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)


class OutputLimitExceeded(NetRunnerError, subprocess.SubprocessError):
    """stdout grew past ``max_output_size``; ``.stdout`` holds the first bytes."""

    def __init__(self, cmd: Args, limit: int, stdout: bytes | None = None, stderr: bytes | str | None = None) -> None:
        super().__init__(f"Command {cmd!r} wrote more than {limit} bytes to stdout")
        self.cmd = cmd
        self.limit = limit
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> bytes | None:
        return self.stdout


class CgroupError(NetRunnerError, OSError):
    """A cgroup could not be set up as asked (never silently ignored)."""


class ShepherdError(NetRunnerError, subprocess.SubprocessError):
    """The shepherd died or broke the protocol; the child has been killed."""
