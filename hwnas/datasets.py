"""Real image datasets for training candidate networks: load, split by class, batch.

A dataset is named by a spec string (:data:`DATA_SPECS_HELP`):

* ``digits``: the UCI 8x8 handwritten digits shipped in ``hwnas/data/digits.npz``
  (1,797 grey images, 10 classes; checked against ``SHA256SUMS`` before it is read).
* ``cifar10:DIR``: the CIFAR-10 *binary* version (``cifar-10-binary.tar.gz``): DIR holds
  ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` (or is their parent,
  holding ``cifar-10-batches-bin/``). Each record is 1 label byte and 3,072 pixel bytes:
  the R, G and B planes of a 32x32 image, each row-major.
* ``cifar100:DIR``: the CIFAR-100 binary version: ``train.bin`` and ``test.bin`` (or the
  parent of ``cifar-100-binary/``); records of 2 label bytes (coarse, fine) and 3,072
  pixel bytes. The fine label is used (100 classes).
* ``npz:FILE``: a NumPy ``.npz`` with arrays ``x`` and ``y`` (and optionally ``x_test`` and
  ``y_test``, laid out the same, which become :attr:`Dataset.test`). Accepted exactly:

  - ``x`` shaped (N, H, W) (grey) or (N, H, W, C) channels-last with 1 <= C <= 4
    (grey, grey+alpha, RGB, RGBA; every channel is kept);
  - ``x`` dtype uint8 (scaled by 1/255) or float16/32/64 with all values in [0, 1]
    (kept as they are, cast to float32); any other dtype is refused;
  - ``y`` a 1-D array of N integer labels (any signed or unsigned integer dtype),
    all >= 0; the number of classes is the largest label + 1;
  - N, H and W at least 1; other arrays in the file are ignored.
* ``folder:DIR``: the user's own image files, one subfolder per class (torchvision's
  ``ImageFolder`` convention): ``DIR/<class>/*.png`` (or ``DIR/train/<class>/...``), with an
  optional ``DIR/val/<class>/...`` (:attr:`Dataset.valid`) and ``DIR/test/<class>/...``
  (:attr:`Dataset.test`). Class names are the sorted folder names (:attr:`Dataset.labels`).
  Only the file headers are read at load: a batch decodes its own files with Pillow
  (``pip install 'hwnas[images]'``), resized to the size it asks for; see
  :mod:`hwnas.image_folder` for the rules and errors.

Files are never unpickled (``allow_pickle=False``). Every bad input raises
:class:`~hwnas.errors.UsageError` with one line that names the value and shows a valid
example. Images are float32 (N, C, H, W) in [0, 1] (for ``folder:``, decoded batch by batch);
labels are int64 (N,).

References: E. Alpaydin, C. Kaynak, *Optical Recognition of Handwritten Digits*, UCI
Machine Learning Repository, 1998 (see ``hwnas/data/NOTICE.md``); A. Krizhevsky,
*Learning Multiple Layers of Features from Tiny Images*, 2009 (CIFAR-10/100).

This module needs only numpy at import; torch is imported by :func:`batches`.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwnas.errors import UsageError
from hwnas.image_folder import ImageFiles, Split, scan
from hwnas.registry import did_you_mean

if TYPE_CHECKING:
    import torch

__all__ = ["DATA_DIR", "DATA_SPECS_HELP", "DIGITS_FILE", "Dataset", "batches", "load_data", "split"]

#: Folder holding the shipped data files (read at call time, so tests may point it elsewhere).
DATA_DIR = Path(__file__).resolve().parent / "data"
DIGITS_FILE = "digits.npz"
SUMS_FILE = "SHA256SUMS"

#: The accepted dataset specs, for CLI help.
DATA_SPECS_HELP = (
    "digits (shipped UCI 8x8 digits) | cifar10:DIR (CIFAR-10 binary: data_batch_1..5.bin, test_batch.bin) | "
    "cifar100:DIR (CIFAR-100 binary: train.bin, test.bin) | npz:FILE.npz (x [N,H,W] or [N,H,W,C] uint8 or float in [0,1], y [N] int) | "
    "folder:DIR (image files in DIR/<class>/, optional DIR/val/<class>/ and DIR/test/<class>/)"
)

_KINDS = ("digits", "cifar10", "cifar100", "npz", "folder")
_EXAMPLES = {
    "digits": "digits",
    "cifar10": "cifar10:/data/cifar-10-batches-bin",
    "cifar100": "cifar100:/data/cifar-100-binary",
    "npz": "npz:/data/mnist.npz",
    "folder": "folder:/data/flowers",
}
_DIGITS_SOURCE = "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998, doi:10.24432/C50P49, CC BY 4.0)"
_DIGITS_FIX = "reinstall hwnas, or regenerate it with 'python tools/convert_digits.py'"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels of one dataset (or one part of it).

    Attributes:
        name: short name for logs, e.g. ``"digits"``, ``"cifar10"``, ``"digits[0]"``.
        x: float32 images (N, C, H, W), values in [0, 1]; or, for an image folder, its files
            (:class:`~hwnas.image_folder.ImageFiles`), decoded by :func:`batches`.
        y: int64 labels (N,), each in 0..num_classes-1.
        num_classes: number of classes (labels need not all occur).
        source: where the data came from: a citation or a path.
        test: the format's official test split (e.g. CIFAR's ``test_batch.bin``), if any.
        labels: the class names, ``labels[i]`` naming label ``i`` (for deployment metadata), if known.
        valid: a validation split given with the data (an image folder's ``val/``), if any.
        pixel_scale: what a stored pixel value is multiplied by to give ``x`` (1/255 for 8-bit images,
            1/16 for the digits' 0..16 counts, 1 for float arrays): a deployed model's preprocessing.
    """

    name: str
    x: np.ndarray | ImageFiles
    y: np.ndarray
    num_classes: int
    source: str
    test: Dataset | None = None
    labels: list[str] | None = None
    valid: Dataset | None = None
    pixel_scale: float = 1 / 255

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise UsageError(f"Dataset {self.name!r}: {len(self.labels)} class labels for {self.num_classes} classes")
        if isinstance(x, ImageFiles):
            pass  # checked when its folder was read; decoded batch by batch
        elif not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.float32:
            raise UsageError(f"Dataset {self.name!r}: x must be a float32 array (N, C, H, W), got {_describe(x)}")
        if not isinstance(y, np.ndarray) or y.shape != (len(x),) or y.dtype != np.int64:
            raise UsageError(f"Dataset {self.name!r}: y must be an int64 array of shape ({len(x)},), got {_describe(y)}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise UsageError(f"Dataset {self.name!r}: num_classes must be an int >= 1, got {self.num_classes!r}")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise UsageError(
                f"Dataset {self.name!r}: labels span {y.min()}..{y.max()}, outside 0..{self.num_classes - 1} "
                f"(num_classes={self.num_classes})"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.x.shape
        return (c, h, w)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        test = "None" if self.test is None else f"<{len(self.test)} samples>"
        return f"Dataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, num_classes={self.num_classes}, test={test})"


# --------------------------------------------------------------------------- helpers
def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def _to_unit_float(x: np.ndarray, scale: int) -> np.ndarray:
    """uint8 counts 0..scale as float32 in [0, 1] (in place on the fresh float copy)."""
    out = x.astype(np.float32, order="C")
    out /= np.float32(scale)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- digits
def _read_sum(data_dir: Path, name: str) -> str | None:
    path = data_dir / SUMS_FILE
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read checksum file {path} ({exc.__class__.__name__}); {_DIGITS_FIX}") from None
    for line in text.splitlines():
        digest, _, fname = line.strip().partition("  ")
        if fname.lstrip("*") == name:
            return digest.lower()
    return None


def _load_digits(data_dir: Path) -> Dataset:
    path = data_dir / DIGITS_FILE
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"shipped dataset file {path} is missing or unreadable ({exc.__class__.__name__}); {_DIGITS_FIX}") from None
    want = _read_sum(data_dir, DIGITS_FILE)
    if want is None:
        raise UsageError(f"shipped dataset file {path} is not listed in {data_dir / SUMS_FILE}; {_DIGITS_FIX}")
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise UsageError(f"shipped dataset file {path} fails its checksum (sha256 {got[:12]}..., expected {want[:12]}...); {_DIGITS_FIX}")
    arrays = _read_npz(io.BytesIO(blob), str(path))
    x, y = arrays.get("x"), arrays.get("y")
    if x is None or y is None or x.shape != (1797, 8, 8) or y.shape != (1797,) or x.dtype != np.uint8 or y.dtype != np.uint8:
        raise UsageError(f"shipped dataset file {path} does not hold x uint8 (1797, 8, 8) and y uint8 (1797,); {_DIGITS_FIX}")
    return Dataset(
        name="digits",
        x=_to_unit_float(x[:, None], 16),
        y=y.astype(np.int64),
        num_classes=10,
        source=_DIGITS_SOURCE,
        labels=[str(d) for d in range(10)],
        pixel_scale=1 / 16,
    )


# --------------------------------------------------------------------------- CIFAR
def _cifar_dir(kind: str, arg: str, files: Sequence[str], subdir: str) -> Path:
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{kind} folder {str(folder)!r} {what}; give the folder of the binary version, e.g. {_EXAMPLES[kind]}")
    if not (folder / files[0]).exists() and (folder / subdir / files[0]).exists():
        folder = folder / subdir
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f"{kind} folder {str(folder)!r} lacks {', '.join(missing)}; it must hold the binary version "
            f"({', '.join(files)}) from {_CIFAR_URL}, e.g. {_EXAMPLES[kind]}"
        )
    return folder


def _read_records(kind: str, path: Path, n_label_bytes: int) -> np.ndarray:
    """All records of a CIFAR binary file, as a uint8 array (records, label bytes + 3072)."""
    record = n_label_bytes + 3072
    size = path.stat().st_size
    if size == 0 or size % record:
        raise UsageError(
            f"{kind} file {str(path)!r} has {size:,} bytes, not a whole number of {record}-byte records "
            f"({n_label_bytes} label byte(s) + 3072 pixel bytes); use the binary version from {_CIFAR_URL}, e.g. {_EXAMPLES[kind]}"
        )
    return np.fromfile(path, dtype=np.uint8).reshape(-1, record)


def _cifar_part(
    kind: str, paths: Sequence[Path], n_label_bytes: int, num_classes: int, name: str, source: str, test: Dataset | None = None
) -> Dataset:
    recs = np.concatenate([_read_records(kind, p, n_label_bytes) for p in paths])
    labels = recs[:, n_label_bytes - 1]  # CIFAR-100: byte 0 is coarse, byte 1 fine
    if labels.max() >= num_classes:
        raise UsageError(
            f"{kind} files {', '.join(repr(str(p)) for p in paths)} hold label {labels.max()}, outside 0..{num_classes - 1}; "
            f"are they {kind} binary files? e.g. {_EXAMPLES[kind]}"
        )
    # The 3072 pixel bytes are the R, G, B planes, each 32x32 row-major: already (C, H, W).
    x = _to_unit_float(recs[:, n_label_bytes:].reshape(-1, 3, 32, 32), 255)
    return Dataset(name=name, x=x, y=labels.astype(np.int64), num_classes=num_classes, source=source, test=test)


def _load_cifar10(arg: str) -> Dataset:
    train = [f"data_batch_{i}.bin" for i in range(1, 6)]
    folder = _cifar_dir("cifar10", arg, [*train, "test_batch.bin"], "cifar-10-batches-bin")
    source = f"CIFAR-10 binary version at {folder} (Krizhevsky 2009, {_CIFAR_URL})"
    test = _cifar_part("cifar10", [folder / "test_batch.bin"], 1, 10, "cifar10/test", source)
    return _cifar_part("cifar10", [folder / f for f in train], 1, 10, "cifar10", source, test)


def _load_cifar100(arg: str) -> Dataset:
    folder = _cifar_dir("cifar100", arg, ["train.bin", "test.bin"], "cifar-100-binary")
    source = f"CIFAR-100 binary version at {folder} (Krizhevsky 2009, {_CIFAR_URL}); fine labels"
    test = _cifar_part("cifar100", [folder / "test.bin"], 2, 100, "cifar100/test", source)
    return _cifar_part("cifar100", [folder / "train.bin"], 2, 100, "cifar100", source, test)


# --------------------------------------------------------------------------- npz
def _read_npz(file: Path | io.BytesIO, label: str) -> dict[str, np.ndarray]:
    if isinstance(file, Path):
        try:
            with open(file, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise UsageError(f"cannot read {label!r}: {exc.strerror}; e.g. {_EXAMPLES['npz']}") from None
        if magic != b"PK\x03\x04":  # an .npz is a zip archive; anything else (a pickle, a .npy) is refused unread
            raise UsageError(f"{label!r} is not an .npz archive; save one with np.savez(path, x=images, y=labels), e.g. {_EXAMPLES['npz']}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise UsageError(
            f"cannot read {label!r} as an .npz of plain arrays ({why[:160]}); save it with np.savez(path, x=images, y=labels), "
            f"e.g. {_EXAMPLES['npz']}"
        ) from None


def _npz_images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    """Check one image array of an npz file and return it as float32 (N, C, H, W)."""
    hint = f"x must be (N, H, W) or channels-last (N, H, W, C) with C in 1..4, uint8 or float in [0, 1], e.g. {_EXAMPLES['npz']}"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if not 1 <= x.shape[3] <= 4:
            first = " (channels-first? move the channel axis last)" if 1 <= x.shape[1] <= 4 else ""
            raise UsageError(f"npz file {path!r}: {key} has shape {x.shape}: last axis {x.shape[3]} is not 1..4 channels{first}; {hint}")
        x = x.transpose(0, 3, 1, 2)
    else:
        raise UsageError(f"npz file {path!r}: {key} has {x.ndim} axes (shape {x.shape}); {hint}")
    if 0 in x.shape:
        raise UsageError(f"npz file {path!r}: {key} is empty (shape {x.shape}); {hint}")
    if x.dtype == np.uint8:
        return _to_unit_float(x, 255)
    if x.dtype.kind != "f":
        raise UsageError(f"npz file {path!r}: {key} has dtype {x.dtype}; {hint}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        raise UsageError(
            f"npz file {path!r}: float {key} holds {int((~finite).sum())} NaN or infinite value(s), must be finite in [0, 1]; {hint}"
        )
    if out.min() < 0.0 or out.max() > 1.0:
        raise UsageError(f"npz file {path!r}: float {key} must be within [0, 1], got values {out.min():g}..{out.max():g}; {hint}")
    return out


def _npz_labels(path: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    hint = f"y must be 1-D integer labels 0..K-1, one per image, e.g. {_EXAMPLES['npz']}"
    if y.dtype.kind not in "iu":
        raise UsageError(f"npz file {path!r}: {key} has dtype {y.dtype}, not integer labels; {hint}")
    if y.ndim != 1:
        raise UsageError(f"npz file {path!r}: {key} has shape {y.shape}, not 1-D; {hint}")
    if len(y) != n:
        raise UsageError(f"npz file {path!r}: {key} has {len(y)} labels but there are {n} images; {hint}")
    if y.min() < 0:
        raise UsageError(f"npz file {path!r}: {key} holds negative label {y.min()}; {hint}")
    return y.astype(np.int64)


def _load_npz_file(arg: str) -> Dataset:
    path = Path(arg).expanduser()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise UsageError(f"npz file {str(path)!r} {what}; e.g. {_EXAMPLES['npz']}")
    arrays = _read_npz(path, str(path))
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UsageError(
            f"npz file {str(path)!r} lacks array(s) {', '.join(missing)} (has: {', '.join(sorted(arrays)) or 'none'}); "
            f"save it with np.savez(path, x=images, y=labels), e.g. {_EXAMPLES['npz']}"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UsageError(f"npz file {str(path)!r} has only one of x_test and y_test; give both or neither, e.g. {_EXAMPLES['npz']}")
    x = _npz_images(str(path), "x", arrays["x"])
    y = _npz_labels(str(path), "y", arrays["y"], len(x))
    parts = [(x, y)]
    if "x_test" in arrays:
        xt = _npz_images(str(path), "x_test", arrays["x_test"])
        if xt.shape[1:] != x.shape[1:]:
            raise UsageError(
                f"npz file {str(path)!r}: x_test images are {xt.shape[1:]} but x images are {x.shape[1:]} (C, H, W); "
                f"e.g. {_EXAMPLES['npz']}"
            )
        parts.append((xt, _npz_labels(str(path), "y_test", arrays["y_test"], len(xt))))
    num_classes = max(int(lab.max()) for _, lab in parts) + 1
    absent = np.setdiff1d(np.arange(num_classes), np.concatenate([lab for _, lab in parts]))
    if len(absent):
        shown = ", ".join(str(c) for c in absent[:5]) + (", ..." if len(absent) > 5 else "")
        one_based = " (1-based labels? subtract 1)" if absent[0] == 0 else ""
        raise UsageError(
            f"npz file {str(path)!r}: labels must be 0..K-1 with every class present, but {len(absent)} of 0..{num_classes - 1} "
            f"never occur: {shown}{one_based}; e.g. {_EXAMPLES['npz']}"
        )
    name = path.stem
    source = str(path.resolve())
    scale = 1 / 255 if arrays["x"].dtype == np.uint8 else 1.0
    test = Dataset(f"{name}/test", *parts[1], num_classes, source, pixel_scale=scale) if len(parts) == 2 else None
    return Dataset(name, x, y, num_classes, source, test, pixel_scale=scale)


# --------------------------------------------------------------------------- image folder
def _load_folder(arg: str) -> Dataset:
    folder = scan(arg)
    names, name, source = folder.names, folder.top.resolve().name, f"image folder {folder.top.resolve()}"

    def part(split: Split | None, suffix: str) -> Dataset | None:
        if split is None:
            return None
        return Dataset(f"{name}/{suffix}", split.files, split.labels, len(names), source, labels=list(names))

    train = folder.train
    return Dataset(name, train.files, train.labels, len(names), source, part(folder.test, "test"), list(names), part(folder.val, "val"))


# --------------------------------------------------------------------------- public API
def load_data(spec: str) -> Dataset:
    """Load the dataset named by ``spec`` (see :data:`DATA_SPECS_HELP` and the module docstring).

    Raises:
        UsageError: unknown kind, missing path or file, malformed content, failed checksum.
    """
    if not isinstance(spec, str):
        raise UsageError(f"dataset spec must be a string, got {type(spec).__name__}; accepted: {DATA_SPECS_HELP}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in _KINDS:
        hint = did_you_mean(kind, list(_KINDS))
        if not hint and spec.strip().endswith(".npz"):
            hint = f" (did you mean 'npz:{spec.strip()}'?)"
        raise UsageError(f"unknown dataset kind {kind!r} in spec {spec!r}{hint}; accepted: {DATA_SPECS_HELP}")
    if kind == "digits":
        if sep:
            raise UsageError(f"dataset spec {spec!r}: 'digits' is shipped with hwnas and takes no path; write just 'digits'")
        return _load_digits(DATA_DIR)
    if not arg.strip():
        raise UsageError(f"dataset spec {spec!r} needs a path after '{kind}:', e.g. {_EXAMPLES[kind]}")
    loader = {"cifar10": _load_cifar10, "cifar100": _load_cifar100, "npz": _load_npz_file, "folder": _load_folder}[kind]
    return loader(arg.strip())


def split(ds: Dataset, fractions: Sequence[float], seed: int) -> list[Dataset]:
    """Stratified random split of ``ds`` into parts of the given fractions.

    Each class is shuffled (``numpy.random.default_rng(seed)``) and dealt out so that
    every part holds, per class, the floor or ceiling of its fraction of that class; the
    leftover samples go to the parts furthest below their share so far, so the part
    sizes also stay within one sample of ``fraction * len(ds)``. Every sample lands in
    exactly one part; samples keep their original order inside a part. Parts keep
    ``num_classes``, ``source``, ``test``, ``labels`` and ``valid`` and are named ``"{name}[i]"``;
    an image folder's parts hold its files, still undecoded.

    Args:
        ds: the dataset to split.
        fractions: positive fractions summing to 1, e.g. ``(0.5, 0.5)`` or ``(0.6, 0.2, 0.2)``.
        seed: the same seed gives the same parts.

    Raises:
        UsageError: bad fractions or seed, or a part that would be empty.
    """
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or len(fractions) == 0:
        raise UsageError(f"split fractions must be a non-empty sequence of numbers summing to 1, e.g. (0.5, 0.5), got {fractions!r}")
    fr = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) or not math.isfinite(f) or f <= 0:
            raise UsageError(
                f"split fraction {f!r} must be a number > 0; fractions sum to 1, e.g. (0.6, 0.2, 0.2), got {tuple(fractions)!r}"
            )
        fr.append(float(f))
    if abs(sum(fr) - 1.0) > 1e-6:
        raise UsageError(f"split fractions {tuple(fractions)!r} sum to {sum(fr):g}, not 1; e.g. (0.6, 0.2, 0.2)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"split seed must be an int, e.g. 0, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    share = np.array(fr)
    deficit = np.zeros(len(fr))  # running (ideal - given) per part, carried across classes
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in np.unique(ds.y):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        ideal = share * len(idx)
        counts = np.floor(ideal).astype(np.int64)
        extra = len(idx) - int(counts.sum())
        if extra:
            priority = ideal - counts + deficit
            counts[np.argsort(-priority, kind="stable")[:extra]] += 1
        deficit += ideal - counts
        for part, chunk in zip(parts, np.split(idx, np.cumsum(counts)[:-1]), strict=True):
            part.append(chunk)
    out = []
    for i, chunks in enumerate(parts):
        idx = np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64)
        if len(idx) == 0:
            raise UsageError(
                f"splitting {ds.name!r} ({len(ds)} samples) by fractions {tuple(fractions)!r} leaves part {i} empty; "
                "use fewer parts (e.g. (0.5, 0.5)) or more data"
            )
        x = ds.x.take(idx) if isinstance(ds.x, ImageFiles) else ds.x[idx]
        out.append(Dataset(f"{ds.name}[{i}]", x, ds.y[idx], ds.num_classes, ds.source, ds.test, ds.labels, ds.valid, ds.pixel_scale))
    return out


def evaluation_splits(ds: Dataset, seed: int = 0) -> tuple[Dataset, Dataset, Dataset]:
    """(train, valid, test) for training-based evaluators: candidates train on ``train``, the
    search sees their ``valid`` accuracy, and ``test`` stays held out for the final check.

    Data with its own validation split (an image folder's ``val/``) keeps it, and its test split
    too where it has one (else 20 % of the rest becomes ``test``). Data with only a test split
    (CIFAR) keeps it and gives 20 % of its training set to ``valid``; otherwise the data is split
    60/20/20, stratified by class.
    """
    if ds.valid is not None:
        if ds.test is not None:
            return ds, ds.valid, ds.test
        train, test = split(ds, (0.8, 0.2), seed=seed)
        return train, ds.valid, test
    if ds.test is not None:
        train, valid = split(ds, (0.8, 0.2), seed=seed)
        return train, valid, ds.test
    train, valid, test = split(ds, (0.6, 0.2, 0.2), seed=seed)
    return train, valid, test


def batches(
    ds: Dataset, batch_size: int, *, shuffle: bool, seed: int | None = None, size: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``ds`` as (float32 x (B, C, H, W), int64 y (B,)) CPU tensors.

    Every sample appears exactly once; the last batch may be smaller. With ``shuffle``
    the order is a permutation drawn from ``numpy.random.default_rng(seed)`` (``seed``
    is then required, so runs are reproducible); without it, the dataset order.
    With ``size``, images come resized to ``size`` x ``size`` (bilinear, antialiased): an image
    folder's files are decoded straight at that size, one batch at a time.
    Arguments are checked when called, not at the first ``next``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError(f"batch_size must be an int >= 1, e.g. 64, got {batch_size!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise UsageError(f"size must be None or an int >= 1 (pixels a side), e.g. 32, got {size!r}")
    if shuffle and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UsageError(f"batches(shuffle=True) needs an int seed, e.g. seed=0, got {seed!r}")
    order = np.random.default_rng(int(seed)).permutation(len(ds)) if shuffle and seed is not None else np.arange(len(ds))
    return _batches(ds, order, int(batch_size), None if size is None else int(size))


def _batches(ds: Dataset, order: np.ndarray, batch_size: int, size: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    import torch
    import torch.nn.functional as F

    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if isinstance(ds.x, ImageFiles):
            yield torch.from_numpy(ds.x.read(idx, size)), torch.from_numpy(ds.y[idx])
            continue
        # Fancy indexing copies, so the tensors own writable memory and never alias ds.
        x = torch.from_numpy(ds.x[idx])
        if size is not None:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        yield x, torch.from_numpy(ds.y[idx])
