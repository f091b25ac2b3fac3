#!/usr/bin/env python3
"""Write the parameter lists of the public front ends from the option schema.

``run``, ``stream`` and ``spawn`` keep explicit, typed keyword parameters
(what ``help()``, IDEs and mypy show), but nobody writes them by hand
(their ``netrunner.aio`` twins take them from these through
``_options.same_options``, written nowhere): this script renders each one from
``_options.CALL_OPTIONS`` (the keywords of that kind of call) followed by
every field of ``_options.SpawnOptions`` (the child options), and rewrites
the lines between ``def NAME(`` and its ``) -> ...:`` in place.

``run`` and ``stream`` are also overloaded on ``text``/``encoding``/
``errors`` (``Result[bytes]`` by default, ``Result[str]`` once any of them
asks for text; ``_options.TEXT_OVERLOADS`` lists the variants).  An
overload spells only those three keywords; every other one comes as
``**options: Unpack[RunKeywords]``, a ``TypedDict`` this script writes into
``src/netrunner/_keywords.py`` from the same schema, so a variant costs a
few lines, not a parameter list.  The stubs go between the marker lines
``# overloads of NAME: generated ...`` and ``# end of generated overloads``
above the function.  The ``netrunner.aio`` twins get the same stubs
(``async def``): ``same_options`` copies *one* signature through a
ParamSpec, which cannot carry overloads; it still gives them their runtime
``__signature__`` and the implementation's checks.

Run with no arguments to rewrite; ``--check`` exits 1 when a checked-in
signature differs (the suite runs the same comparison).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from netrunner import _options  # noqa: E402

# (file, function, kind of call)
TARGETS = (
    ("src/netrunner/_run.py", "run", "run"),
    ("src/netrunner/_stream.py", "stream", "stream"),
    ("src/netrunner/_process.py", "spawn", "spawn"),
)

# (file, function, kind of call, async, return type by variant)
OVERLOADED = (
    ("src/netrunner/_run.py", "run", "run", False, "Result[{}]"),
    ("src/netrunner/_stream.py", "stream", "stream", False, "Stream[{}]"),
    ("src/netrunner/aio.py", "run", "run", True, "Result[{}]"),
    ("src/netrunner/aio.py", "stream", "stream", False, "AsyncStream[{}]"),
)
END_MARK = "# end of generated overloads"


def _literal(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def parameters(kind: str, variant: dict[str, tuple[str, object]] | None = None) -> list[str]:
    """The parameter lines of a ``kind`` front end, as the source spells
    them; ``variant`` overrides some (annotation, default), for an overload
    (default ``_options.REQUIRED``: no default)."""
    variant = variant or {}
    lines = ["    args: Args,", "    *,"]
    entries = list(_options.CALL_OPTIONS[kind])
    seen = {name for name, _annotation, _default in entries}
    for field in dataclasses.fields(_options.SpawnOptions):
        if field.name not in seen and field.name in _options.CHILD_OPTIONS:
            entries.append((field.name, str(field.type), field.default))
    for name, annotation, default in entries:
        annotation, default = variant.get(name, (annotation, default))
        if default is _options.REQUIRED:
            lines.append(f"    {name}: {annotation},")
        else:
            lines.append(f"    {name}: {annotation} = {_literal(default)},")
    return lines


TEXT_KEYWORDS = ("text", "encoding", "errors")
KEYWORDS_MODULE = "src/netrunner/_keywords.py"


def _entries(kind: str) -> list[tuple[str, str, object]]:
    """A ``kind`` front end's keywords in order: (name, annotation, default)."""
    entries = list(_options.CALL_OPTIONS[kind])
    seen = {name for name, _annotation, _default in entries}
    for field in dataclasses.fields(_options.SpawnOptions):
        if field.name not in seen and field.name in _options.CHILD_OPTIONS:
            entries.append((field.name, str(field.type), field.default))
    return entries


def keywords_class(kind: str) -> str:
    return f"{kind.capitalize()}Keywords"


def _typed_dict(name: str, bases: str, doc: str, entries: list[tuple[str, str, object]], names: set[str]) -> str:
    body = [f"class {name}({bases}, total=False):", f'    """{doc}"""']
    if entries:
        body.append("")
    for key, annotation, _default in entries:
        body.append(f"    {key}: {annotation}")
        names.update(annotation.replace("|", " ").replace("[", " ").replace("]", " ").replace(",", " ").split())
    return "\n".join(body)


def keywords_module() -> str:
    """``_keywords.py``: the keywords of each front end as TypedDicts, each
    key written once (the classes inherit):

    - ``ChildKeywords``: the schema's child options, every front end's;
    - ``RunKeywords``/``StreamKeywords``: those plus the call's own, but
      the text ones (what an overload takes as ``**options``);
      ``SpawnKeywords``: all of ``spawn()``'s;
    - ``RunAllKeywords``/``StreamAllKeywords``: with ``text``/``encoding``/
      ``errors`` (what ``Command``'s methods and ``Daemon`` pass on);
    - ``CommandKeywords``: any of them (a ``Command``'s defaults)."""
    names: set[str] = set()
    child = [
        (field.name, str(field.type), field.default)
        for field in dataclasses.fields(_options.SpawnOptions)
        if field.name in _options.CHILD_OPTIONS
    ]
    doc = "The child options (``SpawnOptions``), which every front end takes."
    classes = [_typed_dict("ChildKeywords", "TypedDict", doc, child, names)]
    overloaded = sorted({kind for _path, _function, kind, _async, _returns in OVERLOADED})
    every = []
    for kind in sorted(_options.CALL_OPTIONS):
        own = list(_options.CALL_OPTIONS[kind])
        if kind in overloaded:
            rest = [entry for entry in own if entry[0] not in TEXT_KEYWORDS]
            text = [entry for entry in own if entry[0] in TEXT_KEYWORDS]
            doc = f"The keywords of ``{kind}()`` besides text/encoding/errors."
            classes.append(_typed_dict(keywords_class(kind), "ChildKeywords", doc, rest, names))
            doc = f"Every keyword of ``{kind}()``."
            every.append(f"{kind.capitalize()}AllKeywords")
            classes.append(_typed_dict(every[-1], keywords_class(kind), doc, text, names))
        else:
            every.append(keywords_class(kind))
            doc = f"Every keyword of ``{kind}()``."
            classes.append(_typed_dict(every[-1], "ChildKeywords", doc, own, names))
    doc = "Any keyword of ``run()``, ``stream()`` or ``spawn()`` (a ``Command``'s defaults)."
    classes.append(_typed_dict("CommandKeywords", ", ".join(every), doc, [], names))
    abc = sorted(name for name in names if name in ("Iterable", "Mapping", "Sequence"))
    imported = sorted(name for name in names if name in vars(_options) and name[0].isupper() and name not in abc)
    head = [
        '"""Generated by tools/gen_frontends.py from the option schema: do not edit.',
        "",
        "The keywords of the front ends as TypedDicts, for ``**options:",
        "Unpack[...]``: what an overload of ``run``/``stream`` takes besides",
        "``text``/``encoding``/``errors``, and what ``Command`` and ``Daemon``",
        'pass on."""',
        "",
        "from __future__ import annotations",
        "",
        *([f"from collections.abc import {', '.join(abc)}"] if abc else []),
        "from typing import Literal, TypedDict" if "Literal" in names else "from typing import TypedDict",
        "",
        f"from ._options import {', '.join(imported)}",
        "",
    ]
    return "\n".join(head) + "\n\n" + "\n\n\n".join(classes) + "\n"


def overloads(function: str, kind: str, is_async: bool, returns: str) -> list[str]:
    """The ``@overload`` stubs of a front end, one per text variant."""
    defaults = {name: (annotation, default) for name, annotation, default in _entries(kind)}
    out = []
    for variant, result in _options.TEXT_OVERLOADS:
        if result == "both":
            annotation = f"{returns.format('bytes')} | {returns.format('str')}"
        else:
            annotation = returns.format(result)
        out.append("@overload")
        out.append(f"{'async def' if is_async else 'def'} {function}(")
        out += ["    args: Args,", "    *,"]
        for name in TEXT_KEYWORDS:
            kind_annotation, default = variant.get(name, defaults[name])
            if default is _options.REQUIRED:
                out.append(f"    {name}: {kind_annotation},")
            else:
                out.append(f"    {name}: {kind_annotation} = {_literal(default)},")
        out.append(f"    **options: Unpack[{keywords_class(kind)}],")
        out.append(f") -> {annotation}: ...")
    return [*out, "", ""]  # ruff format's two blank lines before the end marker


def _heads(lines: list[str], function: str, path: str) -> int:
    heads = [
        i
        for i, line in enumerate(lines)
        if line in (f"def {function}(", f"async def {function}(") and lines[i - 1] != "@overload"
    ]
    if len(heads) != 1:
        raise SystemExit(f"{path}: expected one 'def {function}(' at the left margin, found {len(heads)}")
    return heads[0]


def rewrite(source: str, function: str, kind: str, path: str) -> str:
    lines = source.split("\n")
    start = _heads(lines, function, path) + 1
    end = start
    while not lines[end].startswith(")"):
        end += 1
    return "\n".join([*lines[:start], *parameters(kind), *lines[end:]])


def rewrite_overloads(source: str, function: str, kind: str, is_async: bool, returns: str, path: str) -> str:
    lines = source.split("\n")
    mark = f"# overloads of {function}: generated by tools/gen_frontends.py from the option schema"
    if lines.count(mark) != 1:
        raise SystemExit(f"{path}: expected one line {mark!r}")
    start = lines.index(mark) + 1
    end = lines.index(END_MARK, start)
    return "\n".join([*lines[:start], *overloads(function, kind, is_async, returns), *lines[end:]])


def render_all() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for relative, function, kind in TARGETS:
        path = ROOT / relative
        text = out.get(path, path.read_text())
        out[path] = rewrite(text, function, kind, relative)
    for relative, function, kind, is_async, returns in OVERLOADED:
        path = ROOT / relative
        text = out.get(path, path.read_text())
        out[path] = rewrite_overloads(text, function, kind, is_async, returns, relative)
    out[ROOT / KEYWORDS_MODULE] = keywords_module()
    return out


def main(argv: list[str]) -> int:
    rendered = render_all()
    stale = [path for path, text in rendered.items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)}: front-end signatures differ from the schema; run {__file__}")
        return 1 if stale else 0
    for path in stale:
        path.write_text(rendered[path])
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
