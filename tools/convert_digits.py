#!/usr/bin/env python3
"""One-off: convert the UCI 8x8 handwritten digits CSV into hwnas/data/digits.npz.

Run by developers when the shipped file must be (re)made, never at run time:

    pip install scikit-learn        # only to get the CSV; uninstall it afterwards
    python tools/convert_digits.py [--csv path/to/digits.csv.gz] [--out hwnas/data]

Reads scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" data
(``sklearn/datasets/data/digits.csv.gz``: 1,797 rows of 64 pixel counts 0..16 and a
label 0..9; it is UCI's ``optdigits.tes``). Without ``--csv`` the file is found in the
installed scikit-learn package, which is located but not imported.
Writes:
  digits.npz: ``x`` uint8 [1797, 8, 8] (0..16), ``y`` uint8 [1797] (0..9), no pickles,
  byte-reproducible; and its line in SHA256SUMS (other lines are kept).
Every check failure aborts with a message and exit status 1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _npz_io import ConversionError, fail, save_npz, update_sums, verify_written

REPO = Path(__file__).resolve().parents[1]
OUT_NAME = "digits.npz"
SUMS_FILE = "SHA256SUMS"
N_SAMPLES = 1797
# Images per digit 0..9 in this copy (scikit-learn's documentation of load_digits).
CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def find_sklearn_csv() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        fail("scikit-learn is not installed: run 'pip install scikit-learn' or pass --csv path/to/digits.csv.gz")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        fail(f"{path} not found in the installed scikit-learn; pass --csv path/to/digits.csv.gz")
    return path


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    rows = [line.split(b",") for line in text.splitlines() if line.strip()]
    if len(rows) != N_SAMPLES:
        fail(f"{path}: {len(rows)} rows, expected {N_SAMPLES}")
    if any(len(r) != 65 for r in rows):
        fail(f"{path}: every row must have 64 pixels and a label")
    try:
        table = np.array([[int(v) for v in r] for r in rows], dtype=np.int64)
    except ValueError as exc:
        fail(f"{path}: non-integer value ({exc})")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16:
        fail(f"{path}: pixel values span {pixels.min()}..{pixels.max()}, expected 0..16")
    if labels.min() < 0 or labels.max() > 9:
        fail(f"{path}: labels span {labels.min()}..{labels.max()}, expected 0..9")
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != CLASS_COUNTS:
        fail(f"{path}: images per class {counts}, expected {CLASS_COUNTS}")
    return pixels.reshape(N_SAMPLES, 8, 8).astype(np.uint8), labels.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=None, help="digits.csv(.gz) (default: the copy inside the installed scikit-learn)")
    ap.add_argument("--out", type=Path, default=REPO / "hwnas" / "data", help="output folder (default: hwnas/data)")
    args = ap.parse_args(argv)
    try:
        src = args.csv if args.csv is not None else find_sklearn_csv()
        x, y = read_csv(src)
        print(f"read {src} (sha256 {hashlib.sha256(src.read_bytes()).hexdigest()})")
        arrays = {"x": x, "y": y}
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / OUT_NAME
        save_npz(path, arrays)
        verify_written(path, arrays)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        update_sums(args.out / SUMS_FILE, OUT_NAME, digest)
        print(f"wrote {path} ({path.stat().st_size:,} bytes, sha256 {digest}) and its line in {args.out / SUMS_FILE}")
    except (ConversionError, OSError, EOFError, gzip.BadGzipFile) as exc:
        print(f"convert_digits: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
