"""What a trial costs each strategy as the study grows, through ``hwnas search`` itself.

Runs the product's own search (:class:`hwnas.search.Search`, the pipeline ``hwnas search`` runs) on
a table device with the table evaluator, where a trial's evaluation is a lookup, so a trial's
time is the strategy's proposal plus hwnas's own per-trial work (the trial pipeline, the journal
storage, the progress bookkeeping). Each run goes to the largest ``--at`` trial count in a fresh
run folder, without export. Per counted trial near ``k`` it prints

- ``ms/trial``: the wall time between the completion of counted trials ``k - w`` and ``k`` over
  ``w`` (``--window``, default 20; the study's own completion times), counting trials as the trial
  budget does (complete or pruned: a repeat the pipeline reuses counts as a trial);
- ``over random``: ``ms/trial`` less ``random``'s at the same ``k`` and seed, run in the same
  command: the strategy's own cost, with hwnas's per-trial work taken out.

Each strategy's runs take the seeds ``0 .. --seeds - 1``; figures are medians over seeds with their
range, and each run's total wall and CPU seconds (``resource.getrusage``, this process) and the
load average are printed beside them: the wall time is the figure a user sees, the CPU time is
what other jobs on a shared machine disturb least.

Run::

    python benchmarks/sampler_overhead.py                       # random hybrid tpe gp to 1,000 trials, 1 seed
    python benchmarks/sampler_overhead.py --strategies gp --at 100 300 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def completions(out: Path) -> list[float]:
    """Completion times (s since the epoch) of the run's counted trials (those the trial budget
    counts: hwnas.search.coordinate.counted_states), in order of completion."""
    from hwnas.report import open_run_study
    from hwnas.search.coordinate import counted_states

    _, study = open_run_study(out)
    done = study.get_trials(deepcopy=False, states=counted_states())
    return sorted(t.datetime_complete.timestamp() for t in done if t.datetime_complete is not None)


def per_trial_ms(times: list[float], k: int, window: int) -> float | None:
    """Mean ms per counted trial over the ``window`` trials that end at counted trial ``k``."""
    if k > len(times) or k - window < 1:
        return None
    return 1000.0 * (times[k - 1] - times[k - 1 - window]) / window


def one_run(strategy: str, seed: int, trials: int, device: str, latency_ms: float, tmp: Path) -> dict[str, Any]:
    from hwnas.search import Search, SearchConfig

    out = tmp / f"{strategy}-seed{seed}"
    config = SearchConfig(device=device, latency_ms=latency_ms, trials=trials, strategy=strategy, seed=seed, out=str(out), export=False)
    c0, t0 = _cpu(), time.perf_counter()
    Search(config, log=lambda _line: None).run()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"strategy": strategy, "seed": seed, "wall_s": wall, "cpu_s": cpu, "load": _load(), "times": completions(out)}


def _median_range(values: list[float]) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    return f"{med:8.1f}" if len(values) == 1 else f"{med:8.1f} [{min(values):.1f}, {max(values):.1f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", nargs="+", default=["random", "hybrid", "tpe", "gp"])
    p.add_argument("--at", nargs="+", type=int, default=[100, 300, 1000], help="counted trials to report at (default 100 300 1000)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--device", default="pixel3")
    p.add_argument("--latency", type=float, default=5.0, help="latency budget in ms (default 5)")
    p.add_argument("--json", help="also write every run's figures to this file")
    args = p.parse_args()
    trials = max(args.at)
    strategies = list(dict.fromkeys(["random", *args.strategies]))  # random is the baseline of 'over random'
    print(
        f"sampler overhead through hwnas search: {args.device} <= {args.latency:g} ms, table evaluator, {trials} trials, "
        f"seeds 0..{args.seeds - 1}, window {args.window}; {os.cpu_count()} CPUs, load average {_load()} at the start",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hwnas-overhead-") as tmp:
        for strategy in strategies:
            for seed in range(args.seeds):
                r = one_run(strategy, seed, trials, args.device, args.latency, Path(tmp))
                runs.append(r)
                at = ", ".join(f"{k}: {per_trial_ms(r['times'], k, args.window) or float('nan'):.1f}" for k in args.at)
                print(
                    f"  {strategy:>8} seed {seed}: {r['wall_s']:7.1f} s wall, {r['cpu_s']:7.1f} s CPU, load {r['load']}; ms/trial at {at}",
                    flush=True,
                )
    print()
    print(f"{'strategy':>8} {'trials':>6}  {'ms/trial (median [range] over seeds)':>38}  {'over random':>26}")
    for strategy in strategies:
        for k in args.at:
            own, over = [], []
            for r in (r for r in runs if r["strategy"] == strategy):
                ms = per_trial_ms(r["times"], k, args.window)
                base = next(b for b in runs if b["strategy"] == "random" and b["seed"] == r["seed"])
                base_ms = per_trial_ms(base["times"], k, args.window)
                if ms is not None:
                    own.append(ms)
                    if base_ms is not None:
                        over.append(ms - base_ms)
            print(f"{strategy:>8} {k:>6}  {_median_range(own):>38}  {_median_range(over) if strategy != 'random' else '':>26}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
