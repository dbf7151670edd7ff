"""A differentiable expected latency: an additive model over a supernet's decisions.

``LAT(arch) ~ bias + sum_d w[d, choice_d]`` is fitted by least squares on the device's own
latencies: for a benchmark-table device, the measured latencies of the networks in its table
(all 15,625 NAS-Bench-201 cells); for a device profiled here, the predictions of its lookup
table (``hwnas profile``), on architectures drawn uniformly from the supernet's decisions.
Under a policy ``p_d`` over each decision's choices the expectation is then exact for the
model: ``E[LAT] = bias + sum_d p_d . w_d`` (ProxylessNAS, FBNet), and its gradient with
respect to the architecture parameters is what pushes the search toward the budget.
The fit's accuracy on held-out architectures is kept with the model and reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hwnas.cost.latency import LatencyModel, MeasuredLatency
from hwnas.darts.supernet import Supernet
from hwnas.errors import UsageError
from hwnas.stats import prediction_stats


@dataclass
class AdditiveLatency:
    """``bias`` ms plus ``weights[d][c]`` ms for choice ``c`` of decision ``d``."""

    bias: float
    weights: list[np.ndarray]
    source: str
    fit: dict[str, Any] = field(default_factory=dict)

    def of_picks(self, picks: Sequence[int]) -> float:
        return float(self.bias + sum(w[int(p)] for w, p in zip(self.weights, picks, strict=True)))

    def expected(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[LAT] in ms under independent per-decision distributions ``probs`` (differentiable)."""
        total = torch.tensor(self.bias, dtype=probs[0].dtype, device=probs[0].device)
        for p, w in zip(probs, self.weights, strict=True):
            total = total + (p * torch.as_tensor(w, dtype=p.dtype, device=p.device)).sum()
        return total


def _one_hot(picks: np.ndarray, sizes: list[int]) -> np.ndarray:
    cols = []
    for d, n in enumerate(sizes):
        cols.append(np.eye(n)[picks[:, d]])
    return np.concatenate(cols, axis=1)


def fit_additive_latency(supernet: Supernet, model: LatencyModel, *, max_archs: int = 16000, seed: int = 0) -> AdditiveLatency:
    """Fit the additive model on ``model``'s latencies; every pick combination when there are at
    most ``max_archs`` of them, else ``max_archs`` uniform draws. 20 % are held out for the report."""
    if isinstance(model, MeasuredLatency):
        dev, space = model.device.name, model.space.name
        raise UsageError(
            f"a differentiable search needs a latency table for {dev}/{space}, not live measurement; "
            f"build one with 'hwnas profile --device {dev} --space {space}'"
        )
    sizes = [len(d.choices) for d in supernet.decisions()]
    total = int(np.prod(sizes, dtype=object))
    rng = np.random.default_rng(seed)
    if total <= max_archs:
        picks = np.array(list(itertools.product(*[range(n) for n in sizes])), dtype=int)
    else:
        picks = np.stack([rng.integers(n, size=max_archs) for n in sizes], axis=1)
    lat = np.array([model.latency(supernet.derive(p)).ms for p in picks], dtype=float)
    order = rng.permutation(len(picks))
    held = order[: max(1, len(order) // 5)]
    train = order[len(held) :] if len(order) > len(held) else order
    x = _one_hot(picks, sizes)
    a = np.c_[x[train], np.ones(len(train))]
    coef, *_ = np.linalg.lstsq(a, lat[train], rcond=None)
    bias = float(coef[-1])
    weights, k = [], 0
    for n in sizes:
        weights.append(coef[k : k + n].copy())
        k += n
    # Held-out accuracy; relative errors over networks with a real latency (degenerate NB201
    # cells whose output is cut off sit at ~0 ms in the benchmark tables).
    pred = x[held] @ coef[:-1] + bias
    real = lat[held] > 0.05 * np.median(lat)
    sub = np.flatnonzero(real)[:2000]
    stats = prediction_stats(pred[sub], lat[held][sub])
    ss_res = float(np.sum((pred - lat[held]) ** 2))
    ss_tot = float(np.sum((lat[held] - lat[held].mean()) ** 2)) or 1.0
    stats.update({"r2": 1.0 - ss_res / ss_tot, "fitted_on": len(train), "held_out": len(held), "enumerated": total <= max_archs})
    describe = model.describe()
    source = f"additive fit on {describe.get('device', '?')} {describe.get('source', '?')} latencies"
    return AdditiveLatency(bias, weights, source, stats)
