"""Your own images, end to end, through the product's commands (issue 25's figures).

The shipped UCI digits are written out as a user's image folder (8-bit PNGs, DIR/train/<class>/
and a held-out DIR/test/<class>/, 20 % stratified, seed 0). Then, as a user would:

1. ``hwnas search --device cpu --latency 1ms --evaluator train --data folder:DIR`` (this CPU, live);
2. ``hwnas train RUN --precision int8``;
3. the final ``best.onnx`` and ``best-int8.onnx`` are run in a bare ONNX Runtime session (1 thread)
   on the test PNGs, decoded with Pillow and preprocessed with nothing but the model's
   ``hwnas.preprocessing`` metadata; and timed there (batch 1, median of 300 runs).

Prints each figure and the wall time of search plus training. Run alone on a quiet machine:
``python benchmarks/own_images.py [--trials 12] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path) -> tuple[int, int]:
    from PIL import Image

    from hwnas.datasets import load_data

    ds = load_data("digits")
    rng = np.random.default_rng(0)
    n_train = n_test = 0
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        cut = round(0.2 * len(idx))
        for part, chosen in (("test", idx[:cut]), ("train", idx[cut:])):
            folder = root / part / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = np.round(ds.x[i, 0] * 255).astype(np.uint8)  # the 0..16 counts as 8-bit grey
                Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
            n_test += len(chosen) if part == "test" else 0
            n_train += len(chosen) if part == "train" else 0
    return n_train, n_test


def bare_ort(model: Path, test_dir: Path) -> tuple[float, float, list[float]]:
    """(test accuracy %, median ms, all ms) with nothing but the model file, Pillow and numpy."""
    import onnx
    import onnxruntime as ort
    from PIL import Image

    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    pre = json.loads(props["hwnas.preprocessing"])
    c, h, w = pre["input_shape"]
    labels = pre["labels"]
    mode = {"grey": "L", "rgb": "RGB"}[pre["color"]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    mean = np.asarray(pre["mean"], np.float32).reshape(c, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(c, 1, 1)
    right = total = 0
    first = None
    for cls in sorted(os.listdir(test_dir)):
        for f in sorted((test_dir / cls).iterdir()):
            im = Image.open(f).convert(mode).resize((w, h), Image.Resampling.BILINEAR)
            x = np.asarray(im, np.float32).reshape(h, w, c).transpose(2, 0, 1) * np.float32(pre["scale"])
            x = ((x - mean) / std)[None].astype(np.float32)
            first = x if first is None else first
            pred = labels[int(sess.run(None, {name: x})[0].argmax())]
            right += pred == cls
            total += 1
    times = []
    for _ in range(50):
        sess.run(None, {name: first})
    for _ in range(300):
        t0 = time.perf_counter()
        sess.run(None, {name: first})
        times.append(1000 * (time.perf_counter() - t0))
    return 100.0 * right / total, float(np.median(times)), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--work", default="/tmp/hwnas-own-images")
    ap.add_argument("--budget", default="1ms")
    ap.add_argument("--space", default="nb201", help="nb201 (default) or mbconv")
    ap.add_argument("--evaluator", default="train", help="train (default) or supernet")
    ap.add_argument("--epochs", type=int, help="the search evaluator's epochs (default: its own)")
    ap.add_argument("--train-epochs", type=int, help="hwnas train's epochs (default: its own)")
    args = ap.parse_args()
    work = Path(args.work)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    data = work / "digits-folder"
    n_train, n_test = write_folder(data)
    print(f"image folder {data}: {n_train} training PNGs, {n_test} held-out test PNGs (8x8 grey)")
    run = work / "run"
    hwnas = [sys.executable, "-m", "hwnas"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    search = [*hwnas, "search", "--space", args.space, "--device", "cpu", "--latency", args.budget, "--evaluator", args.evaluator]
    search += ["--data", f"folder:{data}", "--trials", str(args.trials), "--out", str(run)]
    search += [] if args.epochs is None else ["--epochs", str(args.epochs)]
    print(f"$ hwnas {' '.join(search[3:])}")
    subprocess.run(search, check=True, stdout=subprocess.DEVNULL)
    t_search = time.perf_counter() - t0
    train = [*hwnas, "train", str(run), "--precision", "int8"]
    train += [] if args.train_epochs is None else ["--epochs", str(args.train_epochs)]
    print(f"$ hwnas {' '.join(train[3:])}")
    subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
    t_total = time.perf_counter() - t0
    report = json.loads((run / "final" / "report.json").read_text())
    print(
        f"search ({args.trials} trials) {t_search:.0f} s + train {t_total - t_search:.0f} s = {t_total:.0f} s "
        f"({t_total / 60:.1f} min; load {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)"
    )
    print(f"network: trial {report['trial']} {report['arch']}")
    print(
        f"hwnas train: validation {report['valid_accuracy']:.2f} %, test (PyTorch) {report['test_accuracy']:.2f} %, "
        f"re-measured {report['latency_ms']:.4g} ms on {report['device']}"
    )
    for name in ("best.onnx", "best-int8.onnx"):
        acc, ms, times = bare_ort(run / "final" / name, data / "test")
        q1, q3 = np.percentile(times, [25, 75])
        print(
            f"bare ORT, 1 thread, {name}: test accuracy {acc:.2f} % on {n_test} PNGs; latency median {ms:.4f} ms "
            f"(IQR {q1:.4f}-{q3:.4f}, budget {args.budget})"
        )
    q = report.get("int8") or {}
    print(f"INT8 drop on the test split (hwnas train's figure): {q.get('test_drop_points')} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
