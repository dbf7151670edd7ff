"""Pareto utilities as pure array functions (after BoTorch's ``is_non_dominated``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _to_min(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Flip maximised columns so every objective is minimised; NaN rows become +inf (dominated)."""
    y = np.asarray(values, dtype=float).copy()
    if y.ndim != 2 or y.shape[1] != len(maximize):
        raise ValueError(f"values must have shape (n, {len(maximize)}), got {y.shape}")
    for j, mx in enumerate(maximize):
        if mx:
            y[:, j] = -y[:, j]
    y[np.isnan(y).any(axis=1)] = np.inf
    return y


def is_non_dominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n, m) that no other row dominates.

    A row dominates another when it is no worse in every objective and better in one.
    Duplicated optimal rows are all kept. Rows containing NaN are never non-dominated
    (unless every row has NaN, in which case none is).
    """
    y = _to_min(values, maximize)
    n = y.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    le = (y[:, None, :] <= y[None, :, :]).all(axis=2)  # le[i, j]: i no worse than j
    lt = (y[:, None, :] < y[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    finite = np.isfinite(y).all(axis=1)
    return ~dominated & finite


def hypervolume_2d(values: np.ndarray, reference: Sequence[float], maximize: Sequence[bool]) -> float:
    """Area dominated by the points of a 2-objective problem and bounded by ``reference``.

    Points not strictly better than the reference in both objectives contribute nothing.
    """
    y = _to_min(values, maximize)
    ref = _to_min(np.asarray([reference], dtype=float), maximize)[0]
    y = y[np.isfinite(y).all(axis=1) & (y < ref).all(axis=1)]
    if len(y) == 0:
        return 0.0
    y = y[is_non_dominated(y, [False, False])]
    y = y[np.argsort(y[:, 0])]
    area = 0.0
    prev_second = ref[1]
    for first, second in y:
        area += (ref[0] - first) * (prev_second - second)
        prev_second = second
    return float(area)
