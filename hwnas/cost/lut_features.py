"""Features of an architecture for a latency table's calibration model: functions over the
space's block codec (:meth:`~hwnas.spaces.SearchSpace.lut_codec`).

Every space starts from the sum of its block latencies in the table and adds what makes its
latency non-additive (NB201: op counts and the node counts of ORT's optimised cell graph;
MBConv: weights and expanded activations); see the codecs in ``hwnas/spaces``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.spaces import Arch, BlockTable, SearchSpace


def feature_names(space: SearchSpace, structure_names: Sequence[str] | None = None) -> list[str]:
    """Names of :func:`features` of ``space``, given the names of its table's structure section."""
    return space.lut_codec().feature_names(structure_names or ())


def features(table: BlockTable, space: SearchSpace, arch: Arch) -> np.ndarray:
    """The calibration model's inputs for ``arch`` read from ``table``."""
    return space.lut_codec().features(table, arch)
