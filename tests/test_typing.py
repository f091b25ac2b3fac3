"""The public API's types, as a user's ``mypy --strict`` sees them.

Small programs that use netrunner are checked by the installed mypy, in
ONE invocation (mypy is slow) with its cache in a temporary directory:
mistakes a user can make are errors before anything runs (a command that
is not a sequence, a stderr mode that does not exist, an unknown or
mistyped keyword, on the sync and the asyncio front ends), ``text=`` picks
``str`` over ``bytes`` through the overloads, and a correct program passes
clean.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

SRC = Path(__file__).resolve().parent.parent / "src"

GOOD = """
import asyncio
import subprocess
import sys

import netrunner
from netrunner import aio, run, spawn, stream
from netrunner.typing import Args, Env

plain = run(["true"])
reveal_type(plain.stdout)
decoded = run(["true"], text=True)
reveal_type(decoded.stdout)
latin = run(["true"], encoding="latin-1")
reveal_type(latin.stderr)
handled = run(["true"], errors="replace")
reveal_type(handled.stdout)
flag = bool(len(sys.argv))
reveal_type(run(["true"], text=flag))
reveal_type(stream(["true"]))
reveal_type(stream(["true"], text=True))
for chunk in stream(["true"], text=True):
    reveal_type(chunk)

run(["ls", b"-l"], stderr="stdout", stdout=subprocess.DEVNULL, env={"A": "1"}, cwd="/", timeout=1.5)
run("echo $HOME", shell=True, input=b"data", rlimits={"RLIMIT_NOFILE": (64, 64)})
run(["cat"], input=sys.stdin.buffer, stderr=sys.stderr, limits={"memory.max": "100M"}, cgroup=True)
process = spawn(["cat"], stdin="pipe", rows=30, pty=True)
process.write(b"x")
result: netrunner.Result[bytes] = run(["true"], check=True)


def build(command: Args, env: Env = None) -> netrunner.Result[str]:
    return run(command, env=env, text=True)


curl = netrunner.Command("curl", ["-sS"], timeout=30.0, stderr="devnull")
curl.run(["https://example.com"], timeout=5.0)
netrunner.Daemon(["sleep", "60"], restart="on-failure", rows=30)


async def main() -> None:
    await aio.run(curl.argv(["x"]), **curl.options_for("run"))  # the README's way to aio
    done = await aio.run(["true"])
    reveal_type(done)
    text = await aio.run(["true"], text=True)
    reveal_type(text.stdout)
    async for piece in aio.stream(["true"], encoding="utf-8"):
        reveal_type(piece)
    proc = await aio.spawn(["cat"], stderr="devnull")
    await proc.stop()


asyncio.run(main())
"""

# Each line must be an error (and only these lines).
BAD = """
from netrunner import Command, Daemon, aio, run, spawn, stream

run(12345)
Command("x", bogus=1)
Command("x", stderr="bogus")
Command("x").spawn(timeout=3.0)
Daemon(["x"], rows="x")
run(["x"], stderr="bogus")
spawn(["x"], rows="x")
run(["x"], env={"A": 1})
stream(["x"], stdout="stdout")
run(["x"], text="yes")


async def main() -> None:
    await aio.run(["x"], bogus=1)
    await aio.spawn(["x"], stdin="bogus")
"""


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("typing")
    (root / "good.py").write_text(textwrap.dedent(GOOD))
    (root / "bad.py").write_text(textwrap.dedent(BAD))
    (root / "mypy.ini").write_text("[mypy]\n")  # none of the project's settings
    env = {**os.environ, "MYPYPATH": str(SRC)}
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(root / "mypy.ini"),
        "--cache-dir",
        str(root / "cache"),
        "--no-error-summary",
        "--hide-error-context",
        "--no-pretty",
        "good.py",
        "bad.py",
    ]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    return done.stdout


def _lines(output: str, file: str, kind: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for match in re.finditer(rf"^{file}:(\d+): {kind}: (.*)$", output, re.M):
        out.setdefault(int(match.group(1)), []).append(match.group(2))
    return out


def test_a_correct_program_passes(mypy_output: str) -> None:
    assert _lines(mypy_output, "good.py", "error") == {}, mypy_output


def test_text_picks_str_and_bytes_is_the_default(mypy_output: str) -> None:
    revealed = [
        # mypy versions differ in spelling: "builtins.bytes" or "bytes";
        # the class by its defining module or as exported
        re.sub(r"builtins\.|(?<=netrunner\.)_\w+\.", "", text.removeprefix("Revealed type is ").strip('"'))
        for _line, notes in sorted(_lines(mypy_output, "good.py", "note").items())
        for text in notes
    ]
    assert revealed == [
        "bytes",  # run().stdout
        "str",  # text=True
        "str",  # encoding= implies text
        "str",  # errors= implies text
        "netrunner.Result[bytes] | netrunner.Result[str]",  # text unknown statically
        "netrunner.Stream[bytes]",
        "netrunner.Stream[str]",
        "str",  # a text stream's chunk
        "netrunner.Result[bytes]",  # aio.run
        "str",
        "str",  # aio.stream's chunk with encoding=
    ], mypy_output


def test_mistakes_are_type_errors(mypy_output: str) -> None:
    source = textwrap.dedent(BAD).split("\n")
    calls = {number for number, line in enumerate(source, 1) if "(" in line and not line.startswith(("def", "async"))}
    calls -= {number for number, line in enumerate(source, 1) if line.startswith("from")}
    errors = _lines(mypy_output, "bad.py", "error")
    missing = [source[number - 1].strip() for number in sorted(calls - errors.keys())]
    assert not missing, f"not caught by mypy: {missing}\n{mypy_output}"
    assert errors.keys() <= calls, mypy_output


def _annotations(function: object) -> list[str]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [str(p.annotation) for p in signature.parameters.values()] + [str(signature.return_annotation)]


def test_no_any_in_the_native_signatures() -> None:
    """What the front ends, their results and the exceptions show mypy and
    ``help()``: precise types, never ``Any`` (which would hide mistakes)."""
    import netrunner
    from netrunner import aio

    classes = [
        netrunner.Process,
        netrunner.Stream,
        netrunner.Result,
        netrunner.CalledProcessError,
        netrunner.TimeoutExpired,
        netrunner.OutputLimitExceeded,
        aio.AsyncProcess,
        aio.AsyncStream,
        netrunner.Command,
        netrunner.Daemon,
    ]
    found = {}
    for function in (netrunner.run, netrunner.stream, netrunner.spawn, aio.run, aio.stream, aio.spawn):
        found[function.__qualname__] = _annotations(function)
    for cls in classes:
        for klass in cls.__mro__:
            if klass.__module__.startswith("netrunner"):
                for name, member in vars(klass).items():
                    getter = member.fget if isinstance(member, property) else member
                    if callable(getter) and (not name.startswith("_") or name == "__init__"):
                        found[f"{cls.__name__}.{name}"] = _annotations(getter)
    with_any = {name: notes for name, notes in found.items() if any("Any" in note for note in notes)}
    assert not with_any
