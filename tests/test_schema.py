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
import os
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


# ---------------------------------------------------------------- nice
# The option added through the schema: one field, one protocol field, one
# step in the shepherd's child, and every front end takes it.
def _niceness_after(increment: int) -> int:
    return max(-20, min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment))


def test_nice_is_added_to_the_childs_niceness_on_every_front_end() -> None:
    expected = f"{_niceness_after(5)}\n".encode()
    assert netrunner.run(["nice"], nice=5).stdout == expected
    assert b"".join(netrunner.stream(["nice"], nice=5)) == expected
    with netrunner.spawn(["nice"], nice=5) as p:
        assert p.read() == expected
        assert p.wait(timeout=30) == 0

    async def main() -> bytes:
        return (await aio.run(["nice"], nice=5)).stdout

    assert asyncio.run(main()) == expected
    assert Command("nice", nice=5).run().stdout == expected
    assert netrunner.run(["nice"]).stdout == f"{_niceness_after(0)}\n".encode()  # default: ours


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering the niceness needs CAP_SYS_NICE")
def test_a_negative_nice_is_applied_before_the_child_changes_user() -> None:
    r = netrunner.run(["nice"], nice=-3, user="nobody")
    assert r.stdout == f"{_niceness_after(-3)}\n".encode()


@pytest.mark.parametrize(("value", "error"), [(41, ValueError), (-41, ValueError), (1.5, TypeError), (True, TypeError)])
def test_a_bad_nice_is_refused_before_anything_starts(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="nice"):
        netrunner.run(["true"], nice=value)  # type: ignore[arg-type]


def test_an_unknown_keyword_to_an_async_twin_is_the_type_error_python_gives() -> None:
    # The twins take (args, **call) and complete it from the schema: a name
    # the sync front end does not take must fail as a call to it would.
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        aio.stream(["true"], bogus=1)

    async def main() -> None:
        with pytest.raises(TypeError, match="unexpected keyword argument 'chunk_size'"):
            await aio.run(["true"], chunk_size=1)  # a stream option, not run's
        with pytest.raises(TypeError, match="unexpected keyword argument 'input'"):
            await aio.spawn(["true"], input=b"")

    asyncio.run(main())
