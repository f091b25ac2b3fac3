"""The types of netrunner's options, for annotating your own code.

``def build(cmd: netrunner.typing.Args, env: netrunner.typing.Env) -> ...``
then takes exactly what ``netrunner.run`` accepts, and mypy checks it
there as it does at the call (the aliases are defined once, in
``netrunner._options``, next to the validators that enforce them)."""

from __future__ import annotations

from ._options import (
    Args,
    Cgroup,
    Env,
    HasFileno,
    Input,
    Limits,
    Rlimits,
    StderrSpec,
    StdinSpec,
    StdoutSpec,
    StrOrBytesPath,
)

__all__ = [
    "Args",
    "Cgroup",
    "Env",
    "HasFileno",
    "Input",
    "Limits",
    "Rlimits",
    "StderrSpec",
    "StdinSpec",
    "StdoutSpec",
    "StrOrBytesPath",
]
