"""Every time bound the owner side keeps, in one place, in seconds.

Why one module: each wait here covers one of the shepherd's (or a
user's) waits plus slack, so a bound copied by hand drifts the moment the
other side changes.  The two numbers both sides share live in
``_opcodes.py`` (and so in the shepherd's generated ``protocol.h``); every
bound below that covers one of the shepherd's waits is derived from them.

How they relate (``grace`` is the SIGTERM -> SIGKILL delay of a STOP, the
child's ``kill_timeout`` unless given):

- ``DEFAULT_KILL_TIMEOUT`` (5 s): ``kill_timeout``'s default, the same as
  the shepherd's when a request carries no ``FIELD_KILL_TIMEOUT``.
- ``REAP_BOUND`` (3 s): the shepherd's own bound after SIGKILL, for the
  child to be reaped, for its leftovers, and for a cgroup leaf to empty.
  The owner's ``_cgroup.teardown`` (run when the shepherd is lost with the
  leaf in place) waits as long, and after ``run()``'s own STOP (output
  limit, interrupt) the owner waits grace + ``REPORT_MARGIN`` + this for
  the report before it takes over.
- ``REPORT_MARGIN`` (0.4 s): past a STOP's grace, how long the shepherd
  gets to report EXITED before the owner takes over (SIGCONT it, kill the
  child and its group itself).  It is what makes the promise hold:
  ``run()`` returns within ``timeout + kill_timeout + 0.5 s``.
- ``STOP_BOUND`` (``REAP_BOUND`` + 1 s): the shepherd's reaping plus slack;
  an interrupted spawn waits ``kill_timeout`` + this for the hang-up.
- ``STOP_MARGIN`` (``STOP_BOUND`` + 1 s = 5 s): ``Process.stop()`` waits
  grace + this for EXITED before it calls the shepherd lost.
- ``CGROUP_TEARDOWN`` (``REAP_BOUND`` + 0.5 s): with a cgroup, how long
  after the exit the owner waits for the shepherd's hang-up (it empties and
  removes the leaf first).  ``run()`` adds ``EOF_GRACE`` before it.
- ``EOF_GRACE`` (0.5 s): after the reap, how long pipes still held open
  elsewhere get to reach EOF in ``run()`` (none after a timeout: the
  promise above comes first).
- Watcher failure (docs/decisions/0010-watcher-failure.md): the child's
  pidfd said it exited but no EXITED came: SIGCONT the shepherd after
  ``NUDGE_AFTER`` (1 s), take over ``SILENT_BOUND`` (= ``STOP_BOUND``: its
  leftover reaping may take ``REAP_BOUND``) later; after the owner's own
  SIGKILL the child has ``TAKEOVER_GRACE`` (1 s) to be seen dead.
- ``COMMAND_SEND_BOUND`` (5 s): how long a command to the shepherd may wait
  for room in the socket before the shepherd is called unresponsive.
"""

from __future__ import annotations

from ._opcodes import BOUND_REAP_MS, DEFAULT_KILL_TIMEOUT_MS

DEFAULT_KILL_TIMEOUT = DEFAULT_KILL_TIMEOUT_MS / 1000
REAP_BOUND = BOUND_REAP_MS / 1000
REPORT_MARGIN = 0.4
STOP_BOUND = REAP_BOUND + 1.0
STOP_MARGIN = STOP_BOUND + 1.0
CGROUP_TEARDOWN = REAP_BOUND + 0.5
EOF_GRACE = 0.5
NUDGE_AFTER = 1.0
SILENT_BOUND = STOP_BOUND
TAKEOVER_GRACE = 1.0
COMMAND_SEND_BOUND = 5.0
