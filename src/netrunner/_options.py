"""Validation of every user-facing option, before anything is started.

Everything the spec's exception table names is checked here, in the
caller's thread, so bad input raises a clear ``ValueError``/``TypeError``
and never reaches the shepherd (upstream discovered bad options as a 10 s
connect timeout).  The result is a :class:`~netrunner._protocol.SpawnRequest`.
"""

from __future__ import annotations

import dataclasses
import grp
import inspect
import itertools
import math
import operator
import os
import pwd
import resource
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Literal, ParamSpec, Protocol, TypeAlias, TypeVar, Union

from . import _cgroup
from . import _opcodes as op
from ._bounds import DEFAULT_KILL_TIMEOUT
from ._protocol import SpawnRequest

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# The public option types (re-exported by ``netrunner.typing``): what the
# validators below accept, spelled for mypy, so a wrong type is caught
# before the program runs and not only by the ValueError/TypeError here.
Args: TypeAlias = StrOrBytesPath | Sequence[StrOrBytesPath]
"""A command: a sequence of arguments (a single str/bytes only with
``shell=True``, which the validator checks)."""


class HasFileno(Protocol):
    """Any object with ``fileno()`` (a file, a socket): the child gets a
    duplicate of that fd."""

    def fileno(self) -> int: ...


StdinSpec: TypeAlias = Literal["pipe", "devnull", "inherit"] | int | HasFileno | None
"""stdin/stdout: a mode name, a ``subprocess`` constant or fd (both ints),
a file object, or None (inherit)."""
StdoutSpec: TypeAlias = StdinSpec
StderrSpec: TypeAlias = Literal["pipe", "stdout", "devnull", "inherit"] | int | HasFileno | None
"""stderr: as stdin, plus ``"stdout"`` (``subprocess.STDOUT``)."""
Env: TypeAlias = Mapping[str, StrOrBytesPath] | Mapping[bytes, StrOrBytesPath] | None
"""The child's whole environment (None: ours)."""
Input: TypeAlias = bytes | bytearray | memoryview | str | Iterable[bytes] | IO[bytes] | None
"""What ``run``/``stream`` feed to stdin (None: ``/dev/null``)."""
Cgroup: TypeAlias = bool | str | None
"""True for a fresh cgroup, a path relative to the cgroup v2 mount, or None/False."""
Limits: TypeAlias = Mapping[str, str | int] | None
"""cgroup controller files to write, ``{"memory.max": "100M"}``."""
Rlimits: TypeAlias = Mapping[str, tuple[int, int]] | Mapping[int, tuple[int, int]] | None
"""``{"RLIMIT_NOFILE": (soft, hard)}``, by name or ``resource`` constant."""

_STDERR_MODES = {
    "pipe": op.STDIO_PIPE,
    "stdout": op.STDIO_STDOUT,
    "devnull": op.STDIO_DEVNULL,
    "inherit": op.STDIO_INHERIT,
}
# stdin and stdout (stdout cannot be "the same file as stdout")
_STDIN_MODES = {"pipe": op.STDIO_PIPE, "devnull": op.STDIO_DEVNULL, "inherit": op.STDIO_INHERIT}
_ALIASES: dict[Any, str] = {
    subprocess.PIPE: "pipe",
    subprocess.STDOUT: "stdout",
    subprocess.DEVNULL: "devnull",
    None: "inherit",
}
RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF


def _fsencode(value: Any, what: str) -> bytes:
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        encoded = os.fsencode(value)
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if b"\0" in encoded:
        raise ValueError(f"embedded NUL byte in {what}: {value!r}")
    return encoded


SHELL = "/bin/sh"


def argv(args: Any, shell: bool = False) -> list[bytes]:
    """The child's argv.  With ``shell`` (an explicit opt-in), as
    ``subprocess`` does: a str/bytes is the command line for
    ``/bin/sh -c``, and of a sequence the first item is, the rest being
    the shell's ``$0``, ``$1``..."""
    if shell:
        if hasattr(args, "__fspath__"):
            raise TypeError("a path-like args is not allowed with shell=True: give the command line as a str")
        if isinstance(args, (str, bytes)):
            args = [args]
        elif not isinstance(args, Sequence):
            raise TypeError(f"args must be a str or a sequence with shell=True, not {type(args).__name__}")
        elif len(args) == 0:
            raise ValueError("args must not be empty")
        args = [SHELL, "-c", *args]
    elif isinstance(args, (str, bytes)) or hasattr(args, "__fspath__"):
        raise TypeError(
            "args must be a sequence of arguments, not a single string: there is no shell unless you ask for "
            "one with shell=True (then a str is run by /bin/sh -c)"
        )
    if not isinstance(args, Sequence):
        raise TypeError(f"args must be a sequence, not {type(args).__name__}")
    if len(args) == 0:
        raise ValueError("args must not be empty")
    encoded = [_fsencode(a, "argument") for a in args]
    if not encoded[0]:
        raise ValueError("empty executable name")
    return encoded


_env_cache: tuple[dict[Any, Any], list[bytes]] | None = None


def environment(env: Mapping[Any, Any] | None) -> list[bytes]:
    """The child's complete environment (``None``: a snapshot of ours now).

    Encoding ``os.environ`` costs ~50 us a spawn; the encoded form is reused
    while the environment's underlying dict compares equal (a C-speed check
    that catches every change made through ``os.environ``/``putenv``-free
    code, which is what ``subprocess`` sees as well)."""
    global _env_cache
    if env is None:
        data = getattr(os.environ, "_data", None)
        cached = _env_cache
        if isinstance(data, dict):
            if cached is not None and cached[0] == data:
                return cached[1]
            encoded = environment(os.environb)
            _env_cache = (dict(data), encoded)
            return encoded
    source: Mapping[Any, Any] = os.environb if env is None else env
    if not isinstance(source, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    out = []
    for key, value in source.items():
        k = _fsencode(key, "environment variable name")
        v = _fsencode(value, "environment variable value")
        if not k or b"=" in k:
            raise ValueError(f"illegal environment variable name: {key!r}")
        out.append(k + b"=" + v)
    return out


def executables(program: bytes, env: Mapping[Any, Any] | None) -> list[bytes]:
    """Where execve should look for ``program``, in order (subprocess's rule:
    a name with a slash is used as is, else each PATH entry of ``env`` or,
    without ``env``, of our own environment)."""
    if b"/" in program:
        return [program]
    path_env = None
    if env is not None:
        for key in (b"PATH", "PATH"):
            try:
                path_env = env[key]
            except (KeyError, TypeError):  # os.environ refuses bytes keys, os.environb str keys
                pass
        search_key: Any = (program, os.fsdecode(path_env) if path_env is not None else None)
    else:
        search_key = (program, os.environ.get("PATH", _NO_PATH))
    found = _search_memo.get(search_key)
    if found is None:
        if env is not None:
            search = os.get_exec_path({"PATH": search_key[1]} if search_key[1] is not None else {})
        else:
            search = os.get_exec_path()
        dirs = [os.fsencode(d) for d in search]
        found = [os.path.join(d, program) for d in dirs] or [program]
        if len(_search_memo) >= 256:
            _search_memo.clear()
        _search_memo[search_key] = found
    return found


# (program, PATH) -> candidates; PATH None: not set in a given env
_search_memo: dict[tuple[bytes, Any], list[bytes]] = {}
_NO_PATH = object()  # PATH unset in our own environment: os.get_exec_path's default


def cwd(value: Any) -> tuple[bytes | None, bool]:
    """The child's cwd as (path to chdir to, whether to send ours as an fd).

    The child is forked from the fork server, whose cwd is the one we had
    when it started, so ours goes with each request as an fd (opened at
    send time), never as a path: ``getcwd`` then ``chdir`` would follow a
    path that may name another directory by then (renamed, replaced), and
    would fail where ours was deleted.  A relative ``cwd`` is then resolved
    from our directory, as ``subprocess`` does; an absolute one needs no fd."""
    if value is None:
        return None, True
    path = _fsencode(value, "cwd")
    return path, not path.startswith(b"/")


_MAX_ID = 0xFFFFFFFE  # uid_t/gid_t; (uid_t)-1 means "leave unchanged" to set*id


def _numeric_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a str name or an int id, not {type(value).__name__}")
    if not 0 <= value <= _MAX_ID:
        raise ValueError(f"{what} id must be between 0 and {_MAX_ID}, not {value}")
    return value


def _name(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"embedded NUL byte in {what} name: {value!r}")
    return value


def _user_id(value: Any) -> int:
    if isinstance(value, str):
        try:
            return pwd.getpwnam(_name(value, "user")).pw_uid
        except KeyError:
            raise KeyError(f"no such user: {value!r}") from None
    return _numeric_id(value, "user")


def _group_id(value: Any, what: str) -> int:
    if isinstance(value, str):
        try:
            return grp.getgrnam(_name(value, what)).gr_gid
        except KeyError:
            raise KeyError(f"no such group: {value!r} (in {what})") from None
    return _numeric_id(value, what)


def credentials(user: Any, group: Any, extra_groups: Any) -> tuple[int | None, int | None, list[int] | None]:
    """(uid, gid, supplementary gids) for the child, each None to keep the
    owner's.  As ``subprocess``: names are looked up now (an unknown one is
    a ``KeyError`` before anything starts), and ``user`` alone changes only
    the uid: the child keeps the owner's gid and groups unless ``group``
    and ``extra_groups`` say otherwise."""
    if extra_groups is None:
        gids = None
    else:
        if isinstance(extra_groups, (str, bytes)) or not isinstance(extra_groups, Iterable):
            kind = type(extra_groups).__name__
            raise TypeError(f"extra_groups must be an iterable of group names or ids, not {kind}")
        gids = [_group_id(g, "extra_groups") for g in extra_groups]
        most = os.sysconf("SC_NGROUPS_MAX")
        if len(gids) > most:
            raise ValueError(f"extra_groups has {len(gids)} groups, more than NGROUPS_MAX ({most})")
    gid = None if group is None else _group_id(group, "group")
    uid = None if user is None else _user_id(user)
    return uid, gid, gids


def child_umask(value: Any) -> int:
    """``umask=`` (0..0o777), or None: the owner's own, read now."""
    if value is None:
        return current_umask()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"umask must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0o777:
        raise ValueError(f"umask must be between 0 and 0o777, not {value:#o}")
    return value


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


def current_umask() -> int:
    """Our umask now (like cwd, the fork server's would be stale).  There is
    no way to read it without setting it: the value set for the instant in
    between is the strictest one, so a file another thread creates right
    then is never more permissive than intended."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_STDIO_NAMES = ("stdin", "stdout", "stderr")


def stdio(value: Any, slot: int) -> tuple[int, int | None]:
    """stdin (slot 0), stdout (1) or stderr (2) as (stdio mode, the owner's
    fd to pass for ``STDIO_INHERIT``, None for none).

    A mode name, a ``subprocess`` constant, ``None`` (inherit: our own fd
    ``slot``), an fd number or an object with ``fileno()``: as for
    ``subprocess``, the child gets a duplicate of that fd.  An fd that is
    not open is ``OSError(EBADF)`` now, before anything starts (a closed fd
    would otherwise fail in the child, or pass along whatever reused it)."""
    modes = _STDERR_MODES if slot == 2 else _STDIN_MODES
    which = _STDIO_NAMES[slot]
    fd: Any = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        fd = value
    elif not isinstance(value, (str, bytes, int)) and value is not None and hasattr(value, "fileno"):
        fd = value.fileno()
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"{which}: fileno() returned {fd!r}, not an fd")
    if fd is not None:
        os.fstat(fd)  # OSError(EBADF) if it is not open
        return op.STDIO_INHERIT, fd
    name = value
    if not isinstance(value, str):
        try:
            name = _ALIASES.get(value, value)
        except TypeError:  # unhashable
            name = value
    if isinstance(name, str) and name in modes:
        mode = modes[name]
        return mode, (slot if mode == op.STDIO_INHERIT else None)
    raise ValueError(
        f"unknown {which} mode {value!r}; expected one of {sorted(modes)}, an fd or a file object with fileno()"
    )


def seconds(value: Any, what: str, *, allow_none: bool = True, allow_zero: bool = False) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{what} must be a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'} and finite, not {value!r}")
    return float(value)


def size(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, not {value}")
    return value


def signal_number(sig: Any) -> int:
    """A signal by number, ``signal.Signals`` or case-insensitive name."""
    if isinstance(sig, bool):
        raise ValueError(f"not a signal: {sig!r}")
    if isinstance(sig, int):
        valid = {int(s) for s in signal.valid_signals()}
        if sig in valid and sig > 0:
            return int(sig)
        raise ValueError(f"not a valid signal number: {sig}")
    if isinstance(sig, str):
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        member = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(member, signal.Signals):
            return int(member)
        raise ValueError(f"unknown signal name: {sig!r}")
    raise ValueError(f"not a signal: {sig!r}")


def rlimits(value: Any) -> list[tuple[int, int, int]]:
    """``{"RLIMIT_NOFILE": (soft, hard)}`` (names or resource constants)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise TypeError("rlimits must be a mapping of resource to (soft, hard)")
    out = []
    for key, limits in value.items():
        if isinstance(key, str):
            name = key.upper()
            if not name.startswith("RLIMIT_"):
                name = "RLIMIT_" + name
            number = getattr(resource, name, None)
            if not isinstance(number, int):
                raise ValueError(f"unknown rlimit: {key!r}")
        elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 64:
            number = key
        else:
            raise ValueError(f"unknown rlimit: {key!r}")
        if not isinstance(limits, (tuple, list)) or len(limits) != 2:
            raise TypeError(f"rlimit {key!r} must be a (soft, hard) pair")
        pair = []
        for limit in limits:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"rlimit {key!r} values must be ints")
            if limit == resource.RLIM_INFINITY or limit == -1:
                pair.append(RLIM_INFINITY)
            elif limit < 0 or limit > RLIM_INFINITY:
                raise ValueError(f"rlimit {key!r} values must be between 0 and 2**64-1 or RLIM_INFINITY")
            else:
                pair.append(limit)
        soft, hard = pair
        if soft > hard:
            raise ValueError(f"rlimit {key!r}: soft limit {limits[0]} exceeds hard limit {limits[1]}")
        out.append((number, soft, hard))
    return out


def terminal(pty: Any, rows: Any, cols: Any) -> tuple[int, int] | None:
    """``pty`` as the terminal size to open, or None for pipes."""
    if not isinstance(pty, bool):
        raise TypeError(f"pty must be a bool, not {type(pty).__name__}")
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
        if not 0 < value < 65536:
            raise ValueError(f"{name} must be between 1 and 65535, not {value}")
    return (rows, cols) if pty else None


def niceness(value: Any) -> int | None:
    """``nice=``: the increment ``nice(1)`` adds to the child's niceness
    (None: none).  Positive is kinder to other processes; negative needs
    privilege (``CAP_SYS_NICE``), else the spawn raises ``PermissionError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"nice must be an int, not {type(value).__name__}")
    if not -40 <= value <= 40:
        raise ValueError(f"nice must be between -40 and 40, not {value}")
    return value


# The kernel passes at most SCM_MAX_FD (253) fds in one sendmsg: the
# request's carries up to three stdio fds and our cwd besides pass_fds.
MAX_PASS_FDS = 253 - 4


def pass_fds(value: Any) -> tuple[int, ...]:
    """``pass_fds=``: our fds the child gets under the same numbers (every
    other fd above 2 stays closed in it).  Each is checked open now
    (``OSError(EBADF)``), as ``subprocess`` would find out in the child."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"pass_fds must be a sequence of ints, not {type(value).__name__}")
    fds = tuple(value)
    for fd in fds:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"pass_fds must hold ints, not {type(fd).__name__}")
        if fd < 3:
            raise ValueError(f"pass_fds: {fd} is the child's stdin, stdout or stderr; give it as stdin/stdout/stderr")
    if len(set(fds)) != len(fds):
        raise ValueError(f"pass_fds holds a duplicate: {sorted(fds)}")
    if len(fds) > MAX_PASS_FDS:
        raise ValueError(f"pass_fds holds {len(fds)} fds, more than the {MAX_PASS_FDS} one spawn can pass")
    for fd in fds:
        os.fstat(fd)  # OSError(EBADF) if it is not open
    return fds


def process_group(value: Any) -> None:
    """``process_group=``: only ``None`` or ``0``, what every child gets
    anyway (a group of its own, which it leads).  The shepherd's stop and
    the process-tree rule kill the child's own group: joining another
    group would put strangers in that kill radius, and take the child's
    descendants out of it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"process_group must be None or 0, not {type(value).__name__}")
    if value != 0:
        raise ValueError(
            f"process_group={value}: a child always leads its own process group (0), the group netrunner "
            "kills when it stops the child; joining another group would put other processes in that "
            "kill radius and let the child's descendants escape it"
        )


@dataclasses.dataclass(frozen=True)
class SpawnOptions:
    """Every per-child option, once: its name, default and validator.

    Each front end (``run``/``stream``/``spawn``, their ``netrunner.aio``
    twins, ``Command``, ``Daemon``, the CLI) takes these as explicit typed
    keywords, builds one ``SpawnOptions`` from them and asks it for the
    :class:`~netrunner._protocol.SpawnRequest`.  The keyword lists are
    generated from this class (``tools/gen_frontends.py``; a test fails on
    drift), so an option is added here, in the protocol and the shepherd,
    and in the docs, not in every signature.  Values are stored as given
    and validated by :meth:`request`, before anything starts; each value's
    validator is the function of this module of the same name (``cwd``,
    ``rlimits``, ``credentials`` for user/group/extra_groups, ...).

    ``stdin`` and ``stderr`` are per child too, but each front end spells
    them itself: their meaning differs (``run`` derives stdin from
    ``input``), so they are not in the generated keyword lists.
    """

    stdin: StdinSpec = "pipe"
    stderr: StderrSpec = "pipe"
    stdout: StdoutSpec = "pipe"
    cwd: StrOrBytesPath | None = None
    env: Env = None
    pty: bool = False
    kill_timeout: float = DEFAULT_KILL_TIMEOUT
    cgroup: Cgroup = None
    limits: Limits = None
    rlimits: Rlimits = None
    rows: int = 24
    cols: int = 80
    echo: bool = True
    user: str | int | None = None
    group: str | int | None = None
    extra_groups: Iterable[str | int] | None = None
    umask: int | None = None
    no_new_privs: bool = False
    nice: int | None = None
    pass_fds: Iterable[int] = ()
    start_new_session: bool = False
    process_group: int | None = None
    shell: bool = False

    @classmethod
    def from_call(cls, arguments: Mapping[str, Any]) -> SpawnOptions:
        """The options among a front end's ``locals()`` (its parameters)."""
        return cls(**{name: arguments[name] for name in _FIELD_NAMES if name in arguments})

    def request(self, args: Any, *, stdin: Any = None) -> SpawnRequest:
        """Validate every option and build the request (``stdin`` overrides
        the option: ``run`` decides it from ``input``).  Only once all is
        valid does anything touch the system (a cgroup's parents)."""
        arguments = argv(args, flag(self.shell, "shell"))
        size = terminal(self.pty, self.rows, self.cols)
        echo = flag(self.echo, "echo")
        if not echo and size is None:
            raise ValueError("echo=False needs pty=True (it turns the terminal's echo off)")
        mask = child_umask(self.umask)
        nnp = flag(self.no_new_privs, "no_new_privs")
        new_session = flag(self.start_new_session, "start_new_session")
        process_group(self.process_group)
        leaf = _cgroup.validate(self.cgroup)
        entries = _cgroup.settings(self.limits)
        if entries and leaf is None:
            raise ValueError("limits requires cgroup")
        grace = seconds(self.kill_timeout, "kill_timeout", allow_none=False, allow_zero=True)
        assert grace is not None
        if grace > 4294967:
            raise ValueError("kill_timeout is too large")
        stdin_mode, stdin_fd = stdio(self.stdin if stdin is None else stdin, 0)
        stdout_mode, stdout_fd = stdio(self.stdout, 1)
        stderr_mode, stderr_fd = stdio(self.stderr, 2)
        if size is not None and stdout_mode != op.STDIO_PIPE:
            raise ValueError("stdout must be 'pipe' with pty=True: the terminal is the child's stdout")
        # Looked up last of the checks (a name service may be slow), and
        # still before anything touches the system.
        uid, gid, gids = credentials(self.user, self.group, self.extra_groups)
        directory, send_cwd = cwd(self.cwd)
        request = SpawnRequest(
            argv=arguments,
            env=environment(self.env),
            executables=executables(arguments[0], self.env),
            cwd=directory,
            stdin=stdin_mode,
            stdout=stdout_mode,
            stderr=stderr_mode,
            stdio_fds=(stdin_fd, stdout_fd, stderr_fd),
            kill_timeout=grace,
            rlimits=rlimits(self.rlimits),
            umask=mask,
            pty=size,
            echo=echo,
            cgroup_set=entries,
            uid=uid,
            gid=gid,
            groups=gids,
            no_new_privs=nnp,
            nice=niceness(self.nice),
            pass_fds=pass_fds(self.pass_fds),
            new_session=new_session and size is None,  # a terminal's child has a session of its own
            cwd_fd=send_cwd,
        )
        if leaf is None:
            return request
        return dataclasses.replace(request, cgroup=_cgroup.prepare(leaf, entries))


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(SpawnOptions))
# What the generated keyword lists hold: every option but stdin/stderr.
CHILD_OPTIONS = tuple(name for name in _FIELD_NAMES if name not in ("stdin", "stderr"))

# The keywords each front end takes before the child options, in order, as
# (name, annotation, default): tools/gen_frontends.py writes the parameter
# lists of run/stream/spawn and of their netrunner.aio twins from this and
# SpawnOptions, so the six signatures cannot drift apart.
CALL_OPTIONS: dict[str, tuple[tuple[str, str, Any], ...]] = {
    "run": (
        ("input", "Input", None),
        ("timeout", "float | None", None),
        ("check", "bool", False),
        ("max_output_size", "int | None", None),
        ("stderr", "StderrSpec", "pipe"),
        ("text", "bool", False),
        ("encoding", "str | None", None),
        ("errors", "str | None", None),
    ),
    "stream": (
        ("input", "Input", None),
        ("stderr", "StderrSpec", "pipe"),
        ("timeout", "float | None", None),
        ("check", "bool", False),
        ("chunk_size", "int", 65536),
        ("text", "bool", False),
        ("encoding", "str | None", None),
        ("errors", "str | None", None),
    ),
    "spawn": (
        ("stdin", "StdinSpec", "pipe"),
        ("stderr", "StderrSpec", "pipe"),
    ),
}


REQUIRED = object()  # an overload's keyword without a default

# The overloads of run/stream (and their aio twins) on text: each variant
# overrides some keywords' (annotation, default) and says whether the
# output is bytes, str, or not known from the types ("both").  As at run
# time, text=True, an encoding or an error handler each mean str.
TEXT_OVERLOADS: tuple[tuple[dict[str, tuple[str, object]], str], ...] = (
    ({"text": ("Literal[False]", False), "encoding": ("None", None), "errors": ("None", None)}, "bytes"),
    ({"text": ("Literal[True]", REQUIRED)}, "str"),
    ({"encoding": ("str", REQUIRED)}, "str"),
    ({"errors": ("str", REQUIRED)}, "str"),
    ({}, "both"),
)


def keyword_names(function: Callable[..., Any]) -> frozenset[str]:
    """The keyword-only options ``function`` takes (what a template or a
    supervisor may pass on to it)."""
    return frozenset(name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY)


def _defaults(kind: str) -> dict[str, Any]:
    out = {name: default for name, _annotation, default in CALL_OPTIONS[kind]}
    for field in dataclasses.fields(SpawnOptions):
        if field.name in CHILD_OPTIONS and field.name not in out:
            out[field.name] = field.default
    return out


_DEFAULTS = {kind: _defaults(kind) for kind in CALL_OPTIONS}
_MISSING = object()
# Per front end: its keyword names and their default objects, in one order
# (floats apart: a signature's 5.0 and the schema's are two objects).
_DEFAULT_ITEMS = {
    kind: (
        tuple(n for n, v in d.items() if type(v) is not float),
        tuple(v for v in d.values() if type(v) is not float),
        tuple((n, v) for n, v in d.items() if type(v) is float),
    )
    for kind, d in _DEFAULTS.items()
}


def at_defaults(kind: str, call: Mapping[str, Any]) -> bool:
    """Whether every keyword of a ``kind`` front end in ``call`` (its
    ``locals()``) *is* its default object: nothing was passed, or the very
    object the signature has (``None``, ``False``, the interned ``"pipe"``;
    a float default: a float equal to it).  Identity, not equality:
    ``pty=0`` equals ``False`` but is a ``TypeError``, so only identical
    values may skip validation.  C-speed
    (~1 us), for the common call's cached request (``_run.plan``)."""
    names, defaults, floats = _DEFAULT_ITEMS[kind]
    if not all(map(operator.is_, map(call.get, names, itertools.repeat(_MISSING)), defaults)):
        return False
    for name, default in floats:
        value = call.get(name, _MISSING)
        if type(value) is not float or value != default:
            return False
    return True


def call_options(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every keyword of a ``kind`` front end, ``given`` over the defaults
    (what ``locals()`` holds in a front end with the explicit signature);
    an unknown name is the ``TypeError`` Python would raise."""
    defaults = _DEFAULTS[kind]
    unknown = given.keys() - defaults.keys()
    if unknown:
        raise TypeError(f"{kind}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    return {**defaults, **given}


P = ParamSpec("P")
R = TypeVar("R")


def same_options(front_end: Callable[P, object]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Give a twin (``aio.run`` of ``run``) exactly ``front_end``'s
    parameters: for mypy through ``P``, for ``help()`` and ``inspect``
    through ``__signature__`` (the twin's own return annotation kept).
    The twin takes ``(args, **call)`` and completes ``call`` with
    :func:`call_options`, so its parameter list is written nowhere."""

    def decorate(twin: Callable[..., R]) -> Callable[P, R]:
        own = inspect.signature(twin).return_annotation
        twin.__signature__ = inspect.signature(front_end).replace(return_annotation=own)  # type: ignore[attr-defined]
        return twin

    return decorate


F = TypeVar("F", bound=Callable[..., object])


def same_signature(front_end: Callable[..., object]) -> Callable[[F], F]:
    """:func:`same_options` for a twin with overloads of its own (``aio.run``
    and ``aio.stream``, generated with their sync front end's): a ParamSpec
    would copy only the first overload, so mypy keeps the twin's overloads
    and only ``help()``/``inspect`` get ``front_end``'s signature."""

    def decorate(twin: F) -> F:
        own = inspect.signature(twin).return_annotation
        twin.__signature__ = inspect.signature(front_end).replace(return_annotation=own)  # type: ignore[attr-defined]
        return twin

    return decorate
