#!/usr/bin/env python3
"""Render the number and name columns of ``docs/protocol.md``'s tables from ``_opcodes.py``.

Each table sits between ``<!-- BEGIN GENERATED: <id> -->`` and
``<!-- END GENERATED: <id> -->``.  Its first columns (the value, and the
constant's name in backticks) are written from ``src/netrunner/_opcodes.py``,
one row per constant in source order; the columns after the name are prose
that people write in the doc, and are kept row by row, matched by the
constant's name.  A constant the doc has no row for yet gets its
``_opcodes.py`` comment as the first prose cell; a row whose constant is gone
is dropped.  So a renumbered, added or removed constant can never leave a
stale number in the doc, and the prose lives where it is read.

Run with no arguments to rewrite the doc; ``--check`` exits 1 when the
checked-in doc differs from what the constants say, or a table cannot be
read (the test suite runs the same comparison).  Every constant must land in
exactly one table, except the few listed in ``UNTABLED``: a new group of
numbers fails here until it has a table.

Why not generate the whole table: the prose cells are long, reviewed text
that belongs next to the rest of the protocol description, and a generator
that owns only the numbers and names needs no knowledge of it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# This directory is on sys.path when the tool runs as a script.
from gen_protocol_h import constants as header_constants

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "netrunner" / "_opcodes.py"
DOC = ROOT / "docs" / "protocol.md"

# Constants described in the doc's prose rather than in a table.
UNTABLED = frozenset({"HEADER_SIZE", "MAX_PAYLOAD"})


class DocError(Exception):
    """The doc or the module cannot be rendered (a missing marker, an unreadable row)."""


def _value(value: int) -> tuple[str, ...]:
    return (str(value),)


def _bit_and_value(value: int) -> tuple[str, ...]:
    if value <= 0 or value & (value - 1):
        raise DocError(f"fd mask value {value} is not a single bit")
    return (str(value.bit_length() - 1), str(value))


@dataclass(frozen=True)
class Table:
    """One generated table: which constants it lists and how its leading columns look."""

    section: str  # the marker id in the doc
    prefix: str  # constants whose name starts with this ("" : any)...
    heading: str | None  # ...and whose _opcodes.py group comment starts with this (None: any)
    titles: tuple[str, ...]  # titles of the generated columns; the last one is the name
    numbers: Callable[[int], tuple[str, ...]] = _value  # the cells before the name


TABLES = (
    Table("owner-ops", "OP_", "Owner -> shepherd", ("op", "name")),
    Table("shepherd-ops", "OP_", "Shepherd -> owner", ("op", "name")),
    Table("fdmask", "FDMASK_", None, ("bit", "value", "name"), _bit_and_value),
    Table("fields", "FIELD_", None, ("tag", "name")),
    Table("stdio", "STDIO_", None, ("value", "name")),
    Table("stages", "STAGE_", None, ("value", "name")),
    Table("fork-server", "FS_", None, ("value", "name")),
    Table("bounds", "", "Time bounds", ("ms", "name")),
)


@dataclass(frozen=True)
class Constant:
    name: str
    value: int
    comment: str  # the trailing comment, "" if none
    heading: str  # the comment that opens its group (after a blank line)


def constants(source: str) -> list[Constant]:
    """The constants ``gen_protocol_h`` renders (its walk, so the header and
    the doc can never disagree on what is a constant), each with the
    comment that opens its group."""
    headings: dict[int, str] = {}
    heading = ""
    block_start = True
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            block_start = True
            continue
        if stripped.startswith("#") and block_start:
            heading = stripped.lstrip("#").strip()
        block_start = False
        headings[number] = heading
    return [
        Constant(const.name, const.value, const.comment, headings.get(const.lineno, ""))
        for const in header_constants(source)
    ]


def assign(found: list[Constant]) -> dict[str, list[Constant]]:
    """Each table's constants; raises unless every constant but ``UNTABLED`` is in exactly one."""
    tables: dict[str, list[Constant]] = {table.section: [] for table in TABLES}
    for const in found:
        homes = [
            table
            for table in TABLES
            if const.name.startswith(table.prefix)
            and (table.heading is None or const.heading.startswith(table.heading))
        ]
        if const.name in UNTABLED:
            continue
        if len(homes) != 1:
            where = ", ".join(table.section for table in homes) or "no table"
            raise DocError(f"{const.name} belongs to {where}: give it one table in tools/gen_protocol_docs.py")
        tables[homes[0].section].append(const)
    return tables


def _cell_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_table(table: Table, body: list[str], consts: list[Constant]) -> tuple[list[str], list[str]]:
    """The table's new lines, and the names of rows dropped because their constant is gone."""
    k = len(table.titles)
    if len(body) < 2 or not all(line.startswith("|") for line in body):
        raise DocError(f"section {table.section}: expected a table (title row, separator, rows) between the markers")
    # Generated cells hold only digits and a backticked name, never a "|", so
    # the first k cells split cleanly; the prose after them is kept verbatim
    # (it may contain a "|" inside code).
    lead = re.compile(r"^\|" + r" ([^|]*?) \|" * k + r"(.*)$")
    title = lead.match(body[0])
    if title is None:
        raise DocError(f"section {table.section}: title row has fewer than {k + 1} columns")
    prose_titles = title[k + 1]
    prose_columns = prose_titles.count("|")
    if prose_columns < 1:
        raise DocError(f"section {table.section}: no prose column after the name")
    kept: dict[str, str] = {}
    for line in body[2:]:
        match = lead.match(line)
        name = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", match[k]) if match else None
        if match is None or name is None:
            raise DocError(f"section {table.section}: cannot read row {line!r}")
        if name[1] in kept:
            raise DocError(f"section {table.section}: two rows for {name[1]}")
        kept[name[1]] = match[k + 1]
    out = [_cell_row(table.titles) + prose_titles, "|" + "---|" * (k + prose_columns)]
    for const in consts:
        default = " " + (const.comment.replace("|", "\\|") or "?") + " |" + " |" * (prose_columns - 1)
        prose = kept.pop(const.name, default)
        out.append(_cell_row((*table.numbers(const.value), f"`{const.name}`")) + prose)
    return out, sorted(kept)


def render(doc: str, source: str) -> tuple[str, list[str]]:
    """The doc with every generated section rewritten, and the names of dropped rows."""
    tables = assign(constants(source))
    lines = doc.split("\n")
    dropped: list[str] = []
    for table in TABLES:
        begin = f"<!-- BEGIN GENERATED: {table.section} -->"
        end = f"<!-- END GENERATED: {table.section} -->"
        if lines.count(begin) != 1 or lines.count(end) != 1:
            raise DocError(f"{DOC.name} needs exactly one {begin!r} and one {end!r}")
        start, stop = lines.index(begin), lines.index(end)
        if stop < start:
            raise DocError(f"{end!r} comes before {begin!r}")
        new, gone = render_table(table, lines[start + 1 : stop], tables[table.section])
        lines[start + 1 : stop] = new
        dropped += gone
    return "\n".join(lines), dropped


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    try:
        text, dropped = render(doc, SOURCE.read_text())
    except DocError as exc:
        print(f"tools/gen_protocol_docs.py: {exc}", file=sys.stderr)
        return 1
    if "--check" in argv:
        if text != doc:
            print(f"{DOC} is stale: run tools/gen_protocol_docs.py", file=sys.stderr)
            return 1
        return 0
    for name in dropped:
        print(f"dropped the row of {name}: no such constant in _opcodes.py", file=sys.stderr)
    if text != doc:
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
