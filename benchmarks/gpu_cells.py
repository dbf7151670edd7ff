"""Live latency of random NAS-Bench-201 networks through the PyTorch runtime, and Kendall tau against shipped GPU tables.

Step 2 of ``benchmarks/gpu.sh``: ``--cells`` seeded random NB201 networks, each measured by
``hwnas.cost.torch_runtime.measure_torch`` at every ``--batch`` (interleaved: all networks at one
batch, then the next), with the GPU's clocks before and after. Then Kendall tau between these
latencies and the shipped HELP / HW-NAS-Bench tables of other GPUs (``hwnas.benchdata.nb201_latency``),
each table against the batch it was measured at where we measured it (``titan_rtx_1`` and
``2080ti_1`` against batch 1, ``titan_rtx_256`` against batch 256), and every other pair for
reference. The result goes to ``--out`` as JSON, and ``budget_ms`` there (the median network at
the first batch) is the latency budget of the script's search.

Run::

    python benchmarks/gpu_cells.py --device cuda --cells 50 --batch 1 256 --out cells.json
    python benchmarks/gpu_cells.py --device cpu --cells 5 --batch 1 8 --warmup 1 --repeats 3   # dry run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

TABLES = ("titan_rtx_1", "2080ti_1", "titan_rtx_256")


def _batch_of(table: str) -> int:
    return int(table.rsplit("_", 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--cells", type=int, default=50)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result here as JSON")
    args = p.parse_args(argv)

    from hwnas.benchdata import nb201_latency
    from hwnas.cost.torch_runtime import TorchModel, measure_torch
    from hwnas.spaces import get_space
    from hwnas.stats import kendall_tau

    space = get_space("nb201")
    rng = np.random.default_rng(args.seed)
    archs = []
    while len(archs) < args.cells:  # bounded: 15,625 cells, at most a few hundred drawn
        a = space.sample(rng)
        if not space.degenerate(a) and space.index(a) not in {space.index(b) for b in archs}:
            archs.append(a)
    models = [TorchModel(space.build(a), tuple(space.input_shape(a))) for a in archs]
    index = np.array([space.index(a) for a in archs])
    result: dict[str, Any] = {"device": args.device, "cells": args.cells, "precision": args.precision, "batches": {}, "tau": {}}
    for batch in args.batch:
        t0 = time.perf_counter()
        rows = []
        for a, m in zip(archs, models, strict=True):
            got = measure_torch(
                m, m.shape, device=args.device, batch=batch, precision=args.precision, warmup=args.warmup, repeats=args.repeats
            )
            rows.append(got.as_dict() | {"arch": space.to_string(a), "index": int(space.index(a))})
        med = np.array([r["median_ms"] for r in rows])
        rel_iqr = np.array([r["iqr_ms"] / r["median_ms"] for r in rows])
        sm = [(r["clocks_before"] or {}).get("sm_mhz") for r in rows] + [(r["clocks_after"] or {}).get("sm_mhz") for r in rows]
        sm_known = [s for s in sm if s is not None]
        temps = [(r["clocks_after"] or {}).get("temperature_c") for r in rows]
        temps_known = [t for t in temps if t is not None]
        result["batches"][str(batch)] = {"seconds": round(time.perf_counter() - t0, 1), "networks": rows}
        print(
            f"batch {batch:>3}: {len(rows)} networks in {time.perf_counter() - t0:.1f} s; median latency min {med.min():.4g} / "
            f"median {np.median(med):.4g} / max {med.max():.4g} ms; IQR/median median {100 * np.median(rel_iqr):.1f} %, "
            f"max {100 * rel_iqr.max():.1f} %; SM clock "
            + (f"{min(sm_known):.0f}-{max(sm_known):.0f} MHz" if sm_known else "n/a (no NVML / nvidia-smi)")
            + (f"; temperature {min(temps_known):.0f}-{max(temps_known):.0f} C" if temps_known else ""),
            flush=True,
        )
    first = np.array([r["median_ms"] for r in result["batches"][str(args.batch[0])]["networks"]])
    result["budget_ms"] = float(np.median(first))
    for table in TABLES:
        ref = nb201_latency(table)[index]
        for batch in args.batch:
            ours = np.array([r["median_ms"] for r in result["batches"][str(batch)]["networks"]])
            tau = float(kendall_tau(ours, ref))
            result["tau"][f"{table} vs batch {batch}"] = tau
            same = "  <- same batch" if _batch_of(table) == batch else ""
            print(f"Kendall tau, {args.device} batch {batch:>3} vs {table:<14}: {tau:+.3f} over {len(ours)} networks{same}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}; search budget {result['budget_ms']:.4g} ms (median network at batch {args.batch[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
