"""Owner interpreters for the stress scenarios (run as a script, not imported).

    python tests/stress/owner.py MODE REPORT_FD ARGS...

Each mode uses netrunner the way a program would, and tells the runner
what it did on REPORT_FD: single bytes where the runner needs to know the
exact spot it was killed at, JSON lines for results.  Every wait here is
bounded; the runner kills the owner if it says nothing in time.
"""

from __future__ import annotations

import errno
import faulthandler
import gc
import json
import os
import resource
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netrunner
import netrunner._cgroup
import netrunner._core
import netrunner._process
from netrunner._launch import FORK_SERVER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import children_of, fd_count, parent_of, smaps_rollup_kib, stat_fields, status_kib, wait_pids

# The seven kinds of child of the owner-kill trials.  Each holds something
# that must not outlive the owner; the TERM-ignoring one costs kill_timeout.
KINDS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "plain": (["sleep", "60"], {"stdin": "devnull"}),
    "bg": (["sh", "-c", "sleep 60 & exec sleep 60"], {"stdin": "devnull"}),
    "ignore": (["sh", "-c", 'trap "" TERM; sleep 60 & wait'], {"stdin": "devnull"}),
    "setsid": (["sh", "-c", "setsid sleep 60 & exec sleep 60"], {"stdin": "devnull"}),
    "double": (["sh", "-c", "(setsid sleep 60 &); exec sleep 60"], {"stdin": "devnull"}),
    "pty": (["sh", "-c", 'trap "" HUP; exec sleep 60'], {"pty": True}),
    "cgroup": (["sh", "-c", "(setsid sleep 60 &); exec sleep 60"], {"stdin": "devnull", "cgroup": True}),
}


def say(fd: int, data: bytes) -> None:
    os.write(fd, data)


def report(fd: int, obj: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(obj) + "\n").encode())


def outcome(exc: BaseException) -> str:
    """``Type`` or ``Type(ERRNAME)`` for an OSError."""
    name = type(exc).__name__
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        name += f"({errno.errorcode[code]})"
    return name


def try_run() -> str:
    """One short run(): "ok", or what it raised."""
    try:
        r = netrunner.run(["echo", "ok"], timeout=20)
        return "ok" if r.stdout == b"ok\n" else f"rc={r.returncode} out={r.stdout!r}"
    except Exception as exc:
        return outcome(exc)


def wait_stdin(within: float = 120.0) -> None:
    """Block until the runner closes our stdin (bounded)."""
    select.select([0], [], [], within)


# ------------------------------------------------------- 1. owner SIGKILL
def kill_trial(fd: int, kill_timeout: str, cap: str, kinds: str) -> None:
    """Spawn children of every kind, round-robin, until ``cap`` are held;
    'b' before each spawn and 'e' after it, so the runner knows whether its
    SIGKILL landed mid-spawn."""
    order = kinds.split(",")
    held: list[netrunner.Process] = []
    say(fd, b"r")
    i = 0
    while len(held) < int(cap):
        args, extra = KINDS[order[i % len(order)]]
        i += 1
        say(fd, b"b")
        held.append(netrunner.spawn(args, kill_timeout=float(kill_timeout), **extra))
        say(fd, b"e")
    say(fd, b"f")
    wait_stdin()


# ------------------------------------------------ 2. watchers killed/stopped
def grandchild_spawn() -> tuple[netrunner.Process, int]:
    """``sh`` holding a background grandchild (its pid read back)."""
    p = netrunner.spawn(["sh", "-c", 'sleep 60 & echo "$!"; exec sleep 60'], stdin="devnull", kill_timeout=1.0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = p.read(timeout=20)
        if not chunk:
            raise RuntimeError(f"no grandchild pid, got {data!r}")
        data += chunk
    return p, int(data)


def timed_wait(p: netrunner.Process, within: float) -> tuple[str, float]:
    t = time.monotonic()
    try:
        rc = p.wait(timeout=within)
        what = f"returned {rc}"
    except Exception as exc:
        what = outcome(exc)
    return what, time.monotonic() - t


def bounded(fn: Any, within: float) -> tuple[str, float]:
    """``fn()`` in a daemon thread: (result or exception, seconds), or
    ("hung", within) when it has not returned in time."""
    box: list[str] = []

    def body() -> None:
        try:
            box.append(str(fn()))
        except Exception as exc:
            box.append(outcome(exc))

    t = time.monotonic()
    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(within)
    return (box[0] if box else "hung"), time.monotonic() - t


def watcher(fd: int, case: str) -> None:
    out: dict[str, Any] = {"case": case}
    netrunner.run(["true"])  # a fork server and its spare exist from here on
    server = FORK_SERVER.pid
    if case == "shepherd-kill":
        p, grandchild = grandchild_spawn()
        shepherd = parent_of(p.pid)
        t = time.monotonic()
        os.kill(shepherd, signal.SIGKILL)
        left, last = wait_pids([p.pid, grandchild], t + 10)
        out["tree_gone_s"] = None if left else last - t
        out["wait"], out["wait_s"] = timed_wait(p, 10)
        out["next_run"] = try_run()
    elif case == "server-kill":
        p = netrunner.spawn(["cat"], kill_timeout=1.0)
        os.kill(server, signal.SIGKILL)
        wait_pids([server], time.monotonic() + 10)
        try:
            p.write(b"ping\n")
            out["live_child_io"] = p.read(timeout=10) == b"ping\n"
        except Exception as exc:
            out["live_child_io"] = outcome(exc)
        t = time.monotonic()
        try:
            out["stop"] = p.stop(grace=1.0)
        except Exception as exc:
            out["stop"] = outcome(exc)
        out["stop_s"] = time.monotonic() - t
        out["next_runs"] = [try_run() for _ in range(3)]
    elif case in ("both-kill-server-first", "both-kill-shepherd-first"):
        p, grandchild = grandchild_spawn()
        shepherd = parent_of(p.pid)
        first, second = (server, shepherd) if case == "both-kill-server-first" else (shepherd, server)
        t = time.monotonic()
        os.kill(first, signal.SIGKILL)
        os.kill(second, signal.SIGKILL)
        left, last = wait_pids([p.pid, grandchild], t + 3)
        out["survivors_after_3s"] = len(left)
        out["tree_gone_s"] = None if left else last - t
        out["wait"], out["wait_s"] = timed_wait(p, 10)
        # wait() found its shepherd lost: the owner kills what it knows
        # itself (the child's pidfd and group) before it says so.
        left, _ = wait_pids([p.pid, grandchild], time.monotonic() + 2)
        out["survivors_after_wait"] = len(left)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        out["next_runs"] = [try_run() for _ in range(3)]
    elif case == "shepherd-stop":
        p = netrunner.spawn(["cat"], kill_timeout=1.0)
        shepherd = parent_of(p.pid)
        os.kill(shepherd, signal.SIGSTOP)
        try:
            p.write(b"ping\n")
            out["live_child_io"] = p.read(timeout=10) == b"ping\n"
        except Exception as exc:
            out["live_child_io"] = outcome(exc)
        out["stop"], out["stop_s"] = bounded(lambda: p.stop(grace=0), 30)
        t = time.monotonic()
        try:
            os.kill(shepherd, signal.SIGCONT)
        except ProcessLookupError:
            pass  # the owner continued it itself, and it is done
        left, last = wait_pids([p.pid, shepherd], t + 10)
        out["gone_after_cont_s"] = None if left else last - t
        out["next_run"] = try_run()
    elif case == "server-stop":
        os.kill(server, signal.SIGSTOP)
        runs = []
        for _ in range(3):
            runs.append(bounded(try_run, 5))
            if runs[-1][0] == "hung":
                break
        out["runs_while_stopped"] = runs
        t = time.monotonic()
        os.kill(server, signal.SIGCONT)
        out["after_cont"] = bounded(try_run, 20)
        out["after_cont_s"] = time.monotonic() - t
    elif case == "hold":
        # For the runner to stop a watcher and then kill us.
        p = netrunner.spawn(["sh", "-c", 'trap "" TERM; exec sleep 60'], stdin="devnull", kill_timeout=0.5)
        out.update(child=p.pid, shepherd=parent_of(p.pid), server=server)
        report(fd, out)
        wait_stdin()
        return
    else:
        raise SystemExit(f"unknown case {case}")
    report(fd, out)


# ----------------------------------------------- 5. many idle children
def idle(fd: int, count: str) -> None:
    n = int(count)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    netrunner.run(["true"])  # the fork server, started with the raised limit
    gc.collect()
    fds0, rss0 = fd_count(), status_kib("self", "VmRSS")
    t = time.monotonic()
    procs = []
    error = None
    try:
        for _ in range(n):
            procs.append(netrunner.spawn(["sleep", "600"], stdin="devnull"))
    except Exception as exc:
        error = outcome(exc)
    spawn_s = time.monotonic() - t
    gc.collect()
    fds1, rss1 = fd_count(), status_kib("self", "VmRSS")
    shepherds = [parent_of(p.pid) for p in procs]
    pss = private = rss = 0
    for pid in shepherds:
        m = smaps_rollup_kib(pid)
        pss, private, rss = pss + m["pss"], private + m["private"], rss + m["rss"]
    server = FORK_SERVER.pid
    alive = sum(1 for p in procs if stat_fields(p.pid) is not None)
    t = time.monotonic()
    for p in procs:
        p.terminate()
    rcs = {p.wait(timeout=60) for p in procs}
    stop_s = time.monotonic() - t
    del procs
    gc.collect()
    k = max(len(shepherds), 1)
    report(
        fd,
        {
            "nofile": [soft, hard],
            "spawned": len(shepherds),
            "alive": alive,
            "error": error,
            "spawn_s": spawn_s,
            "stop_s": stop_s,
            "owner_fds_per_child": (fds1 - fds0) / k,
            "owner_rss_kib_per_child": (rss1 - rss0) / k,
            "shepherd_rss_kib": rss / k,
            "shepherd_pss_kib": pss / k,
            "shepherd_private_kib": private / k,
            "returncodes": sorted(rcs),
            "fds_after_minus_before": fd_count() - fds0,
            "server_children_after": len(children_of(server)),
        },
    )


# --------------------------------------------------- 6. exhaustion
def exhaust(fd: int, what: str) -> None:
    out: dict[str, Any] = {"what": what}
    netrunner.run(["true"])
    if what == "pid":
        # RLIMIT_NPROC binds only an unprivileged owner: become nobody
        # (everything imported already: /root, where Python lives, is 0700).
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        out["next_run_as_nobody"] = try_run()
        if out["next_run_as_nobody"] != "ok":  # e.g. the shepherd's path is not executable for nobody
            out["skipped"] = f"cannot spawn as nobody: {out['next_run_as_nobody']}"
            report(fd, out)
            return
    gc.collect()
    base = fd_count()
    held: list[netrunner.Process] = []
    ballast: list[bytearray] = []
    limit = {
        "fd": resource.RLIMIT_NOFILE,
        "pid": resource.RLIMIT_NPROC,
        "mem": resource.RLIMIT_AS,
    }[what]
    old = resource.getrlimit(limit)
    if what == "fd":
        resource.setrlimit(limit, (base + 24, old[1]))
    elif what == "pid":
        mine = sum(1 for pid in os.listdir("/proc") if pid.isdigit() and _uid_of(pid) == 65534)
        out["nobody_processes"] = mine
        resource.setrlimit(limit, (mine + 12, old[1]))
    else:
        resource.setrlimit(limit, (status_kib("self", "VmSize") * 1024 + (64 << 20), old[1]))
    seen = None
    fds_before_failure = fds_after_failure = -1
    if what == "mem":
        netrunner.run(["true"])  # the new server starts while there is room
        for size in (1 << 20, 1 << 16, 1 << 12):
            try:
                while True:
                    ballast.append(bytearray(size))
            except MemoryError:
                pass
    for _ in range(200):
        try:
            # (our own bookkeeping needs a little room too, under RLIMIT_AS:
            # listdir's buffer failing is ENOMEM, i.e. -1)
            fds_before_failure = fd_count()
        except MemoryError:
            fds_before_failure = -1
        if fds_before_failure < 0 and ballast:
            del ballast[-16:]
            continue
        try:
            held.append(netrunner.spawn(["sleep", "60"], stdin="devnull"))
        except BaseException as exc:
            seen = exc
            break
    ballast.clear()
    fds_after_failure = fd_count()
    resource.setrlimit(limit, old)
    out["spawned_before_failure"] = len(held)
    out["exception"] = outcome(seen) if seen is not None else None
    out["message"] = str(seen)[:200] if seen is not None else None
    # (None: fd_count itself could not run, at the fd limit)
    counted = min(fds_after_failure, fds_before_failure) >= 0
    out["fds_leaked_by_failed_call"] = fds_after_failure - fds_before_failure if counted else None
    out["next_run"] = try_run()
    for proc in held:
        proc.kill()
    out["held_reaped"] = sorted({proc.wait(timeout=30) for proc in held})
    proc = None  # (the loop variable would keep the last Process alive)
    del held, seen
    gc.collect()
    out["fds_after_minus_before"] = fd_count() - base
    report(fd, out)


def _uid_of(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# ------------------------------------------------------ 7. Ctrl-C
def sigint(fd: int, seconds: str) -> None:
    """run() in a loop; each KeyboardInterrupt that reaches us is said on
    REPORT_FD.  One lost inside netrunner ("Exception ignored in ...")
    shows as silence: the loop carries on."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    netrunner.run(["true"])
    end = time.monotonic() + float(seconds)
    say(fd, b"ready\n")
    runs = 0
    while time.monotonic() < end:
        try:
            while time.monotonic() < end:
                netrunner.run(["true"], timeout=20)
                runs += 1
        except KeyboardInterrupt as exc:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code if tb is not None else None
            where = f"{Path(code.co_filename).name}:{code.co_name}" if code is not None else "?"
            say(fd, b"caught %d %d %s\n" % (fd_count(), runs, where.encode()))
    say(fd, b"end %d\n" % runs)


# --------------------------------------------------- 8. fork while spawning
def forks(fd: int, count: str, threads: str) -> None:
    stop = threading.Event()
    spawned = [0]
    errors: list[str] = []

    def spin() -> None:
        while not stop.is_set():
            try:
                netrunner.run(["true"], timeout=30)
                spawned[0] += 1
            except Exception as exc:
                errors.append(outcome(exc))

    workers = [threading.Thread(target=spin, daemon=True) for _ in range(int(threads))]
    for w in workers:
        w.start()
    results: dict[str, int] = {}
    worst = 0.0
    hangs: list[str] = []
    for i in range(int(count)):
        pid = os.fork()
        if pid == 0:
            # In the fork: one run of its own, then a normal interpreter exit.
            # A hang dumps every thread's stack and exits 99 (bounded).
            faulthandler.dump_traceback_later(10, exit=True)
            code = 0
            try:
                r = netrunner.run(["echo", "forked"], timeout=10)
                code = 0 if r.stdout == b"forked\n" else 3
            except BaseException:
                code = 4
            os._exit(code)  # no atexit of the parent's copy
        t = time.monotonic()
        left, _ = wait_pids([pid], t + 30)
        if left:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        took = time.monotonic() - t
        worst = max(worst, took)
        rc = os.waitstatus_to_exitcode(status)
        key = {0: "ok", 3: "bad-output", 4: "raised", 1: "hung(faulthandler)", -9: "hung(killed)"}.get(rc, f"rc{rc}")
        results[key] = results.get(key, 0) + 1
        if rc in (1, -9):
            hangs.append(f"fork {i}")
    stop.set()
    for w in workers:
        w.join(60)
    report(
        fd,
        {
            "forks": int(count),
            "results": results,
            "worst_exit_s": worst,
            "hangs": hangs,
            "spawns_meanwhile": spawned[0],
            "spawn_errors": sorted(set(errors)),
        },
    )


MODES: dict[str, Callable[..., None]] = {
    "kill-trial": kill_trial,
    "watcher": watcher,
    "idle": idle,
    "exhaust": exhaust,
    "sigint": sigint,
    "fork": forks,
}


def main() -> None:
    mode, fd = sys.argv[1], int(sys.argv[2])
    MODES[mode](fd, *sys.argv[3:])


if __name__ == "__main__":
    main()
