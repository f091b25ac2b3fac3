"""The stress suite: netrunner's promises under load, faults and bad luck.

Each scenario in :mod:`.scenarios` runs real processes, measures, and
returns a :class:`.common.Figure`: the numbers it saw, the *violations*
(a promise main already keeps was broken: the pytest version fails) and
the *findings* (a known gap measured, not asserted; the fixes land in
other branches).  Two sizes:

    PYTHONPATH=src python -m tests.stress            # SHORT (what CI's pytest runs, ~30 s)
    PYTHONPATH=src python -m tests.stress --long     # LONG, by hand (figures in docs/reliability.md)
    PYTHONPATH=src python -m tests.stress --only owner_kill,sigint

``tests/stress/test_stress.py`` runs the SHORT version inside the normal
pytest run (under the leak guard of ``tests/conftest.py``).  The shepherd
request fuzzer is separate: ``python -m tests.stress.fuzz``.
"""
