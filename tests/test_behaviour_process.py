"""spawn() and its process as every front end has it (``netrunner.Process``,
``aio.AsyncProcess`` on asyncio and trio): round trips, reads and waits
with timeouts, stderr drained meanwhile, broken pipes, signals to the
group, stop's escalation, and the child stopped when the block is left or
the object dropped.  Written once against the facade in frontends.py;
what only one front end has (threads sharing a Process, cancelling a single
method, the loop's fairness) stays in test_process.py / test_aio.py."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from frontends import Front, FrontProcess
from procs import assert_group_gone, pid_gone

import netrunner

KiB = 1 << 10
MiB = 1 << 20
# Ignores SIGTERM, announces itself, then sleeps (exec keeps the ignore).
TERM_IGNORING = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60']


async def test_round_trip_and_state(front: Front) -> None:
    async with await front.spawn(["sh", "-c", "echo $$; exec cat"]) as p:
        assert isinstance(p.raw, netrunner.aio.AsyncProcess if front.is_async else netrunner.Process)
        assert await p.read_until(b"\n") == b"%d\n" % p.pid
        assert os.getpgid(p.pid) == p.pid  # its own group
        assert p.alive and p.returncode is None
        await p.write(b"hello\n")
        assert await p.read_until(b"\n") == b"hello\n"
        await p.write(b"a\0b\0\n")
        assert await p.read_until(b"\n") == b"a\0b\0\n"
        await p.write(bytearray(b"ba"))
        await p.write(memoryview(b"xyz")[:1])
        first = await p.read(1, timeout=20)  # read(n) gives at most n
        assert first == b"b"
        p.close_stdin()
        p.close_stdin()  # idempotent
        assert await p.read_all() == b"ax"
        assert await p.read() == b""  # EOF stays EOF
        assert await p.wait(timeout=20) == 0
        assert not p.alive and p.returncode == 0
        assert p.stats.returncode == 0 and p.stats.bytes_in == 14


async def test_large_round_trip_with_concurrent_writer_and_reader(front: Front) -> None:
    # 8 MiB through cat, written by one thread / task while another reads.
    data = bytes(range(256)) * (8 * MiB // 256)
    async with await front.spawn(["cat"]) as p:

        async def writer() -> None:
            view = memoryview(data)
            for i in range(0, len(data), 256 * KiB):
                await p.write(view[i : i + 256 * KiB])
            p.close_stdin()

        got, _ = await front.gather(lambda: p.read_all(within=60), writer)
        assert got == data
        assert await p.wait(timeout=20) == 0
        assert (p.stats.bytes_in, p.stats.bytes_out) == (len(data), len(data))


async def test_stats_live_then_final(front: Front) -> None:
    async with await front.spawn(["cat"]) as p:
        await p.write(b"x" * 1000)
        assert len(await p.read_until(b"x" * 1000)) == 1000
        live = p.stats
        assert isinstance(live, netrunner.Stats)
        assert live.returncode is None
        assert (live.bytes_in, live.bytes_out, live.bytes_err) == (1000, 1000, 0)
        assert live.write_count >= 1 and live.read_count >= 1 and live.duration >= 0
        assert live.user_time is None and live.system_time is None and live.max_rss is None
        p.close_stdin()
        assert await p.wait(timeout=20) == 0
        final = p.stats
        assert final.returncode == 0 and final.duration >= live.duration
        assert final.user_time is not None and final.system_time is not None
        assert final.max_rss is not None and final.max_rss > 0
        assert p.stats.duration == final.duration  # final means final: the clock has stopped


# ------------------------------------------------------------- timeouts
async def test_read_and_wait_timeouts_leave_the_process_usable(front: Front) -> None:
    async with await front.spawn(["cat"], kill_timeout=1) as p:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await p.read(timeout=0.2)
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError):
            await p.read_stderr(timeout=0.1)
        with pytest.raises(netrunner.TimeoutExpired) as info:
            await p.wait(timeout=0.2)
        assert isinstance(info.value, subprocess.TimeoutExpired)
        assert info.value.timeout == 0.2
        assert p.alive and p.returncode is None
        await p.write(b"after\n")
        assert await p.read_until(b"\n") == b"after\n"


# --------------------------------------------------------------- stderr
async def test_stderr_read_separately_and_drained_meanwhile(front: Front) -> None:
    async with await front.spawn(["sh", "-c", "echo out; echo oops >&2"]) as p:
        assert await p.read_all_stderr() == b"oops\n"
        assert await p.read_all() == b"out\n"
        assert await p.wait(timeout=20) == 0
    # Reading only stdout of a stderr flooder: stderr is drained meanwhile,
    # and the tail of it stays readable.
    async with await front.spawn(["sh", "-c", "head -c 3000000 /dev/zero >&2; echo out; echo last >&2"]) as p:
        assert await p.read_all(within=60) == b"out\n"
        assert await p.wait(timeout=20) == 0
        tail = await p.read_all_stderr()
        assert tail.endswith(b"\0last\n") and tail[:-5].count(0) == len(tail) - 5
        assert p.stats.bytes_err == 3_000_005
    # Waiting without reading at all: both pipes are drained meanwhile.
    script = "head -c 3000000 /dev/zero >&2; head -c 3000000 /dev/zero; echo end"
    async with await front.spawn(["sh", "-c", script]) as p:
        assert await p.wait(timeout=60) == 0
        assert (await p.read_all()).endswith(b"end\n")


async def test_stdin_devnull_and_stderr_merged(front: Front, tmp_path: Path) -> None:
    cmd = ["sh", "-c", "readlink /proc/self/fd/0; cat; echo err >&2"]
    for stdin in ("devnull", subprocess.DEVNULL):
        async with await front.spawn(cmd, stdin=stdin, stderr="stdout") as p:
            assert await p.read_all() == b"/dev/null\nerr\n"
            assert await p.wait(timeout=20) == 0
    script = 'pwd -P; printf "%s\\n" "$V"'
    async with await front.spawn(["sh", "-c", script], cwd=tmp_path, env={"V": "value"}) as p:
        assert await p.read_all() == os.fsencode(os.path.realpath(tmp_path)) + b"\nvalue\n"
        assert await p.wait(timeout=20) == 0


# ----------------------------------------------------------- broken pipe
async def test_write_to_a_closed_stdin_is_brokenpipe(front: Front) -> None:
    async with await front.spawn(["cat"]) as p:
        p.close_stdin()
        with pytest.raises(BrokenPipeError):
            await p.write(b"late")
        assert await p.wait(timeout=20) == 0
    async with await front.spawn(["sh", "-c", "exec 0<&-; echo closed; exec sleep 60"], kill_timeout=1) as p:
        assert await p.read_until(b"\n") == b"closed\n"
        with pytest.raises(BrokenPipeError):
            await p.write(b"x" * (2 * MiB))  # more than any pipe buffer
        p.kill()
        assert await p.wait(timeout=20) == -signal.SIGKILL


# -------------------------------------------------------------- signals
async def test_signals_reach_the_group(front: Front) -> None:
    # The background sleep dies of USR1 too (same group), so the wait
    # returns and the trap runs whenever the signal lands.
    script = 'trap "echo got-usr1; exit 3" USR1; echo ready; sleep 60 & wait'
    async with await front.spawn(["sh", "-c", script]) as p:
        assert await p.read_until(b"ready\n") == b"ready\n"
        with pytest.raises(ValueError):
            p.send_signal("NOPE")
        p.send_signal("usr1")
        assert await p.read_all() == b"got-usr1\n"
        assert await p.wait(timeout=20) == 3
        # After the exit: nothing to do and no error, the returncode stays.
        p.send_signal("TERM")
        p.terminate()
        p.kill()
        assert await p.stop() == 3
        assert await p.wait(timeout=1) == 3
        with pytest.raises(ValueError):
            p.send_signal("NOPE")  # still refused
    async with await front.spawn(["sleep", "60"]) as p:
        p.terminate()
        assert await p.wait(timeout=20) == -signal.SIGTERM
    async with await front.spawn(TERM_IGNORING) as p:
        assert await p.read_until(b"ready\n") == b"ready\n"
        p.terminate()
        with pytest.raises(netrunner.TimeoutExpired):
            await p.wait(timeout=0.3)
        assert p.alive
        p.kill()
        assert await p.wait(timeout=20) == -signal.SIGKILL
        assert p.stats.returncode == -signal.SIGKILL


# ----------------------------------------------------------------- stop
async def test_stop_escalates_to_sigkill_and_reaps_the_group(front: Front) -> None:
    script = 'trap "" TERM; sleep 60 & echo $!; echo ready; exec sleep 60'
    async with await front.spawn(["sh", "-c", script], kill_timeout=30) as p:
        grandchild = int((await p.read_until(b"ready\n")).split()[0])
        started = time.monotonic()
        assert await p.stop(grace=0.3) == -signal.SIGKILL
        assert 0.3 <= time.monotonic() - started < 0.3 + 5
        assert p.returncode == -signal.SIGKILL
        assert_group_gone(p.pid)
        assert pid_gone(grandchild, within=0)
    # The default grace is kill_timeout.
    async with await front.spawn(TERM_IGNORING, kill_timeout=0.3) as p:
        assert await p.read_until(b"ready\n") == b"ready\n"
        started = time.monotonic()
        assert await p.stop() == -signal.SIGKILL
        assert 0.3 <= time.monotonic() - started < 0.3 + 5


async def test_stop_of_a_term_obeying_child_and_with_zero_grace(front: Front) -> None:
    async with await front.spawn(["sleep", "60"], kill_timeout=30) as p:
        started = time.monotonic()
        assert await p.stop() == -signal.SIGTERM  # exits on TERM: no kill_timeout wait
        assert time.monotonic() - started < 10
        assert not p.alive
        assert_group_gone(p.pid)
    async with await front.spawn(["sleep", "60"], kill_timeout=60) as p:
        assert await p.stop(0) == -signal.SIGKILL


async def test_the_childs_exit_kills_its_leftover_grandchildren(front: Front) -> None:
    async with await front.spawn(["sh", "-c", "sleep 60 & echo $!"]) as p:
        grandchild = int(await p.read_until(b"\n"))
        assert await p.wait(timeout=20) == 0
        assert await front.in_thread(pid_gone, grandchild, 5)


# ------------------------------------------------------------- lifetime
async def test_leaving_the_block_stops_the_group(front: Front) -> None:
    async with await front.spawn(["sleep", "60"]) as p:
        assert p.alive
    assert not p.alive and p.returncode == -signal.SIGTERM
    assert_group_gone(p.pid)
    async with await front.spawn(TERM_IGNORING, kill_timeout=0.3) as p:
        assert await p.read_until(b"\n") == b"ready\n"
    assert p.returncode == -signal.SIGKILL
    assert_group_gone(p.pid)
    with pytest.raises(KeyError):
        async with await front.spawn(TERM_IGNORING, kill_timeout=0.3) as q:
            assert await q.read_until(b"\n") == b"ready\n"
            raise KeyError("body failed")
    assert q.returncode == -signal.SIGKILL
    assert_group_gone(q.pid)
    # A child that ended by itself keeps its returncode; aclose is idempotent.
    async with await front.spawn(["sh", "-c", "exit 6"]) as p:
        assert await p.wait(timeout=20) == 6
    assert p.returncode == 6
    p = await front.spawn(["sleep", "60"])
    await p.aclose()
    await p.aclose()
    assert p.returncode == -signal.SIGTERM
    assert_group_gone(p.pid)


async def test_a_dropped_process_is_stopped(front: Front) -> None:
    async def dropped() -> int:
        p: FrontProcess | None = await front.spawn(TERM_IGNORING, kill_timeout=0.3)
        assert p is not None
        assert await p.read_until(b"\n") == b"ready\n"
        pid = p.pid
        p = None  # the last reference
        return pid

    pid = await dropped()
    gc.collect()
    # TERM is ignored: SIGKILL after kill_timeout.
    assert await front.in_thread(pid_gone, pid, 0.3 + 5), "a dropped process left its child running"
