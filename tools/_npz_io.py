"""What the data converters share: the failure type, a byte-reproducible .npz writer with its
read-back check, and in-place updates of SHA256SUMS."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np


class ConversionError(Exception):
    pass


def fail(msg: str) -> NoReturn:
    raise ConversionError(msg)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but byte-reproducible (fixed zip timestamps, sorted names)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype == object:
                fail(f"{name}: object arrays are not allowed")
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def verify_written(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with np.load(path, allow_pickle=False) as npz:
        if sorted(npz.files) != sorted(arrays):
            fail(f"{path}: written names {sorted(npz.files)} differ")
        for name, arr in arrays.items():
            back = npz[name]
            if back.dtype != arr.dtype or not np.array_equal(back, arr):
                fail(f"{path}: array {name} does not read back identically")


def update_sums(sums_path: Path, name: str, digest: str) -> None:
    """Set ``name``'s line in SHA256SUMS, keeping every other line and their order."""
    lines = sums_path.read_text(encoding="ascii").splitlines() if sums_path.exists() else []
    new = f"{digest}  {name}"
    out, found = [], False
    for line in lines:
        if line.strip().partition("  ")[2].lstrip("*") == name:
            out.append(new)
            found = True
        elif line.strip():
            out.append(line)
    if not found:
        out.append(new)
    sums_path.write_text("".join(f"{line}\n" for line in out), encoding="ascii")
