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


# How the shepherd is linked, best first.  Static: a spare shepherd is a
# fork of the fork server, and a fork re-faults every page of shared code it
# touches; with libc linked in, the few pages the shepherd uses sit together
# and no dynamic loader resolves symbols lazily in each new process (about
# 50 us per spawn here).  Without a static libc (libc.a), eager binding
# (-z now) is the next best.  NETRUNNER_LINK=dynamic forces the fallback.
LINK_MODES = {"static": ["-static"], "dynamic": ["-Wl,-z,now", "-Wl,-z,relro"]}


def compile_shepherd(output: Path) -> str:
    """Compile the shepherd to ``output``; returns the link mode used."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    extra = shlex.split(os.environ.get("NETRUNNER_CFLAGS", ""))
    output.parent.mkdir(parents=True, exist_ok=True)
    modes = list(LINK_MODES)
    wanted = os.environ.get("NETRUNNER_LINK")
    if wanted:
        modes = [wanted]
    for i, mode in enumerate(modes):
        cmd = [*cc, "-std=c11", "-O2", *WARNINGS, *extra, *LINK_MODES[mode], "-o", str(output), str(SOURCE)]
        print("compiling the shepherd:", " ".join(cmd))
        last = i == len(modes) - 1
        done = subprocess.run(cmd, check=last, stderr=None if last else subprocess.PIPE)
        if done.returncode == 0:
            return mode
        print(f"({mode} link failed, trying the next mode)")
    raise AssertionError("unreachable")


class BuildPyWithShepherd(build_py):
    def run(self) -> None:
        super().run()
        if not self.dry_run:
            compile_shepherd(Path(self.build_lib) / "netrunner" / "_bin" / "netrunner-shepherd")


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel carries a native binary
        return True


if __name__ == "__main__":  # (setuptools runs this file as __main__; tools/dev-build.sh imports it)
    setup(cmdclass={"build_py": BuildPyWithShepherd}, distclass=BinaryDistribution)
