"""Run a command under a child subreaper, as a service manager would.

    python subreaper.py FD[,FD...] -- COMMAND...

Makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), starts
COMMAND with the listed fds passed on and a stdin pipe it never closes,
and reaps every child it has or adopts until none is left; then it waits
for its own stdin to close and exits.

Why: when an owner dies, its fork server is re-parented to the nearest
subreaper.  Here that is this process, in the owner's session but in
another process group, so the fork server's group is *not* orphaned and
the kernel sends its stopped members no SIGCONT.  Without us it would be
re-parented outside the session, and the kernel's orphaned-group SIGCONT
would hide what netrunner itself does.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    fds = tuple(int(fd) for fd in sys.argv[1].split(",") if fd)
    assert sys.argv[2] == "--"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = subprocess.Popen(sys.argv[3:], stdin=subprocess.PIPE, pass_fds=fds)
    for fd in fds:
        os.close(fd)
    while True:
        try:
            os.wait()  # the command, then whatever it leaves to us (its fork server)
        except ChildProcessError:
            break
    assert child.stdin is not None
    child.stdin.close()  # held open until now: the command reads it until killed
    sys.stdin.buffer.read()


if __name__ == "__main__":
    main()
