#!/usr/bin/env python3
"""Write the parameter lists of the public front ends from the option schema.

``run``, ``stream`` and ``spawn`` keep explicit, typed keyword parameters
(what ``help()``, IDEs and mypy show), but nobody writes them by hand
(their ``netrunner.aio`` twins take them from these through
``_options.same_options``, written nowhere): this script renders each one from
``_options.CALL_OPTIONS`` (the keywords of that kind of call) followed by
every field of ``_options.SpawnOptions`` (the child options), and rewrites
the lines between ``def NAME(`` and its ``) -> ...:`` in place.

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


def _literal(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def parameters(kind: str) -> list[str]:
    """The parameter lines of a ``kind`` front end, as the source spells them."""
    lines = ["    args: Any,", "    *,"]
    seen = set()
    for name, annotation, default in _options.CALL_OPTIONS[kind]:
        lines.append(f"    {name}: {annotation} = {_literal(default)},")
        seen.add(name)
    for field in dataclasses.fields(_options.SpawnOptions):
        if field.name in seen or field.name not in _options.CHILD_OPTIONS:
            continue
        lines.append(f"    {field.name}: {field.type} = {_literal(field.default)},")
    return lines


def rewrite(source: str, function: str, kind: str, path: str) -> str:
    lines = source.split("\n")
    heads = [i for i, line in enumerate(lines) if line in (f"def {function}(", f"async def {function}(")]
    if len(heads) != 1:
        raise SystemExit(f"{path}: expected one 'def {function}(' at the left margin, found {len(heads)}")
    start = heads[0] + 1
    end = start
    while not lines[end].startswith(")"):
        end += 1
    return "\n".join([*lines[:start], *parameters(kind), *lines[end:]])


def render_all() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for relative, function, kind in TARGETS:
        path = ROOT / relative
        text = out.get(path, path.read_text())
        out[path] = rewrite(text, function, kind, relative)
    return out


def main(argv: list[str]) -> int:
    rendered = render_all()
    stale = [path for path, text in rendered.items() if path.read_text() != text]
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
