"""Features of an architecture for a latency table's calibration model, per space.

Every space starts from the sum of its block latencies in the table. NB201 adds its op
counts and the node counts of ORT's optimised cell graph (see :mod:`hwnas.cost.nb201_graph`);
MBConv adds its weight count and the size of its expanded activations: blocks measured alone
run from a warm cache, so the sum underestimates a network by an amount that grows with how
much memory the network streams through (measured: the raw sum is about 8 % low at 224 px).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hwnas.errors import HwnasError
from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    from hwnas.cost.lut import LatencyTable


def feature_names(space: SearchSpace, structure_names: list[str] | None = None) -> list[str]:
    if space.name == "nb201":
        from hwnas.benchdata import NB201_OPS

        return ["block_sum_ms", *[f"count.{op}" for op in NB201_OPS], *(structure_names or [])]
    if space.name == "mbconv":
        return ["block_sum_ms", "weights_m", "expanded_activations_m"]
    return ["block_sum_ms"]


def features(table: LatencyTable, space: SearchSpace, arch: Arch) -> np.ndarray:
    arch = space.validate(arch)
    total = table.block_sum(space, arch)
    if space.name == "nb201":
        from hwnas.benchdata import NB201_EDGES
        from hwnas.cost.nb201_graph import op_counts

        ops = [arch[e] for e in NB201_EDGES]
        structure = _nb201_structure(table)
        index = space.index(arch)  # type: ignore[attr-defined]
        return np.concatenate([[total], op_counts(ops), structure[index]]).astype(float)
    if space.name == "mbconv":
        from hwnas.cost.lut_blocks import blocks_of

        keys = blocks_of(space, arch)
        weights = sum(_mb_weights(k) for k in keys) / 1e6
        activations = sum(_mb_expanded_activations(k) for k in keys) / 1e6
        return np.array([total, weights, activations], dtype=float)
    return np.array([total], dtype=float)


def _mb_weights(key: str) -> int:
    """Weights of an mbconv block key (convolutions and the classifier; BatchNorm folded)."""
    parts = key.split(":")
    if parts[1] == "stem":
        return 27 * int(parts[2])
    if parts[1] == "head":
        c_in, last = map(int, parts[2].split("-"))
        return c_in * last + last * int(parts[4][1:])
    c_in, c_out = map(int, parts[1].split("-"))
    k, e = int(parts[2][1:]), int(parts[3][1:])
    hidden = c_in * e
    return (c_in * hidden if e != 1 else 0) + hidden * k * k + hidden * c_out


def _mb_expanded_activations(key: str) -> int:
    """Elements of the expanded tensor before and after the depthwise conv of a block."""
    parts = key.split(":")
    if parts[1] in ("stem", "head"):
        return 0
    c_in = int(parts[1].split("-")[0])
    e, s, h = int(parts[3][1:]), int(parts[4][1:]), int(parts[5][1:])
    return c_in * e * (h * h + (-(-h // s)) ** 2)


def _nb201_structure(table: LatencyTable) -> np.ndarray:
    cached = getattr(table, "_structure_cache", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    st = table.data.get("structure")
    if not isinstance(st, dict) or "features" not in st:
        raise HwnasError(
            f"latency table {table.path} lacks the nb201 cell-structure features; rebuild it with 'hwnas profile --space nb201'"
        )
    arr = np.asarray(st["features"], dtype=float)
    from hwnas.benchdata import NB201_N

    if arr.shape[0] != NB201_N:
        raise HwnasError(f"latency table {table.path}: structure features have {arr.shape[0]} rows, expected {NB201_N}; rebuild it")
    table._structure_cache = arr  # type: ignore[attr-defined]
    return arr
