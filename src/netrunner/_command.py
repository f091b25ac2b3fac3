"""``Command``: a reusable template of a program, leading arguments and
default options, so that call sites say only what differs.

It holds no process and no fd: every call goes through :func:`run`,
:func:`stream` or :func:`spawn` as if written out, so every guarantee
(and every validation) is theirs.  Arguments given to a call are appended
to the template's; options given to a call override the template's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from . import _options as options
from ._keywords import CommandKeywords, RunAllKeywords, SpawnKeywords, StreamAllKeywords
from ._options import StrOrBytesPath
from ._process import Process, spawn
from ._result import Result
from ._run import run
from ._stream import Stream, stream

if TYPE_CHECKING:  # (typing.Unpack is 3.11+; annotations are never evaluated)
    from typing_extensions import Unpack

_ACCEPTS: dict[str, frozenset[str]] = {
    "run": options.keyword_names(run),
    "stream": options.keyword_names(stream),
    "spawn": options.keyword_names(spawn),
}
_ANY = frozenset().union(*_ACCEPTS.values())


def _check_names(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - _ANY)
    if unknown:
        raise TypeError(f"unknown option(s) for a Command: {', '.join(unknown)} (accepted: {', '.join(sorted(_ANY))})")


def _arguments(args: Any, what: str) -> tuple[Any, ...]:
    if isinstance(args, (str, bytes)) or hasattr(args, "__fspath__"):
        raise TypeError(f"{what} must be a sequence of arguments, not a single string (there is no shell)")
    if not isinstance(args, Sequence):
        raise TypeError(f"{what} must be a sequence, not {type(args).__name__}")
    return tuple(args)


class Command:
    """A program with leading arguments and default options.

    ``curl = Command("curl", ["-sS"], timeout=30)``, then
    ``curl.run(["https://example.com"], timeout=5)`` runs
    ``curl -sS https://example.com`` with a 5 s timeout.

    A default that a method does not take is left out for that method (a
    template's ``timeout`` means nothing to :meth:`spawn`); an option given
    to the call itself must be one the method takes.  Option names are
    checked when the template is made, values when a call validates them
    (before anything starts).  Templates are immutable:
    :meth:`with_options` returns a new one.

    Args:
        program: the executable (``str``, ``bytes`` or ``os.PathLike``),
            looked up on ``PATH`` like ``args[0]`` of :func:`netrunner.run`.
        args: leading arguments, a sequence (not a single string: there is
            no shell); a call's own arguments are appended to them.
        **options: default keyword options of :func:`netrunner.run`,
            :func:`netrunner.stream` and :func:`netrunner.spawn` (``input``,
            ``timeout``, ``check``, ``max_output_size``, ``stderr``,
            ``stdin``, ``text``, ``encoding``, ``errors``, ``cwd``, ``env``,
            ``pty``, ``rows``, ``cols``, ``kill_timeout``, ``cgroup``,
            ``limits``, ``rlimits``, ``chunk_size``, ``user``, ``group``,
            ``extra_groups``, ``umask``, ``no_new_privs``, ``nice``, ``echo``, ``stdout``, ``pass_fds``,
            ``start_new_session``, ``process_group``, ``shell``), each meaning
            what it means there.

    Raises:
        TypeError: ``program`` or ``args`` of the wrong type, or an option
            that none of ``run``/``stream``/``spawn`` takes.
        ValueError: an empty ``program``.
    """

    __slots__ = ("_args", "_options", "_program")

    def __init__(
        self, program: StrOrBytesPath, args: Sequence[StrOrBytesPath] = (), **options: Unpack[CommandKeywords]
    ) -> None:
        if not isinstance(program, (str, bytes)) and not hasattr(program, "__fspath__"):
            raise TypeError(f"program must be str, bytes or os.PathLike, not {type(program).__name__}")
        if not os.fspath(program):
            raise ValueError("empty executable name")
        _check_names(options)
        self._program = program
        self._args = _arguments(args, "args")
        self._options: dict[str, Any] = dict(options)

    @property
    def program(self) -> StrOrBytesPath:
        return self._program

    @property
    def args(self) -> tuple[StrOrBytesPath, ...]:
        """The leading arguments (after the program)."""
        return self._args

    @property
    def options(self) -> Mapping[str, object]:
        """The default options (read-only)."""
        return MappingProxyType(self._options)

    def argv(self, args: Sequence[StrOrBytesPath] = ()) -> list[StrOrBytesPath]:
        """The full argument list for a call with ``args`` appended; with
        :meth:`options_for`, what to hand to :mod:`netrunner.aio`.

        Args:
            args: arguments to append (a sequence, not a single string).

        Returns:
            ``[program, *template args, *args]``.

        Raises:
            TypeError: ``args`` is a string or not a sequence.
        """
        return [self._program, *self._args, *_arguments(args, "args")]

    @overload
    def options_for(self, method: Literal["run"], overrides: Mapping[str, object] | None = None) -> RunAllKeywords: ...
    @overload
    def options_for(
        self, method: Literal["stream"], overrides: Mapping[str, object] | None = None
    ) -> StreamAllKeywords: ...
    @overload
    def options_for(self, method: Literal["spawn"], overrides: Mapping[str, object] | None = None) -> SpawnKeywords: ...
    def options_for(
        self, method: str, overrides: Mapping[str, object] | None = None
    ) -> RunAllKeywords | StreamAllKeywords | SpawnKeywords:
        """The keyword arguments ``method`` gets: the defaults it takes,
        then ``overrides`` as given.

        Args:
            method: ``"run"``, ``"stream"`` or ``"spawn"`` (the same names
                in :mod:`netrunner.aio` take the same options).
            overrides: options of this call, kept as given (the method
                itself rejects one it does not take).

        Returns:
            A new ``dict`` of keyword arguments.

        Raises:
            ValueError: an unknown ``method``.
        """
        accepted = _ACCEPTS.get(method)
        if accepted is None:
            raise ValueError(f"method must be one of {sorted(_ACCEPTS)}, not {method!r}")
        merged = {name: value for name, value in self._options.items() if name in accepted}
        merged.update(overrides or {})
        return cast("RunAllKeywords | StreamAllKeywords | SpawnKeywords", merged)

    def with_options(self, **options: Unpack[CommandKeywords]) -> Command:
        """A new template with ``options`` over these defaults.

        Args:
            **options: options as for :class:`Command`, replacing the
                template's defaults of the same name.

        Returns:
            A new :class:`Command`; this one is unchanged.

        Raises:
            TypeError: an option none of ``run``/``stream``/``spawn`` takes.
        """
        _check_names(options)
        merged: dict[str, Any] = {**self._options, **options}
        return Command(self._program, self._args, **merged)

    def run(
        self, args: Sequence[StrOrBytesPath] = (), **options: Unpack[RunAllKeywords]
    ) -> Result[bytes] | Result[str]:
        """:func:`netrunner.run` of ``argv(args)``.

        Args:
            args: arguments appended to the template's.
            **options: options of :func:`netrunner.run`, over the
                template's defaults (those ``run`` does not take, such as
                ``stdin``, are left out).

        Returns:
            The :class:`Result` of ``netrunner.run``.

        Raises:
            TypeError: an option ``run`` does not take; otherwise whatever
                ``netrunner.run`` raises.
        """
        return run(self.argv(args), **self.options_for("run", cast("Mapping[str, object]", options)))

    def stream(
        self, args: Sequence[StrOrBytesPath] = (), **options: Unpack[StreamAllKeywords]
    ) -> Stream[bytes] | Stream[str]:
        """:func:`netrunner.stream` of ``argv(args)``.

        Args:
            args: arguments appended to the template's.
            **options: options of :func:`netrunner.stream`, over the
                template's defaults (those ``stream`` does not take are
                left out).

        Returns:
            The :class:`Stream` of ``netrunner.stream``.

        Raises:
            TypeError: an option ``stream`` does not take; otherwise
                whatever ``netrunner.stream`` raises.
        """
        return stream(self.argv(args), **self.options_for("stream", cast("Mapping[str, object]", options)))

    def spawn(self, args: Sequence[StrOrBytesPath] = (), **options: Unpack[SpawnKeywords]) -> Process:
        """:func:`netrunner.spawn` of ``argv(args)``.

        Args:
            args: arguments appended to the template's.
            **options: options of :func:`netrunner.spawn`, over the
                template's defaults (those ``spawn`` does not take, such
                as ``timeout`` or ``text``, are left out).

        Returns:
            The running :class:`Process` of ``netrunner.spawn``.

        Raises:
            TypeError: an option ``spawn`` does not take; otherwise
                whatever ``netrunner.spawn`` raises.
        """
        return spawn(self.argv(args), **self.options_for("spawn", cast("Mapping[str, object]", options)))

    def __repr__(self) -> str:
        options = "".join(f", {name}={value!r}" for name, value in self._options.items())
        return f"Command({self._program!r}, {list(self._args)!r}{options})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return (self._program, self._args, self._options) == (other._program, other._args, other._options)

    __hash__ = None  # type: ignore[assignment]  # options may hold unhashable values
