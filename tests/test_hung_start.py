"""A child that hangs between its fork and its exec (here: frozen as it
joins a leaf under a frozen cgroup) does not hang its owner: the caller's
timeout bounds the start, an interrupt or a cancellation stops and reaps
it, and nothing (process, leaf) is left behind.  The shepherd is not
suspended meanwhile (it forks, it does not vfork), so it acts on them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import cgroup_events, frozen_cgroup

import netrunner
from netrunner import aio
from netrunner._cgroup import mount_point

TIMEOUT = 1.0
KILL_TIMEOUT = 0.5
BOUND = TIMEOUT + KILL_TIMEOUT + 0.5  # the spec's bound for run() on timeout


@pytest.fixture
def frozen() -> Iterator[Path]:
    with frozen_cgroup("hung-start") as parent:
        yield parent


def leaf_of(parent: Path) -> str:
    """``cgroup=`` for a leaf under ``parent`` (relative to the mount)."""
    return str(parent.relative_to(mount_point()) / "leaf")


def assert_nothing_left(parent: Path) -> None:
    """The leaf is removed (so the child is gone: a populated leaf cannot
    be removed), and nothing else is in the frozen parent."""
    assert not (parent / "leaf").exists(), "the child's leaf was left behind"
    assert b"populated 0" in (parent / "cgroup.events").read_bytes().splitlines()


@pytest.mark.parametrize("api", ["run", "stream", "aio.run", "aio.stream"])
def test_timeout_bounds_a_start_that_hangs(frozen: Path, api: str) -> None:
    # Before: ShepherdError after 35 s (a fixed 30 s handshake limit), the
    # shepherd suspended in vfork all along.
    leaf = leaf_of(frozen)
    options = {"cgroup": leaf, "timeout": TIMEOUT, "kill_timeout": KILL_TIMEOUT}

    async def in_loop() -> None:
        if api == "aio.run":
            await aio.run(["true"], **options)  # type: ignore[arg-type]
        else:
            async for _chunk in aio.stream(["true"], **options):  # type: ignore[arg-type]
                pass

    began = time.monotonic()
    with pytest.raises(netrunner.TimeoutExpired) as info:
        if api == "run":
            netrunner.run(["true"], **options)  # type: ignore[arg-type]
        elif api == "stream":
            for _chunk in netrunner.stream(["true"], **options):  # type: ignore[arg-type]
                pass
        else:
            asyncio.run(in_loop())
    took = time.monotonic() - began
    assert TIMEOUT <= took <= BOUND, f"TimeoutExpired after {took:.2f} s"
    assert info.value.timeout == TIMEOUT
    assert_nothing_left(frozen)


def test_cancelling_aio_run_while_the_start_hangs(frozen: Path) -> None:
    leaf = leaf_of(frozen)

    async def main() -> float:
        task = asyncio.ensure_future(aio.run(["true"], cgroup=leaf, kill_timeout=KILL_TIMEOUT))
        await asyncio.to_thread(cgroup_events, frozen, b"populated 1", 15)  # the child is frozen
        task.cancel()
        began = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - began

    took = asyncio.run(main())
    assert took <= KILL_TIMEOUT + 2.0, f"cancellation took {took:.2f} s"
    assert_nothing_left(frozen)


def test_interrupting_run_while_the_start_hangs(frozen: Path) -> None:
    # No timeout: run() waits as subprocess would, but a KeyboardInterrupt
    # (here from a thread that sees the child frozen) stops and reaps it.
    leaf = leaf_of(frozen)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    interrupted_at: list[float] = []

    def interrupt() -> None:
        cgroup_events(frozen, b"populated 1", 15)
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    try:
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            netrunner.run(["true"], cgroup=leaf, kill_timeout=KILL_TIMEOUT)
        took = time.monotonic() - interrupted_at[0]
    finally:
        thread.join(30)
        signal.signal(signal.SIGINT, previous)
    assert took <= KILL_TIMEOUT + 2.0, f"the interrupt took {took:.2f} s"
    assert_nothing_left(frozen)


def test_a_hung_spawn_waits_for_the_exec(frozen: Path) -> None:
    # spawn() has no timeout: it waits for the exec like subprocess.Popen,
    # and starts the child once it can (here: once the cgroup thaws).
    leaf = leaf_of(frozen)
    got: list[netrunner.Process] = []

    def start() -> None:
        got.append(netrunner.spawn(["echo", "late"], cgroup=leaf, stdin="devnull"))

    thread = threading.Thread(target=start)
    thread.start()
    try:
        cgroup_events(frozen, b"populated 1", 15)
        assert thread.is_alive() and not got  # still waiting for the exec
    finally:
        (frozen / "cgroup.freeze").write_text("0")
        thread.join(30)
    with got[0] as p:
        assert p.read() == b"late\n"
        assert p.wait() == 0
    assert_nothing_left(frozen)


def test_cli_timeout_bounds_a_start_that_hangs(frozen: Path) -> None:
    env = dict(os.environ)
    src = str(Path(netrunner.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-m", "netrunner", "--timeout", str(TIMEOUT), "--kill-timeout", str(KILL_TIMEOUT)]
    began = time.monotonic()
    done = subprocess.run(
        [*command, "--cgroup", leaf_of(frozen), "--", "true"], env=env, capture_output=True, timeout=60
    )
    took = time.monotonic() - began
    assert done.returncode == 124, done  # coreutils timeout's status
    assert took <= BOUND + 2.0, f"the CLI took {took:.2f} s (interpreter start-up included)"
    assert_nothing_left(frozen)
