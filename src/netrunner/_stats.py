"""Per-process statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """Counters from the owner's side and, once the child is reaped, its
    rusage from the shepherd's ``wait4`` (``None`` while it runs).

    ``bytes_in`` went to the child's stdin, ``bytes_out``/``bytes_err`` came
    from its stdout/stderr; ``read_count``/``write_count`` are the read(2)/
    write(2) calls on those pipes; ``max_rss`` is in bytes."""

    bytes_in: int
    bytes_out: int
    bytes_err: int
    read_count: int
    write_count: int
    duration: float
    returncode: int | None
    user_time: float | None = None
    system_time: float | None = None
    max_rss: int | None = None
    # With cgroup= and a memory controller: the cgroup's OOM kills and peak
    # memory in bytes (None when unknown).
    oom_kills: int | None = None
    memory_peak: int | None = None
    # stderr bytes not kept: captured stderr is bounded (run()/stream():
    # max_output_size, else 64 MiB, the tail kept; a Process: 1 MiB unread).
    stderr_dropped: int = 0

    @property
    def oom_killed(self) -> bool:
        """SIGKILLed by the kernel's OOM killer (not by anyone else)."""
        return self.returncode == -9 and bool(self.oom_kills)
