"""An owner interpreter for tests/test_promise.py.

    python promise_owner.py REPORT_FD KILL_TIMEOUT SCENARIO

Starts children through netrunner, waits until each one (and every
grandchild / daemon it starts) has announced its pid on its stdout, and
writes one JSON line describing every pid it sees to REPORT_FD.  Then it
blocks reading its stdin until the test SIGKILLs it (or closes stdin).

SCENARIO is a ``+``-joined list of what to hold:

``sleep``     a plain ``sleep`` child
``bg``        ``sh`` with two background grandchildren in its group
``ignore``    a TERM-ignoring ``sh`` (trap installed before it announces)
              with a TERM-ignoring background grandchild
``daemon``    ``sh`` that starts a ``setsid`` daemon (session leader) and a
              classic double-forked daemon (setsid, fork, intermediate
              exits); both end up re-parented away from the child
``ignore-daemon``  the same daemons, ignoring TERM
``stopped``   a TERM-ignoring child whose worker has SIGSTOPped itself
              (helpers/stopped_child.py)
``fork``      after starting the rest: ``os.fork()``; the fork runs one
              ``netrunner.run`` of its own, reports on REPORT_FD, and then
              lives on (blocked on stdin) after its parent is killed

Every announcement is ``ROLE PID`` on one line.  The report maps roles to
pids and also names each child's shepherd (its parent) and the fork
server.
"""

from __future__ import annotations

import json
import os
import sys

import netrunner
from netrunner._launch import FORK_SERVER

DAEMON = 'echo "daemon $$"; exec sleep 60'
IGNORING_DAEMON = 'trap "" TERM; echo "daemon $$"; exec sleep 60'

# (argv, number of announcement lines, extra environment)
COMMANDS: dict[str, tuple[list[str], int, dict[str, str]]] = {
    "sleep": (["sleep", "60"], 0, {}),
    "bg": (
        ["sh", "-c", 'sleep 60 & echo "grandchild $!"; sleep 60 & echo "grandchild $!"; echo "sh $$"; wait'],
        3,
        {},
    ),
    "ignore": (
        ["sh", "-c", 'trap "" TERM; sleep 60 & echo "ignoring-grandchild $!"; echo "ignoring $$"; wait'],
        2,
        {},
    ),
    # setsid'd daemon: stays a session leader, parent is the child sh until
    # that dies.  Double-forked daemon: (setsid sh -c '(sh -c D &)' &) --
    # both intermediates exit at once, so it is re-parented to the shepherd.
    "daemon": (
        [
            "sh",
            "-c",
            'setsid sh -c "$NR_DAEMON" & (setsid sh -c \'(sh -c "$NR_DAEMON" &)\' &); echo "sh $$"; exec sleep 60',
        ],
        3,
        {"NR_DAEMON": DAEMON},
    ),
}
COMMANDS["ignore-daemon"] = (COMMANDS["daemon"][0], 3, {"NR_DAEMON": IGNORING_DAEMON})
# A child that ignores TERM while its worker (same group) is SIGSTOPped;
# announced once waitpid(WUNTRACED) saw the worker stop.
COMMANDS["stopped"] = ([sys.executable, os.path.join(os.path.dirname(__file__), "stopped_child.py")], 1, {})


def announced(proc: netrunner.Process, lines: int) -> list[tuple[str, int]]:
    """The first ``lines`` ``ROLE PID`` lines the child writes."""
    data = b""
    while data.count(b"\n") < lines:
        chunk = proc.read(timeout=30)
        if not chunk:
            raise RuntimeError(f"{proc.args!r} ended its output after {data!r}")
        data += chunk
    found = []
    for line in data.decode().splitlines():
        role, pid = line.split()
        found.append((role, int(pid)))
    return found


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def main() -> None:
    report_fd = int(sys.argv[1])
    kill_timeout = float(sys.argv[2])
    wanted = sys.argv[3].split("+")
    held = []
    report: dict[str, object] = {"owner": os.getpid(), "pids": {}}
    pids: dict[str, list[int]] = report["pids"]  # type: ignore[assignment]
    shepherds = []
    for name in wanted:
        if name == "fork":
            continue
        args, lines, extra = COMMANDS[name]
        proc = netrunner.spawn(args, env={**os.environ, **extra}, kill_timeout=kill_timeout, stdin="devnull")
        held.append(proc)
        pids.setdefault(f"{name}:child", []).append(proc.pid)
        for role, pid in announced(proc, lines):
            pids.setdefault(f"{name}:{role}", []).append(pid)
        shepherds.append(parent_of(proc.pid))
    report["shepherds"] = shepherds
    report["fork_server"] = FORK_SERVER.pid

    if "fork" in wanted:
        fork = os.fork()
        if fork == 0:
            try:
                # The fork is a full netrunner user of its own (new fork server).
                echo = netrunner.run(["echo", "fork-ok"], timeout=30).stdout.decode().strip()
                line = {"fork": os.getpid(), "echo": echo, "fork_server": FORK_SERVER.pid}
                os.write(report_fd, (json.dumps(line) + "\n").encode())
                sys.stdin.buffer.read()  # lives until the test closes our stdin
            finally:
                os._exit(0)
        report["fork"] = fork

    os.write(report_fd, (json.dumps(report) + "\n").encode())
    sys.stdin.buffer.read()  # until SIGKILLed


if __name__ == "__main__":
    main()
