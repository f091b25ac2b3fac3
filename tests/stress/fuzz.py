"""Coverage-guided fuzzing of the shepherd's request parser (libFuzzer).

    PYTHONPATH=src python -m tests.stress.fuzz [--seconds 25] [--workdir build/fuzz]

Builds ``tests/stress/fuzz/fuzz_request.c`` (which includes
``shepherd/shepherd.c`` unchanged) with clang, ``-fsanitize=fuzzer,address,
undefined``; writes a seed corpus of real requests (``_options.SpawnOptions.request``
encoded by ``_protocol.encode_spawn``: plain, env, cwd, every stdio mode,
pty, cgroup with limits, rlimits, umask, plus split and coalesced frames);
runs for ``--seconds``; prints one figure line.  Exit 1 on a crash (the
input is kept as ``<workdir>/crash-*``), 2 when clang or its fuzzer runtime
is missing (Debian: ``apt-get install clang libclang-rt-14-dev``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_request.c"
try:
    import netrunner  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))

from netrunner import _opcodes as op  # noqa: E402
from netrunner import _options  # noqa: E402
from netrunner._protocol import SpawnRequest, encode_spawn, frame  # noqa: E402

FLAGS = [
    "-std=c11",
    "-g",
    "-O1",
    "-fno-omit-frame-pointer",
    "-fsanitize=fuzzer,address,undefined",
    "-fno-sanitize-recover=all",
    # Warnings shown, not fatal: the shepherd's warning gate is the gcc
    # build's; a clang-only warning must not stop the fuzzing.
    "-Wall",
    "-Wextra",
]


def clang() -> str | None:
    for name in (os.environ.get("FUZZ_CC"), "clang", "clang-16", "clang-15", "clang-14"):
        if name and shutil.which(name):
            return name
    return None


def build(workdir: Path) -> Path:
    cc = clang()
    if cc is None:
        raise FileNotFoundError("clang not found (Debian: apt-get install clang libclang-rt-14-dev)")
    out = workdir / "fuzz_request"
    done = subprocess.run([cc, *FLAGS, "-o", str(out), str(HARNESS)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise FileNotFoundError(f"building the fuzzer failed (libclang-rt-*-dev missing?):\n{done.stderr[-3000:]}")
    return out


def real_requests() -> list[bytes]:
    """SPAWN frames as the library sends them, over the options it has."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    variants: list[dict[str, object]] = [
        {},
        {"env": env},
        {"cwd": "/tmp"},
        {"stdin": "pipe", "stderr": "stdout"},
        {"stdin": "devnull", "stderr": "devnull"},
        {"stdin": "inherit", "stderr": "inherit"},
        {"pty": True, "rows": 30, "cols": 100},
        {"rlimits": {"RLIMIT_NOFILE": (256, 1024), "RLIMIT_CORE": (0, 0)}},
        {"kill_timeout": 0},
        {"kill_timeout": 4000000},
    ]
    frames = []
    for extra in variants:
        kw: dict[str, object] = {"stdin": "pipe", "stderr": "pipe"}
        kw.update(extra)
        args = ["sh", "-c", "echo hi; exec cat", "arg with spaces", b"\xff\xfe bytes"]
        frames.append(encode_spawn(_options.SpawnOptions(**kw).request(args)))  # type: ignore[arg-type]
    # cgroup fields without touching any cgroup (request() would check the mount).
    base = _options.SpawnOptions(stdin="devnull", env=env, kill_timeout=1).request(["true"])
    for cg, sets in (
        (b"/sys/fs/cgroup/netrunner/1-ab", [b"pids.max=64", b"memory.max=100M"]),
        (b"/x", []),
    ):
        frames.append(
            encode_spawn(
                SpawnRequest(
                    argv=base.argv,
                    env=base.env,
                    executables=base.executables,
                    cwd=base.cwd,
                    stdin=base.stdin,
                    stdout=base.stdout,
                    stderr=base.stderr,
                    kill_timeout=base.kill_timeout,
                    rlimits=base.rlimits,
                    umask=0o22,
                    pty=(24, 80),
                    cgroup=cg,
                    cgroup_set=sets,
                )
            )
        )
    # What follows a request on the wire: SIGNAL and STOP frames coalesced
    # after it, and a frame alone that is not a SPAWN.
    frames.append(frames[0] + frame(op.OP_SIGNAL, (15).to_bytes(4, "little")))
    frames.append(frames[1] + frame(op.OP_STOP, (500).to_bytes(4, "little")))
    frames.append(frame(op.OP_STOP, (0).to_bytes(4, "little")))
    return frames


def write_seeds(seed_dir: Path) -> int:
    seed_dir.mkdir(parents=True, exist_ok=True)
    frames = real_requests()
    for i, data in enumerate(frames):
        (seed_dir / f"request-{i:02d}").write_bytes(data)
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--workdir", default=str(ROOT / "build" / "fuzz"))
    parser.add_argument("--jobs", type=int, default=1, help="libFuzzer -fork=N workers (1: in process)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        binary = build(workdir)
    except FileNotFoundError as exc:
        print(f"[fuzz_request] not run: {exc}", file=sys.stderr)
        return 2
    seeds = write_seeds(workdir / "seeds")
    corpus = workdir / "corpus"
    corpus.mkdir(exist_ok=True)
    cmd = [
        str(binary),
        f"-max_total_time={args.seconds}",
        "-max_len=65536",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={workdir}/",
        str(corpus),
        str(workdir / "seeds"),
    ]
    if args.jobs > 1:
        cmd.insert(1, f"-fork={args.jobs}")
    t = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 300)
    took = time.monotonic() - t
    log = done.stderr
    (workdir / "last-run.log").write_text(log)
    execs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    crashes = sorted(p.name for p in workdir.glob("crash-*")) + sorted(p.name for p in workdir.glob("leak-*"))
    n = int(execs[-1]) if execs else 0
    edges, features, corp = cov[-1] if cov else ("?", "?", "?")
    print(
        f"[fuzz_request] ({took:.1f} s) seeds={seeds} execs={n} execs_per_s={n / max(took, 1e-9):.0f} "
        f"cov_edges={edges} features={features} corpus={corp} crashes={len(crashes)} exit={done.returncode}",
        flush=True,
    )
    if done.returncode != 0:
        tail = "\n".join(log.splitlines()[-40:])
        print(f"fuzzer failed (artifacts in {workdir}: {crashes}):\n{tail}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
