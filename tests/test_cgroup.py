"""cgroup=: the child runs in a fresh cgroup v2 leaf from before its exec;
on exit everything in the leaf is killed and the leaf removed."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import SHEPHERD_SRC, compile_c, read_fifo_line

import netrunner
from netrunner import aio
from netrunner._cgroup import mount_point, settings
from netrunner._launch import FORK_SERVER, use_shepherd_binary

try:
    MOUNT = mount_point()
    _probe = Path(MOUNT) / "netrunner"
    _probe.mkdir(exist_ok=True)
    WRITABLE = os.access(_probe, os.W_OK)
except (OSError, netrunner.CgroupError) as exc:  # pragma: no cover - depends on the machine
    MOUNT, WRITABLE, WHY = "", False, str(exc)
else:
    WHY = "the cgroup v2 hierarchy is not writable here"

pytestmark = pytest.mark.skipif(not WRITABLE, reason=f"no writable cgroup v2: {WHY}")


def own_cgroup(proc_cgroup: bytes) -> str:
    for line in proc_cgroup.decode().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no cgroup v2 line in {proc_cgroup!r}")


def test_true_gives_a_fresh_leaf_that_the_child_is_in_and_that_is_removed() -> None:
    first = own_cgroup(netrunner.run(["cat", "/proc/self/cgroup"], cgroup=True).stdout)
    second = own_cgroup(netrunner.run(["cat", "/proc/self/cgroup"], cgroup=True).stdout)
    assert first != second and first.startswith("/netrunner/") and second.startswith("/netrunner/")
    assert not (Path(MOUNT) / first.lstrip("/")).exists()
    assert not (Path(MOUNT) / second.lstrip("/")).exists()


def test_the_child_is_inside_before_it_execs() -> None:
    # The very first thing the program does is read its own cgroup: it is
    # already the leaf (joining after exec would show the parent's).
    leaf = f"netrunner/early-{os.getpid()}"
    assert own_cgroup(netrunner.run(["cat", "/proc/self/cgroup"], cgroup=leaf).stdout) == "/" + leaf


def test_setsid_double_forked_daemons_in_the_cgroup_are_killed_and_the_leaf_removed() -> None:
    leaf = f"netrunner/daemons-{os.getpid()}"
    script = "(setsid sh -c 'trap \"\" TERM HUP; exec sleep 60' &); (setsid sleep 60 &); echo spawned"
    r = netrunner.run(["sh", "-c", script], cgroup=leaf)
    assert r.stdout == b"spawned\n"
    assert not (Path(MOUNT) / leaf).exists()


def test_a_path_with_parents_creates_them_and_keeps_them() -> None:
    leaf = f"netrunner/parent-{os.getpid()}/job"
    assert netrunner.run(["true"], cgroup=leaf).returncode == 0
    parent = Path(MOUNT) / leaf.rsplit("/", 1)[0]
    assert parent.is_dir() and not (Path(MOUNT) / leaf).exists()
    parent.rmdir()


@pytest.mark.parametrize("umask", [0, 0o077], ids=["umask-000", "umask-077"])
def test_parents_and_the_leaf_are_0755_whatever_the_umask(umask: int) -> None:
    # With umask 0 the parents used to be 0777 (another user squatted a
    # leaf's name); with 077 the leaf was 0700.  The fork server (whose
    # umask the shepherd's mkdir gets) is started under the umask too.
    top = Path(MOUNT) / "netrunner" / f"modes-{os.getpid()}"
    parents = [top, top / "a"]
    leaf = top / "a" / "job"
    old = os.umask(umask)
    FORK_SERVER.close()
    try:
        r = netrunner.run(
            ["stat", "-c", "%a %n", str(leaf)], cgroup=str(leaf.relative_to(MOUNT)), check=True, text=True
        )
        assert r.stdout == f"755 {leaf}\n"
        assert [oct(p.stat().st_mode & 0o7777) for p in parents] == ["0o755", "0o755"]
        assert not leaf.exists()
    finally:
        os.umask(old)
        FORK_SERVER.close()  # later tests get a server with the usual umask
        for p in reversed(parents):
            if p.exists():
                p.rmdir()


@pytest.mark.parametrize("depth", ["parent", "grandparent"])
def test_a_parent_owned_by_another_user_is_refused(depth: str, tmp_path: Path) -> None:
    # Whoever owns a parent controls what is in it: one that is neither ours
    # nor root's is refused, before anything is made below it or started.
    foreign = Path(MOUNT) / "netrunner" / f"foreign-{os.getpid()}"
    foreign.mkdir(mode=0o755)
    try:
        os.chown(foreign, 54321, 54321)
        relative = foreign.relative_to(MOUNT) / ("job" if depth == "parent" else "sub/job")
        sentinel = tmp_path / "ran"
        with pytest.raises(netrunner.CgroupError) as info:
            netrunner.run(["touch", str(sentinel)], cgroup=str(relative))
        assert info.value.errno == errno.EPERM
        assert info.value.filename == str(foreign)
        assert str(foreign) in str(info.value) and "54321" in str(info.value)
        assert not sentinel.exists()
        assert not [name for name in os.listdir(foreign) if (foreign / name).is_dir()]  # nothing made below
    finally:
        foreign.rmdir()


@pytest.mark.parametrize(
    "bad", ["/abs/path", "a/../b", "..", "a//b", "a/./b", "", "a\0b", "x" * 300, "/".join(["d"] * 2100)]
)
def test_bad_paths_are_refused_before_anything_runs(bad: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    with pytest.raises(ValueError):
        netrunner.run(["touch", str(sentinel)], cgroup=bad)
    assert not sentinel.exists()


def _front_ends() -> dict[str, Callable[[dict[str, Any]], object]]:
    async def aio_spawn(limits: dict[str, Any]) -> None:
        await aio.spawn(["true"], cgroup=True, limits=limits)

    async def aio_stream(limits: dict[str, Any]) -> None:
        async for _ in aio.stream(["true"], cgroup=True, limits=limits):
            pass

    return {
        "run": lambda limits: netrunner.run(["true"], cgroup=True, limits=limits),
        "stream": lambda limits: netrunner.stream(["true"], cgroup=True, limits=limits),
        "spawn": lambda limits: netrunner.spawn(["true"], cgroup=True, limits=limits),
        "aio.run": lambda limits: asyncio.run(aio.run(["true"], cgroup=True, limits=limits)),
        "aio.spawn": lambda limits: asyncio.run(aio_spawn(limits)),
        "aio.stream": lambda limits: asyncio.run(aio_stream(limits)),
        "Command": lambda limits: netrunner.Command("true", cgroup=True, limits=limits).run(),
        "Daemon": lambda limits: netrunner.Daemon(["true"], cgroup=True, limits=limits).start(),
    }


# Only <controller>.<file> of memory, pids, cpu, io, cpuset, hugetlb: never
# a cgroup.* file (cgroup.procs moves whoever writes it, cgroup.freeze
# wedges the child), never a name that could leave the leaf.
BAD_LIMITS = [
    "cgroup.procs",
    "cgroup.freeze",
    "cgroup.subtree_control",
    "../x",
    "..",
    "rdma.max",
    "misc.max",
    "memory",
    "memory.",
    "memory. max",
    "pids.max=1",
]


@pytest.mark.parametrize("front_end", list(_front_ends()))
@pytest.mark.parametrize("name", BAD_LIMITS)
def test_limits_other_than_controller_files_are_refused_before_anything_runs(front_end: str, name: str) -> None:
    with pytest.raises(ValueError, match="not a controller file"):
        _front_ends()[front_end]({name: "1"})
    # No leaf was made (cgroup=True: netrunner/<our pid>-<hex>; other test
    # runs on the machine may come and go in netrunner/ meanwhile).
    assert not [n for n in os.listdir(Path(MOUNT) / "netrunner") if n.startswith(f"{os.getpid()}-")]


def test_controller_files_pass_validation() -> None:
    assert settings({"memory.max": "100M", "pids.max": 64, "hugetlb.2MB.max": 0, "cpu.weight": 50}) == [
        b"memory.max=100M",
        b"pids.max=64",
        b"hugetlb.2MB.max=0",
        b"cpu.weight=50",
    ]


def test_a_path_too_long_once_under_the_mount_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    # Short enough relative to the mount, too long for the shepherd once the
    # mount is in front: a ValueError before any parent is created.
    top = f"long-{os.getpid()}"
    relative = f"netrunner/{top}"
    while len(relative) < 4000:
        relative += "/" + "d" * min(200, 4000 - len(relative) - 1)
    assert len(relative) <= 4000 < len(os.path.join(MOUNT, relative))
    with pytest.raises(ValueError, match="too long"):
        netrunner.run(["touch", str(tmp_path / "ran")], cgroup=relative)
    assert not (tmp_path / "ran").exists()
    assert not (Path(MOUNT) / "netrunner" / top).exists()


def test_an_existing_leaf_is_an_error_and_is_left_alone() -> None:
    leaf = Path(MOUNT) / f"netrunner/existing-{os.getpid()}"
    leaf.mkdir()
    try:
        with pytest.raises(netrunner.CgroupError) as info:
            netrunner.run(["true"], cgroup=str(leaf.relative_to(MOUNT)))
        assert info.value.errno == errno.EEXIST
        assert isinstance(info.value, OSError)
        assert leaf.is_dir()
    finally:
        leaf.rmdir()


NO_CGROUP_KILL = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
/* Pretend the kernel has no cgroup.kill (Linux < 5.14). */
int access(const char *path, int mode) {
    size_t n = strlen(path);
    if (n >= 12 && strcmp(path + n - 12, "/cgroup.kill") == 0) { errno = ENOENT; return -1; }
    int (*real)(const char *, int) = (int (*)(const char *, int))dlsym(RTLD_NEXT, "access");
    return real(path, mode);
}
"""


def test_a_leaf_without_cgroup_kill_is_refused_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream lesson 52: no failing open.  Without cgroup.kill the leaf could
    # not be emptied at once when the child ends, so the spawn is refused
    # (CgroupError, EOPNOTSUPP) before anything runs, and the leaf removed.
    (tmp_path / "shim.c").write_text(NO_CGROUP_KILL)
    shim = compile_c(tmp_path / "shim.so", "access() shim", ["-shared", "-fPIC", str(tmp_path / "shim.c"), "-ldl"])
    binary = compile_c(tmp_path / "netrunner-shepherd", "dynamic shepherd", ["-std=c11", "-O2", str(SHEPHERD_SRC)])
    wrapper = tmp_path / "shepherd"
    wrapper.write_text(f'#!/bin/sh\nLD_PRELOAD={shim} exec {binary} "$@"\n')
    wrapper.chmod(0o755)
    sentinel = tmp_path / "ran"
    leaf = f"netrunner/no-kill-{os.getpid()}"
    monkeypatch.delenv("NETRUNNER_FORK_SERVER", raising=False)
    previous = use_shepherd_binary(wrapper)  # the next spawn starts a server from the wrapper
    try:
        with pytest.raises(netrunner.CgroupError) as info:
            netrunner.run(["touch", str(sentinel)], cgroup=leaf)
        assert info.value.errno == errno.EOPNOTSUPP
        assert not sentinel.exists()
        assert not (Path(MOUNT) / leaf).exists()
        assert netrunner.run(["true"]).returncode == 0  # without a cgroup the shim changes nothing
    finally:
        use_shepherd_binary(previous)  # later tests get a server from the release build


def test_limits_need_their_controller_and_say_which() -> None:
    controllers = set((Path(MOUNT) / "netrunner" / "cgroup.controllers").read_text().split())
    if "pids" in controllers:
        r = netrunner.run(["cat", "pids.max"], cgroup=True, limits={"pids.max": 7})
        assert r.returncode == 0
    else:
        with pytest.raises(netrunner.CgroupError, match="pids"):
            netrunner.run(["true"], cgroup=True, limits={"pids.max": 7})
    with pytest.raises(ValueError, match="limits requires cgroup"):
        netrunner.run(["true"], limits={"pids.max": 7})


def test_owner_sigkill_empties_and_removes_the_cgroup() -> None:
    leaf = f"netrunner/owner-{os.getpid()}"
    owner_code = textwrap.dedent(
        f"""
        import os, sys, netrunner
        p = netrunner.spawn(["sh", "-c", "(setsid sleep 60 &); echo up; exec sleep 60"],
                            cgroup={leaf!r}, kill_timeout=0.5)
        assert p.read(timeout=10) == b"up\\n"
        os.write(1, b"%d\\n" % p.pid)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert owner.stdout is not None and owner.stdin is not None
    try:
        child = int(owner.stdout.readline())
        assert len((Path(MOUNT) / leaf / "cgroup.procs").read_text().split()) >= 2  # the child and its daemon
        stat = Path(f"/proc/{child}/stat").read_text()
        shepherd = os.pidfd_open(int(stat.rsplit(")", 1)[1].split()[1]))
        try:
            owner.kill()
            owner.wait(timeout=10)
            # The shepherd stops the child, kills the leaf, removes it, exits.
            assert select.select([shepherd], [], [], 0.5 + 3 + 2)[0], "the shepherd did not finish"
        finally:
            os.close(shepherd)
        assert not (Path(MOUNT) / leaf).exists(), "the cgroup outlived its owner"
    finally:
        owner.stdin.close()
        owner.stdout.close()


def test_memory_limit_and_oom_kill_are_reported() -> None:
    controllers = set((Path(MOUNT) / "netrunner" / "cgroup.controllers").read_text().split())
    if "memory" not in controllers:
        pytest.skip(f"the memory controller is not offered under {MOUNT} (a hybrid hierarchy keeps it on cgroup v1)")
    hog = [sys.executable, "-c", "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    r = netrunner.run(hog, cgroup=True, limits={"memory.max": "64M", "memory.swap.max": "0"})
    assert r.returncode == -9
    assert r.stats.oom_killed and r.stats.oom_kills
    assert r.stats.memory_peak is not None and r.stats.memory_peak <= 64 * 2**20 + 2**20
    with pytest.raises(netrunner.CalledProcessError, match="OOM killer"):
        netrunner.run(hog, cgroup=True, limits={"memory.max": "64M", "memory.swap.max": "0"}, check=True)


def test_shepherd_death_leaves_no_cgroup() -> None:
    # The shepherd normally empties and removes the leaf; if it is killed,
    # the owner (which sees it go) does, and the fork server kills the child.
    leaf = f"netrunner/orphaned-{os.getpid()}"
    p = netrunner.spawn(["sh", "-c", "(setsid sleep 60 &); echo up; exec sleep 60"], cgroup=leaf)
    try:
        assert p.read(timeout=10) == b"up\n"
        stat = Path(f"/proc/{p.pid}/stat").read_text()
        os.kill(int(stat.rsplit(")", 1)[1].split()[1]), 9)  # the shepherd
        with pytest.raises(netrunner.ShepherdError):
            p.wait(timeout=10)
        assert not (Path(MOUNT) / leaf).exists(), "the cgroup outlived its shepherd"
    finally:
        p.close()


def test_a_process_moved_into_the_leaf_from_outside_is_killed_and_the_leaf_removed(tmp_path: Path) -> None:
    # Everything in our leaf ends with the child, even a process that is
    # not its descendant (the shepherd's process-tree rule cannot see it):
    # cgroup.kill gets it, and the leaf is still removed by the time run()
    # returns.
    leaf = f"netrunner/foreign-{os.getpid()}"
    fifo = tmp_path / "inside"
    os.mkfifo(fifo)
    outsider = subprocess.Popen(["sleep", "60"])
    try:

        def move_the_outsider_in() -> Iterator[bytes]:
            read_fifo_line(fifo, 15)  # the child runs inside the leaf
            (Path(MOUNT) / leaf / "cgroup.procs").write_text(str(outsider.pid))
            yield b""  # then end of input: the child exits

        r = netrunner.run(
            ["sh", "-c", f"echo in > {fifo}; exec cat >/dev/null"],
            cgroup=leaf,
            input=move_the_outsider_in(),
            timeout=30,
        )
        assert r.returncode == 0
        assert outsider.wait(timeout=15) == -signal.SIGKILL
        assert not (Path(MOUNT) / leaf).exists()
    finally:
        if outsider.poll() is None:
            outsider.kill()
            outsider.wait()


def test_shepherd_death_on_an_event_loop_leaves_no_cgroup() -> None:
    # As above through netrunner.aio: the owner's clean-up of the leaf may
    # wait for it to empty, so on an event loop it runs in a thread.
    leaf = f"netrunner/orphaned-aio-{os.getpid()}"

    async def main() -> None:
        p = await aio.spawn(["sh", "-c", "(setsid sleep 60 &); echo up; exec sleep 60"], cgroup=leaf)
        async with p:
            assert await p.read(timeout=10) == b"up\n"
            stat = Path(f"/proc/{p.pid}/stat").read_text()
            os.kill(int(stat.rsplit(")", 1)[1].split()[1]), 9)  # the shepherd
            with pytest.raises(netrunner.ShepherdError):
                await p.wait(timeout=10)

    asyncio.run(main())
    for thread in threading.enumerate():
        if thread.name == "netrunner-cgroup-teardown":
            thread.join(10)
    assert not (Path(MOUNT) / leaf).exists(), "the cgroup outlived its shepherd"


def _thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return float(usage.ru_utime + usage.ru_stime)


@pytest.mark.parametrize("front_end", ["sync", "stream", "asyncio"])
def test_a_timed_out_run_in_a_cgroup_waits_for_the_hang_up_without_spinning(front_end: str) -> None:
    """After a timeout the pipes get no EOF grace (its deadline is "now"),
    and with a cgroup the run then waits for the shepherd's hang-up (it
    removes the leaf after EXITED).  A deadline already passed made the
    driver return at once without polling, so the owner never saw the
    hang-up and burned a core until the 3.5 s hang-up bound, on every such
    call (a service running timed commands in cgroups: a core per call).
    The calling thread's CPU time says whether it waited or spun: a few ms
    each when it waits, seconds when it spins."""

    def one() -> None:
        with pytest.raises(netrunner.TimeoutExpired):
            netrunner.run(["sleep", "60"], cgroup=True, timeout=0.05, kill_timeout=0.2)

    def one_stream() -> None:
        with pytest.raises(netrunner.TimeoutExpired):
            for _ in netrunner.stream(["sleep", "60"], cgroup=True, timeout=0.05, kill_timeout=0.2):
                pass

    async def one_async() -> None:
        with pytest.raises(netrunner.TimeoutExpired):
            await aio.run(["sleep", "60"], cgroup=True, timeout=0.05, kill_timeout=0.2)

    before = _thread_cpu()
    for _ in range(4):
        if front_end == "sync":
            one()
        elif front_end == "stream":
            one_stream()
        else:
            asyncio.run(one_async())
    spent = _thread_cpu() - before
    assert spent < 0.5, f"4 timed-out runs in a cgroup took {spent:.2f} s of the caller's CPU"
