"""The SHORT stress suite under pytest (and under the conftest leak guard).

Skipped unless ``NETRUNNER_STRESS=1``: CI (``.ci/run``) runs this file once,
for one Python, after the normal suite, so the four-Python CI stays within
its time budget (the normal suite is ~3 min per Python; this file ~1 min).
Each test prints its figure and fails only on a *violation*: a promise
main keeps today.  *Findings* (gaps whose fixes land in other branches:
exception types under exhaustion, lost Ctrl-Cs, a stopped fork server)
are printed, not asserted.  The LONG version: ``python -m tests.stress --long``.
"""

from __future__ import annotations

import os

import pytest

from .scenarios import SCENARIOS, run_scenario

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("NETRUNNER_STRESS") != "1",
        reason="stress suite: NETRUNNER_STRESS=1 (CI runs it once), or python -m tests.stress",
    ),
]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stress_scenario(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    fig = run_scenario(name, long=False)
    with capsys.disabled():
        print("\n" + fig.line())
    assert not fig.violations, fig.line()
