"""Unit tests of the sans-IO shepherd protocol (``netrunner._protocol``).

The decoder is fed bytes exactly as ``recvmsg`` may return them: split
anywhere, coalesced, truncated or garbage.  Fds are plain integers here: the
decoder only queues and hands them out, it never touches them.  The last
tests check that the C header generated from ``_opcodes.py`` is current and
covers every ``NR_`` name the shepherd uses.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netrunner import _opcodes as op
from netrunner._protocol import (
    CgroupStats,
    Decoder,
    Exited,
    ProtocolError,
    SpawnFailed,
    SpawnRequest,
    Started,
    encode_signal,
    encode_spawn,
    encode_stop,
    frame,
)

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct("<IHH")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------ frame builders


def raw_frame(opcode: int, payload: bytes = b"", reserved: int = 0, length: int | None = None) -> bytes:
    return HEADER.pack(len(payload) if length is None else length, opcode, reserved) + payload


def started_frame(pid: int, mask: int) -> bytes:
    return raw_frame(op.OP_STARTED, struct.pack("<iI", pid, mask))


def spawn_failed_frame(stage: int, err: int) -> bytes:
    return raw_frame(op.OP_SPAWN_FAILED, struct.pack("<Ii", stage, err))


def exited_frame(status: int, utime: int, stime: int, maxrss: int) -> bytes:
    return raw_frame(op.OP_EXITED, struct.pack("<iqqq", status, utime, stime, maxrss))


MASK_BITS = (op.FDMASK_STDIN, op.FDMASK_STDOUT, op.FDMASK_STDERR, op.FDMASK_PIDFD)
I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, Started | SpawnFailed | Exited, int]:
    """One valid first shepherd->owner frame (STARTED or SPAWN_FAILED), the
    event it must decode to (with placeholder fds numbered from 0), and how
    many fds it consumes."""
    kind = draw(st.sampled_from(["started", "failed"]))
    if kind == "started":
        pid = draw(st.integers(1, 2**31 - 1))
        mask = draw(st.integers(0, 15))
        slots = []
        n = 0
        for bit in MASK_BITS:
            if mask & bit:
                slots.append(n)
                n += 1
            else:
                slots.append(None)
        return started_frame(pid, mask), Started(pid, *slots), n
    if kind == "failed":
        stage = draw(st.integers(0, 2**32 - 1))
        err = draw(I32)
        return spawn_failed_frame(stage, err), SpawnFailed(stage, err), 0
    raise AssertionError(kind)


@st.composite
def endings(draw: st.DrawFn) -> list[tuple[bytes, object, int]]:
    """What may follow STARTED: CGROUP_STATS, EXITED, both (in that order)
    or neither (a connection still open)."""
    out: list[tuple[bytes, object, int]] = []
    if draw(st.booleans()):
        oom, peak = draw(I64), draw(I64)
        out.append((raw_frame(op.OP_CGROUP_STATS, struct.pack("<qq", oom, peak)), CgroupStats(oom, peak), 0))
    if draw(st.booleans()):
        status, utime, stime, maxrss = draw(I32), draw(I64), draw(I64), draw(I64)
        out.append((exited_frame(status, utime, stime, maxrss), Exited(status, utime, stime, maxrss), 0))
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[object], list[int]]:
    """A valid frame sequence (one connection's, in the order the rules
    allow), its expected events (with real fd numbers filled in, handed out
    in order) and the fds that arrive with it."""
    first = draw(messages())
    msgs = [first, *(draw(endings()) if isinstance(first[1], Started) else [])]
    data = b""
    expected: list[object] = []
    fds: list[int] = []
    next_fd = 100
    for raw, event, nfds in msgs:
        data += raw
        if isinstance(event, Started):
            mine = list(range(next_fd, next_fd + nfds))
            next_fd += nfds
            fds += mine
            event = Started(
                event.pid,
                *(
                    None if slot is None else mine[slot]
                    for slot in (event.stdin, event.stdout, event.stderr, event.pidfd)
                ),
            )
        expected.append(event)
    return data, expected, fds


def feed_pieces(data: bytes, cuts: list[int], fds: list[int]) -> tuple[list[object], Decoder]:
    decoder = Decoder()
    decoder.add_fds(fds)
    events: list[object] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        events += decoder.feed(data[start:end])
    return events, decoder


# ------------------------------------------------------------------ decoder


@SETTINGS
@given(streams())
def test_whole_feed_decodes_every_frame(stream: tuple[bytes, list[object], list[int]]) -> None:
    data, expected, fds = stream
    decoder = Decoder()
    decoder.add_fds(fds)
    assert decoder.feed(data) == expected
    assert decoder.pending == 0
    assert decoder.take_unclaimed_fds() == []
    assert not decoder.broken


@SETTINGS
@given(streams())
def test_byte_by_byte_equals_whole(stream: tuple[bytes, list[object], list[int]]) -> None:
    data, expected, fds = stream
    events, decoder = feed_pieces(data, list(range(1, len(data))), fds)
    assert events == expected
    assert decoder.pending == 0


@SETTINGS
@given(st.data(), streams())
def test_any_split_equals_whole(data_st: st.DataObject, stream: tuple[bytes, list[object], list[int]]) -> None:
    data, expected, fds = stream
    cuts = data_st.draw(st.lists(st.integers(0, len(data)), max_size=20))
    events, decoder = feed_pieces(data, cuts, fds)
    assert events == expected
    assert decoder.pending == 0
    assert decoder.take_unclaimed_fds() == []


def test_empty_feed_is_harmless() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == 0


def test_coalesced_started_and_exited_in_one_feed() -> None:
    decoder = Decoder()
    decoder.add_fds([7, 8, 9])
    data = started_frame(4242, 7) + exited_frame(0, 1500, 250, 2048)
    assert decoder.feed(data) == [Started(4242, 7, 8, 9), Exited(0, 1500, 250, 2048)]
    assert decoder.pending == 0


def test_coalesced_frames_with_a_partial_tail() -> None:
    decoder = Decoder()
    decoder.add_fds([5])
    tail = exited_frame(9 << 8, 1, 2, 3)
    data = started_frame(77, op.FDMASK_STDOUT) + tail[:11]
    assert decoder.feed(data) == [Started(77, None, 5, None)]
    assert decoder.pending == 11
    assert decoder.feed(tail[11:]) == [Exited(9 << 8, 1, 2, 3)]
    assert decoder.pending == 0


@SETTINGS
@given(messages(), st.data())
def test_truncated_frame_yields_nothing_and_is_kept(msg: tuple[bytes, object, int], data_st: st.DataObject) -> None:
    raw, event, nfds = msg
    cut = data_st.draw(st.integers(0, len(raw) - 1))
    decoder = Decoder()
    decoder.add_fds(range(nfds))
    assert decoder.feed(raw[:cut]) == []
    assert decoder.pending == cut
    assert not decoder.broken
    # A truncated frame claims no fds until it is complete.
    assert decoder.feed(raw[cut:]) == [event]
    assert decoder.pending == 0


@SETTINGS
@given(streams(), st.data())
def test_truncated_stream_keeps_only_the_partial_frame(
    stream: tuple[bytes, list[object], list[int]], data_st: st.DataObject
) -> None:
    data, expected, fds = stream
    cut = data_st.draw(st.integers(0, len(data)))
    decoder = Decoder()
    decoder.add_fds(fds)
    got = decoder.feed(data[:cut])
    # Exactly the frames wholly inside the prefix come out, in order.
    assert got == expected[: len(got)]
    complete = 0
    for event in got:
        complete += HEADER.size + {Started: 8, SpawnFailed: 8, CgroupStats: 16, Exited: 28}[type(event)]
    assert decoder.pending == cut - complete
    assert decoder.pending < HEADER.size + 28 or cut == len(data)
    assert got + decoder.feed(data[cut:]) == expected


def assert_broken(decoder: Decoder) -> None:
    assert decoder.broken
    with pytest.raises(ProtocolError):
        decoder.feed(b"")
    with pytest.raises(ProtocolError):
        decoder.feed(spawn_failed_frame(op.STAGE_EXEC, 2))


BAD_FRAMES = {
    "garbage": b"this is not a frame at all",
    "all-ones": b"\xff" * 16,
    "unknown-opcode": raw_frame(99, b"\0" * 8),
    "owner-opcode": raw_frame(op.OP_SPAWN, b"\0" * 8),
    "opcode-zero": raw_frame(0),
    "reserved-nonzero": raw_frame(op.OP_SPAWN_FAILED, struct.pack("<Ii", 8, 2), reserved=1),
    "reserved-high-bit": raw_frame(op.OP_EXITED, b"\0" * 28, reserved=0x8000),
    "oversize-length": HEADER.pack(op.MAX_PAYLOAD + 1, op.OP_EXITED, 0),
    "max-u32-length": HEADER.pack(0xFFFFFFFF, op.OP_STARTED, 0),
    "started-short": raw_frame(op.OP_STARTED, b"\1\0\0\0"),
    "started-long": raw_frame(op.OP_STARTED, struct.pack("<iII", 1, 0, 0)),
    "spawn-failed-short": raw_frame(op.OP_SPAWN_FAILED, b"\0" * 7),
    "exited-short": raw_frame(op.OP_EXITED, b"\0" * 27),
    "exited-long": raw_frame(op.OP_EXITED, b"\0" * 29),
    "started-pid-zero": started_frame(0, 0),
    "started-pid-negative": started_frame(-5, 0),
    "started-bad-mask": started_frame(10, 16),
}


@pytest.mark.parametrize("bad", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_invalid_frame_raises_and_stays_broken(bad: bytes) -> None:
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(bad)
    assert_broken(decoder)


@pytest.mark.parametrize("bad", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_invalid_frame_after_valid_ones(bad: bytes) -> None:
    decoder = Decoder()
    assert decoder.feed(spawn_failed_frame(op.STAGE_CHDIR, 2)) == [SpawnFailed(op.STAGE_CHDIR, 2)]
    with pytest.raises(ProtocolError):
        decoder.feed(bad)
    assert_broken(decoder)


@pytest.mark.parametrize(
    "header",
    [
        HEADER.pack(op.MAX_PAYLOAD + 1, op.OP_EXITED, 0),
        HEADER.pack(28, op.OP_EXITED, 3),
    ],
    ids=["oversize", "reserved"],
)
def test_bad_header_fails_without_waiting_for_the_payload(header: bytes) -> None:
    decoder = Decoder()
    assert decoder.feed(header[:7]) == []
    with pytest.raises(ProtocolError):
        decoder.feed(header[7:])
    assert_broken(decoder)


def test_largest_allowed_length_is_just_pending() -> None:
    decoder = Decoder()
    assert decoder.feed(HEADER.pack(op.MAX_PAYLOAD, op.OP_EXITED, 0) + b"\0" * 100) == []
    assert decoder.pending == HEADER.size + 100
    assert not decoder.broken


@SETTINGS
@given(st.binary(max_size=200), st.data())
def test_arbitrary_bytes_only_ever_raise_protocol_error(blob: bytes, data_st: st.DataObject) -> None:
    """Garbage either decodes or raises ProtocolError, the same whole or split."""
    decoder = Decoder()
    decoder.add_fds(range(50))
    try:
        whole = decoder.feed(blob)
        whole_error = False
    except ProtocolError:
        whole_error = True
        assert_broken(decoder)
    cuts = data_st.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    try:
        split, split_decoder = feed_pieces(blob, cuts, list(range(50)))
        split_error = False
    except ProtocolError:
        split_error = True
    assert whole_error == split_error
    if not whole_error:
        assert split == whole
        assert split_decoder.pending == decoder.pending


# ------------------------------------------------------------------ fds


@pytest.mark.parametrize("mask", range(16))
def test_fds_are_handed_out_in_mask_order(mask: int) -> None:
    # stdin, stdout, stderr, then the child's pidfd (FDMASK_PIDFD).
    decoder = Decoder()
    decoder.add_fds([30, 31, 32, 33])
    (event,) = decoder.feed(started_frame(99, mask))
    expected = []
    queue = [30, 31, 32, 33]
    for bit in MASK_BITS:
        expected.append(queue.pop(0) if mask & bit else None)
    assert (event.stdin, event.stdout, event.stderr, event.pidfd) == tuple(expected)
    # What the frame did not claim stays for the driver to close.
    assert decoder.take_unclaimed_fds() == queue
    assert decoder.take_unclaimed_fds() == []


def test_a_second_started_is_out_of_order_and_its_fds_go_back_to_the_driver() -> None:
    decoder = Decoder()
    decoder.add_fds([10])
    decoder.add_fds([11, 12])
    assert decoder.feed(started_frame(1, 1)) == [Started(1, 10, None, None)]
    with pytest.raises(ProtocolError, match="Started out of order"):
        decoder.feed(started_frame(2, 6))
    assert_broken(decoder)
    assert sorted(decoder.take_unclaimed_fds()) == [11, 12]


# ------------------------------------------------------------ frame order


def _frames() -> dict[str, bytes]:
    return {
        "STARTED": started_frame(1, 0),
        "SPAWN_FAILED": spawn_failed_frame(op.STAGE_EXEC, 2),
        "CGROUP_STATS": raw_frame(op.OP_CGROUP_STATS, struct.pack("<qq", 0, -1)),
        "EXITED": exited_frame(0, 1, 2, 3),
    }


# Every sequence the rules allow; a prefix of one is allowed too.
_ALLOWED = {
    ("SPAWN_FAILED",),
    ("STARTED", "EXITED"),
    ("STARTED", "CGROUP_STATS", "EXITED"),
}


def _allowed(names: tuple[str, ...]) -> bool:
    return any(whole[: len(names)] == names for whole in _ALLOWED)


@pytest.mark.parametrize(
    "names",
    [combo for n in (1, 2, 3) for combo in itertools.product(_frames(), repeat=n) if _allowed(combo[:-1])],
    ids="-".join,
)
def test_frames_follow_the_order_rules_however_they_are_cut(names: tuple[str, ...]) -> None:
    """STARTED (or SPAWN_FAILED) first, CGROUP_STATS only while running,
    nothing after EXITED or SPAWN_FAILED: an out-of-order frame is a
    ProtocolError whether it came alone or coalesced with the others."""
    frames = _frames()
    data = b"".join(frames[name] for name in names)
    for cuts in ([], list(range(1, len(data)))):  # one read; byte by byte
        decoder = Decoder()
        got: list[object] = []
        try:
            for start, end in itertools.pairwise([0, *cuts, len(data)]):
                got += decoder.feed(data[start:end])
        except ProtocolError:
            assert not _allowed(names), names
            assert_broken(decoder)
        else:
            assert _allowed(names), names
            assert [type(e).__name__ for e in got] == [
                {
                    "STARTED": "Started",
                    "SPAWN_FAILED": "SpawnFailed",
                    "CGROUP_STATS": "CgroupStats",
                    "EXITED": "Exited",
                }[n]
                for n in names
            ]


def test_fds_added_in_pieces_before_the_frame_completes() -> None:
    decoder = Decoder()
    data = started_frame(5, 7)
    decoder.add_fds([40])
    assert decoder.feed(data[:3]) == []
    decoder.add_fds([41, 42])
    assert decoder.feed(data[3:]) == [Started(5, 40, 41, 42)]


@pytest.mark.parametrize(("mask", "have"), [(1, 0), (7, 2), (6, 1), (5, 1), (15, 3), (8, 0)])
def test_missing_fds_is_a_protocol_error(mask: int, have: int) -> None:
    decoder = Decoder()
    decoder.add_fds(range(200, 200 + have))
    with pytest.raises(ProtocolError):
        decoder.feed(started_frame(123, mask))
    assert_broken(decoder)
    # Nothing was handed out, so every fd that arrived is the driver's to close.
    assert sorted(decoder.take_unclaimed_fds()) == list(range(200, 200 + have))


def test_fds_of_a_started_lost_to_a_later_error_are_returned() -> None:
    """STARTED and garbage in one read: feed() raises, so the Started event
    never reaches the driver; its fds must not vanish with it, or nobody
    closes them (the driver closes ``take_unclaimed_fds()`` on errors)."""
    decoder = Decoder()
    decoder.add_fds([60, 61, 62, 63])
    with pytest.raises(ProtocolError):
        decoder.feed(started_frame(8, 7) + b"garbage garbage!")
    assert sorted(decoder.take_unclaimed_fds()) == [60, 61, 62, 63]


# ------------------------------------------------------------------ encoders


def parse_frame(data: bytes) -> tuple[int, bytes]:
    length, opcode, reserved = HEADER.unpack_from(data)
    assert reserved == 0
    assert len(data) == HEADER.size + length
    return opcode, data[HEADER.size :]


@pytest.mark.parametrize("signo", [0, -1, 65, 1000, 2**32 + 15])
def test_encode_signal_rejects_out_of_range(signo: int) -> None:
    with pytest.raises(ValueError):
        encode_signal(signo)


@given(st.integers(1, 64))
def test_encode_signal_frame(signo: int) -> None:
    assert parse_frame(encode_signal(signo)) == (op.OP_SIGNAL, struct.pack("<I", signo))


@given(st.floats(max_value=0.0, exclude_max=True, allow_nan=False))
def test_encode_stop_rejects_negative(grace: float) -> None:
    with pytest.raises(ValueError):
        encode_stop(grace)


@pytest.mark.parametrize("grace", [-1, -0.4, -1e-9, 4294967.296, 1e300])
def test_encode_stop_rejects_out_of_range(grace: float) -> None:
    with pytest.raises(ValueError):
        encode_stop(grace)


@pytest.mark.parametrize(
    ("grace", "ms"), [(0, 0), (0.0, 0), (0.001, 1), (1.5, 1500), (5, 5000), (4294967.295, 0xFFFFFFFF)]
)
def test_encode_stop_frame(grace: float, ms: int) -> None:
    assert parse_frame(encode_stop(grace)) == (op.OP_STOP, struct.pack("<I", ms))


def test_frame_rejects_oversize_payload() -> None:
    assert parse_frame(frame(op.OP_SIGNAL, b"abcd")) == (op.OP_SIGNAL, b"abcd")
    with pytest.raises(ValueError):
        frame(op.OP_SPAWN, bytes(op.MAX_PAYLOAD + 1))


def parse_tlv(payload: bytes) -> list[tuple[int, bytes]]:
    """The shepherd's view of an OP_SPAWN payload: u16 tag, u32 length, value."""
    fields = []
    off = 0
    while off < len(payload):
        assert len(payload) - off >= 6, "truncated TLV header"
        tag, length = struct.unpack_from("<HI", payload, off)
        off += 6
        assert length <= len(payload) - off, "TLV value runs past the payload"
        fields.append((tag, payload[off : off + length]))
        off += length
    return fields


NO_NUL = st.binary(max_size=40).filter(lambda b: b"\0" not in b)


@st.composite
def spawn_requests(draw: st.DrawFn) -> SpawnRequest:
    return SpawnRequest(
        argv=draw(st.lists(NO_NUL, min_size=1, max_size=6)),
        env=draw(st.lists(NO_NUL, max_size=6)),
        executables=draw(st.lists(NO_NUL, min_size=1, max_size=4)),
        cwd=draw(st.none() | NO_NUL),
        stdin=draw(st.sampled_from([op.STDIO_PIPE, op.STDIO_DEVNULL, op.STDIO_INHERIT])),
        stdout=draw(st.sampled_from([op.STDIO_PIPE, op.STDIO_DEVNULL, op.STDIO_INHERIT])),
        stderr=draw(st.sampled_from([op.STDIO_PIPE, op.STDIO_DEVNULL, op.STDIO_INHERIT, op.STDIO_STDOUT])),
        kill_timeout=draw(st.integers(0, 4294967295)) / 1000,
        rlimits=draw(
            st.lists(
                st.tuples(st.integers(0, 15), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                max_size=4,
            )
        ),
        nice=draw(st.none() | st.integers(-40, 40)),
        new_session=draw(st.booleans()),
        pass_fds=tuple(draw(st.lists(st.integers(3, 2**31 - 1), max_size=5, unique=True))),
    )


@SETTINGS
@given(spawn_requests())
def test_encode_spawn_round_trips(rq: SpawnRequest) -> None:
    opcode, payload = parse_frame(encode_spawn(rq))
    assert opcode == op.OP_SPAWN
    fields = parse_tlv(payload)
    expected: list[tuple[int, bytes]] = []
    expected += [(op.FIELD_ARGV, a) for a in rq.argv]
    expected += [(op.FIELD_ENV, e) for e in rq.env]
    expected += [(op.FIELD_EXEC, x) for x in rq.executables]
    if rq.cwd is not None:
        expected.append((op.FIELD_CWD, rq.cwd))
    expected += [
        (op.FIELD_STDIN, struct.pack("<I", rq.stdin)),
        (op.FIELD_STDOUT, struct.pack("<I", rq.stdout)),
        (op.FIELD_STDERR, struct.pack("<I", rq.stderr)),
        (op.FIELD_KILL_TIMEOUT, struct.pack("<I", round(rq.kill_timeout * 1000))),
    ]
    expected += [(op.FIELD_RLIMIT, struct.pack("<IQQ", *r)) for r in rq.rlimits]
    if rq.nice is not None:
        expected.append((op.FIELD_NICE, struct.pack("<i", rq.nice)))
    if rq.new_session:
        expected.append((op.FIELD_NEW_SESSION, b""))
    expected += [(op.FIELD_PASS_FD, struct.pack("<I", fd)) for fd in rq.pass_fds]
    assert fields == expected
    # The request decodes back to what was encoded.
    tags = [tag for tag, _ in fields]
    assert [v for t, v in fields if t == op.FIELD_ARGV] == rq.argv
    assert [v for t, v in fields if t == op.FIELD_EXEC] == rq.executables
    assert tags.count(op.FIELD_CWD) == (rq.cwd is not None)
    (ms,) = struct.unpack("<I", dict(fields)[op.FIELD_KILL_TIMEOUT])
    assert abs(ms / 1000 - rq.kill_timeout) < 0.0005


def test_encode_spawn_known_bytes() -> None:
    rq = SpawnRequest(
        argv=[b"cat"],
        env=[b"A=1"],
        executables=[b"/bin/cat"],
        cwd=b"/",
        stdin=op.STDIO_PIPE,
        stdout=op.STDIO_PIPE,
        stderr=op.STDIO_STDOUT,
        kill_timeout=2.5,
        rlimits=[(7, 64, 2**64 - 1)],
    )
    payload = (
        struct.pack("<HI", op.FIELD_ARGV, 3) + b"cat"
        + struct.pack("<HI", op.FIELD_ENV, 3) + b"A=1"
        + struct.pack("<HI", op.FIELD_EXEC, 8) + b"/bin/cat"
        + struct.pack("<HI", op.FIELD_CWD, 1) + b"/"
        + struct.pack("<HII", op.FIELD_STDIN, 4, op.STDIO_PIPE)
        + struct.pack("<HII", op.FIELD_STDOUT, 4, op.STDIO_PIPE)
        + struct.pack("<HII", op.FIELD_STDERR, 4, op.STDIO_STDOUT)
        + struct.pack("<HII", op.FIELD_KILL_TIMEOUT, 4, 2500)
        + struct.pack("<HIIQQ", op.FIELD_RLIMIT, 20, 7, 64, 2**64 - 1)
    )  # fmt: skip
    assert encode_spawn(rq) == raw_frame(op.OP_SPAWN, payload)


def test_encode_spawn_credentials_known_bytes() -> None:
    """GROUPS (u32 each, empty for none), GID, UID (u32), NO_NEW_PRIVS (empty);
    no field at all when the owner's own credentials are kept."""
    base = SpawnRequest([b"x"], [], [b"/x"], None, 0, 0, 0, 1.0, [])
    plain = encode_spawn(base)[op.HEADER_SIZE :]
    rq = dataclasses.replace(base, uid=65534, gid=100, groups=[], no_new_privs=True)
    assert encode_spawn(rq) == raw_frame(
        op.OP_SPAWN,
        plain
        + struct.pack("<HI", op.FIELD_GROUPS, 0)
        + struct.pack("<HII", op.FIELD_GID, 4, 100)
        + struct.pack("<HII", op.FIELD_UID, 4, 65534)
        + struct.pack("<HI", op.FIELD_NO_NEW_PRIVS, 0),
    )
    two = encode_spawn(dataclasses.replace(base, groups=[0, 7]))
    assert two == raw_frame(op.OP_SPAWN, plain + struct.pack("<HIII", op.FIELD_GROUPS, 8, 0, 7))


def test_encode_spawn_rejects_out_of_range_kill_timeout() -> None:
    rq = SpawnRequest([b"x"], [], [b"/x"], None, 0, 0, 0, -1.0, [])
    with pytest.raises(ValueError):
        encode_spawn(rq)


# ------------------------------------------------- C header vs _opcodes.py


def header_defines() -> dict[str, int]:
    text = (ROOT / "shepherd" / "protocol.h").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define (NR_[A-Z0-9_]+) (-?\d+)\b", text, re.M)}


def test_generated_header_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protocol_h.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_header_check_detects_drift(tmp_path: Path) -> None:
    """A copy of the tree whose _opcodes.py changed fails ``--check``."""
    for rel in ("tools/gen_protocol_h.py", "src/netrunner/_opcodes.py", "shepherd/protocol.h"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    check = [sys.executable, str(tmp_path / "tools" / "gen_protocol_h.py"), "--check"]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
    opcodes = tmp_path / "src" / "netrunner" / "_opcodes.py"
    opcodes.write_text(opcodes.read_text().replace("OP_STOP = 3", "OP_STOP = 4"))
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 1


def run_docs_tool(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=60)


def test_generated_doc_tables_are_current() -> None:
    """docs/protocol.md's number and name columns say what _opcodes.py says."""
    proc = run_docs_tool(ROOT / "tools" / "gen_protocol_docs.py", "--check")
    assert proc.returncode == 0, proc.stderr


def docs_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the docs tool (and the header tool whose walk it uses),
    _opcodes.py and protocol.md to break on purpose."""
    tools = ("tools/gen_protocol_docs.py", "tools/gen_protocol_h.py")
    for rel in (*tools, "src/netrunner/_opcodes.py", "docs/protocol.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return (
        tmp_path / "tools" / "gen_protocol_docs.py",
        tmp_path / "src/netrunner/_opcodes.py",
        tmp_path / "docs/protocol.md",
    )


def test_doc_check_detects_a_renumbered_constant_and_regeneration_keeps_the_prose(tmp_path: Path) -> None:
    tool, opcodes, doc = docs_tree(tmp_path)
    assert run_docs_tool(tool, "--check").returncode == 0
    prose = "| `FIELD_PTY` | u16 rows, u16 cols (exactly 4 bytes, both ≥ 1)"
    assert f"| 11 {prose}" in doc.read_text()
    opcodes.write_text(opcodes.read_text().replace("FIELD_PTY = 11", "FIELD_PTY = 21"))
    check = run_docs_tool(tool, "--check")
    assert check.returncode == 1
    assert "stale" in check.stderr
    assert run_docs_tool(tool).returncode == 0
    assert f"| 21 {prose}" in doc.read_text()
    assert f"| 11 {prose}" not in doc.read_text()
    assert run_docs_tool(tool, "--check").returncode == 0


def test_doc_check_detects_a_hand_edited_number(tmp_path: Path) -> None:
    tool, _, doc = docs_tree(tmp_path)
    doc.write_text(doc.read_text().replace("| 8 | `STAGE_EXEC` |", "| 9 | `STAGE_EXEC` |"))
    assert run_docs_tool(tool, "--check").returncode == 1
    doc.write_text(doc.read_text().replace("| 3 | 8 | `FDMASK_PIDFD` |", "| 3 | 16 | `FDMASK_PIDFD` |"))
    assert run_docs_tool(tool, "--check").returncode == 1


def test_doc_rows_follow_added_and_removed_constants(tmp_path: Path) -> None:
    """A new constant gets a row from its comment; a removed one loses its row."""
    tool, opcodes, doc = docs_tree(tmp_path)
    source = opcodes.read_text()
    prctl = "STAGE_PASS_FDS = 16  # moving the FIELD_PASS_FD fds (and the error pipe) into place in the child\n"
    adopt = "FS_ADOPT = 3  # owner -> server, one byte; SCM_RIGHTS: serve this socket (no reply)\n"
    assert prctl in source and adopt in source
    source = source.replace(prctl, prctl + "STAGE_NEW = 99  # a new | stage\n")
    source = source.replace(adopt, adopt + "FS_OTHER = 4\n")
    opcodes.write_text(source.replace("STDIO_STDOUT = 3  # stderr only: the same file as stdout\n", ""))
    assert run_docs_tool(tool, "--check").returncode == 1
    assert run_docs_tool(tool).returncode == 0
    text = doc.read_text()
    assert "| 99 | `STAGE_NEW` | a new \\| stage | |\n<!-- END GENERATED: stages -->" in text
    assert "| 4 | `FS_OTHER` | ? | | | |\n<!-- END GENERATED: fork-server -->" in text
    assert "| 3 | `STDIO_STDOUT` |" not in text
    assert run_docs_tool(tool, "--check").returncode == 0


def test_doc_check_refuses_a_constant_without_a_table(tmp_path: Path) -> None:
    tool, opcodes, _ = docs_tree(tmp_path)
    opcodes.write_text(opcodes.read_text() + "\n# Something new.\nNEW_THING = 1\n")
    proc = run_docs_tool(tool, "--check")
    assert proc.returncode == 1
    assert "NEW_THING belongs to no table" in proc.stderr
    doc_opcodes = opcodes.read_text().replace("\n# Something new.\nNEW_THING = 1\n", "")
    opcodes.write_text(doc_opcodes.replace("# Shepherd -> owner.", "# Shepherd to owner."))
    proc = run_docs_tool(tool, "--check")
    assert proc.returncode == 1
    assert "OP_STARTED belongs to no table" in proc.stderr


def test_header_values_match_opcodes() -> None:
    defines = header_defines()
    names = {name: value for name, value in vars(op).items() if name.isupper() and isinstance(value, int)}
    assert defines == {f"NR_{name}": value for name, value in names.items()}


def test_every_nr_name_in_the_shepherd_is_defined() -> None:
    source = (ROOT / "shepherd" / "shepherd.c").read_text()
    used = set(re.findall(r"\bNR_[A-Z0-9_]+\b", source))
    assert used, "shepherd.c uses no NR_ constants?"
    defined_locally = set(re.findall(r"^\s*#\s*define\s+(NR_[A-Z0-9_]+)", source, re.M))
    missing = used - defined_locally - set(header_defines())
    assert not missing, f"shepherd.c uses names protocol.h lacks: {sorted(missing)}"
    assert '#include "protocol.h"' in source


def test_the_shared_time_bounds_have_one_source() -> None:
    """The shepherd's reap bound and default kill_timeout are the generated
    header's (so ``_opcodes``'), with no copy of its own: every deadline it
    sets is a named bound, never a number."""
    source = (ROOT / "shepherd" / "shepherd.c").read_text()
    defines = header_defines()
    assert defines["NR_BOUND_REAP_MS"] == op.BOUND_REAP_MS
    assert defines["NR_DEFAULT_KILL_TIMEOUT_MS"] == op.DEFAULT_KILL_TIMEOUT_MS
    own = re.findall(r"^\s*#\s*define\s+(\w+)", source, re.M)
    assert not [name for name in own if "REAP" in name or "KILL_TIMEOUT" in name]
    deadlines = re.findall(r"now_ms\(\) \+ (\w+)", source)
    assert "NR_BOUND_REAP_MS" in deadlines
    assert not [term for term in deadlines if term[0].isdigit()]
    assigned = re.findall(r"kill_timeout_ms\s*=\s*(\w+)", source)
    assert "NR_DEFAULT_KILL_TIMEOUT_MS" in assigned
    assert not [term for term in assigned if term[0].isdigit()]


def test_the_owners_bounds_follow_the_shared_ones() -> None:
    """Change the two shared numbers and every owner-side bound that covers a
    shepherd wait moves with them (``_bounds`` derives, never restates)."""
    code = (
        "import importlib, netrunner._opcodes as op, netrunner._bounds as b\n"
        "op.BOUND_REAP_MS = 7000; op.DEFAULT_KILL_TIMEOUT_MS = 9000\n"
        "importlib.reload(b)\n"
        "print(b.REAP_BOUND, b.STOP_BOUND, b.SILENT_BOUND, b.CGROUP_TEARDOWN, b.STOP_MARGIN, b.DEFAULT_KILL_TIMEOUT)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [float(v) for v in proc.stdout.split()] == [7.0, 8.0, 8.0, 7.5, 9.0, 9.0]
    from netrunner import _bounds, _cgroup, _core, _process, _run

    assert _bounds.REAP_BOUND == op.BOUND_REAP_MS / 1000
    assert _bounds.DEFAULT_KILL_TIMEOUT == op.DEFAULT_KILL_TIMEOUT_MS / 1000
    assert inspect.signature(_cgroup.teardown).parameters["timeout"].default == _bounds.REAP_BOUND
    assert _core.STOP_BOUND is _bounds.STOP_BOUND
    assert _process.STOP_MARGIN is _bounds.STOP_MARGIN
    assert _run.CGROUP_TEARDOWN is _bounds.CGROUP_TEARDOWN


def test_opcodes_are_distinct_per_direction() -> None:
    owner = [op.OP_SPAWN, op.OP_SIGNAL, op.OP_STOP]
    shepherd = [op.OP_STARTED, op.OP_SPAWN_FAILED, op.OP_EXITED]
    assert len(set(owner)) == len(owner)
    assert len(set(shepherd)) == len(shepherd)
    assert not set(owner) & set(shepherd)
    fields = [v for k, v in vars(op).items() if k.startswith("FIELD_")]
    stages = [v for k, v in vars(op).items() if k.startswith("STAGE_")]
    assert len(set(fields)) == len(fields)
    assert len(set(stages)) == len(stages)
    assert (op.FDMASK_STDIN, op.FDMASK_STDOUT, op.FDMASK_STDERR) == (1, 2, 4)


def test_tlv_parser_rejects_bad_payloads() -> None:
    """The helper above is strict enough to catch encoder mistakes."""
    with pytest.raises(AssertionError):
        parse_tlv(b"\x01\x00\x05\x00")
    with pytest.raises(AssertionError):
        parse_tlv(struct.pack("<HI", 1, 10) + b"abc")


def test_cgroup_stats_frame_decodes_before_exited() -> None:
    decoder = Decoder()
    stats = raw_frame(op.OP_CGROUP_STATS, struct.pack("<qq", 2, 64 << 20))
    events = decoder.feed(started_frame(5, 0) + stats + exited_frame(9, 1, 2, 3))
    assert events == [Started(5, None, None, None), CgroupStats(2, 64 << 20), Exited(9, 1, 2, 3)]
    unknown = Decoder()
    unknown.feed(started_frame(5, 0))
    assert unknown.feed(raw_frame(op.OP_CGROUP_STATS, struct.pack("<qq", -1, -1))) == [CgroupStats(-1, -1)]
