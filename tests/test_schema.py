"""One option schema: every front end takes exactly the schema's options.

``tools/gen_frontends.py`` writes the six parameter lists from
``_options.CALL_OPTIONS`` and ``SpawnOptions``; these tests fail when a
signature was edited by hand (or the schema changed without regenerating),
and check what the signatures promise against what reaches the child.
No process is started except where a child must show an option.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import netrunner
from netrunner import Command, Daemon, _options, aio

ROOT = Path(__file__).resolve().parent.parent
FRONT_ENDS = {
    "run": (netrunner.run, aio.run),
    "stream": (netrunner.stream, aio.stream),
    "spawn": (netrunner.spawn, aio.spawn),
}


def test_the_checked_in_signatures_are_the_generated_ones() -> None:
    tool = ROOT / "tools" / "gen_frontends.py"
    result = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", sorted(FRONT_ENDS))
def test_sync_and_async_twins_take_the_same_keywords_with_the_same_defaults(kind: str) -> None:
    sync, asynchronous = FRONT_ENDS[kind]
    expected = [name for name, _annotation, _default in _options.CALL_OPTIONS[kind]]
    expected += [name for name in _options.CHILD_OPTIONS if name not in expected]
    for function in (sync, asynchronous):
        parameters = inspect.signature(function).parameters
        assert list(parameters)[1:] == expected, function
    assert str(inspect.signature(sync)) == str(inspect.signature(asynchronous)).replace(
        "AsyncProcess", "Process"
    ).replace("AsyncStream", "Stream")


def test_every_child_option_has_the_schema_default_everywhere() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(_options.SpawnOptions)}
    for sync, asynchronous in FRONT_ENDS.values():
        for function in (sync, asynchronous):
            for name, parameter in inspect.signature(function).parameters.items():
                if name in _options.CHILD_OPTIONS:
                    assert parameter.default == defaults[name], (function, name)


def test_command_and_daemon_accept_every_child_option() -> None:
    # Names are checked when the template (or supervisor) is made: an option
    # the schema has but Command or Daemon did not pass on is a TypeError.
    for name in _options.CHILD_OPTIONS:
        Command("true", **{name: None})
        Daemon(["true"], **{name: None})


def test_rows_and_cols_reach_the_terminal_on_every_front_end() -> None:
    script = ["sh", "-c", "stty size"]
    assert netrunner.run(script, pty=True, rows=7, cols=33).stdout.strip() == b"7 33"
    assert b"".join(netrunner.stream(script, pty=True, rows=8, cols=34)).strip() == b"8 34"

    async def main() -> bytes:
        return (await aio.run(script, pty=True, rows=9, cols=35)).stdout

    assert asyncio.run(main()).strip() == b"9 35"
