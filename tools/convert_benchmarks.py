#!/usr/bin/env python3
"""One-off: convert the upstream NAS-Bench-201 / HELP files into hwnas/data/*.npz.

Run by developers when the shipped data must be (re)made, never at run time:

    python tools/convert_benchmarks.py [--shared ../shared/benchmarks] [--out hwnas/data]

Reads (see the README.md files in the --shared folder for formats and provenance):
  nas-bench-201/nats_bench.csv         NATS-Bench tss test accuracies + isomorphism strings
  nas-bench-201/cifar10_avg.csv        NATS-Bench tss cifar10-valid valid/test accuracies
  help-latency/nasbench201/str_arch2idx.pt, latency/<device>.pt   HELP latencies (ms)
Writes:
  nb201.npz, nb201_latency.npz (numeric arrays only, no pickles), SHA256SUMS,
  licenses/*.txt (copies of the upstream licence texts).

The .pt files are torch zip archives holding plain pickles of built-in types; they are
read with an unpickler that refuses every class, so no torch and no code execution.
Every cross-check failure aborts with a message and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _npz_io import ConversionError, fail, save_npz, update_sums, verify_written

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.benchdata import (  # noqa: E402
    LATENCY_FILE,
    NB201_FILE,
    NB201_N,
    NB201_OPS,
    SUMS_FILE,
    genotype_to_string,
    string_to_genotype,
)

N_ISO_CLASSES = 6466
# HW-NAS-Bench's published NAS-Bench-201 arch-0 cifar10 latencies (upstream README).
HW_NAS_BENCH_ARCH0 = {
    "raspi4": 10.481976820010459,
    "pixel3": 3.6058499999999998,
    "eyeriss": 3.645620000000001,
    "fpga": 2.57296,
}
LICENSES = {  # source (relative to --shared) -> name under hwnas/data/licenses/
    "help-latency/LICENSE": "HELP-LICENSE.txt",
    "hw-nas-bench/LICENSE": "HW-NAS-Bench-LICENSE.txt",
    "nas-bench-201/LICENSE-cifar10_avg.txt": "NAS-Landscapes-cifar10_avg-LICENSE.txt",
}


class _RefuseAll(pickle.Unpickler):
    """The HELP NB201 pickles hold only lists/dicts/str/int/float: refuse any class."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: object) -> NoReturn:
        raise pickle.UnpicklingError("refusing a persistent id (torch tensor storage)")


def load_pt(path: Path) -> object:
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(names) != 1:
            fail(f"{path}: expected one data.pkl in the torch archive, found {names}")
        return _RefuseAll(io.BytesIO(z.read(names[0]))).load()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != NB201_N:
        fail(f"{path}: {len(rows)} rows, expected {NB201_N}")
    return rows


def to_float(path: Path, row: int, col: str, text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        fail(f"{path}: row {row} column {col}: not a number: {text!r}")
    if not math.isfinite(x):
        fail(f"{path}: row {row} column {col}: not finite: {text!r}")
    return x


def convert_accuracies(shared: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    nats_path = shared / "nas-bench-201" / "nats_bench.csv"
    avg_path = shared / "nas-bench-201" / "cifar10_avg.csv"
    idx_path = shared / "help-latency" / "nasbench201" / "str_arch2idx.pt"
    nats = read_csv(nats_path)
    avg = read_csv(avg_path)
    str2idx = load_pt(idx_path)
    if not isinstance(str2idx, dict) or len(str2idx) != NB201_N:
        fail(f"{idx_path}: expected a dict of {NB201_N} entries")
    idx2str = {v: k for k, v in str2idx.items()}
    if sorted(idx2str) != list(range(NB201_N)):
        fail(f"{idx_path}: indices are not exactly 0..{NB201_N - 1}")

    genotype = np.zeros((NB201_N, 6), dtype=np.uint8)
    iso_class = np.zeros(NB201_N, dtype=np.int32)
    iso_ids: dict[str, int] = {}
    cols = {
        "cifar10_valid_valid": (avg_path, avg, "valid-accuracy"),
        "cifar10_valid_test": (avg_path, avg, "test-accuracy"),
        "cifar10_test": (nats_path, nats, "CIFAR10TestAccuracy200Epochs"),
        "cifar100_test": (nats_path, nats, "CIFAR100TestAccuracy200Epochs"),
        "imagenet16_test": (nats_path, nats, "ImageNetTestAccuracy200Epochs"),
    }
    out: dict[str, np.ndarray] = {key: np.zeros(NB201_N, dtype=np.float64) for key in cols}
    arch_strings: list[str] = []
    for i in range(NB201_N):
        s = nats[i]["ArchitectureString"]
        if avg[i]["arch_str"] != s:
            fail(f"row {i}: arch strings differ: nats_bench.csv {s!r} vs cifar10_avg.csv {avg[i]['arch_str']!r}")
        if idx2str[i] != s:
            fail(f"row {i}: arch strings differ: nats_bench.csv {s!r} vs str_arch2idx.pt {idx2str[i]!r}")
        if not (avg[i]["index"] == avg[i]["index2"] == str(i)):
            fail(f"{avg_path}: row {i} has index {avg[i]['index']!r} / index2 {avg[i]['index2']!r}")
        ops = string_to_genotype(s)
        if genotype_to_string(ops) != s:
            fail(f"row {i}: arch string {s!r} is not in canonical form")
        codes = [NB201_OPS.index(op) for op in ops]
        sol = "".join(str(c + 1) for c in codes)  # cifar10_avg.csv digits: 1=none .. 5=avg_pool_3x3
        if avg[i]["sol"] != sol:
            fail(f"{avg_path}: row {i}: sol {avg[i]['sol']!r} does not match arch string ({sol})")
        genotype[i] = codes
        iso_class[i] = iso_ids.setdefault(nats[i]["UniqueString"], len(iso_ids))
        for key, (path, rows, col) in cols.items():
            out[key][i] = to_float(path, i, col, rows[i][col])
        arch_strings.append(s)

    codes_flat = genotype.astype(np.int64) @ (5 ** np.arange(5, -1, -1))
    if len(np.unique(codes_flat)) != NB201_N:
        fail("genotypes are not all distinct")
    if len(iso_ids) != N_ISO_CLASSES:
        fail(f"{nats_path}: {len(iso_ids)} isomorphism classes, expected {N_ISO_CLASSES}")
    for key, arr in out.items():
        if not (arr.min() >= 0.0 and arr.max() <= 100.0):
            fail(f"{key}: accuracies outside 0..100 ({arr.min()}..{arr.max()})")
    # Published NAS-Bench-201 "optimal" values (see nas-bench-201/README.md).
    for key, want in [
        ("cifar10_test", 94.37),
        ("cifar100_test", 73.51),
        ("imagenet16_test", 47.31),
        ("cifar10_valid_valid", 91.61),
    ]:
        if round(float(out[key].max()), 2) != want:
            fail(f"{key}: max {out[key].max()} does not round to the published {want}")
    out["genotype"] = genotype
    out["iso_class"] = iso_class
    return out, arch_strings


def convert_latencies(shared: Path) -> dict[str, np.ndarray]:
    folder = shared / "help-latency" / "nasbench201" / "latency"
    files = sorted(folder.glob("*.pt"))
    if len(files) != 27:
        fail(f"{folder}: found {len(files)} device files, expected 27")
    out: dict[str, np.ndarray] = {}
    for path in files:
        values = load_pt(path)
        if not isinstance(values, list) or len(values) != NB201_N:
            fail(f"{path}: expected a list of {NB201_N} latencies")
        if not all(type(v) in (int, float) for v in values):
            fail(f"{path}: latencies must be plain int/float")
        arr = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
            fail(f"{path}: latencies must be finite and positive")
        if any(type(v) is int and abs(v) > 2**53 for v in values):
            fail(f"{path}: integer latencies too large for exact float64")
        out[path.stem] = arr
    for dev, want in HW_NAS_BENCH_ARCH0.items():
        if out[dev][0] != want:
            fail(f"{dev}: arch 0 latency {out[dev][0]!r} != HW-NAS-Bench's published {want!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared" / "benchmarks",
        help="folder with nas-bench-201/, help-latency/, hw-nas-bench/ (default: ../shared/benchmarks relative to the repo root)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "hwnas" / "data",
        help="output folder (default: hwnas/data)",
    )
    args = ap.parse_args(argv)
    try:
        if not args.shared.is_dir():
            fail(f"--shared folder {args.shared} does not exist")
        acc, arch_strings = convert_accuracies(args.shared)
        lat = convert_latencies(args.shared)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, arrays in [(NB201_FILE, acc), (LATENCY_FILE, lat)]:
            path = args.out / name
            save_npz(path, arrays)
            verify_written(path, arrays)
            # Only this tool's lines change: others (digits.npz from convert_digits.py) are kept.
            update_sums(args.out / SUMS_FILE, name, hashlib.sha256(path.read_bytes()).hexdigest())
            print(f"wrote {path} ({path.stat().st_size:,} bytes, {len(arrays)} arrays)")
        print(f"wrote {args.out / SUMS_FILE}")
        lic_dir = args.out / "licenses"
        lic_dir.mkdir(exist_ok=True)
        for src, dst in LICENSES.items():
            shutil.copyfile(args.shared / src, lic_dir / dst)
        print(f"copied {len(LICENSES)} licence texts to {lic_dir}")
        best = int(np.argmax(acc["cifar10_test"]))
        print(
            f"checks passed: {NB201_N} archs, {int(acc['iso_class'].max()) + 1} isomorphism "
            f"classes, {len(lat)} devices; best cifar10/test {acc['cifar10_test'][best]:.4f} "
            f"at {best} {arch_strings[best]}"
        )
    except (
        ConversionError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        KeyError,
    ) as exc:
        print(f"convert_benchmarks: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
