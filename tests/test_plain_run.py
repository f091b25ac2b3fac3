"""``run(args)`` with no option given reuses its validated, encoded request
(``_run.plan``'s cache, the spawn benchmark's call).  What the child gets
must still be the owner's state *now*: argv as passed this time, the
environment (and the PATH lookup), umask and cwd at this call; and an
option passed as an equal but different object is validated afresh."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

import netrunner

SH = shutil.which("sh") or "/bin/sh"


def test_the_same_list_mutated_between_calls_runs_its_new_argv() -> None:
    cmd = [SH, "-c", "echo one"]
    assert netrunner.run(cmd).stdout == b"one\n"
    cmd[2] = "echo two"
    assert netrunner.run(cmd).stdout == b"two\n"
    assert netrunner.run(tuple(cmd)).stdout == b"two\n"


def test_an_environment_change_reaches_the_next_default_run(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = [SH, "-c", "echo ${NETRUNNER_PLAIN-unset}"]
    monkeypatch.delenv("NETRUNNER_PLAIN", raising=False)
    assert netrunner.run(cmd).stdout == b"unset\n"
    monkeypatch.setenv("NETRUNNER_PLAIN", "set")
    assert netrunner.run(cmd).stdout == b"set\n"
    monkeypatch.delenv("NETRUNNER_PLAIN")
    assert netrunner.run(cmd).stdout == b"unset\n"


def test_a_path_change_moves_the_lookup_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tool = tmp_path / name / "netrunner-plain-tool"
        tool.write_text(f"#!/bin/sh\necho {name}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{os.environ.get('PATH', '')}")
    assert netrunner.run(["netrunner-plain-tool"]).stdout == b"a\n"
    monkeypatch.setenv("PATH", f"{tmp_path / 'b'}:{os.environ.get('PATH', '')}")
    assert netrunner.run(["netrunner-plain-tool"]).stdout == b"b\n"


def test_umask_and_cwd_are_read_at_each_default_run(tmp_path: Path) -> None:
    cmd = [SH, "-c", "umask; pwd"]
    netrunner.run(cmd)
    old_cwd, old_mask = os.getcwd(), os.umask(0o077)
    try:
        os.chdir(tmp_path)
        out = netrunner.run(cmd).stdout.split()
        os.umask(0o027)
        again = netrunner.run(cmd).stdout.split()
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)
    assert out == [b"0077", os.fsencode(tmp_path)]
    assert again == [b"0027", os.fsencode(tmp_path)]


def test_an_equal_option_of_another_type_is_still_validated() -> None:
    # pty=0 equals the default False, echo=1 the default True: both are
    # TypeErrors however often the same argv ran with the defaults.
    cmd = [SH, "-c", "true"]
    netrunner.run(cmd)
    netrunner.run(cmd)
    with pytest.raises(TypeError, match="pty must be a bool"):
        netrunner.run(cmd, pty=0)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="echo must be a bool"):
        netrunner.run(cmd, echo=1)  # type: ignore[call-overload]
    assert netrunner.run(cmd, kill_timeout=5).returncode == 0  # an int equal to 5.0 is fine, validated


def test_distinct_large_commands_are_not_kept() -> None:
    # The plans kept for option-less runs hold their encoded request: a
    # program running many distinct large command lines (1 MiB each here,
    # ARG_MAX allows 2) must not keep them all alive.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(12):
            netrunner.run([SH, "-c", "true", *([f"{i:06d}" * 17_000] * 10)])
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 4 << 20, f"{kept} bytes kept after 12 distinct 1 MiB command lines"
