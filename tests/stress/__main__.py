"""``python -m tests.stress [--long] [--only a,b] [--json FILE]``: run the
stress scenarios and print each one's figure.  Exit 1 if any scenario
broke a promise main keeps (a *violation*); *findings* are printed only."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
try:
    import netrunner  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))

from .scenarios import SCENARIOS, run_scenario  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the LONG version (by hand; minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(SCENARIOS)}")
    parser.add_argument("--json", default="", help="also write every figure as JSON to this file")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {unknown}")
    started = datetime.datetime.now(datetime.timezone.utc)
    print(
        f"netrunner stress, {'LONG' if args.long else 'SHORT'}, {started:%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, {platform.release()}, {os.cpu_count()} cpus",
        flush=True,
    )
    figures = []
    for name in names:
        fig = run_scenario(name, args.long)
        figures.append(fig)
        print(fig.line(), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "name": f.name,
                        "seconds": f.seconds,
                        "values": f.values,
                        "violations": f.violations,
                        "findings": f.findings,
                    }
                    for f in figures
                ],
                indent=1,
                default=str,
            )
        )
    broken = [f.name for f in figures if f.violations]
    print(f"violations in: {', '.join(broken)}" if broken else "no violations", flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
