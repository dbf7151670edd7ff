#!/usr/bin/env python
"""Latency-regularised DARTS on the embedded digits data, against a table device's real latencies.

Prints, in one run:
1. the wall time of one default search (``hwnas search --strategy darts`` settings);
2. a sweep of a fixed latency weight (no adaptation, no budget): the latency (on the device's
   table) of the architecture the supernet prefers should fall as the weight rises;
3. with ``--latency T`` (the weight adapted toward T, selection under the budget): the derived
   architecture's latency against T;
4. the derived network trained stand-alone against 10 random networks of no greater latency,
   same training budget, same data (digits: 80 % train, 20 % held-out test);
5. for nb201: the derived cell's NAS-Bench-201 accuracies, and whether it is the collapsed cell.

    python benchmarks/darts.py                       # nb201 on pixel3 at 5 ms
    python benchmarks/darts.py --quick               # fewer epochs (a smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hwnas.cost.latency import latency_model_for
from hwnas.darts.run import run_darts, search_splits
from hwnas.darts.train import DartsConfig, default_threads
from hwnas.datasets import Dataset, batches, load_data
from hwnas.device import get_device
from hwnas.spaces import get_space
from hwnas.training import TrainSettings, accuracy, train_classifier


def trained_accuracy(space_name: str, arch: dict, train: Dataset, test: Dataset, settings: TrainSettings) -> float:
    from hwnas.spaces._nb201_model import NB201Network

    space = get_space(space_name)
    if space_name == "nb201":
        from hwnas.benchdata import NB201_EDGES

        net = NB201Network([arch[e] for e in NB201_EDGES], num_classes=train.num_classes, in_channels=train.input_shape[0])
    else:
        from hwnas.spaces.mbconv import MBConvSpace

        net = MBConvSpace(num_classes=train.num_classes, in_channels=train.input_shape[0]).build(arch)
    del space
    train_classifier(net, lambda e: batches(train, 64, shuffle=True, seed=1000 * settings.seed + e), settings)
    return accuracy(net, batches(test, 256, shuffle=False))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="nb201")
    p.add_argument("--device", default="pixel3")
    p.add_argument("--latency", type=float, default=5.0, help="target T in ms (default 5)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--weight", type=float, default=DartsConfig.latency_weight, help="latency weight of the main search")
    p.add_argument("--sweep-epochs", type=int, default=12)
    p.add_argument("--term", default=DartsConfig.latency_term, help="latency term of every search (default add#linear)")
    p.add_argument("--sweep", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0], help="latency weights to sweep")
    p.add_argument("--train-epochs", type=int, default=15, help="stand-alone training epochs per network")
    p.add_argument("--randoms", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a smoke run: few epochs, 3 random networks")
    p.add_argument("--out", default="darts-results")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.sweep_epochs, args.train_epochs, args.randoms, args.sweep = 3, 2, 2, 3, [0.0, 10.0]
    torch.set_num_threads(default_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    model = latency_model_for(get_device(args.device), space, "auto")
    warm = max(1, min(5, args.epochs // 5))
    results: dict = {"space": args.space, "device": args.device, "target_ms": args.latency, "threads": torch.get_num_threads()}

    # 1 + 3: one default search.
    t0 = time.perf_counter()
    cfg0 = DartsConfig(epochs=args.epochs, warmup=warm, latency_term=args.term, latency_weight=args.weight)
    main_run = run_darts(space, model, args.latency, cfg0, log=lambda s: print("  " + s, flush=True))
    wall = time.perf_counter() - t0
    results["search"] = main_run.summary() | {"arch": space.to_string(main_run.arch), "wall_s": wall}
    what = f"{args.epochs} epochs, {warm} warm-up, {args.term} weight {args.weight}{' adapted' if cfg0.adapts else ''}, {cfg0.selection}"
    print(f"\n[1] one search ({what}) on digits: {wall:.0f} s (limit 600 s)", flush=True)
    f = main_run.additive.fit
    print(
        f"    latency model: {main_run.additive.source}: held-out R^2 {f['r2']:.3f}, MAPE {f['mape_pct']:.1f} %, "
        f"within +-10 % {100 * f['within_10pct']:.0f} %, Kendall tau {f['kendall_tau']:.3f}"
    )
    rel_before = main_run.latency_before_repair_ms / args.latency - 1
    rel_after = main_run.latency_ms / args.latency - 1
    weights = [h.latency_weight for h in main_run.result.history]
    print(
        f"[3] target {args.latency} ms: derived {main_run.latency_ms:.3f} ms ({100 * rel_after:+.1f} % of T; "
        f"within +-10 %: {abs(rel_after) <= 0.10}); the supernet's unconstrained preference {main_run.latency_before_repair_ms:.3f} ms "
        f"({100 * rel_before:+.1f} %); latency weight {weights[0]:.3g} -> {weights[-1]:.3g}; budget repairs: {len(main_run.repairs)}",
        flush=True,
    )

    # 2: latency-weight sweep.
    sweep = []
    for w in args.sweep:
        cfg = DartsConfig(
            epochs=args.sweep_epochs, warmup=max(1, args.sweep_epochs // 5), latency_term=args.term, latency_weight=w, adapt_weight=False
        )
        r = run_darts(space, model, args.latency, cfg)
        e_lat = r.result.history[-1].expected_latency_ms
        argmax_ms = r.result.history[-1].derived_latency_ms
        arch = space.to_string(r.derived_before_repair)
        sweep.append({"weight": w, "latency_ms": r.latency_before_repair_ms, "expected_ms": e_lat, "argmax_ms": argmax_ms, "arch": arch})
        print(
            f"[2] {args.term} weight {w:>5}: derived ({cfg.selection}, no budget) {r.latency_before_repair_ms:7.3f} ms; "
            f"alpha argmax {argmax_ms:.3f} ms; E[LAT] {e_lat:.3f} ms  {arch}",
            flush=True,
        )
    lats = [s["latency_ms"] for s in sweep]
    falls = all(b <= a + 1e-9 for a, b in itertools.pairwise(lats))
    rho = float(np.corrcoef(np.argsort(np.argsort(args.sweep)), np.argsort(np.argsort(lats)))[0, 1])
    am_falls = all(b <= a + 1e-9 for a, b in itertools.pairwise([s["argmax_ms"] for s in sweep]))
    ex_falls = all(b <= a + 1e-9 for a, b in itertools.pairwise([s["expected_ms"] for s in sweep]))
    print(
        f"    derived: monotone non-increasing: {falls}; Spearman rho(weight, latency) {rho:+.2f}; "
        f"alpha argmax monotone: {am_falls}; E[LAT] monotone: {ex_falls}",
        flush=True,
    )
    results["sweep"] = sweep

    # 4: derived vs random networks of no greater latency, same training.
    ds = load_data("digits")
    train, valid, test = search_splits(ds, 0)
    from hwnas.datasets import Dataset as D

    both = D(f"{ds.name}[train+valid]", np.concatenate([train.x, valid.x]), np.concatenate([train.y, valid.y]), ds.num_classes, ds.source)
    settings = TrainSettings(epochs=args.train_epochs, seed=0)
    derived_acc = trained_accuracy(args.space, main_run.arch, both, test, settings)
    rng = np.random.default_rng(0)
    randoms = []
    for _ in range(100000):
        if len(randoms) >= args.randoms:
            break
        a = space.sample(rng)
        lat = model.latency(a).ms
        if lat <= main_run.latency_ms and lat > 0.2 * main_run.latency_ms:
            randoms.append((a, lat))
    racc = [trained_accuracy(args.space, a, both, test, settings) for a, _ in randoms]
    med = statistics.median(racc)
    print(
        f"[4] stand-alone, {args.train_epochs} epochs, digits test ({len(test)} images): derived {derived_acc:.2f} %; "
        f"{len(randoms)} random nets of <= {main_run.latency_ms:.3f} ms: median {med:.2f} % "
        f"(min {min(racc):.2f}, max {max(racc):.2f}); derived >= median: {derived_acc >= med}",
        flush=True,
    )
    results["accuracy"] = {"derived": derived_acc, "random": racc, "random_latency_ms": [lat for _, lat in randoms], "median": med}

    # 5: NAS-Bench-201 accuracies of the derived cell.
    if args.space == "nb201":
        from hwnas.benchdata import nb201_table

        table = nb201_table()
        i = space.index(main_run.arch)  # type: ignore[attr-defined]
        ops = set(main_run.arch.values())
        collapsed = ops <= {"skip_connect", "none"}
        v, te = table.metric("cifar10-valid/valid")[i], table.metric("cifar10/test")[i]
        print(
            f"[5] derived cell {space.to_string(main_run.arch)}: NAS-Bench-201 CIFAR-10 valid {v:.2f} %, test {te:.2f} %; "
            f"collapsed (all skip/none): {collapsed}; uncapped derivation had skip share {main_run.uncapped_skip_share:.2f}",
            flush=True,
        )
        results["nb201"] = {"index": int(i), "valid": float(v), "test": float(te), "collapsed": collapsed}
    (out / "darts.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
