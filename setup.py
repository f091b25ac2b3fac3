"""Build step: compile the C shepherd into the package.

setuptools drives everything else from pyproject.toml; this file only adds
the compile (see docs/decisions/0002-build-backend.md for why setuptools).
The shepherd is a standalone executable, not an extension module, so it is
built with the C compiler directly and installed as package data in
``netrunner/_bin/``.  Nothing in the wheel depends on the Python version
(pure Python plus that executable), so it is tagged ``py3-none-<platform>``:
one wheel for every CPython 3 on the platform.  An editable install
(``pip install -e .``) compiles the shepherd into ``src/netrunner/_bin/``,
where the package looks for it.
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

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: only the dev loop imports this file with an old one
    bdist_wheel = None

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


def compile_shepherd(output: Path, strip: bool = False) -> str:
    """Compile the shepherd to ``output``; returns the link mode used.
    ``strip``: without symbols (what a wheel ships: ~4x smaller)."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    extra = shlex.split(os.environ.get("NETRUNNER_CFLAGS", ""))
    output.parent.mkdir(parents=True, exist_ok=True)
    modes = list(LINK_MODES)
    wanted = os.environ.get("NETRUNNER_LINK")
    if wanted:
        modes = [wanted]
    for i, mode in enumerate(modes):
        link = [*LINK_MODES[mode], *(["-s"] if strip else [])]
        cmd = [*cc, "-std=c11", "-O2", *WARNINGS, *extra, *link, "-o", str(output), str(SOURCE)]
        print("compiling the shepherd:", " ".join(cmd))
        last = i == len(modes) - 1
        done = subprocess.run(cmd, check=last, stderr=None if last else subprocess.PIPE)
        if done.returncode == 0:
            return mode
        print(f"({mode} link failed, trying the next mode)")
    raise AssertionError("unreachable")


# How the shepherd of this build was linked (read by the wheel's tag).
BUILT: dict[str, str] = {}


class BuildPyWithShepherd(build_py):
    def run(self) -> None:
        super().run()
        if self.dry_run:
            return
        if getattr(self, "editable_mode", False):
            # The editable package is the source tree itself: put the binary
            # where netrunner._launch looks for it.
            compile_shepherd(ROOT / "src" / "netrunner" / "_bin" / "netrunner-shepherd")
        else:
            out = Path(self.build_lib) / "netrunner" / "_bin" / "netrunner-shepherd"
            BUILT["link"] = compile_shepherd(out, strip=True)


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel carries a native binary
        return True


COMMANDS: dict[str, type] = {"build_py": BuildPyWithShepherd}

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        """Platform-specific (the shepherd is native code) but independent of
        the Python version and ABI (no extension module): ``py3-none-<plat>``.
        A statically linked shepherd needs no system library at all
        (``auditwheel show`` finds it consistent with manylinux_2_5), so that
        wheel is tagged manylinux2014, which every pip since 19.3 installs on
        x86_64 and aarch64 alike."""

        def get_tag(self) -> tuple[str, str, str]:
            _python, _abi, plat = super().get_tag()
            if BUILT.get("link") == "static" and plat.startswith("linux_"):
                arch = plat[len("linux_") :]
                plat = f"manylinux_2_17_{arch}.manylinux2014_{arch}"
            return "py3", "none", plat

    COMMANDS["bdist_wheel"] = PlatformWheel


if __name__ == "__main__":  # (setuptools runs this file as __main__; tools/dev-build.sh imports it)
    setup(cmdclass=COMMANDS, distclass=BinaryDistribution)
