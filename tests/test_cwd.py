"""The child's working directory is the owner's own directory, taken by fd
at spawn time (never re-resolved by path), and a relative ``cwd=`` is
resolved from there, as ``subprocess`` does."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import cgroup_events, frozen_cgroup

import netrunner
from netrunner import aio
from netrunner._cgroup import mount_point

WHERE = ["stat", "-c", "%d %i", "."]  # the child's cwd, as device and inode


def where(**options: object) -> tuple[int, int]:
    dev, ino = netrunner.run(WHERE, **options).stdout.split()  # type: ignore[arg-type]
    return int(dev), int(ino)


def identity(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_a_relative_cwd_is_resolved_from_the_owners_cwd_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("first", "second"):
        (tmp_path / name / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "first")
    netrunner.run(["true"])  # a fork server exists (it never follows our chdir)
    monkeypatch.chdir(tmp_path / "second")
    assert where(cwd="sub") == identity(tmp_path / "second" / "sub")
    assert where(cwd=b"sub") == identity(tmp_path / "second" / "sub")
    assert where(cwd=Path("sub")) == identity(tmp_path / "second" / "sub")


def test_a_relative_cwd_on_asyncio_and_spawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    dev, ino = identity(tmp_path / "sub")
    expected = f"{dev} {ino}\n"

    async def main() -> bytes:
        return (await aio.run(WHERE, cwd="sub")).stdout

    assert asyncio.run(main()).decode() == expected
    with netrunner.spawn(WHERE, cwd="sub", stdin="devnull") as p:
        assert p.read().decode() == expected
        assert p.wait() == 0


def test_an_absolute_cwd_and_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert where() == identity(tmp_path)
    assert where(cwd=str(tmp_path.parent)) == identity(tmp_path.parent)


def test_a_missing_relative_cwd_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        netrunner.run(["true"], cwd="no-such-dir")
    assert info.value.errno == errno.ENOENT and info.value.filename == "no-such-dir"


def test_a_deleted_cwd_is_inherited_as_subprocess_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The owner's directory was removed: the child still starts, in it (the
    # old path-based code fell back to the fork server's directory).
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    expected = identity(".")
    gone.rmdir()
    assert where() == expected


# --------------------------------------------------- replaced by another dir


@pytest.fixture
def frozen_parent() -> Iterator[Path]:
    with frozen_cgroup("frozen-cwd") as parent:
        yield parent


def test_a_directory_replaced_at_the_owners_path_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen_parent: Path
) -> None:
    # Upstream: getcwd() then chdir(path) in the child; another user who
    # can write the parent directory swapped it in between (14 of 791
    # children ran elsewhere).  The swap is made deterministic here: the
    # child is frozen after it joined its cgroup, before its chdir.
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.chdir(mine)
    expected = identity(".")
    out: list[bytes] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            leaf = str(frozen_parent.relative_to(mount_point()) / "leaf")
            out.append(netrunner.run(WHERE, cgroup=leaf, timeout=60, kill_timeout=1).stdout)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        cgroup_events(frozen_parent, b"populated 1", 15)
        mine.rename(tmp_path / "moved")
        (tmp_path / "mine").mkdir()  # an impostor at the owner's path
    finally:
        (frozen_parent / "cgroup.freeze").write_text("0")
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors
    dev, ino = out[0].split()
    assert (int(dev), int(ino)) == expected, "the child ran in the directory now at the owner's old path"
