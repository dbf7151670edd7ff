"""The NAS-Bench-201 benchmark tables shipped with hwnas (accuracies and HELP latencies).

The data lives in ``hwnas/data`` as two ``.npz`` files of plain numeric arrays (no
pickles), made once from the upstream sources by ``tools/convert_benchmarks.py``:

* ``nb201.npz``: for all 15,625 NAS-Bench-201 cells, in official arch-index order,
  the genotype (one op index per edge), the NATS-Bench isomorphism class, and the
  200-epoch accuracies (%) of NAS-Bench-201 / NATS-Bench (topology space).
* ``nb201_latency.npz``: one array per HELP device: latency in ms of each cell.

Every file is checked against ``hwnas/data/SHA256SUMS`` before it is read, and is
read with ``allow_pickle=False``. Sources, licences and citations:
``hwnas/data/NOTICE.md``.

This module needs only the standard library and numpy.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hwnas.errors import HwnasError, UsageError

__all__ = [
    "DATA_DIR",
    "LATENCY_FILE",
    "NB201_EDGES",
    "NB201_FILE",
    "NB201_N",
    "NB201_OPS",
    "VERIFY_CHECKSUMS",
    "NB201Table",
    "genotype_to_string",
    "latency_devices",
    "nb201_latency",
    "nb201_table",
    "string_to_genotype",
]

#: Candidate operations of a NAS-Bench-201 edge; a genotype entry is an index into this.
NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
#: The six edges of a cell, in the order they appear in an arch string (``to<-from``).
NB201_EDGES: tuple[str, ...] = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
#: Number of cells in the space (5 ops ** 6 edges).
NB201_N = 15625

#: Folder holding the shipped data files.
DATA_DIR = Path(__file__).resolve().parent / "data"
NB201_FILE = "nb201.npz"
LATENCY_FILE = "nb201_latency.npz"
SUMS_FILE = "SHA256SUMS"
#: Set to False to skip the SHA-256 check of the data files (not recommended).
VERIFY_CHECKSUMS = True

_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
_OP_INDEX = {op: k for k, op in enumerate(NB201_OPS)}
_FIX = "reinstall hwnas, or regenerate the data with 'python tools/convert_benchmarks.py --shared <benchmarks folder>'"


# --------------------------------------------------------------------------- strings
def _did_you_mean(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(s: object, limit: int = 120) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _malformed(s: object, why: str) -> UsageError:
    return UsageError(
        f"malformed NAS-Bench-201 arch string {_short(s)}: {why}; expected 3 nodes "
        f"with 1, 2 and 3 edges 'op~input', e.g. '{_EXAMPLE}', "
        f"ops: {', '.join(NB201_OPS)}"
    )


def genotype_to_string(ops: Sequence[str]) -> str:
    """Official arch string of a cell given its six edge ops in ``NB201_EDGES`` order.

    >>> genotype_to_string(["nor_conv_3x3"] * 6)
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
    """
    if isinstance(ops, str):
        raise UsageError(
            f"a NAS-Bench-201 genotype is a sequence of 6 op names, not the string "
            f"{_short(ops)} (use string_to_genotype to parse an arch string)"
        )
    ops = tuple(ops)
    if len(ops) != len(NB201_EDGES):
        raise UsageError(
            f"a NAS-Bench-201 genotype has {len(NB201_EDGES)} ops (edges {', '.join(NB201_EDGES)}), got {len(ops)}: {_short(ops)}"
        )
    for op in ops:
        if op not in _OP_INDEX:
            raise UsageError(
                f"unknown NAS-Bench-201 op {_short(op)}"
                f"{_did_you_mean(op, NB201_OPS) if isinstance(op, str) else ''}; "
                f"valid: {', '.join(NB201_OPS)}"
            )
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def string_to_genotype(s: str) -> tuple[str, ...]:
    """Parse an official arch string into its six edge ops (``NB201_EDGES`` order).

    Surrounding whitespace is ignored; anything else malformed (unknown op, wrong
    input index, wrong number of nodes or edges) raises :class:`UsageError`.
    """
    if not isinstance(s, str):
        raise _malformed(s, f"expected a str, got {type(s).__name__}")
    text = s.strip()
    nodes = text.split("+")
    if len(nodes) != 3:
        raise _malformed(s, f"found {len(nodes)} node(s) separated by '+', need 3")
    ops: list[str] = []
    for node_no, node in enumerate(nodes, start=1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise _malformed(s, f"node {node_no} must start and end with '|'")
        edges = node[1:-1].split("|")
        if len(edges) != node_no:
            raise _malformed(s, f"node {node_no} has {len(edges)} edge(s), needs {node_no}")
        for want_input, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep:
                raise _malformed(s, f"edge {_short(edge, 40)} lacks '~input'")
            if op not in _OP_INDEX:
                raise _malformed(s, f"unknown op {_short(op, 40)}{_did_you_mean(op, NB201_OPS)}")
            if src != str(want_input):
                raise _malformed(
                    s,
                    f"edge {_short(edge, 40)} of node {node_no} must read input {want_input}",
                )
            ops.append(op)
    return tuple(ops)


# --------------------------------------------------------------------------- loading
def _read_sums(data_dir: Path) -> dict[str, str]:
    path = data_dir / SUMS_FILE
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"cannot read benchmark checksum file {path} ({exc.__class__.__name__}); {_FIX}") from None
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.strip().partition("  ")
            sums[name.lstrip("*")] = digest.lower()
    return sums


def _load_npz(name: str, data_dir: Path | str | None = None, verify: bool | None = None) -> dict[str, np.ndarray]:
    """All arrays of ``data_dir/name``, checked against SHA256SUMS, as read-only arrays."""
    folder = DATA_DIR if data_dir is None else Path(data_dir)
    path = folder / name
    if verify is None:
        verify = VERIFY_CHECKSUMS
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise HwnasError(f"benchmark data file {path} is missing or unreadable ({exc.__class__.__name__}); {_FIX}") from None
    if verify:
        want = _read_sums(folder).get(name)
        if want is None:
            raise HwnasError(f"benchmark data file {path} is not listed in {folder / SUMS_FILE}; {_FIX}")
        got = hashlib.sha256(blob).hexdigest()
        if got != want:
            raise HwnasError(f"benchmark data file {path} is corrupted (sha256 {got[:12]}..., expected {want[:12]}...); {_FIX}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise HwnasError(
            f"benchmark data file {path} cannot be read ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {_FIX}"
        ) from None
    for arr in arrays.values():
        arr.setflags(write=False)
    return arrays


def _check_shape(path: Path, arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = arrays.get(key)
    if arr is None or arr.shape != shape or arr.dtype == object:
        got = "missing" if arr is None else f"{arr.dtype}{list(arr.shape)}"
        raise HwnasError(f"benchmark data file {path} has a bad array {key!r} ({got}); {_FIX}")
    return arr


# --------------------------------------------------------------------------- accuracies
class NB201Table:
    """All 15,625 NAS-Bench-201 cells with their accuracies, by official arch index.

    ``genotypes[i, e]`` is the op index (into ``NB201_OPS``) on edge ``NB201_EDGES[e]``
    of cell ``i``; ``iso_class[i]`` numbers the NATS-Bench isomorphism classes (cells
    with equal class compute the same function). Accuracies are in %, 200 epochs,
    averaged over the benchmark's training seeds.
    """

    #: metric name -> array name in nb201.npz
    _METRIC_KEYS: ClassVar[dict[str, str]] = {
        "cifar10-valid/valid": "cifar10_valid_valid",
        "cifar10-valid/test": "cifar10_valid_test",
        "cifar10/test": "cifar10_test",
        "cifar100/test": "cifar100_test",
        "imagenet16-120/test": "imagenet16_test",
    }
    #: Valid names for :meth:`metric`.
    METRICS: ClassVar[tuple[str, ...]] = tuple(_METRIC_KEYS)

    def __init__(self, data_dir: Path | str | None = None, verify: bool | None = None) -> None:
        path = (DATA_DIR if data_dir is None else Path(data_dir)) / NB201_FILE
        arrays = _load_npz(NB201_FILE, data_dir, verify)
        self.n: int = NB201_N
        self.genotypes: np.ndarray = _check_shape(path, arrays, "genotype", (NB201_N, 6))
        self.iso_class: np.ndarray = _check_shape(path, arrays, "iso_class", (NB201_N,))
        self._metrics = {name: _check_shape(path, arrays, key, (NB201_N,)) for name, key in self._METRIC_KEYS.items()}
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"NB201Table(n={self.n}, metrics={list(self.METRICS)})"

    def _check_index(self, i: int | np.integer[Any]) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise UsageError(f"NAS-Bench-201 arch index must be an int, got {_short(i)}")
        if not 0 <= i < self.n:
            raise UsageError(f"NAS-Bench-201 arch index {int(i)} is out of range 0..{self.n - 1}")
        return int(i)

    def genotype(self, i: int | np.integer[Any]) -> tuple[str, ...]:
        """The six edge ops of cell ``i``."""
        return tuple(NB201_OPS[k] for k in self.genotypes[self._check_index(i)])

    def arch_string(self, i: int | np.integer[Any]) -> str:
        """Official arch string of cell ``i``."""
        return genotype_to_string(self.genotype(i))

    def index(self, arch_string: str) -> int:
        """Official index of an arch string (UsageError if malformed or unknown)."""
        if self._index is None:
            self._index = {self.arch_string(i): i for i in range(self.n)}
        try:
            return self._index[arch_string]
        except (KeyError, TypeError):
            pass
        ops = string_to_genotype(arch_string)  # raises a precise message if malformed
        canonical = genotype_to_string(ops)
        if canonical in self._index:
            return self._index[canonical]
        raise UsageError(f"arch string {_short(arch_string)} is not in NAS-Bench-201")

    def metric(self, name: str) -> np.ndarray:
        """Read-only float64 array of one metric for all cells, by arch index."""
        try:
            return self._metrics[name]
        except (KeyError, TypeError):
            raise UsageError(
                f"unknown NAS-Bench-201 metric {_short(name)}"
                f"{_did_you_mean(name, self.METRICS) if isinstance(name, str) else ''}; "
                f"valid: {', '.join(self.METRICS)}"
            ) from None


@functools.lru_cache(maxsize=1)
def nb201_table() -> NB201Table:
    """The shipped NAS-Bench-201 table (loaded once, then cached)."""
    return NB201Table()


# --------------------------------------------------------------------------- latencies
@functools.lru_cache(maxsize=1)
def _latency_arrays() -> dict[str, np.ndarray]:
    return _load_latencies(None)


def _load_latencies(data_dir: Path | str | None, verify: bool | None = None) -> dict[str, np.ndarray]:
    path = (DATA_DIR if data_dir is None else Path(data_dir)) / LATENCY_FILE
    arrays = _load_npz(LATENCY_FILE, data_dir, verify)
    for key in arrays:
        _check_shape(path, arrays, key, (NB201_N,))
    return arrays


def latency_devices(data_dir: Path | str | None = None) -> list[str]:
    """Sorted names of the devices with NAS-Bench-201 latency tables."""
    arrays = _latency_arrays() if data_dir is None else _load_latencies(data_dir)
    return sorted(arrays)


def nb201_latency(device: str, data_dir: Path | str | None = None) -> np.ndarray:
    """Read-only float64 latencies (ms) of all cells on ``device``, by arch index."""
    arrays = _latency_arrays() if data_dir is None else _load_latencies(data_dir)
    try:
        return arrays[device]
    except (KeyError, TypeError):
        valid = sorted(arrays)
        raise UsageError(
            f"no NAS-Bench-201 latency table for device {_short(device)}"
            f"{_did_you_mean(device, valid) if isinstance(device, str) else ''}; "
            f"valid: {', '.join(valid)}"
        ) from None
