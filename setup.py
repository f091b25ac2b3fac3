"""Build step: compile the C shepherd into the package.

setuptools drives everything else from pyproject.toml; this file only adds
the compile (see docs/decisions/0002-build-backend.md for why setuptools).
The shepherd is a standalone executable, not an extension module, so it is
built with the C compiler directly and installed as package data in
``netrunner/_bin/``; the wheel is marked platform-specific.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "shepherd" / "shepherd.c"
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wformat=2", "-Wconversion", "-Wno-sign-conversion"]


def compile_shepherd(output: Path) -> None:
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    extra = shlex.split(os.environ.get("NETRUNNER_CFLAGS", ""))
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*cc, "-std=c11", "-O2", *WARNINGS, *extra, "-o", str(output), str(SOURCE)]
    print("compiling the shepherd:", " ".join(cmd))
    subprocess.run(cmd, check=True)


class BuildPyWithShepherd(build_py):
    def run(self) -> None:
        super().run()
        if not self.dry_run:
            compile_shepherd(Path(self.build_lib) / "netrunner" / "_bin" / "netrunner-shepherd")


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel carries a native binary
        return True


setup(cmdclass={"build_py": BuildPyWithShepherd}, distclass=BinaryDistribution)
