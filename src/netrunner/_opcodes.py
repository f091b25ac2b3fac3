"""The shepherd protocol's numbers: the one source of truth.

Both sides of the wire read their constants from here: Python imports this
module, and ``tools/gen_protocol_h.py`` renders it into
``shepherd/protocol.h`` for the C shepherd.  A test regenerates the header
and fails when the checked-in copy has drifted, so the two sides can never
disagree silently (upstream kept its opcodes in three hand-written places).

Only plain ``NAME = int`` assignments grouped by prefix belong here; the
generator copies every upper-case integer constant verbatim.
``tools/gen_protocol_docs.py`` writes the value and name columns of
``docs/protocol.md``'s tables from here too (a new constant's trailing
comment becomes its first description there; ``OP_`` constants go to a
table by their group's comment, ``Owner -> shepherd`` or ``Shepherd -> owner``,
and the ``Time bounds`` group to its own table).
"""

from __future__ import annotations

# Frame header: u32 payload length (little-endian), u16 opcode, u16 reserved.
HEADER_SIZE = 8
# Largest payload either side accepts; a longer frame is a protocol error.
# A SPAWN request carries argv and env, which Linux caps far below this.
MAX_PAYLOAD = 67108864  # 64 MiB

# Time bounds (ms), shared by both sides; netrunner._bounds derives the owner's from them.
BOUND_REAP_MS = 3000  # after SIGKILL: the shepherd's wait to reap the child and leftovers, or for a leaf to empty
DEFAULT_KILL_TIMEOUT_MS = 5000  # SIGTERM to SIGKILL without FIELD_KILL_TIMEOUT; the API's default kill_timeout

# Owner -> shepherd.
OP_SPAWN = 1  # TLV request; SCM_RIGHTS: an fd per STDIO_INHERIT slot, then per FIELD_PASS_FD, then FIELD_CWD_FD's
OP_SIGNAL = 2  # u32 signal number: sent to the child's process group
OP_STOP = 3  # u32 grace in ms: SIGTERM, wait grace, SIGKILL (0 = SIGKILL now)

# Shepherd -> owner.
OP_STARTED = 16  # i32 child pid, u32 fd mask; SCM_RIGHTS: the fds in mask order
OP_SPAWN_FAILED = 17  # u32 stage, i32 errno
OP_EXITED = 18  # i32 wait status, i64 utime us, i64 stime us, i64 maxrss KiB
OP_CGROUP_STATS = 19  # i64 oom kills, i64 memory.peak bytes (-1: unknown); just before EXITED

# Fork server (SOCK_SEQPACKET, one datagram per message).
FS_ADOPT = 3  # owner -> server, one byte; SCM_RIGHTS: serve this socket (no reply)

# TLV fields of OP_SPAWN: u16 tag, u32 length, value.
FIELD_ARGV = 1  # one per argument, in order (bytes, no NUL)
FIELD_ENV = 2  # one per "KEY=VALUE" entry
FIELD_EXEC = 3  # candidate executable paths, tried in order
FIELD_CWD = 4  # working directory
FIELD_STDIN = 5  # u32 stdio mode
FIELD_STDOUT = 6  # u32 stdio mode
FIELD_STDERR = 7  # u32 stdio mode
FIELD_KILL_TIMEOUT = 8  # u32 ms, the grace used when the owner goes away
FIELD_RLIMIT = 9  # u32 resource, u64 soft, u64 hard (RLIM_INFINITY = all ones)
FIELD_UMASK = 10  # u32: the owner's umask at spawn time
FIELD_PTY = 11  # u16 rows, u16 cols: a pseudo-terminal as stdin/stdout/stderr
FIELD_CGROUP = 12  # absolute path of a cgroup v2 leaf to create and run the child in
FIELD_CGROUP_SET = 13  # "file=value" written into that leaf before the child starts
FIELD_CWD_FD = 14  # empty: the last fd passed with OP_SPAWN is a directory to fchdir to (before FIELD_CWD)
FIELD_UID = 15  # u32: setuid in the child (after setgroups and setgid)
FIELD_GID = 16  # u32: setgid in the child
FIELD_GROUPS = 17  # u32 per supplementary group (empty: none): setgroups in the child
FIELD_NO_NEW_PRIVS = 18  # empty: PR_SET_NO_NEW_PRIVS in the child before exec
FIELD_NICE = 19  # i32: added to the child's niceness, as nice(1) does (before the ids change)
FIELD_PTY_NO_ECHO = 20  # empty: the terminal's ECHO is off before the child starts (needs FIELD_PTY)
FIELD_PASS_FD = 21  # u32 fd number (>= 3, no repeats) in the child of the next passed fd after the stdio ones
FIELD_NEW_SESSION = 22  # empty: setsid() in the child instead of setpgid (it still leads its own group)

# Stdio modes.
STDIO_PIPE = 0  # a fresh pipe; the owner's end comes back in OP_STARTED
STDIO_DEVNULL = 1  # /dev/null
STDIO_INHERIT = 2  # the fd passed with OP_SPAWN (the owner's own 0/1/2, or the fd or file it was given)
STDIO_STDOUT = 3  # stderr only: the same file as stdout

# Bits of OP_STARTED's fd mask; fds follow in this order.
FDMASK_STDIN = 1
FDMASK_STDOUT = 2
FDMASK_STDERR = 4
FDMASK_PIDFD = 8  # a pidfd of the child (the owner can kill it itself if its shepherd is lost)

# Stages named by OP_SPAWN_FAILED.
STAGE_FORK = 1  # fork server or shepherd could not fork
STAGE_PIPE = 2  # pipe2 / open("/dev/null") in the shepherd
STAGE_REQUEST = 3  # the request was malformed
STAGE_SETPGID = 4  # setpgid in the child
STAGE_DUP2 = 5  # wiring stdio in the child
STAGE_CHDIR = 6  # chdir(cwd)
STAGE_RLIMIT = 7  # setrlimit
STAGE_EXEC = 8  # every execve candidate failed
STAGE_SIGNALS = 9  # resetting signal dispositions or mask
STAGE_PTY = 10  # setsid or TIOCSCTTY in the child (opening the pty itself is STAGE_PIPE)
STAGE_CGROUP = 11  # creating the leaf, or the child joining it before exec
STAGE_CGROUP_SET = 12  # writing a FIELD_CGROUP_SET value into the leaf
STAGE_CREDENTIALS = 13  # setgroups, setgid or setuid in the child
STAGE_PRCTL = 14  # PR_SET_NO_NEW_PRIVS in the child
STAGE_NICE = 15  # setpriority in the child (a negative nice needs CAP_SYS_NICE)
STAGE_PASS_FDS = 16  # moving the FIELD_PASS_FD fds (and the error pipe) into place in the child
