"""Command: a template whose calls are exactly run/stream/spawn written out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import netrunner
from netrunner import Command, aio


def test_args_append_and_options_override() -> None:
    echo = Command("sh", ["-c", 'echo "$@"; exit 3', "sh", "first"], check=False, text=True)
    r = echo.run(["second", "third"])
    assert (r.args, r.stdout, r.returncode) == (
        ["sh", "-c", 'echo "$@"; exit 3', "sh", "first", "second", "third"],
        "first second third\n",
        3,
    )
    with pytest.raises(netrunner.CalledProcessError):
        echo.run(["x"], check=True)  # a call's option wins over the template's
    assert echo.run(["x"], text=False).stdout == b"first x\n"


def test_template_timeout_applies_and_a_call_may_override_it() -> None:
    sleeper = Command("sleep", timeout=0.2, kill_timeout=0.5)
    with pytest.raises(netrunner.TimeoutExpired) as info:
        sleeper.run(["30"])
    assert info.value.timeout == 0.2
    assert sleeper.run(["0"], timeout=30).returncode == 0


def test_defaults_a_method_does_not_take_are_left_out_for_it() -> None:
    cat = Command("cat", timeout=30, check=True, stdin="pipe")
    with cat.spawn() as p:  # spawn takes neither timeout nor check
        p.write(b"hi")
        p.close_stdin()
        assert p.read(timeout=10) == b"hi"
        assert p.wait(timeout=10) == 0
    assert b"".join(cat.stream(input=b"streamed")) == b"streamed"  # stream takes no stdin=
    assert cat.run(input=b"ran").stdout == b"ran"


def test_an_option_given_to_the_call_must_be_one_the_method_takes() -> None:
    with pytest.raises(TypeError):
        Command("true").spawn(timeout=1)
    with pytest.raises(TypeError):
        Command("true").stream(max_output_size=1)


def test_unknown_options_and_bad_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="timout"):
        Command("true", timout=1)
    with pytest.raises(TypeError, match="bogus"):
        Command("true").with_options(bogus=1)
    sentinel = tmp_path / "ran"
    touch = Command("touch", [str(sentinel)], timeout=-1)
    with pytest.raises(ValueError):
        touch.run()
    assert not sentinel.exists()
    for bad_program in ("", b""):
        with pytest.raises(ValueError):
            Command(bad_program)
    with pytest.raises(TypeError):
        Command(["ls", "-l"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no shell"):
        Command("ls", "-l")
    with pytest.raises(TypeError, match="no shell"):
        Command("ls").run("-l")


def test_with_options_returns_a_new_template_and_leaves_the_old_one() -> None:
    base = Command("sh", ["-c", "exit 1"])
    strict = base.with_options(check=True)
    assert base.options == {} and strict.options == {"check": True}
    assert base.run().returncode == 1
    with pytest.raises(netrunner.CalledProcessError):
        strict.run()
    assert strict == Command("sh", ["-c", "exit 1"], check=True) and strict != base
    assert repr(strict) == "Command('sh', ['-c', 'exit 1'], check=True)"
    with pytest.raises(TypeError):
        strict.options["check"] = False  # type: ignore[index]


def test_argv_and_options_for_drive_the_asyncio_front_end() -> None:
    printf = Command("printf", ["%s-%s"], text=True, timeout=30)

    async def main() -> str:
        result = await aio.run(printf.argv(["a", "b"]), **printf.options_for("run"))
        return str(result.stdout)

    assert asyncio.run(main()) == "a-b"
    assert printf.options_for("spawn") == {}
    # (stream takes text= too: a text Command's streams yield str)
    assert printf.options_for("stream", {"check": True}) == {"timeout": 30, "text": True, "check": True}
    with pytest.raises(ValueError):
        printf.options_for("popen")
