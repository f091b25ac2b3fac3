"""A drop-in for the stdlib's ``subprocess``: ``from netrunner import subprocess``.

Same names, same signatures, same exception classes (the stdlib's own, so
``except subprocess.CalledProcessError`` keeps working); every child runs
under its own shepherd, so nothing started here outlives its owner, even
when the owner is SIGKILLed.  What differs on purpose is listed in
``docs/subprocess.md``.

It is a front end like ``run``/``spawn``, not a third copy of the core:

* ``run``/``call``/``check_call``/``check_output`` build the same
  :class:`~netrunner._run.RunPlan` as :func:`netrunner.run` and drive the
  same ``running`` flow, so they cost what ``netrunner.run`` costs.
* :class:`Popen` starts a :class:`netrunner.Process` through the same
  ``started`` flow.  Like ``subprocess`` it makes its own pipes and hands
  the caller blocking file objects over them (``for line in p.stdout``);
  ``communicate()`` lends those pipes to the child's core and drives a
  :class:`~netrunner._run.RunCore` over them (feeding, draining, the
  exit), which can be resumed after a timeout, as ``subprocess`` allows.
"""

import dataclasses as _dataclasses
import io as _io
import locale as _locale
import os as _os
import signal as _signal
import subprocess as _std
import sys as _sys
import time as _time
import types as _types
import warnings as _warnings
from subprocess import (
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    CompletedProcess,
    SubprocessError,
    TimeoutExpired,
    list2cmdline,  # noqa: F401  (public in subprocess, though not in its __all__)
)
from typing import Any as _Any

from . import _errors, _options
from . import _opcodes as _op
from ._drive import Flow as _Flow
from ._drive import Pending as _Pending
from ._drive import drive_flow as _drive_flow
from ._options import SpawnOptions as _SpawnOptions
from ._process import Process as _NativeProcess
from ._result import Result as _Result
from ._run import RunCore as _RunCore
from ._run import RunPlan as _RunPlan
from ._run import _decode, _Input
from ._run import running as _running
from ._start import started as _started

# Private names of subprocess that code reaches for and that have nothing
# to do with fork/exec (starting sys.executable with our flags; the
# platform test): the stdlib's own objects.
_args_from_interpreter_flags = getattr(_std, "_args_from_interpreter_flags")  # noqa: B009  (not in typeshed)
_optim_args_from_interpreter_flags = getattr(_std, "_optim_args_from_interpreter_flags")  # noqa: B009  (not in typeshed)
_mswindows: bool = getattr(_std, "_mswindows")  # noqa: B009  (not in typeshed)
_PIPE_BUF: int = getattr(_std, "_PIPE_BUF")  # noqa: B009  (not in typeshed)

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "CompletedProcess",
    "Popen",
    "SubprocessError",
    "TimeoutExpired",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "run",
]

_PREEXEC_FN_REFUSED = (
    "preexec_fn is not supported: netrunner cannot run Python in the child between fork and exec "
    "(the child is forked by its shepherd, a small C program, and Python code there is not "
    "fork-safe anyway); use user=/group=/extra_groups=/umask=/start_new_session= here, or "
    "netrunner.run(..., rlimits=..., nice=..., no_new_privs=...) for the rest"
)

# Popens collected while their child still ran, as in ``subprocess``:
# the child goes on (fire and forget works as it always did) until it
# exits or we do; its shepherd reaps it, and the next Popen() lets go of
# the ones that ended.  Our own death still stops every one of them.
_active: list[_Any] = []


def _cleanup() -> None:
    """Forget the collected Popens of :data:`_active` whose child has
    exited (its shepherd reaped it; this releases our end).  Called by each
    new ``Popen``, as ``subprocess`` does."""
    for inst in _active[:]:
        process = inst._process
        if process is None or not process.alive:
            try:
                _active.remove(inst)
            except ValueError:  # another thread got there first
                pass
            inst._release()


# How long a Popen's owner waits after SIGTERM before SIGKILL when it
# stops the child itself (garbage collection, owner loss, an interrupted
# __exit__): netrunner's default.
_KILL_TIMEOUT = 5.0
# What an interrupt in ``with Popen(...)`` waits before the SIGKILL
# (subprocess waits this long, then leaves the child running).
_SIGINT_WAIT = 0.25


def _text_encoding() -> str:
    """The encoding ``subprocess`` uses in text mode without ``encoding``."""
    if _sys.flags.utf8_mode:
        return "utf-8"
    return _locale.getpreferredencoding(False)


def _text_mode(text: _Any, universal_newlines: _Any, encoding: _Any, errors: _Any) -> bool:
    if text is not None and universal_newlines is not None and bool(universal_newlines) != bool(text):
        raise SubprocessError(
            "Cannot disambiguate when both text and universal_newlines are supplied but different. "
            "Pass one or the other."
        )
    return bool(encoding or errors or text or universal_newlines)


def _timeout(value: _Any) -> float | None:
    """``subprocess`` accepts any number, 0 and negatives meaning "already
    expired"; netrunner's validators want >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number, not {type(value).__name__}")
    return max(float(value), 0.0)


def _inheritable_fds() -> list[int]:
    """Our fds above 2 without FD_CLOEXEC: what a child forked with
    ``close_fds=False`` would have inherited."""
    fds = []
    for name in _os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            if _os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the listing's own fd, closed by now
            pass
    return sorted(fds)


def _child_options(args: _Any, kw: dict[str, _Any], stdio: tuple[_Any, _Any, _Any], kill_timeout: float) -> _Any:
    """The child's :class:`SpawnRequest` from ``Popen``'s keywords (consumed
    from ``kw``; what is left is an unexpected keyword)."""
    executable = kw.pop("executable", None)
    if kw.pop("preexec_fn", None) is not None:
        raise ValueError(_PREEXEC_FN_REFUSED)
    close_fds = kw.pop("close_fds", True)
    pass_fds = kw.pop("pass_fds", ())
    if kw.pop("startupinfo", None) is not None:
        raise ValueError("startupinfo is only supported on Windows platforms")
    if kw.pop("creationflags", 0) != 0:
        raise ValueError("creationflags is only supported on Windows platforms")
    # The shepherd gives every child the default signal dispositions and an
    # empty signal mask, whatever this says (see docs/subprocess.md).
    kw.pop("restore_signals", True)
    shell = bool(kw.pop("shell", False))
    umask = kw.pop("umask", -1)
    if pass_fds and not close_fds:
        _warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=3)
        close_fds = True
    if not close_fds:
        pass_fds = _inheritable_fds()
    for what in ("user", "group"):
        _overflow(kw.get(what), what)
    options = _SpawnOptions(
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        cwd=kw.pop("cwd", None),
        env=kw.pop("env", None),
        kill_timeout=kill_timeout,
        user=kw.pop("user", None),
        group=kw.pop("group", None),
        extra_groups=kw.pop("extra_groups", None),
        umask=None if umask is None or (isinstance(umask, int) and umask < 0) else umask,
        pass_fds=pass_fds,
        start_new_session=bool(kw.pop("start_new_session", False)),
        process_group=kw.pop("process_group", None),
        shell=shell,
    )
    if kw:
        raise TypeError(f"unexpected keyword argument {next(iter(kw))!r}")
    if not shell and (isinstance(args, (str, bytes)) or hasattr(args, "__fspath__")):
        args = [args]  # as subprocess on POSIX: the program's name, no arguments
    elif not isinstance(args, (str, bytes, list, tuple)) and not hasattr(args, "__fspath__"):
        args = list(args)  # as subprocess: any iterable (map(str, ...), a generator)
    rq = options.request(args)
    if executable is not None:
        program = _options._fsencode(executable, "executable")
        argv = list(rq.argv)
        if shell:
            argv[0] = program  # subprocess: the shell itself is replaced
        rq = _dataclasses.replace(rq, argv=argv, executables=_options.executables(program, options.env))
    return rq


def _overflow(value: _Any, what: str) -> None:
    """An id past uid_t/gid_t is the ``OverflowError`` subprocess raises."""
    if isinstance(value, int) and value > 0xFFFFFFFF:
        raise OverflowError(f"{what} id {value} is greater than maximum")


# ------------------------------------------------------------------ run
def run(
    *popenargs: _Any,
    input: _Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: _Any,
) -> _Any:
    """``subprocess.run``: run the command, wait for it, return a
    ``CompletedProcess`` (a :class:`netrunner.Result`, with ``pid`` and
    ``stats``).  The same flow as :func:`netrunner.run`; on timeout or
    any exception the child's whole group is killed (SIGKILL at once, as
    ``subprocess`` kills the child) and reaped before the exception goes on."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = PIPE
        kwargs["stderr"] = PIPE
    args, kw = _popen_arguments(popenargs, kwargs)
    text = _text_mode(kw.pop("text", None), kw.pop("universal_newlines", None), kw.get("encoding"), kw.get("errors"))
    encoding, errors = kw.pop("encoding", None), kw.pop("errors", None)
    if text and encoding is None:
        encoding = _text_encoding()
    kw.pop("bufsize", None)  # no file objects here: nothing to buffer
    kw.pop("pipesize", None)
    stdin = kw.pop("stdin", None)
    stdout = kw.pop("stdout", None)
    stderr = kw.pop("stderr", None)
    executable = kw.get("executable")
    source = None if input is None else _Input(input, encoding, errors)
    # subprocess kills the child at once on a timeout or an exception: no grace.
    rq = _child_options(args, kw, (stdin, stdout, stderr), 0.0)
    capture = rq.stderr == _op.STDIO_PIPE
    plan = _RunPlan(rq, _timeout(timeout), None, capture, source, (text, encoding, errors), bool(check))
    try:
        return _drive_flow(_running(args, plan))
    except TimeoutExpired as exc:
        _as_subprocess_timeout(exc, timeout)
        raise
    except OSError as exc:
        _name_executable(exc, executable, rq)
        raise


def _as_subprocess_timeout(exc: TimeoutExpired, timeout: _Any) -> None:
    """What subprocess puts in a ``TimeoutExpired``: the timeout as the
    caller gave it (its message reads "after 1 seconds"), and ``None`` for
    an output nothing was read from (netrunner's own has ``b""``)."""
    exc.timeout = timeout
    exc.stdout = exc.stdout or None  # (.output is the same attribute)
    exc.stderr = exc.stderr or None


def _name_executable(exc: OSError, executable: _Any, rq: _Any) -> None:
    """subprocess names what it was asked to run: ``executable`` when
    given, not ``args[0]``."""
    if executable is not None and exc.filename == _os.fsdecode(rq.argv[0]):
        exc.filename = executable


def _popen_arguments(popenargs: tuple[_Any, ...], kwargs: dict[str, _Any]) -> tuple[_Any, dict[str, _Any]]:
    """``args`` and the keywords, with Popen's positional parameters named."""
    names = (
        "args", "bufsize", "executable", "stdin", "stdout", "stderr", "preexec_fn", "close_fds", "shell", "cwd",
        "env", "universal_newlines", "startupinfo", "creationflags", "restore_signals", "start_new_session",
        "pass_fds",
    )  # fmt: skip
    if len(popenargs) > len(names):
        raise TypeError(f"Popen() takes at most {len(names)} positional arguments ({len(popenargs)} given)")
    kw = dict(kwargs)
    for name, value in zip(names, popenargs, strict=False):
        if name in kw:
            raise TypeError(f"got multiple values for argument {name!r}")
        kw[name] = value
    if "args" not in kw:
        raise TypeError("missing required argument 'args'")
    return kw.pop("args"), kw


def call(*popenargs: _Any, timeout: float | None = None, **kwargs: _Any) -> int:
    """``subprocess.call``: run the command and return its returncode (on
    timeout the child's group is killed and ``TimeoutExpired`` raised)."""
    result: _Result[_Any] = run(*popenargs, timeout=timeout, **kwargs)
    return result.returncode


def check_call(*popenargs: _Any, **kwargs: _Any) -> int:
    """``subprocess.check_call``: :func:`call`, raising ``CalledProcessError``
    for a non-zero returncode."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise _errors.CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs: _Any, timeout: float | None = None, **kwargs: _Any) -> _Any:
    """``subprocess.check_output``: the command's stdout; ``CalledProcessError``
    (carrying the output) for a non-zero returncode."""
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        # As subprocess: input=None means no input (an empty stdin), not ours.
        text = kwargs.get("universal_newlines") or kwargs.get("text") or kwargs.get("encoding") or kwargs.get("errors")
        kwargs["input"] = "" if text else b""
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd: _Any, *, encoding: str | None = None, errors: str | None = None) -> tuple[int, str]:
    """``subprocess.getstatusoutput``: (exit code, output) of ``cmd`` run by
    the shell, stderr merged in, one trailing newline removed."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT, encoding=encoding, errors=errors)
        exitcode = 0
    except CalledProcessError as ex:
        data = ex.output
        exitcode = ex.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd: _Any, *, encoding: str | None = None, errors: str | None = None) -> str:
    """``subprocess.getoutput``: the output of :func:`getstatusoutput`."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]


# ---------------------------------------------------------------- Popen
def _pipe(pipesize: int) -> tuple[int, int]:
    r, w = _os.pipe2(_os.O_CLOEXEC)
    if pipesize > 0:
        import fcntl

        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, pipesize)
    return r, w


class Popen:
    """``subprocess.Popen``, the child under its own shepherd.

    ``stdin``/``stdout``/``stderr`` are ordinary blocking file objects over
    pipes this object made (as ``subprocess`` does), so ``for line in
    p.stdout`` and ``p.stdin.write()`` work as they always did; closing
    ``p.stdout`` early gives the child SIGPIPE, as it always did.
    ``send_signal``/``terminate``/``kill`` reach the child's whole process
    group.  Leaving the ``with`` block closes the pipes and waits, as
    ``subprocess`` does; if that wait is interrupted the child's group is
    stopped and reaped before the exception goes on.  Collected (or its
    owner dead) while the child runs, the child's group is stopped
    (SIGTERM, 5 s, SIGKILL) by its shepherd: nothing outlives the owner."""

    def __init__(
        self,
        args: _Any,
        bufsize: int = -1,
        executable: _Any = None,
        stdin: _Any = None,
        stdout: _Any = None,
        stderr: _Any = None,
        preexec_fn: _Any = None,
        close_fds: bool = True,
        shell: bool = False,
        cwd: _Any = None,
        env: _Any = None,
        universal_newlines: _Any = None,
        startupinfo: _Any = None,
        creationflags: int = 0,
        restore_signals: bool = True,
        start_new_session: bool = False,
        pass_fds: _Any = (),
        *,
        user: _Any = None,
        group: _Any = None,
        extra_groups: _Any = None,
        encoding: str | None = None,
        errors: str | None = None,
        text: _Any = None,
        umask: int = -1,
        pipesize: int = -1,
        process_group: int | None = None,
    ) -> None:
        _cleanup()
        self._process: _NativeProcess | None = None
        self._job: _RunCore | None = None
        self._communication_started = False
        self._communicated: tuple[_Any, _Any] | None = None
        self.args = args
        self.stdin: _Any = None
        self.stdout: _Any = None
        self.stderr: _Any = None
        self.pid: _Any = None
        self.returncode: int | None = None
        if bufsize is None:
            bufsize = -1
        if not isinstance(bufsize, int):
            raise TypeError("bufsize must be an integer")
        if pipesize is None:
            pipesize = -1
        if not isinstance(pipesize, int):
            raise TypeError("pipesize must be an integer")
        if preexec_fn is not None:
            raise ValueError(_PREEXEC_FN_REFUSED)
        self.encoding = encoding
        self.errors = errors
        self.pipesize = pipesize
        self.text_mode = _text_mode(text, universal_newlines, encoding, errors)
        if self.text_mode and encoding is None:
            self.encoding = encoding = _text_encoding()
        line_buffering = False
        if self.text_mode and bufsize == 1:
            line_buffering = True
            bufsize = -1
        elif bufsize == 1:
            _warnings.warn(
                "line buffering (buffering=1) isn't supported in binary mode, the default buffer size will be used",
                RuntimeWarning,
                stacklevel=2,
            )

        # Our ends (wrapped in file objects below) and the child's (closed
        # here once the child has them), as subprocess's _get_handles.
        child: list[_Any] = [None, None, None]
        ours: list[int] = [-1, -1, -1]
        to_close: list[int] = []  # the child's pipe ends: closed here once it has them
        unwrapped: list[int] = []  # our pipe ends not yet owned by a file object
        try:
            for slot, value in enumerate((stdin, stdout, stderr)):
                if isinstance(value, (str, bytes)):
                    raise TypeError(
                        f"{('stdin', 'stdout', 'stderr')[slot]} must be PIPE, DEVNULL, None, an fd or a file "
                        f"object{', or STDOUT' if slot == 2 else ''}, not {value!r}"
                    )
                if value == PIPE:
                    r, w = _pipe(pipesize)
                    ours[slot], child[slot] = (w, r) if slot == 0 else (r, w)
                    unwrapped.append(ours[slot])
                    to_close.append(child[slot])
                elif value == DEVNULL:
                    child[slot] = "devnull"
                elif value == STDOUT and slot == 2:
                    # the child's stderr goes where its stdout goes
                    child[2] = child[1] if stdout == PIPE else "stdout"
                else:
                    child[slot] = value
            for slot, mode in enumerate(("wb", "rb", "rb")):
                if ours[slot] < 0:
                    continue
                raw = open(ours[slot], mode, bufsize)
                unwrapped.remove(ours[slot])
                if self.text_mode and slot == 0:
                    raw = _io.TextIOWrapper(
                        raw, write_through=True, line_buffering=line_buffering, encoding=encoding, errors=errors
                    )
                elif self.text_mode:
                    raw = _io.TextIOWrapper(raw, encoding=encoding, errors=errors)
                setattr(self, ("stdin", "stdout", "stderr")[slot], raw)
            self._execute_child(
                args,
                (child[0], child[1], child[2]),
                executable=executable,
                close_fds=close_fds,
                pass_fds=pass_fds,
                cwd=cwd,
                env=env,
                startupinfo=startupinfo,
                creationflags=creationflags,
                shell=shell,
                restore_signals=restore_signals,
                user=user,
                group=group,
                extra_groups=extra_groups,
                umask=umask,
                start_new_session=start_new_session,
                process_group=process_group,
            )
        except BaseException:
            for f in (self.stdin, self.stdout, self.stderr):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            for fd in unwrapped:
                _close_quietly(fd)
            raise
        finally:
            for fd in to_close:
                _close_quietly(fd)

    def _execute_child(self, args: _Any, stdio: tuple[_Any, _Any, _Any], **kw: _Any) -> None:
        """Validate the options and start the child through the ``started``
        flow (returns once it has exec'd, or raises the exec's error)."""
        executable = kw.get("executable")
        rq = _child_options(args, kw, stdio, _KILL_TIMEOUT)
        try:
            self._process = _drive_flow(_started(args, rq, _NativeProcess))
        except OSError as exc:
            _name_executable(exc, executable, rq)
            raise
        self.pid = self._process.pid

    # -------------------------------------------------------------- info
    @property
    def universal_newlines(self) -> bool:
        return self.text_mode

    @universal_newlines.setter
    def universal_newlines(self, universal_newlines: _Any) -> None:
        self.text_mode = bool(universal_newlines)

    __class_getitem__: _Any = classmethod(_types.GenericAlias)  # Popen[bytes] in annotations

    def __repr__(self) -> str:
        text = f"<{type(self).__name__}: returncode: {self.returncode} args: {self.args!r}>"
        if len(text) > 80:
            text = text[:76] + "...>"
        return text

    # ----------------------------------------------------------- waiting
    def poll(self) -> int | None:
        """The returncode if the child has exited, else None (no waiting)."""
        if self.returncode is None and self._process is not None:
            self.returncode = self._process.returncode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit; ``TimeoutExpired`` after ``timeout``
        (the child goes on running, as with ``subprocess``)."""
        return self._wait(timeout=timeout)

    def _wait(self, timeout: float | None) -> int:
        # (subprocess's internal name: code that patches it keeps working)
        if self.returncode is None and self._process is not None:
            try:
                self.returncode = self._process.wait(_timeout(timeout))
            except TimeoutExpired as exc:
                _as_subprocess_timeout(exc, timeout)
                raise
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (nothing once it exited;
        0 sends nothing: ``kill(pid, 0)``, a probe, as in ``subprocess``)."""
        self.poll()
        if self.returncode is None and self._process is not None and sig != 0:
            self._process.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM to the child's process group."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the child's process group."""
        self.send_signal(_signal.SIGKILL)

    # ------------------------------------------------------- communicate
    def communicate(self, input: _Any = None, timeout: float | None = None) -> tuple[_Any, _Any]:
        """Send ``input``, read stdout and stderr to their end, wait for the
        exit; ``(stdout, stderr)``.  On ``TimeoutExpired`` (partial output
        attached) the child goes on running and a later call resumes."""
        if self._communication_started and input:
            raise ValueError("Cannot send input after starting communication")
        if self._communicated is not None:
            return self._communicated
        if (
            timeout is None
            and not self._communication_started
            and [self.stdin, self.stdout, self.stderr].count(None) >= 2
        ):
            # One pipe at most: nothing can deadlock, so its file object is
            # used as is (what it buffered already included), as subprocess.
            stdout = stderr = None
            if self.stdin:
                self._stdin_write(input)
            elif self.stdout:
                stdout = self.stdout.read()
                self.stdout.close()
            elif self.stderr:
                stderr = self.stderr.read()
                self.stderr.close()
            self.wait()
            return stdout, stderr
        seconds = _timeout(timeout)
        deadline = None if seconds is None else _time.monotonic() + seconds
        try:
            stdout, stderr = self._communicate(input, deadline, timeout)
        finally:
            self._communication_started = True
        self._communicated = (stdout, stderr)
        return stdout, stderr

    def _stdin_write(self, input: _Any) -> None:
        if input:
            try:
                self.stdin.write(input)
            except BrokenPipeError:
                pass  # the child stopped reading: as subprocess, not an error
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _communicate(self, input: _Any, deadline: float | None, timeout: float | None) -> tuple[_Any, _Any]:
        """Feed and collect to the end through the child's core (see
        :meth:`_lend_pipes`); resumable after ``TimeoutExpired``."""
        job = self._job
        if job is None:
            job = self._job = self._lend_pipes(input)
        _drive_flow(self._communicating(job, deadline, timeout))
        result = job.result(False, None, None, False)
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.returncode = result.returncode
        stdout, stderr = result.stdout, result.stderr
        if self.text_mode:
            if stdout is not None:
                stdout = _decode(stdout, self.stdout.encoding, self.stdout.errors)
            if stderr is not None:
                stderr = _decode(stderr, self.stderr.encoding, self.stderr.errors)
        return stdout, stderr

    def _lend_pipes(self, input: _Any) -> _RunCore:
        """Hand the pipes to the child's core for ``communicate`` (duplicates,
        non-blocking; our file objects are closed once it ends) and make the
        ``RunCore`` that feeds and collects them."""
        assert self._process is not None
        core = self._process._core
        fds: list[int | None] = [None, None, None]
        source = None
        if self.stdin:
            # As subprocess: what the caller wrote through p.stdin goes first.
            try:
                self.stdin.flush()
            except BrokenPipeError:
                pass
            if input:
                if self.text_mode and isinstance(input, str):
                    input = input.encode(self.stdin.encoding, self.stdin.errors)
                fds[0] = _dup_nonblocking(self.stdin.fileno())
                source = _Input(input, None, None)
            try:
                self.stdin.close()  # the child sees EOF once the core's copy is closed too
            except BrokenPipeError:
                pass
        for slot, f in ((1, self.stdout), (2, self.stderr)):
            if f is not None and not f.closed:
                fds[slot] = _dup_nonblocking(f.fileno())
        with core.lock:
            core.adopt_pipes(*fds)
            job = _RunCore(core, source, timeout=None, max_output_size=None, capture_stderr=fds[2] is not None)
            # All of stderr, as subprocess returns it: run()'s bounded tail is
            # a documented difference of run(), not of communicate().
            core.capture_stderr(_sys.maxsize)
            return job

    def _communicating(self, job: _RunCore, deadline: float | None, timeout: float | None) -> _Flow[None]:
        """``job`` driven to the end, or ``TimeoutExpired`` at ``deadline``
        with the child left running and ``job`` resumable."""
        lock = job.core.lock
        ready: list[int] | None = None
        while True:
            with lock:
                step = job.attempt(ready)
            if step is True:
                return
            assert isinstance(step, _Pending)
            if deadline is not None and _time.monotonic() >= deadline:
                assert timeout is not None
                stdout = job.out.peek() if job.capture_stdout else None
                stderr = job.core.err_buf.value() if job.capture_stderr else None
                raise _errors.TimeoutExpired(self.args, timeout, stdout or None, stderr or None)
            due = step.deadline
            if deadline is not None and (due is None or deadline < due):
                due = deadline
            ready = yield _Pending(step.interest, due)

    # ------------------------------------------------------------ context
    def __enter__(self) -> "Popen":
        return self

    def __exit__(self, exc_type: _Any, value: _Any, traceback: _Any) -> None:
        """As ``subprocess``: close the pipes, then wait for the child.  On
        Ctrl-C it waits a quarter second as ``subprocess`` does, and then,
        where ``subprocess`` would leave the child running, stops its
        group and reaps it before the exception goes on."""
        try:
            if self.stdout:
                self.stdout.close()
            if self.stderr:
                self.stderr.close()
            if self.stdin:
                self.stdin.close()  # flushing may raise BrokenPipeError: it goes on, after the wait
        finally:
            try:
                if exc_type is KeyboardInterrupt:
                    try:
                        self._wait(timeout=_SIGINT_WAIT)
                    except TimeoutExpired:
                        pass
                else:
                    self.wait()
            finally:
                # Reaped by now, unless interrupted: then stop the group.
                self._release(stop=True)

    def _release(self, *, stop: bool = False) -> None:
        """Let go of the shepherd and the core's fds (``stop``: stopping
        the child's group first if it still runs, SIGKILL after
        ``_SIGINT_WAIT``)."""
        process = self._process
        if process is None:
            return
        try:
            if stop and process.alive:
                self.returncode = process.stop(_SIGINT_WAIT)
        finally:
            process._release()

    def __del__(self, _warn: _Any = _warnings.warn) -> None:
        """As ``subprocess``: a child still running when its Popen is
        collected goes on (ResourceWarning) until it exits or we die."""
        process = self.__dict__.get("_process")
        if process is None or self.returncode is not None:
            return
        if process.alive:
            _warn(f"subprocess {self.pid} is still running", ResourceWarning, source=self)
            _active.append(self)  # kept alive: the next Popen() checks on it


def _dup_nonblocking(fd: int) -> int:
    new = _os.dup(fd)  # (O_CLOEXEC: os.dup makes non-inheritable fds)
    _os.set_blocking(new, False)
    return new


def _close_quietly(fd: int) -> None:
    try:
        _os.close(fd)
    except OSError:
        pass
