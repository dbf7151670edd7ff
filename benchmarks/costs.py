"""What a candidate's costs cost: the figures of the cost-source issue, measured in one run.

1. **A table-device search against a bare Optuna loop.** ``hwnas search --device pixel3 --latency
   5ms --strategy evolution --trials 200 --no-export`` timed as a whole process, against a bare
   Optuna script (a whole process too) that runs the same 200 networks (replayed in the same order by a sampler
   that costs nothing) on a journal file with a table-lookup objective and the same constraint. Rounds are
   interleaved, the order alternating; the verdict is the median of the per-round ratios
   (limit 3x). The hwnas process is also checked to import neither torch nor fvcore.
2. **A cpu lookup table against live measurement, per trial.** The same nb201 search on
   ``--device cpu``, once on the cpu lookup table and once measuring every candidate live;
   the median seconds per trial from the study's own trial start and end times (limit: the
   table at least 20x cheaper). The table is built here first (``hwnas profile``) unless one
   built on this machine is already in ``--tables``.
3. **Closed-form FLOPs and parameters.** Microseconds per call on 1,000 random architectures
   of each space, with fvcore's count of the built network beside it (equality is asserted by
   ``tests/test_closed_form_costs.py``; ``--fvcore N`` rechecks N of them here).

Run::

    python benchmarks/costs.py                  # all three, about 6-10 minutes on 2 cores
    python benchmarks/costs.py --only 1 --rounds 7

Timings on shared machines are noisy: every figure is a median with its spread, and the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "costs"
SEARCH_ARGS = ["--device", "pixel3", "--latency", "5ms", "--strategy", "evolution", "--trials", "200", "--no-export", "-q"]
LIMIT_RATIO = 3.0
LIMIT_LUT = 20.0

BARE = r'''
import json, sys, optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from hwnas.benchdata import NB201_EDGES, NB201_OPS, genotype_to_string, nb201_latency, nb201_table
optuna.logging.set_verbosity(optuna.logging.WARNING)
journal, archs = sys.argv[1], json.load(open(sys.argv[2]))
lat, table = nb201_latency("pixel3"), nb201_table()
acc = table.metric("cifar10-valid/valid")
class Replay(optuna.samplers.BaseSampler):
    """Proposes the given networks in order: the same trials as hwnas's run, at no sampling cost."""
    def infer_relative_search_space(self, study, trial):
        return {}
    def sample_relative(self, study, trial, search_space):
        return {}
    def sample_independent(self, study, trial, name, distribution):
        return archs[trial.number][name]
study = optuna.create_study(storage=JournalStorage(JournalFileBackend(journal)), directions=["maximize", "minimize"], sampler=Replay())
def objective(trial):
    ops = [trial.suggest_categorical(e, list(NB201_OPS)) for e in NB201_EDGES]
    i = table.index(genotype_to_string(ops))
    trial.set_constraint("latency_ms", float(lat[i]) - 5.0)
    return (float(acc[i]) if lat[i] <= 5.0 else 0.0), float(lat[i])
study.optimize(objective, n_trials=len(archs))
'''


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3g} (min {min(xs):.3g}, max {max(xs):.3g}, n {len(xs)})"


def table_device_vs_bare(rounds: int, work: Path) -> dict[str, Any]:
    """Figure 1: whole-process wall time of hwnas search against a bare Optuna loop."""
    import optuna

    from hwnas.report import open_run_study

    probe = work / "probe"
    _timed([sys.executable, "-m", "hwnas", "search", *SEARCH_ARGS, "--out", str(probe)], work)
    _, study = open_run_study(probe)
    archs = [t.params for t in sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)]
    (work / "archs.json").write_text(json.dumps(archs))
    (work / "bare.py").write_text(BARE)
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hwnas.cli import main; main([*sys.argv[1:]]); "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'fvcore': 'fvcore' in sys.modules}))".replace(
                "import sys;", "import sys, json;"
            ),
            "search",
            *SEARCH_ARGS,
            "--trials",
            "20",
            "--out",
            str(work / "imports"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = json.loads(check.stdout.strip().splitlines()[-1])
    hw, bare, ratios = [], [], []
    for r in range(rounds):
        out = work / f"run{r}"
        journal = work / f"bare{r}.journal"
        pair = [
            ("hwnas", [sys.executable, "-m", "hwnas", "search", *SEARCH_ARGS, "--out", str(out)]),
            ("bare", [sys.executable, str(work / "bare.py"), str(journal), str(work / "archs.json")]),
        ]
        times = {}
        for name, cmd in pair if r % 2 == 0 else pair[::-1]:
            times[name] = _timed(cmd, work)
        hw.append(times["hwnas"])
        bare.append(times["bare"])
        ratios.append(times["hwnas"] / times["bare"])
        print(f"  round {r + 1}: hwnas {times['hwnas']:.2f} s, bare {times['bare']:.2f} s, ratio {ratios[-1]:.2f}", flush=True)
    med = statistics.median(ratios)
    print(f"[1] 200-trial table-device search, whole process: hwnas {_spread(hw)} s; bare Optuna loop {_spread(bare)} s")
    print(f"    ratio hwnas / bare: {_spread(ratios)}   [limit <= {LIMIT_RATIO}x: {'met' if med <= LIMIT_RATIO else 'NOT met'}]")
    print(f"    the hwnas process imported torch: {imported['torch']}, fvcore: {imported['fvcore']}")
    return {"hwnas_s": hw, "bare_s": bare, "ratios": ratios, "median_ratio": med, "imports": imported}


def _trial_seconds(run: Path) -> list[float]:
    import optuna

    from hwnas.report import open_run_study

    _, study = open_run_study(run)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]


def lut_vs_live(trials_lut: int, trials_live: int, work: Path, tables: Path) -> dict[str, Any]:
    """Figure 2: seconds per trial of an nb201 cpu search on the lookup table vs measuring live."""
    from hwnas.cost.lut import LatencyTable
    from hwnas.device import get_device

    device = get_device("cpu")
    table = tables / "cpu-nb201.json"
    usable = False
    if table.is_file():
        usable = not LatencyTable.load(table).mismatches(provider=device.provider, threads=device.threads, batch=device.batch)
    if not usable:
        print(f"  building the cpu nb201 lookup table into {table} (hwnas profile)", flush=True)
        tables.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "hwnas", "profile", "--device", "cpu", "--space", "nb201", "--out", str(table), "-q"], check=True
        )
    common = ["search", "--device", "cpu", "--latency", "2ms", "--strategy", "random", "--no-export", "-q"]
    lut_run, live_run = work / "lut", work / "live"
    t_lut = _timed(
        [sys.executable, "-m", "hwnas", *common, "--trials", str(trials_lut), "--table", str(table), "--out", str(lut_run)], work
    )
    t_live = _timed(
        [sys.executable, "-m", "hwnas", *common, "--trials", str(trials_live), "--latency-source", "measure", "--out", str(live_run)], work
    )
    lut_s, live_s = _trial_seconds(lut_run), _trial_seconds(live_run)
    ratio = statistics.median(live_s) / statistics.median(lut_s)
    print(f"[2] nb201 on cpu, seconds per trial (the study's own trial times): lookup table {_spread(lut_s)}; live {_spread(live_s)}")
    print(f"    whole processes: {trials_lut} table trials {t_lut:.1f} s, {trials_live} live trials {t_live:.1f} s")
    print(f"    live / table per trial: {ratio:.0f}x   [limit >= {LIMIT_LUT:.0f}x: {'met' if ratio >= LIMIT_LUT else 'NOT met'}]")
    return {"lut_trial_s": lut_s, "live_trial_s": live_s, "ratio": ratio}


def closed_form(n: int, fvcore_n: int) -> dict[str, Any]:
    """Figure 3: microseconds per closed-form count, and (optionally) a recheck against fvcore."""
    from hwnas.spaces import get_space

    out: dict[str, Any] = {}
    for name in ("nb201", "mbconv"):
        space = get_space(name)
        rng = np.random.default_rng(0)
        archs = [space.sample(rng) for _ in range(n)]
        times = []
        for a in archs:
            t0 = time.perf_counter_ns()
            space.counts(a)
            times.append((time.perf_counter_ns() - t0) / 1e3)
        peak_us = []
        for a in archs[:200]:
            t0 = time.perf_counter_ns()
            space.peak_memory_bytes(a)
            peak_us.append((time.perf_counter_ns() - t0) / 1e3)
        line = f"[3] {name}: closed-form FLOPs/params/size {_spread(times)} us per arch; peak memory {_spread(peak_us)} us"
        equal = None
        if fvcore_n:
            import torch

            from hwnas.cost.flops import compute_cost

            torch.set_num_threads(1)
            equal = 0
            t0 = time.perf_counter()
            for a in archs[:fvcore_n]:
                cc = compute_cost(space.build(a), space.input_shape(a))
                c = space.counts(a)
                equal += round(cc.flops_m * 1e6) == c.macs and round(cc.params_m * 1e6) == c.params
            fv = (time.perf_counter() - t0) / fvcore_n * 1e3
            line += f"; fvcore (build + trace) {fv:.0f} ms per arch; equal on {equal}/{fvcore_n}"
        print(line, flush=True)
        out[name] = {"counts_us": times, "peak_us": peak_us, "fvcore_equal": equal}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", type=int, choices=(1, 2, 3), action="append", help="run only these figures")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of figure 1 (default 5)")
    p.add_argument("--lut-trials", type=int, default=100)
    p.add_argument("--live-trials", type=int, default=20)
    p.add_argument("--fvcore", type=int, default=50, help="archs per space rechecked against fvcore in figure 3 (default 50)")
    p.add_argument("--tables", type=Path, default=RESULTS / "tables", help="folder of the cpu nb201 lookup table (built if missing)")
    args = p.parse_args(argv)
    only = set(args.only or (1, 2, 3))
    print(f"hwnas cost benchmark; {_load()}; {os.cpu_count()} cpus", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-costs-") as tmp:
        work = Path(tmp)
        if 3 in only:
            results["closed_form"] = closed_form(1000, args.fvcore)
        if 1 in only:
            results["table_device"] = table_device_vs_bare(args.rounds, work)
        if 2 in only:
            results["lut"] = lut_vs_live(args.lut_trials, args.live_trials, work, args.tables)
    print(f"done; {_load()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
