"""The tree's own checks, so the README's one test command runs them too:
ruff (lint + format), mypy --strict, and the C header matching _opcodes.py
(the last is in test_protocol.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install '.[test]')")


def test_ruff_lint_and_format() -> None:
    _tool("ruff")
    paths = ["src", "tests", "tools", "bench", "setup.py"]
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict() -> None:
    _tool("mypy")
    if not (ROOT / "src" / "netrunner").is_dir():
        pytest.skip("no source tree")
    result = subprocess.run(
        # A cache per interpreter: CI runs the suites of several Pythons at once.
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(ROOT / ".mypy_cache" / f"py{sys.version_info[0]}{sys.version_info[1]}"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shepherd_compiles_cleanly_with_strict_warnings(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wformat=2", "-Wconversion"]
    result = subprocess.run(
        [cc, *flags, "-Wno-sign-conversion", "-o", str(tmp_path / "s"), str(ROOT / "shepherd" / "shepherd.c")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
