"""Check that measuring with hwnas costs no more than 1.05x a bare ``InferenceSession.run`` loop.

Two things are compared on one ONNX file (one architecture exported once, to a temp dir):

* **full**: wall-clock of one ``hwnas.cost.measure.measure_onnx(path, ...)`` call (session
  creation, input creation, ``warmup`` untimed runs, ``repeats`` timed runs with one
  ``perf_counter_ns`` pair per call, statistics) against a bare baseline that does the same
  work with plain ONNX Runtime: a session with the options ``hwnas.cost._onnx.make_session``
  sets (1 intra-op thread, 1 inter-op thread, sequential, ORT_ENABLE_ALL), the same input,
  ``warmup`` untimed runs, then ``repeats`` runs of ``sess.run(None, feed)`` in a plain
  for-loop with only the total timed.
* **loop only**: session creation excluded. One session shared by both sides, warmed up
  once; wall-clock of ``hwnas.cost.measure.time_session(sess, feed, warmup=0, repeats=R)``
  against a bare ``for`` loop of R ``sess.run`` calls. This isolates the per-call cost of
  the timing itself (two clock reads and an array store per call).

The two sides run interleaved round-robin, the order alternating each round, so slow drift
of the machine (about +-10 % over minutes on the 2-core VM, see
``shared/notes/measured-environment.md`` section 4) hits both alike. The verdict uses the
**median** of the per-round ratios because single rounds are hit by outliers that reach
several times the typical time; the min/max and IQR of the ratios and the spread of the
baseline across rounds (max/min - 1) show how much of any difference is noise.

Run::

    python benchmarks/measure_overhead.py                  # nb201 index 6111, 32x32, about 45 s
    python benchmarks/measure_overhead.py --space mbconv   # MobileNetV2 at 160x160, about 60 s
    python benchmarks/measure_overhead.py --json

Exits 0 when the median full ratio is <= 1.05 (PASS), 1 when it is not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The requirement: measuring with hwnas costs at most this multiple of a bare run loop.
LIMIT = 1.05
NB201_DEFAULT_INDEX = 6111
MBCONV_DEFAULT_RESOLUTION = 160  # MobileNetV2 at 224 takes ~4 ms a call; 160 keeps the run short


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=("nb201", "mbconv"), default="nb201", help="search space of the arch (default nb201)")
    p.add_argument(
        "--arch",
        default=None,
        help=(
            f"arch string of the space, or an nb201 index (default: nb201 index {NB201_DEFAULT_INDEX}; "
            f"mbconv: MobileNetV2 at {MBCONV_DEFAULT_RESOLUTION}x{MBCONV_DEFAULT_RESOLUTION})"
        ),
    )
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per measurement (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs per measurement (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    args = p.parse_args(argv)
    for name, low in (("rounds", 1), ("repeats", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    return args


def _export(space_name: str, arch_text: str | None, folder: Path) -> tuple[Path, tuple[int, ...], str]:
    """Write the arch to ``folder/model.onnx``; return the path, the (C, H, W) input shape and the arch string."""
    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.spaces import get_space
    from hwnas.spaces.mbconv import mobilenet_v2_arch
    from hwnas.spaces.nb201 import parse_arch

    space = get_space(space_name)
    if arch_text is not None:
        arch = parse_arch(space, arch_text)
    elif space_name == "nb201":
        arch = space.from_index(NB201_DEFAULT_INDEX)  # type: ignore[attr-defined]
    else:
        arch = mobilenet_v2_arch(MBCONV_DEFAULT_RESOLUTION)
    shape = space.input_shape(arch)
    path = folder / "model.onnx"
    path.write_bytes(to_onnx_bytes(space.build(arch), shape, exporter="torchscript"))
    return path, tuple(shape), space.to_string(arch)


def _bare_session(path: Path) -> Any:
    """A plain ONNX Runtime session with the options hwnas.cost._onnx.make_session sets for one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _run_hwnas_full(path: Path, shape: tuple[int, ...], warmup: int, repeats: int) -> tuple[float, float]:
    """Wall seconds of one measure_onnx call, and the median ms it reports."""
    from hwnas.cost.measure import measure_onnx

    t0 = time.perf_counter()
    m = measure_onnx(str(path), shape, provider="CPUExecutionProvider", threads=1, warmup=warmup, repeats=repeats)
    return time.perf_counter() - t0, m.median_ms


def _run_bare_full(path: Path, shape: tuple[int, ...], warmup: int, repeats: int) -> tuple[float, float]:
    """Wall seconds of the same work done bare, and the wall seconds of its timed loop alone."""
    from hwnas.cost._onnx import INPUT_NAME

    t0 = time.perf_counter()
    sess = _bare_session(path)
    feed = {INPUT_NAME: np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    t1 = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feed)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def _run_hwnas_loop(sess: Any, feed: dict[str, np.ndarray], repeats: int) -> float:
    from hwnas.cost.measure import time_session

    t0 = time.perf_counter()
    time_session(sess, feed, warmup=0, repeats=repeats)
    return time.perf_counter() - t0


def _run_bare_loop(sess: Any, feed: dict[str, np.ndarray], repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feed)
    return time.perf_counter() - t0


def _interleave(rounds: int, a: Any, b: Any) -> list[tuple[Any, Any]]:
    """Run ``a()`` and ``b()`` once per round, ``a`` first in even rounds and ``b`` first in odd ones."""
    out = []
    for r in range(rounds):
        gc.collect()
        if r % 2 == 0:
            ra = a()
            rb = b()
        else:
            rb = b()
            ra = a()
        out.append((ra, rb))
    return out


def _summary(ratios: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(q50), "min": float(ratios.min()), "max": float(ratios.max()), "iqr": float(q75 - q25)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.cost._onnx import INPUT_NAME

    t_start = time.perf_counter()
    W, R = args.warmup, args.repeats
    with tempfile.TemporaryDirectory(prefix="hwnas-overhead-") as tmp:
        path, shape, arch_text = _export(args.space, args.arch, Path(tmp))
        size = path.stat().st_size
        # One untimed pass of each so first-call costs (imports, ORT's lazy init) land in neither.
        _run_hwnas_full(path, shape, 1, 1)
        _run_bare_full(path, shape, 1, 1)

        full = _interleave(args.rounds, lambda: _run_hwnas_full(path, shape, W, R), lambda: _run_bare_full(path, shape, W, R))
        hw_wall = np.array([a[0] for a, _ in full])
        hw_median_ms = np.array([a[1] for a, _ in full])
        bare_wall = np.array([b[0] for _, b in full])
        bare_loop = np.array([b[1] for _, b in full])

        sess = _bare_session(path)
        feed = {INPUT_NAME: np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)}
        for _ in range(W):
            sess.run(None, feed)
        loops = _interleave(args.rounds, lambda: _run_hwnas_loop(sess, feed, R), lambda: _run_bare_loop(sess, feed, R))
        hw_loop_only = np.array([a for a, _ in loops])
        bare_loop_only = np.array([b for _, b in loops])

    full_ratio = hw_wall / bare_wall
    loop_ratio = hw_loop_only / bare_loop_only
    full_s = _summary(full_ratio)
    import onnxruntime

    return {
        "space": args.space,
        "arch": arch_text,
        "input_shape": list(shape),
        "onnx_bytes": size,
        "onnxruntime": onnxruntime.__version__,
        "rounds": args.rounds,
        "warmup": W,
        "repeats": R,
        "limit": LIMIT,
        "full": {
            "ratios": [round(float(x), 4) for x in full_ratio],
            **{k: round(v, 4) for k, v in full_s.items()},
            "hwnas_wall_ms": [round(1e3 * x, 2) for x in hw_wall],
            "bare_wall_ms": [round(1e3 * x, 2) for x in bare_wall],
            # hwnas: the per-call median measure_onnx reports; bare: mean per call of its timed loop.
            "hwnas_median_per_call_ms": round(float(np.median(hw_median_ms)), 4),
            "bare_mean_per_call_ms": round(float(np.median(bare_loop)) * 1e3 / R, 4),
            "bare_setup_ms": round(float(np.median(bare_wall - bare_loop)) * 1e3, 2),
            "bare_noise": round(float(bare_wall.max() / bare_wall.min() - 1), 4),
            "hwnas_noise": round(float(hw_wall.max() / hw_wall.min() - 1), 4),
        },
        "loop_only": {
            "ratios": [round(float(x), 4) for x in loop_ratio],
            **{k: round(v, 4) for k, v in _summary(loop_ratio).items()},
            "hwnas_wall_ms": [round(1e3 * x, 2) for x in hw_loop_only],
            "bare_wall_ms": [round(1e3 * x, 2) for x in bare_loop_only],
            "hwnas_per_call_ms": round(float(np.median(hw_loop_only)) * 1e3 / R, 4),
            "bare_per_call_ms": round(float(np.median(bare_loop_only)) * 1e3 / R, 4),
            "bare_noise": round(float(bare_loop_only.max() / bare_loop_only.min() - 1), 4),
        },
        "verdict": "PASS" if full_s["median"] <= LIMIT else "FAIL",
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def _print_text(res: dict[str, Any]) -> None:
    f, lo = res["full"], res["loop_only"]
    print(f"arch        {res['space']} {res['arch']}")
    mb = res["onnx_bytes"] / 1e6
    print(f"model       input {tuple(res['input_shape'])}, {mb:.2f} MB ONNX, onnxruntime {res['onnxruntime']}, 1 thread")
    print(f"settings    {res['rounds']} rounds, warmup {res['warmup']}, repeats {res['repeats']}, order alternating")
    print("round  full: hwnas_ms   bare_ms   ratio | loop only: hwnas_ms   bare_ms   ratio")
    for i in range(res["rounds"]):
        print(
            f"{i + 1:5d}  {f['hwnas_wall_ms'][i]:14.2f}  {f['bare_wall_ms'][i]:8.2f}  {f['ratios'][i]:6.3f} |"
            f" {lo['hwnas_wall_ms'][i]:18.2f}  {lo['bare_wall_ms'][i]:8.2f}  {lo['ratios'][i]:6.3f}"
        )
    print(f"full        median ratio {f['median']:.4f} (min {f['min']:.4f}, max {f['max']:.4f}, IQR {f['iqr']:.4f})")
    print(
        f"            per call: hwnas median {f['hwnas_median_per_call_ms']:.4f} ms, bare mean {f['bare_mean_per_call_ms']:.4f} ms; "
        f"bare session+input+warmup {f['bare_setup_ms']:.2f} ms"
    )
    print(f"noise       bare spread across rounds {100 * f['bare_noise']:.1f} %, hwnas {100 * f['hwnas_noise']:.1f} % (max/min - 1)")
    print(
        f"loop only   median ratio {lo['median']:.4f} (min {lo['min']:.4f}, max {lo['max']:.4f}, IQR {lo['iqr']:.4f}); "
        f"per call hwnas {lo['hwnas_per_call_ms']:.4f} ms, bare {lo['bare_per_call_ms']:.4f} ms; bare spread {100 * lo['bare_noise']:.1f} %"
    )
    cmp = "<=" if res["verdict"] == "PASS" else ">"
    print(f"verdict     {res['verdict']}: median full ratio {f['median']:.4f} {cmp} {res['limit']} (wall {res['wall_s']} s)")


def main(argv: list[str] | None = None) -> int:
    from hwnas.errors import HwnasError

    args = _parse_args(argv)
    try:
        res = run(args)
    except HwnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        _print_text(res)
    return 0 if res["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
