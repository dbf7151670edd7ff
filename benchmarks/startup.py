"""The fixed cost of a short table-device search, and the cost of ``hwnas --help``.

Runs the real command, ``python -m hwnas search --device pixel3 --latency 5ms --trials 100``
(export included), as a child process in a fresh temporary ``--out``, ``--rounds`` times, and
reads the trial loop's seconds from the run's own ``report.json`` (``timings_s.trials``: the
strategy's proposals, the trials and the per-trial progress lines). Per round it prints:

- ``total``: the child's wall time, start to exit;
- ``fixed``: ``total`` less the trial loop (Python start-up, imports, config and the up-front
  checks, the report, and the export with its checker, parity and re-measure; on two cores the
  export's imports run in a worker process during the trial loop, hwnas/search/export_worker.py,
  so ``total`` is the figure to compare with a run without it: ``HWNAS_EXPORT_WORKER=0``);
- ``cpu``: the child's user + system CPU seconds (``resource.getrusage(RUSAGE_CHILDREN)``),
  which the other jobs of a shared machine disturb far less than the wall time;
- the run's own breakdown (``timings_s``: before_trials, trials, report, export).

Then ``python -m hwnas --help`` the same number of rounds (wall and CPU). Every figure is a
median with its range; the load average is printed beside them. Targets (quiet machine): fixed
<= 3 s, ``--help`` <= 0.3 s.

Run::

    python benchmarks/startup.py               # 5 rounds, about 1-2 minutes on 2 quiet cores
    python benchmarks/startup.py --rounds 9 --trials 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_FIXED_S = 3.0
TARGET_HELP_S = 0.3


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process; raises on a non-zero exit."""
    c0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return wall, cpu


def _summary(name: str, xs: list[float], unit: str = "s") -> str:
    return f"{name} median {statistics.median(xs):.2f} {unit} (range {min(xs):.2f}-{max(xs):.2f}, n={len(xs)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each command (default 5)")
    ap.add_argument("--trials", type=int, default=100, help="trials of the search (default 100)")
    ap.add_argument("--device", default="pixel3", help="a table device (default pixel3)")
    ap.add_argument("--latency", default="5ms", help="the latency budget (default 5ms)")
    args = ap.parse_args(argv)
    env_py = [sys.executable, "-m", "hwnas"]
    print(f"python {sys.executable}; {_load()}", flush=True)
    totals, fixeds, cpus, parts = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hwnas-startup-") as tmp:
        for i in range(args.rounds):
            out = Path(tmp) / f"run{i}"
            cmd = [*env_py, "search", "--device", args.device, "--latency", args.latency, "--trials", str(args.trials), "--out", str(out)]
            wall, cpu = _timed(cmd, Path(tmp))
            report = json.loads((out / "report.json").read_text())
            timings = report.get("timings_s")
            if not timings:
                raise SystemExit("report.json has no timings_s: run this benchmark on an hwnas that writes them")
            fixed = wall - timings["trials"]
            totals.append(wall)
            fixeds.append(fixed)
            cpus.append(cpu)
            parts.append(timings)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
            line = f"round {i + 1}: total {wall:.2f} s, trial loop {timings['trials']:.2f} s, fixed {fixed:.2f} s, cpu {cpu:.2f} s"
            print(f"{line} [{shown}]; {_load()}", flush=True)
        helps, help_cpus = [], []
        for _ in range(args.rounds):
            wall, cpu = _timed([*env_py, "--help"], Path(tmp))
            helps.append(wall)
            help_cpus.append(cpu)
    print()
    print(f"search --device {args.device} --latency {args.latency} --trials {args.trials} (export included):")
    print("  " + _summary("total", totals))
    print("  " + _summary("fixed (total - trial loop)", fixeds) + f"; target <= {TARGET_FIXED_S:g} s quiet")
    print("  " + _summary("cpu (user+sys)", cpus))
    for key in parts[0]:
        print("  " + _summary(f"timings_s.{key}", [p[key] for p in parts if key in p]))
    print("hwnas --help:")
    print("  " + _summary("wall", helps) + f"; target <= {TARGET_HELP_S:g} s quiet")
    print("  " + _summary("cpu (user+sys)", help_cpus))
    print(_load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
