"""Check that the PyTorch runtime's measured latency is no more than 1.05x a bare timed loop of the same module.

For each of ``--cells`` random NAS-Bench-201 networks (seeded), two sides run on the same module
and the same input, one torch thread, under ``torch.inference_mode``:

* **runtime**: ``hwnas.cost.torch_runtime.measure_torch(module, ...)`` with ``device = "cpu"``
  (what a ``kind = "torch"`` device measures: a converted copy of the module, ``warmup``
  untimed calls, ``repeats`` calls each timed by a ``perf_counter_ns`` pair); its median.
* **bare**: what a user would time by hand: ``warmup`` untimed calls, then ``repeats`` calls of
  ``module(x)`` in a plain for-loop with only the total timed; the total over ``repeats``.

The sides run interleaved in ``--rounds`` rounds, the order alternating each round, so slow drift
of the machine hits both alike; each network's ratio is runtime / bare over its fastest round of
each side (a disturbance only ever slows a run down). The verdict reads the median ratio over the
networks; their min, max and IQR, and the bare side's spread across rounds (max/min - 1), show
how much of any difference is noise. Load averages are printed at the start and the end.

Run::

    python benchmarks/torch_runtime.py            # 20 cells, about a minute on 2 cores
    python benchmarks/torch_runtime.py --json

Exits 0 when the median ratio is <= 1.05 (PASS), 1 when it is not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

#: The requirement: the runtime's measured latency is at most this multiple of a bare loop's.
LIMIT = 1.05


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20, help="random NB201 networks (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per measurement (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks and inputs (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    args = p.parse_args(argv)
    for name, low in (("cells", 1), ("rounds", 1), ("repeats", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    return args


def _bare_ms(module: Any, x: Any, warmup: int, repeats: int) -> float:
    """Mean ms per call of a plain loop, only the total timed."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        t0 = time.perf_counter_ns()
        for _ in range(repeats):
            module(x)
        return (time.perf_counter_ns() - t0) / repeats / 1e6


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from hwnas.cost.torch_runtime import TorchModel, measure_torch
    from hwnas.spaces import get_space

    torch.set_num_threads(1)
    space = get_space("nb201")
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.cells)]
    cells = []
    for arch in archs:
        torch.manual_seed(args.seed)
        module = space.build(arch).eval()
        shape = tuple(space.input_shape(arch))
        model = TorchModel(module, shape)
        # The bare side times the very module and input the runtime times (its converted copy).
        same, x = model.ready(device="cpu", precision="fp32", compile="none", batch=1, seed=args.seed)
        cells.append((arch, model, same, x, shape))
    runtime_ms: list[list[float]] = [[] for _ in cells]
    bare_ms: list[list[float]] = [[] for _ in cells]
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = range(len(cells)) if r % 2 == 0 else reversed(range(len(cells)))
        for i in order:
            _, model, same, x, shape = cells[i]
            sides = ("runtime", "bare") if (r + i) % 2 == 0 else ("bare", "runtime")
            for side in sides:
                if side == "runtime":
                    m = measure_torch(model, shape, device="cpu", threads=1, warmup=args.warmup, repeats=args.repeats, seed=args.seed)
                    runtime_ms[i].append(m.median_ms)
                else:
                    bare_ms[i].append(_bare_ms(same, x, args.warmup, args.repeats))
    seconds = time.perf_counter() - t0
    ratios = np.array([min(a) / min(b) for a, b in zip(runtime_ms, bare_ms, strict=True)])
    spread = np.array([max(b) / min(b) - 1 for b in bare_ms])
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return {
        "cells": args.cells,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": 1,
        "torch": torch.__version__,
        "seconds": round(seconds, 1),
        "median_ratio": float(q50),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
        "ratio_iqr": float(q75 - q25),
        "bare_round_spread_median_pct": float(100 * np.median(spread)),
        "bare_round_spread_max_pct": float(100 * spread.max()),
        "limit": LIMIT,
        "passed": bool(q50 <= LIMIT),
        "networks": [
            {"arch": space.to_string(a), "runtime_ms": min(rt), "bare_ms": min(b), "ratio": float(q)}
            for (a, *_), rt, b, q in zip(cells, runtime_ms, bare_ms, ratios, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    load_start = _load()
    result = run(args)
    result["load_start"], result["load_end"] = load_start, _load()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"load average at start: {result['load_start']}")
        print(
            f"PyTorch runtime (torch {result['torch']}, cpu, 1 thread) against a bare timed loop: {result['cells']} random NB201 "
            f"networks, {result['rounds']} interleaved rounds, {result['warmup']} warm-up + {result['repeats']} timed calls each"
        )
        for n in result["networks"]:
            print(f"  {n['runtime_ms']:8.3f} ms runtime  {n['bare_ms']:8.3f} ms bare  ratio {n['ratio']:.3f}  {n['arch']}")
        print(
            f"median ratio {result['median_ratio']:.3f} (min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}, "
            f"IQR {result['ratio_iqr']:.3f}); bare loop's spread across rounds: median {result['bare_round_spread_median_pct']:.1f} %, "
            f"max {result['bare_round_spread_max_pct']:.1f} %"
        )
        verdict = "PASS" if result["passed"] else "FAIL"
        print(f"{verdict}: median ratio {result['median_ratio']:.3f} {'<=' if result['passed'] else '>'} {LIMIT} ({result['seconds']} s)")
        print(f"load average at end: {result['load_end']}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
