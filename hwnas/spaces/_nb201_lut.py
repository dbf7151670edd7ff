"""The latency-table block codec of the NAS-Bench-201 space.

Blocks: the stem, the two residual reductions, the head, and each of the 5 ops at each of the 3
stages (``nb201:s<stage>:<op>``); a network is its 4 fixed blocks plus ``cells_per_stage``
copies of its 6 edge ops per stage. The calibration features add the op counts and the node
counts of ORT's optimised cell graph (stored in the table's ``structure`` section, see
:mod:`hwnas.spaces._nb201_graph`): NB201 latency on ORT is not additive over ops, because the
layout transformer fuses and reorders across edges.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.benchdata import NB201_EDGES, NB201_N, NB201_OPS
from hwnas.errors import HwnasError, UsageError
from hwnas.spaces._lut import BlockCodec, BlockTable, Log

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._base import Arch
    from hwnas.spaces.nb201 import NB201Space

_FIXED = ("nb201:stem", "nb201:reduction1", "nb201:reduction2", "nb201:head")
#: The network the table's build and checks measure to see the machine drift (a mid-size cell).
REFERENCE_INDEX = 6111


class NB201Codec(BlockCodec):
    """Blocks and calibration features of :class:`~hwnas.spaces.nb201.NB201Space`."""

    space: NB201Space
    default_calibrate = 100  # more features than the other spaces: op counts and graph structure

    # -- blocks ---------------------------------------------------------------------
    def blocks(self, arch: Arch) -> list[str]:
        arch = self.space.validate(arch)
        n = self.space.cells_per_stage
        keys = list(_FIXED)
        for stage in range(3):
            for edge in NB201_EDGES:
                keys += [f"nb201:s{stage}:{arch[edge]}"] * n
        return keys

    def all_blocks(self, resolutions: Sequence[int] | None = None) -> list[str]:
        self.check_profile_options(resolutions=resolutions)
        return [*_FIXED, *(f"nb201:s{stage}:{op}" for stage in range(3) for op in NB201_OPS)]

    def _stages(self) -> list[tuple[int, int]]:
        """(channels, input size) of the three stages."""
        _, h, _ = self.space.input_shape({})  # nb201's input shape does not depend on the arch
        return [(self.space.channels * 2**i, -(-h // 2**i)) for i in range(3)]

    def build_block(self, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
        from torch import nn

        from hwnas.spaces._nb201_model import ResNetBasicBlock, make_op

        c_img, h, _ = self.space.input_shape({})
        stages = self._stages()
        c0 = stages[0][0]
        if key == "nb201:stem":
            return nn.Sequential(nn.Conv2d(c_img, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0)), (c_img, h, h)
        if m := re.fullmatch(r"nb201:reduction([12])", key):
            i = int(m[1])
            (c_in, size), (c_out, _) = stages[i - 1], stages[i]
            return ResNetBasicBlock(c_in, c_out), (c_in, size, size)
        if key == "nb201:head":
            c, size = stages[2]
            head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, self.space.num_classes))
            return head, (c, size, size)
        if (m := re.fullmatch(r"nb201:s([012]):(\w+)", key)) and m[2] in NB201_OPS:
            c, size = stages[int(m[1])]
            return make_op(m[2], c), (c, size, size)
        raise UsageError(f"{key!r} is not an nb201 block key, e.g. 'nb201:s0:nor_conv_3x3'")

    # -- calibration features ------------------------------------------------------------
    def feature_names(self, structure_names: Sequence[str] = ()) -> list[str]:
        return ["block_sum_ms", *(f"count.{op}" for op in NB201_OPS), *structure_names]

    def features(self, table: BlockTable, arch: Arch) -> np.ndarray:
        arch = self.space.validate(arch)
        total = table.block_sum(self.space, arch)
        ops = [arch[e] for e in NB201_EDGES]
        counts = [sum(o == name for o in ops) for name in NB201_OPS]
        structure = _structure(table)
        return np.concatenate([[total], counts, structure[self.space.index(arch)]]).astype(float)

    # -- profiling ------------------------------------------------------------------------
    def reference_arch(self, resolutions: Sequence[int] | None = None) -> Arch:
        return self.space.from_index(REFERENCE_INDEX)

    def measure_structure(self, provider: str, log: Log) -> dict[str, Any] | None:
        from hwnas.spaces import _nb201_graph as nb201_graph

        log(f"  cell graph structure of {NB201_N:,} cells (each cell's ONNX Runtime-optimised graph; about 100 s on 2 cores) ...")
        from hwnas.search.progress import Heartbeat

        t0 = time.perf_counter()
        beat = Heartbeat(log, "  cell graph structure", total=NB201_N, unit="cells")
        feats = nb201_graph.all_cell_features(provider, progress=lambda i, _n: beat(i))
        log(f"  cell graph structure of {NB201_N:,} cells: done in {time.perf_counter() - t0:.0f} s")
        return {
            "kind": "ORT-optimised node counts of 1 cell and of each further cell",
            "names": nb201_graph.feature_names(),
            "features": feats.tolist(),
        }

    def check_structure(self, data: dict[str, Any], bad: Callable[[str], Exception]) -> list[str]:
        """The cell-structure features: 15,625 rows of finite numbers, one per structure name."""
        st = data.get("structure")
        if not isinstance(st, dict) or not isinstance(st.get("names"), list) or not all(isinstance(n, str) for n in st["names"]):
            raise bad("structure.names missing")
        rows = st.get("features")
        width = len(st["names"])
        if not isinstance(rows, list) or len(rows) != NB201_N:
            raise bad(f"structure.features must have {NB201_N} rows")
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width or not all(_finite(v) for v in row):
                raise bad(f"structure.features row {i} is not {width} finite numbers")
        return list(st["names"])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _structure(table: BlockTable) -> np.ndarray:
    """The table's cell-structure features as an array (cached on the table)."""
    cached = getattr(table, "_structure_cache", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    st = table.data.get("structure")
    if not isinstance(st, dict) or "features" not in st:
        raise HwnasError(
            f"latency table {table.path} lacks the nb201 cell-structure features; rebuild it with 'hwnas profile --space nb201'"
        )
    arr = np.asarray(st["features"], dtype=float)
    if arr.shape[0] != NB201_N:
        raise HwnasError(f"latency table {table.path}: structure features have {arr.shape[0]} rows, expected {NB201_N}; rebuild it")
    table._structure_cache = arr  # type: ignore[attr-defined]
    return arr
