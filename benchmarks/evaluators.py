#!/usr/bin/env python
"""The ``supernet`` evaluator on the embedded digits data: how it ranks, how fast it is, a full search.

Prints, in one run:
1. ranking: Kendall tau (and Spearman rho) between the supernet's accuracy and stand-alone
   training accuracy of N random mbconv candidates (same data, same train/validation split),
   with a bootstrap interval, the stand-alone seeds' agreement with each other (the noise
   ceiling) and, for scale, the tau of a free proxy (parameter count);
2. speed: per-candidate time of a supernet evaluation against stand-alone training of the same
   candidate (medians, spread, ratio), and the supernet's one-off training time;
3. search: ``hwnas search --space mbconv --evaluator supernet --device cpu --latency T --data digits``
   timed end to end (supernet training included), and the exported ``best.onnx`` run in ONNX
   Runtime on the held-out test split against the accuracy the search reported.

Stand-alone training is :func:`hwnas.training.train_classifier` on the space's network as built,
run on :func:`hwnas.ofa.elastic.compact_copy` of it (the same function and training trajectory on
8x8 inputs; cropped depthwise kernels skip taps that only ever meet zero padding). For scale, the
built network itself is also timed for a few epochs on a few candidates.

    python benchmarks/evaluators.py              # full run: ~25 min on 2 quiet cores (40 stand-alone trainings)
    python benchmarks/evaluators.py --quick      # smoke run (a few minutes)

Stand-alone results are cached in ``<out>/standalone.json`` (keyed by arch, seed and epochs)
and reused by later runs, which say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.datasets import batches, evaluation_splits, load_data
from hwnas.evaluate import EvalContext
from hwnas.evaluate.supernet import SupernetEvaluator
from hwnas.ofa.elastic import compact_copy
from hwnas.ofa.train import load_checkpoint
from hwnas.spaces import get_space
from hwnas.spaces.mbconv import MBConvSpace
from hwnas.training import TrainSettings, accuracy, train_classifier

ROOT = Path(__file__).resolve().parent.parent


class Tee:
    """Print to stdout and to a file."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a thread."""

    def __init__(self, every: float = 15.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def text(self) -> str:
        s = self.samples or [os.getloadavg()[0]]
        return f"load average (1 min) over the run: mean {statistics.mean(s):.1f}, max {max(s):.1f} on {os.cpu_count()} cores"


def spread(values: list[float]) -> str:
    q = np.percentile(values, [25, 50, 75])
    return f"median {q[1]:.3g} s (IQR {q[0]:.3g}-{q[2]:.3g}, min {min(values):.3g}, max {max(values):.3g})"


def candidates(space: MBConvSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct random archs (resolution fixed: on 8x8 digits it changes no accuracy)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for _ in range(1000 * n):
        if len(out) == n:
            break
        arch = space.sample(rng)
        arch["resolution"] = min(space.dimension_map()["resolution"].choices)  # type: ignore[type-var]
        arch = space.canonical(arch)
        if arch not in out:
            out.append(arch)
    return out


def standalone(space: MBConvSpace, arch: dict[str, Any], seed: int, epochs: int, train: Any, valid: Any, *, compact: bool = True) -> dict:
    """Train ``arch`` from scratch (seed ``seed``) and return its validation accuracy and training time."""
    torch.manual_seed(seed)
    net = space.build(arch)
    t0 = time.perf_counter()
    model = compact_copy(net, train.input_shape) if compact else net
    settings = TrainSettings(epochs=epochs, lr=0.05, seed=seed)
    train_classifier(model, lambda e: batches(train, 64, shuffle=True, seed=1000 * seed + e), settings)
    seconds = time.perf_counter() - t0
    return {"acc": accuracy(model, batches(valid, 256, shuffle=False)), "seconds": seconds}


def ranking_and_speed(args: argparse.Namespace, say: Tee, results: dict[str, Any]) -> None:
    from scipy.stats import kendalltau, spearmanr

    data = load_data("digits")
    train, valid, _ = evaluation_splits(data, 0)
    space = MBConvSpace(num_classes=data.num_classes, in_channels=data.input_shape[0])
    archs = candidates(space, args.candidates, seed=123)
    names = [space.to_string(a) for a in archs]
    cache_path = args.out / "standalone.json"
    cache: dict[str, dict] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    seeds = list(range(args.seeds))
    say(
        f"\n[1] ranking: {len(archs)} random mbconv candidates, stand-alone training {args.standalone_epochs} epochs "
        f"(SGD Nesterov lr 0.05 cosine, batch 64, seeds {seeds}) on digits train ({len(train)} images), "
        f"accuracy on the validation split ({len(valid)} images)"
    )
    with LoadSampler() as load:
        reused = 0
        sa: dict[str, list[dict]] = {n: [] for n in names}
        for seed in seeds:
            for arch, name in zip(archs, names, strict=True):
                key = f"{name}|seed{seed}|epochs{args.standalone_epochs}"
                if key in cache:
                    reused += 1
                else:
                    cache[key] = standalone(space, arch, seed, args.standalone_epochs, train, valid) | {"load": os.getloadavg()[0]}
                    cache_path.write_text(json.dumps(cache, indent=1))
                    say(f"    stand-alone seed {seed} {name}: {cache[key]['acc']:.2f} % in {cache[key]['seconds']:.1f} s")
                sa[name].append(cache[key])
        if reused:
            say(f"    ({reused} of {len(archs) * len(seeds)} stand-alone runs reused from {cache_path}, with their times)")

        sn_dir = args.out / "ranking-supernet"
        if sn_dir.exists():
            import shutil

            shutil.rmtree(sn_dir)  # trained afresh: its time is one of the figures
        context = EvalContext(data="digits", seed=0, out_dir=sn_dir, log=lambda s: say("    " + s))
        options = {} if args.supernet_epochs is None else {"epochs": args.supernet_epochs}
        evaluator = SupernetEvaluator(get_space("mbconv"), context=context, **options)
        evaluator.supernet()
        state = load_checkpoint(evaluator.checkpoint)
        assert state is not None
        train_s = sum(h["seconds"] for h in state["history"])
        sn_acc, sn_s = [], []
        for arch in archs:
            t0 = time.perf_counter()
            sn_acc.append(evaluator.evaluate(arch).value)
            sn_s.append(time.perf_counter() - t0)
        # Timed again in this run, beside the supernet evaluations (cached times may come from other load).
        fresh, plain = [], []
        for arch in archs[: args.retime]:
            fresh.append(standalone(space, arch, 0, args.standalone_epochs, train, valid)["seconds"])
            plain.append(standalone(space, arch, 0, args.plain_epochs, train, valid, compact=False)["seconds"] / args.plain_epochs)
        ranking_load = load.text()

    sa_mean = [float(np.mean([r["acc"] for r in sa[n]])) for n in names]
    tau, p_tau = kendalltau(sn_acc, sa_mean)
    rho, _ = spearmanr(sn_acc, sa_mean)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        idx = rng.integers(0, len(archs), len(archs))
        t = kendalltau(np.asarray(sn_acc)[idx], np.asarray(sa_mean)[idx])[0]
        if np.isfinite(t):
            boot.append(t)
    lo, hi = np.percentile(boot, [5, 95])
    params = [sum(p.numel() for p in space.build(a).parameters()) for a in archs]
    tau_params = kendalltau(params, sa_mean)[0]
    say("    candidate                                                                          supernet  stand-alone (per seed)")
    for n, s_acc, m in zip(names, sn_acc, sa_mean, strict=True):
        per_seed = " ".join(f"{r['acc']:.2f}" for r in sa[n])
        say(f"    {n:<84} {s_acc:6.2f}   {m:6.2f} ({per_seed})")
    say(
        f"    Kendall tau(supernet, stand-alone mean) = {tau:.3f} (p {p_tau:.3g}; bootstrap 90 % interval {lo:.2f}..{hi:.2f}), "
        f"Spearman rho = {rho:.3f}   [target tau >= 0.5: {'met' if tau >= 0.5 else 'NOT met'}]"
    )
    per_seed_tau = [kendalltau(sn_acc, [sa[n][s]["acc"] for n in names])[0] for s in seeds]
    say(f"    tau against each seed alone: {', '.join(f'{t:.3f}' for t in per_seed_tau)}")
    if len(seeds) > 1:
        noise = kendalltau([sa[n][0]["acc"] for n in names], [sa[n][1]["acc"] for n in names])[0]
        say(f"    noise ceiling: tau(stand-alone seed 0, seed 1) = {noise:.3f}")
    else:
        noise = None
    say(f"    for scale, a free proxy: tau(parameter count, stand-alone mean) = {tau_params:.3f}")
    say(
        f"    stand-alone accuracy spread: {min(sa_mean):.2f}..{max(sa_mean):.2f} %; supernet: {min(sn_acc):.2f}..{max(sn_acc):.2f} %; "
        f"mean gap (stand-alone - supernet) {statistics.mean(np.subtract(sa_mean, sn_acc)):+.2f} points"
    )

    sa_s = [r["seconds"] for n in names for r in sa[n]]
    ratio_all = statistics.median(sa_s) / statistics.median(sn_s)
    say(f"\n[2] speed per candidate (1 torch thread; {ranking_load})")
    say(f"    supernet evaluation (BN recalibration on {evaluator._recalibration_count()} images + validation): {spread(sn_s)}")
    say(f"    stand-alone training ({args.standalone_epochs} epochs, compact copy), all {len(sa_s)} runs of [1]: {spread(sa_s)}")
    ratio = ratio_all
    if fresh:
        ratio = statistics.median(fresh) / statistics.median(sn_s)
        say(f"    the same, {len(fresh)} candidates timed again in this run beside the supernet evaluations: {spread(fresh)}")
    say(
        f"    ratio of medians (same run): supernet evaluation is {ratio:.0f}x faster than training the candidate "
        f"(all runs of [1]: {ratio_all:.0f}x)   [target >= 20x: {'met' if ratio >= 20 else 'NOT met'}]"
    )
    if plain:
        plain_ratio = statistics.median(plain) * args.standalone_epochs / statistics.median(sn_s)
        compact_epoch = statistics.median(fresh) / args.standalone_epochs
        say(
            f"    the space's network as built (7x7 kernels on 1x1 maps, no cropping): {statistics.median(plain):.2f} s/epoch "
            f"(median of {len(plain)} candidates over {args.plain_epochs} epochs) vs {compact_epoch:.2f} s/epoch compact; "
            f"at {args.standalone_epochs} epochs that is ~{plain_ratio:.0f}x a supernet evaluation (per-epoch time x epochs)"
        )
    say(
        f"    one-off supernet training: {train_s:.0f} s ({state['epoch']} epochs), i.e. the cost of "
        f"{train_s / statistics.median(sa_s):.1f} stand-alone trainings"
    )
    results["ranking"] = {
        "candidates": names,
        "supernet_accuracy": sn_acc,
        "standalone": {n: sa[n] for n in names},
        "standalone_mean": sa_mean,
        "kendall_tau": tau,
        "kendall_p": p_tau,
        "tau_bootstrap_90": [lo, hi],
        "spearman_rho": rho,
        "tau_per_seed": per_seed_tau,
        "tau_seed0_seed1": noise,
        "tau_params": tau_params,
        "standalone_epochs": args.standalone_epochs,
        "supernet": evaluator.describe(),
    }
    results["speed"] = {
        "supernet_eval_s": sn_s,
        "standalone_train_s": sa_s,
        "ratio_of_medians": ratio,
        "ratio_of_medians_all_cached": ratio_all,
        "standalone_retimed_s": fresh,
        "plain_s_per_epoch": plain,
        "supernet_train_s": train_s,
        "load": ranking_load,
    }


def full_search(args: argparse.Namespace, say: Tee, results: dict[str, Any]) -> None:
    import onnxruntime as ort

    out = args.out / "search"
    if out.exists():
        import shutil

        shutil.rmtree(out)  # a fresh run: the time must include supernet training
    cmd = [sys.executable, "-m", "hwnas", "search", "--space", "mbconv", "--evaluator", "supernet", "--device", "cpu"]
    cmd += ["--latency", f"{args.latency:g}ms", "--data", "digits", "--out", str(out), "--json"]
    if args.trials is not None:
        cmd += ["--trials", str(args.trials)]
    if args.supernet_epochs is not None:
        cmd += ["--epochs", str(args.supernet_epochs)]
    shown = " ".join(cmd[2:]).replace(str(ROOT) + "/", "")
    say(f"\n[3] full search: hwnas {shown[len('hwnas ') :]}")
    env = dict(os.environ)
    tables = ROOT / "benchmarks" / "results" / "evaluators" / "tables"
    table = tables / "cpu-mbconv.json"
    if args.quick and not table.exists():
        args.no_table = True  # a smoke run does not build one
    if not args.no_table:
        if not table.exists():
            # Once per machine, as the README says (hwnas profile); not part of the search's time.
            t0 = time.perf_counter()
            profile = [sys.executable, "-m", "hwnas", "profile", "--device", "cpu", "--space", "mbconv", "--out", str(table)]
            subprocess.run(profile, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            built = time.perf_counter() - t0
            say(f"    built this machine's latency lookup table {table.relative_to(ROOT)} in {built:.0f} s (once per machine)")
        env["HWNAS_TABLES"] = str(tables)  # where `--latency-source auto` finds it; the checkout's latency_tables/ stays empty
        say(f"    latency: the lookup table {table.relative_to(ROOT)} (HWNAS_TABLES), built on this machine by hwnas profile")
    log = args.out / "search.log"
    with LoadSampler() as load, log.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        say(f"    search failed with exit code {proc.returncode}; see {log}: {log.read_text().strip().splitlines()[-1:]}")
        results["search"] = {"returncode": proc.returncode, "wall_s": wall}
        return
    report = json.loads(proc.stdout)
    lines = log.read_text().splitlines()
    train_lines = [line for line in lines if line.startswith("supernet epoch")]
    say(f"    wall time {wall:.0f} s = {wall / 60:.1f} min (limit 15 min: {'met' if wall <= 900 else 'NOT met'}); {load.text()}")
    t = report["trials"]
    say(f"    {t['complete']} trials ({t['feasible']} feasible); supernet: {len(train_lines)} epochs trained in this run")
    if train_lines:
        say(f"    last epoch: {train_lines[-1]}")
    say(f"    best: {report['arch']}")
    say(f"      accuracy {report['accuracy']:.2f} % ({report['accuracy_source']})")
    say(
        f"      latency {report['latency_ms']:.3f} ms ({report['latency_source']}), "
        f"re-measured in ONNX Runtime {report['measured_latency_ms']:.3f} ms"
    )
    ex = report["export"]
    say(
        f"    export: {ex['checker']}, parity {ex['parity_max_abs_diff']:.1e} at {ex['parity_shapes']}"
        + (f" (float32 rounding {ex['parity_float32_rounding']:.1e})" if ex.get("parity_float32_rounding") else "")
        + f"; weights: {ex['weights']}"
    )
    data = load_data("digits")
    _, valid, test = evaluation_splits(data, 0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out / "best.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    acc = {}
    for split, ds in (("valid", valid), ("test", test)):
        logits = session.run(None, {name: ds.x})[0]
        acc[split] = 100.0 * float((logits.argmax(1) == ds.y).mean())
    gap = acc["test"] - report["accuracy"]
    say(
        f"    best.onnx in ONNX Runtime: held-out test split ({len(test)} images) {acc['test']:.2f} % "
        f"vs reported {report['accuracy']:.2f} % (validation): {gap:+.2f} points "
        f"[target within 2: {'met' if abs(gap) <= 2 else 'NOT met'}]; "
        f"on the validation split it gives {acc['valid']:.2f} % (the reported figure, recomputed from the file)"
    )
    results["search"] = {
        "command": shown,
        "wall_s": wall,
        "load": load.text(),
        "report": {k: report[k] for k in ("arch", "accuracy", "accuracy_source", "latency_ms", "latency_source", "measured_latency_ms")},
        "trials": t,
        "evaluator": report["evaluator"],
        "export": ex,
        "onnx_accuracy": acc,
        "gap_points": gap,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2, help="stand-alone training seeds per candidate (default 2)")
    p.add_argument("--standalone-epochs", type=int, default=20)
    p.add_argument("--supernet-epochs", type=int, help="supernet training epochs (default: the evaluator's)")
    p.add_argument(
        "--retime", type=int, default=3, help="candidates trained again beside the supernet evaluations, compact and as built (default 3)"
    )
    p.add_argument("--plain-epochs", type=int, default=2)
    p.add_argument("--latency", type=float, help="latency budget T of the search, ms (default 5; --quick: 50)")
    p.add_argument("--trials", type=int, help="search trials (default: the CLI's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for parts 1 and 2 (default 1)")
    p.add_argument("--no-table", action="store_true", help="search with live latency measurement instead of a lookup table")
    p.add_argument("--skip-ranking", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 candidates, 1 seed, 2 epochs, 5 search trials")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "evaluators")
    args = p.parse_args()
    if args.quick:
        args.candidates, args.seeds, args.standalone_epochs, args.retime, args.plain_epochs = 4, 1, 2, 1, 1
        args.supernet_epochs, args.trials = args.supernet_epochs or 2, args.trials or 5
        args.latency = args.latency or 50.0
        args.out = args.out / "quick"
    args.latency = args.latency or 5.0
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    say = Tee(args.out / "output.txt")
    import platform

    say(
        f"benchmarks/evaluators.py {' '.join(sys.argv[1:])}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; load average now {os.getloadavg()[0]:.1f} "
        "(the machine is shared: other jobs run beside this one)"
    )
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_ranking:
        ranking_and_speed(args, say, results)
    if not args.skip_search:
        full_search(args, say, results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
