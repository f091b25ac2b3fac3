"""The shepherd protocol, sans I/O: bytes in, typed events out.

Like h11, nothing here touches a socket or a clock.  The driver feeds
whatever ``recvmsg`` returned (any split or coalescing of frames) into
:class:`Decoder` and gets back the complete events; fds that arrived as
SCM_RIGHTS are queued with :meth:`Decoder.add_fds` and handed out with the
``Started`` event that owns them.  Encoders build the owner's commands.

Frame: u32 payload length (LE), u16 opcode, u16 reserved (0), payload.
Numbers live in :mod:`netrunner._opcodes`; see ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from . import _opcodes as op

_HEADER = struct.Struct("<IHH")
_U32 = struct.Struct("<I")
_STARTED = struct.Struct("<iI")
_SPAWN_FAILED = struct.Struct("<Ii")
_EXITED = struct.Struct("<iqqq")
_CGROUP_STATS = struct.Struct("<qq")
_TLV = struct.Struct("<HI")
_RLIMIT = struct.Struct("<IQQ")
# STARTED's fds, in the order they arrive.
_STARTED_BITS = (op.FDMASK_STDIN, op.FDMASK_STDOUT, op.FDMASK_STDERR, op.FDMASK_PIDFD)
_STARTED_MASK = op.FDMASK_STDIN | op.FDMASK_STDOUT | op.FDMASK_STDERR | op.FDMASK_PIDFD


class ProtocolError(Exception):
    """The byte stream from the shepherd cannot be a valid frame sequence."""


@dataclass(frozen=True)
class Started:
    """The child runs; ``fds`` are the owner's ends, by ``FDMASK_*`` order,
    and ``pidfd`` the owner's own hold on the child (None on a kernel
    without ``pidfd_open``)."""

    pid: int
    stdin: int | None
    stdout: int | None
    stderr: int | None
    pidfd: int | None = None

    def fds(self) -> list[int]:
        """Every fd that came with it, in arrival order."""
        return [fd for fd in (self.stdin, self.stdout, self.stderr, self.pidfd) if fd is not None]


@dataclass(frozen=True)
class SpawnFailed:
    """Nothing runs: ``stage`` (``STAGE_*``) failed with ``errno``."""

    stage: int
    errno: int


@dataclass(frozen=True)
class Exited:
    """The child was reaped: raw wait status and its rusage."""

    status: int
    utime_us: int
    stime_us: int
    maxrss_kib: int


@dataclass(frozen=True)
class CgroupStats:
    """The child's cgroup, just before EXITED: OOM kills and peak memory
    (-1 when the memory controller did not say)."""

    oom_kills: int
    memory_peak: int


Event = Started | SpawnFailed | Exited | CgroupStats


class Phase(enum.Enum):
    """Where one shepherd connection is, as its frames say (h11 keeps its
    state table the same way: in one place, next to the parser)."""

    AWAITING_REPLY = "awaiting STARTED or SPAWN_FAILED"
    RUNNING = "running"
    ENDING = "cgroup stats reported, EXITED next"
    EXITED = "exited"
    FAILED = "spawn failed"

    __hash__ = object.__hash__  # identity, in C (see _core.Lifecycle): looked up per frame


# The frame order rules: which event may come in each phase, and the phase
# it leads to.  STARTED (or SPAWN_FAILED) first; at most one CGROUP_STATS,
# just before EXITED; nothing after EXITED or SPAWN_FAILED.
# Anything else is a ProtocolError, which the owner treats as losing the
# shepherd (it then verifies the child's end itself).
TRANSITIONS: dict[Phase, dict[type[Event], Phase]] = {
    Phase.AWAITING_REPLY: {Started: Phase.RUNNING, SpawnFailed: Phase.FAILED},
    Phase.RUNNING: {CgroupStats: Phase.ENDING, Exited: Phase.EXITED},
    Phase.ENDING: {Exited: Phase.EXITED},
    Phase.EXITED: {},
    Phase.FAILED: {},
}


class Decoder:
    """Incremental decoder of shepherd -> owner frames.

    Feed bytes in any split; complete frames come out, a partial frame is
    carried until the rest arrives.  ``phase`` follows :data:`TRANSITIONS`:
    a frame out of order is invalid like a malformed one.  Anything invalid
    raises :class:`ProtocolError` and leaves the decoder broken (the driver
    treats it as losing the shepherd).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fds: deque[int] = deque()
        self.broken = False
        self.phase = Phase.AWAITING_REPLY

    def add_fds(self, fds: Iterable[int]) -> None:
        """Queue fds received as SCM_RIGHTS, in arrival order."""
        self._fds.extend(fds)

    def take_unclaimed_fds(self) -> list[int]:
        """Fds no event claimed (the driver must close them)."""
        fds = list(self._fds)
        self._fds.clear()
        return fds

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame being carried."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if self.broken:
            raise ProtocolError("decoder already failed")
        if not self._buf and len(data) >= op.HEADER_SIZE:
            # The common case: exactly one whole frame and nothing carried.
            length, opcode, reserved = _HEADER.unpack_from(data)
            if reserved == 0 and length <= op.MAX_PAYLOAD and len(data) == op.HEADER_SIZE + length:
                try:
                    return [self._event(opcode, data[op.HEADER_SIZE :])]
                except ProtocolError:
                    self.broken = True
                    raise
        self._buf += data
        events: list[Event] = []
        try:
            while len(self._buf) >= op.HEADER_SIZE:
                length, opcode, reserved = _HEADER.unpack_from(self._buf)
                if reserved != 0 or length > op.MAX_PAYLOAD:
                    raise ProtocolError(f"bad frame header {bytes(self._buf[:8])!r}")
                end = op.HEADER_SIZE + length
                if len(self._buf) < end:
                    break
                payload = bytes(self._buf[op.HEADER_SIZE : end])
                del self._buf[:end]
                events.append(self._event(opcode, payload))
        except ProtocolError:
            self.broken = True
            # The events decoded so far are lost with the exception: give
            # back their fds so the driver's take_unclaimed_fds() closes them.
            for event in reversed(events):
                if isinstance(event, Started):
                    self._fds.extendleft(reversed(event.fds()))
            raise
        return events

    def _event(self, opcode: int, payload: bytes) -> Event:
        event = self._parse(opcode, payload)
        after = TRANSITIONS[self.phase].get(type(event))
        if after is None:
            if isinstance(event, Started):
                self._fds.extendleft(reversed(event.fds()))  # unclaimed: the driver closes them
            raise ProtocolError(f"{type(event).__name__} out of order (phase: {self.phase.value})")
        self.phase = after
        return event

    def _parse(self, opcode: int, payload: bytes) -> Event:
        if opcode == op.OP_STARTED and len(payload) == _STARTED.size:
            pid, mask = _STARTED.unpack(payload)
            if mask & ~_STARTED_MASK or pid <= 0:
                raise ProtocolError(f"bad STARTED pid={pid} mask={mask:#x}")
            if len(self._fds) < bin(mask).count("1"):
                # (checked before taking any, so the unclaimed fds stay whole)
                raise ProtocolError("STARTED names more fds than arrived")
            slots: list[int | None] = []
            for bit in _STARTED_BITS:
                if mask & bit:
                    slots.append(self._fds.popleft())
                else:
                    slots.append(None)
            return Started(pid, slots[0], slots[1], slots[2], slots[3])
        if opcode == op.OP_SPAWN_FAILED and len(payload) == _SPAWN_FAILED.size:
            stage, err = _SPAWN_FAILED.unpack(payload)
            return SpawnFailed(stage, err)
        if opcode == op.OP_EXITED and len(payload) == _EXITED.size:
            return Exited(*_EXITED.unpack(payload))
        if opcode == op.OP_CGROUP_STATS and len(payload) == _CGROUP_STATS.size:
            return CgroupStats(*_CGROUP_STATS.unpack(payload))
        raise ProtocolError(f"unknown frame opcode={opcode} length={len(payload)}")


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One frame around ``payload``."""
    if len(payload) > op.MAX_PAYLOAD:
        raise ValueError(
            f"request too large for the shepherd protocol ({len(payload)} bytes, at most {op.MAX_PAYLOAD}):"
            " argv and env together must stay under 64 MiB"
        )
    return _HEADER.pack(len(payload), opcode, 0) + payload


def encode_signal(signo: int) -> bytes:
    """SIGNAL: deliver ``signo`` to the child's process group."""
    if not 1 <= signo <= 64:
        raise ValueError(f"signal number out of range: {signo}")
    return frame(op.OP_SIGNAL, _U32.pack(signo))


def encode_stop(grace: float) -> bytes:
    """STOP: SIGTERM, ``grace`` seconds, SIGKILL (0: SIGKILL at once)."""
    return frame(op.OP_STOP, _U32.pack(_millis(grace)))


def _millis(seconds: float) -> int:
    # Range-check before rounding: -0.0004 must not round to a valid 0, and
    # inf/nan must be a ValueError, not an OverflowError from int().
    if not 0 <= seconds <= 0xFFFFFFFF / 1000 + 0.0005:
        raise ValueError(f"duration out of range: {seconds}")
    ms = round(seconds * 1000)
    if not 0 <= ms <= 0xFFFFFFFF:
        raise ValueError(f"duration out of range: {seconds}")
    return ms


@dataclass(frozen=True)
class SpawnRequest:
    """Everything the shepherd needs to start one child (already validated)."""

    argv: list[bytes]
    env: list[bytes]
    executables: list[bytes]
    cwd: bytes | None
    stdin: int
    stdout: int
    stderr: int
    kill_timeout: float
    rlimits: list[tuple[int, int, int]]
    umask: int | None = None
    pty: tuple[int, int] | None = None  # rows, cols
    cgroup: bytes | None = None  # absolute leaf path for the shepherd to create
    cgroup_set: list[bytes] | None = None  # b"file=value" entries for that leaf
    uid: int | None = None  # setuid in the child (None: the owner's)
    gid: int | None = None  # setgid in the child
    groups: list[int] | None = None  # setgroups in the child ([]: none at all)
    no_new_privs: bool = False  # PR_SET_NO_NEW_PRIVS in the child
    nice: int | None = None  # niceness increment in the child
    echo: bool = True  # pty only: the terminal echoes input
    # Send our cwd as an fd with the request (FIELD_CWD_FD): the child
    # fchdir()s to it, then chdir(cwd) if ``cwd`` is relative.
    cwd_fd: bool = False
    # Per slot (stdin, stdout, stderr) in STDIO_INHERIT mode: the owner's fd
    # the child gets a copy of (None: the owner's own fd of that number).
    stdio_fds: tuple[int | None, int | None, int | None] = (None, None, None)
    # pass_fds: the owner's fds the child gets under the same numbers
    pass_fds: tuple[int, ...] = ()
    new_session: bool = False  # setsid() in the child (a pty implies it)


_env_memo: tuple[list[bytes], bytes] | None = None


def _env_fields(env: list[bytes]) -> bytes:
    """The ENV fields, memoised for the list object ``_options`` reuses
    while ``os.environ`` is unchanged (encoding 40+ fields costs ~20 us)."""
    global _env_memo
    memo = _env_memo
    if memo is not None and memo[0] is env:
        return memo[1]
    block = b"".join(_TLV.pack(op.FIELD_ENV, len(entry)) + entry for entry in env)
    _env_memo = (env, block)
    return block


def encode_spawn(rq: SpawnRequest) -> bytes:
    """SPAWN: the request as a run of TLV fields."""
    parts: list[bytes] = []

    def field(tag: int, value: bytes) -> None:
        parts.append(_TLV.pack(tag, len(value)))
        parts.append(value)

    for arg in rq.argv:
        field(op.FIELD_ARGV, arg)
    parts.append(_env_fields(rq.env))
    for path in rq.executables:
        field(op.FIELD_EXEC, path)
    if rq.cwd_fd:
        field(op.FIELD_CWD_FD, b"")
    if rq.cwd is not None:
        field(op.FIELD_CWD, rq.cwd)
    field(op.FIELD_STDIN, _U32.pack(rq.stdin))
    field(op.FIELD_STDOUT, _U32.pack(rq.stdout))
    field(op.FIELD_STDERR, _U32.pack(rq.stderr))
    field(op.FIELD_KILL_TIMEOUT, _U32.pack(_millis(rq.kill_timeout)))
    if rq.umask is not None:
        field(op.FIELD_UMASK, _U32.pack(rq.umask))
    if rq.pty is not None:
        field(op.FIELD_PTY, struct.pack("<HH", *rq.pty))
        if not rq.echo:
            field(op.FIELD_PTY_NO_ECHO, b"")
    if rq.cgroup is not None:
        field(op.FIELD_CGROUP, rq.cgroup)
    for entry in rq.cgroup_set or ():
        field(op.FIELD_CGROUP_SET, entry)
    for resource, soft, hard in rq.rlimits:
        field(op.FIELD_RLIMIT, _RLIMIT.pack(resource, soft, hard))
    if rq.groups is not None:
        field(op.FIELD_GROUPS, struct.pack(f"<{len(rq.groups)}I", *rq.groups))
    if rq.gid is not None:
        field(op.FIELD_GID, _U32.pack(rq.gid))
    if rq.uid is not None:
        field(op.FIELD_UID, _U32.pack(rq.uid))
    if rq.no_new_privs:
        field(op.FIELD_NO_NEW_PRIVS, b"")
    if rq.nice is not None:
        field(op.FIELD_NICE, struct.pack("<i", rq.nice))
    if rq.new_session:
        field(op.FIELD_NEW_SESSION, b"")
    for fd in rq.pass_fds:
        field(op.FIELD_PASS_FD, _U32.pack(fd))
    return frame(op.OP_SPAWN, b"".join(parts))
