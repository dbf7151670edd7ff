"""Precision as a searched dimension: the figures of the INT8 issue, measured on this machine.

1. **FP32 against INT8 latency.** ``--n`` random architectures of each space (networks whose
   output ignores the input left out), exported, quantized (ONNX Runtime static QDQ, as the
   search does) and both timed on the CPU provider with one thread, FP32 and INT8 interleaved
   (the order alternating) so drift moves both alike: Kendall tau between the two latencies,
   the INT8/FP32 latency ratio (median, min, max), and how many networks of the FP32 Pareto
   front (accuracy against latency) stay on the INT8 front. Accuracy: nb201 the benchmark's FP32
   validation accuracy; mbconv the FP32 accuracy with weights inherited from the figure-4 supernet
   (digits), so the front moves only by latency.
2. **The INT8 lookup table.** ``hwnas profile --precision int8`` for nb201 (and mbconv at
   ``--mbconv-resolution``), checked on ``--check`` held-out networks: the same bar as FP32
   tables, >= 95 % within +-10 % and Kendall tau >= 0.9.
3. **INT8-aware search against an FP32 search quantized afterwards** (mbconv, supernet
   evaluator on digits, same budget and seed, the same trained supernet): A searches at INT8;
   B searches at FP32 and its front is then quantized and measured at INT8. INT8 accuracy and
   latency of each best under the budget, and the hypervolume of the two INT8 fronts.
4. **Accuracy drop after quantization** on digits: ``--n4`` random mbconv networks with
   inherited supernet weights, FP32 against INT8 validation accuracy (median, spread).

Run::

    python benchmarks/precision.py                    # everything (about an hour on 2 shared cores)
    python benchmarks/precision.py --only 1,2,4 --n 200

The load average is printed at the start and the end: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "precision"


def say(text: str) -> None:
    print(text, flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def supernet_evaluator(out: Path, epochs: int) -> Any:
    from hwnas.evaluate import EvalContext
    from hwnas.evaluate.supernet import SupernetEvaluator
    from hwnas.spaces import get_space

    out.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(data="digits", out_dir=out, seed=0, log=lambda s: say("    " + s) if "epoch" not in s else None)
    return SupernetEvaluator(get_space("mbconv"), context=ctx, epochs=epochs)


def random_archs(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out = []
    for _ in range(100 * n):
        if len(out) >= n:
            break
        arch = space.canonical(space.sample(rng))
        key = space.to_string(arch)
        if key in seen or space.degenerate(arch):
            continue
        seen.add(key)
        out.append(arch)
    return out


# -- figure 4 ------------------------------------------------------------------------------
def figure4(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from hwnas.evaluate.quantized import PrecisionEvaluator
    from hwnas.spaces import get_space

    say(f"\n[4] accuracy drop after INT8 quantization: {args.n4} random mbconv networks, supernet weights on digits")
    t0 = time.perf_counter()
    inner = supernet_evaluator(OUT / "supernet", args.epochs)
    ev = PrecisionEvaluator(inner, "int8")
    rows = []
    failed = 0
    for arch in random_archs(get_space("mbconv"), args.n4, seed=4):
        try:
            acc = ev.evaluate(arch)
        except Exception as exc:  # a failed quantization is counted, as the search counts a failed trial
            failed += 1
            say(f"    failed: {exc}")
            continue
        rows.append({"arch": inner.space.to_string(arch), "fp32": acc.extras["fp32_accuracy"], "int8": acc.value})
    drops = np.array([r["fp32"] - r["int8"] for r in rows])
    fig = {
        "n": len(rows),
        "failed": failed,
        "median_drop": float(np.median(drops)),
        "mean_drop": float(drops.mean()),
        "p10_drop": float(np.percentile(drops, 10)),
        "p90_drop": float(np.percentile(drops, 90)),
        "max_drop": float(drops.max()),
        "median_fp32": float(np.median([r["fp32"] for r in rows])),
        "median_int8": float(np.median([r["int8"] for r in rows])),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    res["figure4"] = fig
    say(
        f"    {fig['n']} networks ({failed} failed to quantize): FP32 median {fig['median_fp32']:.2f} %, "
        f"INT8 median {fig['median_int8']:.2f} %; "
        f"drop median {fig['median_drop']:.2f} points (mean {fig['mean_drop']:.2f}, p10 {fig['p10_drop']:.2f}, p90 {fig['p90_drop']:.2f}, "
        f"max {fig['max_drop']:.2f}); {fig['seconds']} s"
    )


# -- figure 1 ------------------------------------------------------------------------------
def figure1(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.cost.measure import measure_onnx
    from hwnas.cost.quantize import QuantizationFailed, quantize_onnx, synthetic_calibration
    from hwnas.evaluate.table import TableEvaluator
    from hwnas.pareto import is_non_dominated
    from hwnas.spaces import get_space
    from hwnas.stats import kendall_tau

    settings = {"threads": 1, "warmup": args.warmup, "repeats": args.repeats}
    res["figure1"] = {}
    for name in args.spaces:
        space = get_space(name)
        say(f"\n[1] {name}: {args.n} random networks, FP32 and INT8 latency, CPU provider, 1 thread, {args.repeats} runs each (median)")
        if name == "nb201":
            table = TableEvaluator(space)
            accuracy = lambda a, table=table: table.evaluate(a).value  # noqa: E731
            acc_source = "NAS-Bench-201 cifar10-valid validation accuracy (FP32)"
        else:
            sn = supernet_evaluator(OUT / "supernet", args.epochs)
            accuracy = lambda a, sn=sn: sn.evaluate(a).value  # noqa: E731
            acc_source = "digits validation accuracy with inherited supernet weights (FP32)"
        t0 = time.perf_counter()
        rows, failed = [], []
        for i, arch in enumerate(random_archs(space, args.n, seed=1)):
            shape = space.input_shape(arch)
            fp32 = to_onnx_bytes(space.build(arch), shape, exporter="torchscript")
            try:
                int8 = quantize_onnx(fp32, synthetic_calibration(shape), shape=shape).data
            except QuantizationFailed as exc:
                failed.append({"arch": space.to_string(arch), "why": str(exc)})
                continue
            order = [("fp32", fp32), ("int8", int8)]
            ms = {}
            for label, data in order if i % 2 == 0 else order[::-1]:
                ms[label] = measure_onnx(data, shape, **settings).median_ms
            rows.append({"arch": space.to_string(arch), "fp32_ms": ms["fp32"], "int8_ms": ms["int8"], "accuracy": accuracy(arch)})
            if (i + 1) % 25 == 0:
                say(f"    {i + 1}/{args.n} ({time.perf_counter() - t0:.0f} s, load {load()})")
        fp, q = np.array([r["fp32_ms"] for r in rows]), np.array([r["int8_ms"] for r in rows])
        acc = np.array([r["accuracy"] for r in rows])
        ratio = q / fp
        front32 = set(np.flatnonzero(is_non_dominated(np.c_[acc, fp], [True, False])))
        front8 = set(np.flatnonzero(is_non_dominated(np.c_[acc, q], [True, False])))
        fig = {
            "n": len(rows),
            "quantization_failed": failed,
            "kendall_tau": float(kendall_tau(fp, q)),
            "ratio_median": float(np.median(ratio)),
            "ratio_min": float(ratio.min()),
            "ratio_max": float(ratio.max()),
            "int8_faster": int((ratio < 1).sum()),
            "fp32_front": len(front32),
            "int8_front": len(front8),
            "fp32_front_on_int8_front": len(front32 & front8),
            "accuracy": acc_source,
            "seconds": round(time.perf_counter() - t0, 1),
            "rows": rows,
        }
        res["figure1"][name] = fig
        slowest = rows[int(np.argmax(ratio))]["arch"]
        say(
            f"    {fig['n']} networks ({len(failed)} failed to quantize): Kendall tau FP32 vs INT8 latency {fig['kendall_tau']:.3f}; "
            f"INT8/FP32 ratio median {fig['ratio_median']:.3f}, min {fig['ratio_min']:.3f}, max {fig['ratio_max']:.3f} "
            f"(INT8 faster for {fig['int8_faster']} of {fig['n']}; the worst: {slowest})"
        )
        say(
            f"    Pareto fronts (accuracy: {acc_source}): FP32 front {fig['fp32_front']} networks, INT8 front {fig['int8_front']}; "
            f"{fig['fp32_front_on_int8_front']} of the {fig['fp32_front']} FP32 front networks stay on the INT8 front; {fig['seconds']} s"
        )


# -- figure 2 ------------------------------------------------------------------------------
def figure2(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from hwnas.device import get_device
    from hwnas.profile import UntrustedTableError, build_table
    from hwnas.spaces import get_space

    res["figure2"] = {}
    device = get_device("cpu").with_precision("int8")
    for name in args.spaces:
        resolutions = [args.mbconv_resolution] if name == "mbconv" else None
        at = f" at resolution {args.mbconv_resolution}" if resolutions else ""
        say(f"\n[2] INT8 lookup table for {name}{at}: hwnas profile --precision int8 --check {args.check}")
        t0 = time.perf_counter()
        try:
            table = build_table(get_space(name), device, resolutions=resolutions, check=args.check, seed=0, force=True, log=lambda s: None)
        except UntrustedTableError as exc:  # not reached with force; kept for clarity
            say(f"    refused: {exc}")
            continue
        out = OUT / "tables" / f"cpu-{name}-int8.json"
        table.save(out)
        c, v = table.check or {}, table.data["verdict"]
        fig = {k: c.get(k) for k in ("n", "within_5pct", "within_10pct", "mape_pct", "kendall_tau")}
        fig |= {"passed": v["passed"], "reason": v["reason"], "entries": len(table.entries), "seconds": round(time.perf_counter() - t0, 1)}
        fig["noise"] = v["noise"]
        res["figure2"][name] = fig
        say(
            f"    {len(table.entries)} blocks; check on {fig['n']} held-out networks: {100 * fig['within_10pct']:.1f} % within +-10 % "
            f"({100 * fig['within_5pct']:.1f} % within +-5 %), MAPE {fig['mape_pct']:.2f} %, Kendall tau {fig['kendall_tau']:.3f}: "
            f"{'PASSES' if fig['passed'] else 'FAILS'} the bar (>= 95 %, tau >= 0.9); noise: {v['noise']['unsettled']} of "
            f"{v['noise']['measurements']} measurements unsettled; {fig['seconds']} s; table in {out}"
        )


# -- figure 3 ------------------------------------------------------------------------------
def figure3(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from dataclasses import asdict

    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.cost.measure import measure_onnx
    from hwnas.cost.quantize import quantize_onnx, synthetic_calibration
    from hwnas.evaluate.quantized import PrecisionEvaluator
    from hwnas.pareto import hypervolume_2d, is_non_dominated
    from hwnas.search import Search, SearchConfig
    from hwnas.search.config import IDENTITY_VERSION
    from hwnas.search.rundir import VERSION_KEY, write_json

    say(
        f"\n[3] mbconv on digits, supernet evaluator, {args.trials} trials, seed 0, budget {args.budget_ms} ms: "
        "A INT8-aware, B FP32 then quantized"
    )
    out: dict[str, dict[str, Any]] = {}
    searches: dict[str, Search] = {}
    for label, precision in (("A", "int8"), ("B", "fp32")):
        run = OUT / f"search-{label}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        # A and B differ only in the precision the search sees.
        cfg = SearchConfig(
            space="mbconv",
            device="cpu",
            latency_ms=args.budget_ms,
            trials=args.trials,
            seed=0,
            evaluator="supernet",
            evaluator_options={"epochs": args.epochs},
            latency_source="measure",
            precision=precision,
            out=str(run),
            export=False,
        )
        t0 = time.perf_counter()
        search = searches[label] = Search(cfg, log=lambda s: None)
        # The same trained supernet for both: the run folder is made a run of this config first, so it takes the checkpoint.
        write_json(run / "config.json", asdict(cfg) | {VERSION_KEY: IDENTITY_VERSION})
        shutil.copy(OUT / "supernet" / "supernet.pt", run / "supernet.pt")
        report = search.run()
        out[label] = {"report": report, "seconds": round(time.perf_counter() - t0, 1)}
    # B's front, quantized afterwards: its INT8 accuracy and latency, as a user would find them.
    search_b = searches["B"]
    q_eval = PrecisionEvaluator(search_b.evaluator, "int8")
    space = search_b.space
    rows = []
    for member in out["B"]["report"]["front"]:
        arch = space.from_string(member["arch"])
        shape = space.input_shape(arch)
        int8 = quantize_onnx(
            to_onnx_bytes(space.build(arch), shape, exporter="torchscript"), synthetic_calibration(shape), shape=shape
        ).data
        ms = measure_onnx(int8, shape, threads=1, warmup=20, repeats=100).median_ms
        rows.append({"arch": member["arch"], "int8_accuracy": q_eval.evaluate(arch).value, "int8_ms": ms, "fp32_ms": member["latency_ms"]})
    a_front = [(m["accuracy"], m["latency_ms"]) for m in out["A"]["report"]["front"]]
    b_pts = np.array([(r["int8_accuracy"], r["int8_ms"]) for r in rows]) if rows else np.zeros((0, 2))
    ref = (0.0, args.budget_ms)
    b_ok = b_pts[b_pts[:, 1] <= args.budget_ms] if len(b_pts) else b_pts
    b_front = b_ok[is_non_dominated(b_ok, [True, False])] if len(b_ok) else b_ok
    hv_a = hypervolume_2d(np.array(a_front), ref, [True, False]) if a_front else 0.0
    hv_b = hypervolume_2d(b_front, ref, [True, False]) if len(b_front) else 0.0
    best_a = out["A"]["report"]["best"]
    best_b = max((r for r in rows if r["int8_ms"] <= args.budget_ms), key=lambda r: r["int8_accuracy"], default=None)
    fig = {
        "A": {
            "best": best_a and {k: best_a[k] for k in ("arch", "accuracy", "fp32_accuracy", "latency_ms")},
            "hypervolume": hv_a,
            "front": len(a_front),
            "seconds": out["A"]["seconds"],
        },
        "B": {
            "best_after_quantization": best_b,
            "hypervolume": hv_b,
            "front_quantized": rows,
            "over_budget_after_quantization": sum(r["int8_ms"] > args.budget_ms for r in rows),
            "seconds": out["B"]["seconds"],
        },
        "hypervolume_reference": ref,
    }
    res["figure3"] = fig
    if best_a:
        say(
            f"    A (INT8-aware): best {best_a['accuracy']:.2f} % INT8 (FP32 {best_a.get('fp32_accuracy') or float('nan'):.2f} %) at "
            f"{best_a['latency_ms']:.3f} ms INT8; INT8 front {len(a_front)} networks, hypervolume {hv_a:.4g}; {out['A']['seconds']} s"
        )
    if best_b:
        say(
            f"    B (FP32, quantized after): best {best_b['int8_accuracy']:.2f} % INT8 at {best_b['int8_ms']:.3f} ms INT8 "
            f"(searched at {best_b['fp32_ms']:.3f} ms FP32); its {len(rows)} front networks quantized: "
            f"{fig['B']['over_budget_after_quantization']} "
            f"over the budget at INT8; INT8 front hypervolume {hv_b:.4g}; {out['B']['seconds']} s"
        )
    say(f"    hypervolume of the INT8 fronts (reference accuracy 0 %, latency {args.budget_ms} ms): A {hv_a:.4g}, B {hv_b:.4g}")


def main(argv: list[str] | None = None) -> int:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="4,1,2,3", help="figures to run, in this order (default 4,1,2,3: 4 trains the supernet 1 and 3 use)")
    p.add_argument("--n", type=int, default=200, help="figure 1: random networks per space")
    p.add_argument("--n4", type=int, default=40, help="figure 4: random networks")
    p.add_argument("--spaces", default="nb201,mbconv")
    p.add_argument("--epochs", type=int, default=20, help="supernet training epochs")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--check", type=int, default=50, help="figure 2: held-out networks")
    p.add_argument("--mbconv-resolution", type=int, default=128, help="figure 2: the one mbconv resolution profiled")
    p.add_argument("--trials", type=int, default=30, help="figure 3: trial budget of each search")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=2.5,
        help="figure 3: latency budget (2.5 ms: 12 %% of figure 1's random MBConv networks meet it at FP32, 22 %% at INT8, "
        "so the two searches can diverge; at 4 ms both found the same network)",
    )
    p.add_argument("--out", default=str(OUT), help="results folder")
    args = p.parse_args(argv)
    OUT = Path(args.out)
    args.spaces = args.spaces.split(",")
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    say(
        f"benchmarks/precision.py: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start {load()} (shared machine)"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"args": vars(args)}
    path = OUT / "results.json"
    if path.exists():
        res = json.loads(path.read_text()) | {"args": vars(args)}
    figures = {"1": figure1, "2": figure2, "3": figure3, "4": figure4}
    for f in args.only.split(","):
        figures[f](args, res)
        path.write_text(json.dumps(res, indent=1, default=float) + "\n")
    say(f"\nload average at end {load()}; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
