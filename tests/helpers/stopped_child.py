"""A child whose work is done by a *stopped* process in its group.

    python stopped_child.py [--tty] [FIFO]

Forks a worker that stops itself with SIGSTOP (with ``--tty``: reads its
stdin, a terminal of which its group is not the foreground, and so is
stopped by SIGTTIN, as a program run in the background that wants input
is); once ``waitpid(WUNTRACED)``
says it really is stopped, writes ``stopped PID`` (the worker's pid) to
stdout, or to FIFO when given.  That line is the readiness gate: no
polling of /proc, no sleeps.

The worker keeps every signal at its default, so it dies of SIGTERM,
SIGINT or SIGHUP as soon as it is continued, and exits 0 if it is
continued without one.  This process ignores those three signals itself
(only a SIGCONT for the worker can end the run before a SIGKILL) and
then ends the way the worker ended: of the same signal, or with its exit
status.  So a stop request that forgets SIGCONT waits out its whole grace.
"""

from __future__ import annotations

import os
import signal
import sys

TERM_CLASS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main() -> None:
    args = sys.argv[1:]
    tty = args[:1] == ["--tty"]
    if tty:
        args = args[1:]
    # SIGTTIN too: the terminal stops the reader's whole process group,
    # and this process must stay up to report.
    for sig in (*TERM_CLASS, signal.SIGTTIN):
        signal.signal(sig, signal.SIG_IGN)
    worker = os.fork()
    if worker == 0:
        for sig in (*TERM_CLASS, signal.SIGTTIN):
            signal.signal(sig, signal.SIG_DFL)
        if tty:
            os.read(0, 1)
        else:
            os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    _, status = os.waitpid(worker, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        sys.exit(f"worker did not stop: status {status:#x}")
    line = f"stopped {worker}\n".encode()
    if args:
        fd = os.open(args[0], os.O_WRONLY)
        os.write(fd, line)
        os.close(fd)
    else:
        os.write(1, line)
    _, status = os.waitpid(worker, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # not reached for a fatal signal
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
