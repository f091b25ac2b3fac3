"""``help()`` of every public front end documents each of its parameters.

A user's first documentation is ``help(netrunner.run)``: these tests fail
when a parameter is added (or renamed) without its own entry in the
docstring's ``Args:`` section, and when the values the docstrings name
(stderr modes, cgroup controllers, the stderr bound) drift from the code.
The last tests read docs/*.md and the README: every test, file and private
name their code spans cite must exist (a rename must not leave them stale).
No process is started.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
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


# ------------------------------------------------ names the docs point at

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
# Where a bare file name in the docs may live.
FILE_HOMES = ("", "src", "src/netrunner", "tests", "tools", "shepherd", "bench", "docs", "docs/decisions")
# Names with a leading underscore that are not ours (libc, CPython).
FOREIGN_PRIVATE = frozenset({"_exit", "_Fork", "_dl_fixup", "_posixsubprocess", "_fork_exec"})


def _code_spans() -> list[tuple[str, str]]:
    """Every inline ``code`` span of the docs outside code blocks, as
    (where, span)."""
    spans = []
    for doc in DOCS:
        # Code blocks go, their lines kept blank so that line numbers hold.
        text = re.sub(r"^```.*?^```", lambda block: "\n" * block[0].count("\n"), doc.read_text(), flags=re.S | re.M)
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{doc.relative_to(ROOT)}:{number}"
            spans += [(where, span.strip()) for span in re.findall(r"`([^`\n]+)`", line)]
    return spans


def _defined(paths: list[Path]) -> set[str]:
    """Every name a Python file defines or assigns (functions, classes,
    methods, attributes, constants), and every function or macro of a C file."""
    names: set[str] = set()
    for path in paths:
        text = path.read_text()
        names.add(path.stem)
        if path.suffix == ".c":
            names |= set(re.findall(r"\b(\w+)\(", text)) | set(re.findall(r"#define\s+(\w+)", text))
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.ImportFrom):  # re-exported (netrunner.subprocess's stdlib names)
                names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_every_test_the_docs_cite_exists() -> None:
    """``test_x.py::test_name`` (and the ``::test_other`` that follow it)
    name tests that exist: a renamed test must not leave the docs citing a
    proof that is gone."""
    tests = {path.name: _defined([path]) for path in (ROOT / "tests").rglob("test_*.py")}
    missing = []
    current = None
    for where, span in _code_spans():
        match = re.fullmatch(r"(?:tests/(?:stress/)?)?(test_\w+\.py)?(?:::(\w+)(?:\[[^\]]*\])?)?", span)
        if match is None or not (match[1] or match[2]):
            continue
        current = match[1] or current
        if current not in tests:
            missing.append(f"{where}: {span} (no tests/{current})")
        elif match[2] and match[2] not in tests[current]:
            missing.append(f"{where}: {span}")
    assert not missing, "the docs cite tests that do not exist:\n" + "\n".join(missing)


def test_every_private_name_and_file_the_docs_name_exists() -> None:
    """A span naming one of our files (``_launch.py``, ``tools/x.py``) or a
    private name or module path (``_drive.uncancellable``,
    ``ChildCore.take_over``, ``_cgroup.teardown``) points at something in
    the tree; names of libc and the kernel are not checked."""
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "tools").glob("*.py"), *(ROOT / "tests").rglob("*.py")]
    names = _defined([*sources, *(ROOT / "shepherd").glob("*.c"), *(ROOT / "bench").glob("*.py")])
    modules = {path.stem for path in (ROOT / "src" / "netrunner").glob("*.py")} | {"netrunner"}
    missing = []
    for where, span in _code_spans():
        if re.fullmatch(r"[\w./-]+\.(?:py|c|h|md|sh)", span):
            if not any((ROOT / home / span).exists() for home in FILE_HOMES):
                missing.append(f"{where}: {span}")
            continue
        match = re.fullmatch(r"(_?[A-Za-z]\w*(?:\._?[A-Za-z]\w*)*)(?:\(\))?", span)
        if match is None:
            continue
        parts = match[1].split(".")
        ours = parts[0] in modules or (len(parts) > 1 and parts[0] in names and parts[0][0].isupper())
        private = [part for part in parts if re.fullmatch(r"_[a-z]\w*", part) and part not in FOREIGN_PRIVATE]
        if (ours and len(parts) > 1) or private:
            missing += [f"{where}: {span} ({part})" for part in parts if part not in names | modules]
    assert not missing, "the docs name things that do not exist:\n" + "\n".join(missing)
