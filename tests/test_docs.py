"""``help()`` of every public front end documents each of its parameters.

A user's first documentation is ``help(netrunner.run)``: these tests fail
when a parameter is added (or renamed) without its own entry in the
docstring's ``Args:`` section, and when the values the docstrings name
(stderr modes, cgroup controllers, the stderr bound) drift from the code.
No process is started.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import netrunner
from netrunner import Command, Daemon, _cgroup, _command, _daemon, _options, _run, aio

# Every public callable that takes options, as help() shows it.
DOCUMENTED: list[Callable[..., Any]] = [
    netrunner.run,
    netrunner.stream,
    netrunner.spawn,
    aio.run,
    aio.stream,
    aio.spawn,
    Command,
    Command.argv,
    Command.options_for,
    Command.with_options,
    Command.run,
    Command.stream,
    Command.spawn,
    Daemon,
    Daemon.wait,
]

HEADINGS = ("Args", "Returns", "Raises")


def _sections(doc: str) -> dict[str, list[str]]:
    """The docstring's ``Args:``/``Returns:``/``Raises:`` sections, by heading
    (a heading is a line of its own at the left margin)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        if line.rstrip(":") in HEADINGS and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif line and not line[0].isspace():
            current = None  # prose after the sections ends them
        elif current is not None:
            current.append(line)
    return sections


def _entries(lines: list[str]) -> set[str]:
    """The names an ``Args:`` section gives entries to: each entry starts at
    the section's first indentation with ``name:`` or ``a, b, **c:`` (the
    list of names may wrap; continuation lines are indented further)."""
    indent = min((len(s) - len(s.lstrip()) for s in lines if s.strip()), default=0)
    entries: list[str] = []
    for line in lines:
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            entries.append(line.strip())
        elif entries:
            entries[-1] += " " + line.strip()
    names: set[str] = set()
    for entry in entries:
        head, colon, _ = entry.partition(":")
        assert colon, f"an Args entry without 'name:': {entry!r}"
        for name in head.split(","):
            name = name.strip().lstrip("*")
            assert name.isidentifier(), f"not a parameter name in an Args entry: {name!r} in {entry!r}"
            names.add(name)
    return names


def _name(obj: Callable[..., Any]) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


@pytest.mark.parametrize("obj", DOCUMENTED, ids=_name)
def test_every_parameter_has_its_own_entry_in_the_docstring(obj: Callable[..., Any]) -> None:
    doc = inspect.getdoc(obj)
    assert doc, f"{_name(obj)} has no docstring"
    sections = _sections(doc)
    expected = ("Args", "Raises") if inspect.isclass(obj) else HEADINGS
    missing_sections = [h for h in expected if h not in sections]
    assert not missing_sections, f"{_name(obj)}: no {', '.join(h + ':' for h in missing_sections)} section"
    parameters = [name for name in inspect.signature(obj).parameters if name != "self"]
    documented = _entries(sections["Args"])
    missing = [name for name in parameters if name not in documented]
    assert not missing, f"{_name(obj)}: parameters without an entry under Args: {missing}"
    unknown = sorted(documented - set(parameters))
    assert not unknown, f"{_name(obj)}: Args entries for parameters it does not take: {unknown}"
    for heading in ("Returns", "Raises"):
        if heading in sections:
            assert any(s.strip() for s in sections[heading]), f"{_name(obj)}: empty {heading}: section"


def test_every_public_callable_that_takes_options_is_checked() -> None:
    """A new front end taking child options is in DOCUMENTED too."""
    takes_options = {
        _name(obj)
        for module in (netrunner, aio)
        for name in module.__all__
        if callable(obj := getattr(module, name))
        and not inspect.isclass(obj)
        and "kill_timeout" in inspect.signature(obj).parameters
    }
    assert takes_options <= {_name(obj) for obj in DOCUMENTED}


def test_the_values_the_docstrings_name_are_the_codes() -> None:
    doc = inspect.getdoc(netrunner.run)
    assert doc is not None
    for mode in _options._STDERR_MODES:
        assert f'"{mode}"' in doc, f"stderr mode {mode!r} not documented"
    for alias in ("PIPE", "STDOUT", "DEVNULL"):
        assert alias in doc
    for controller in _cgroup.CONTROLLERS:
        assert f"{controller}.*" in doc, f"limits: controller {controller!r} not documented"
    assert f"{_run.STDERR_CAPTURE >> 20} MiB" in doc
    assert "stderr_dropped" in doc
    spawn_doc = inspect.getdoc(netrunner.spawn)
    assert spawn_doc is not None
    for mode in _options._STDIN_MODES:
        assert f'"{mode}"' in spawn_doc, f"stdin mode {mode!r} not documented"
    # The options a template or a Daemon passes on are each named.
    for cls, names in ((Command, _command._ANY), (Daemon, _daemon._SPAWN_OPTIONS)):
        text = inspect.getdoc(cls) or ""
        missing = sorted(name for name in names if f"``{name}``" not in text)
        assert not missing, f"{cls.__name__}: options not named: {missing}"
    stream_doc = inspect.getdoc(netrunner.stream) or ""
    assert str(inspect.signature(netrunner.stream).parameters["chunk_size"].default) in stream_doc
