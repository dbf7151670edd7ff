"""Choosing the architecture once the supernet is trained: which choice each decision keeps.

Two scores per (decision, choice):

* ``alpha``: the log-probability of the architecture parameters (plain DARTS argmax);
* ``perturbation``: how much the supernet's architecture loss on validation data (the
  cross-entropy with the same latency term and weight as in training) rises when that choice is
  taken out of its mixture (the others renormalised). Taking out a slow choice lowers E[LAT],
  so the latency weight counts here as it did in training: a higher weight derives a faster
  network. This is DARTS-PT's selection (Wang et al.,
  "Rethinking Architecture Selection in Differentiable NAS", ICLR 2021): the magnitude of an
  architecture parameter does not say how much the supernet relies on the choice, and it is
  exactly what inflates skip connections; the loss without the choice does say it. Here it is
  measured once for every choice, without DARTS-PT's fine-tuning between edges. A zero choice
  (NB201's ``none``) is never selected this way, as in DARTS' own derivation: removing it only
  rescales the rest of its mixture, which says nothing about the choice.

Either score is then turned into an architecture under the budget: per decision the choice with
the best ``score - mu * latency`` (the additive latency model's per-choice milliseconds), where
the multiplier ``mu >= 0`` is the smallest that brings the exact device latency within the
target (bisection), and the collapse guard's cap on parameter-free choices applies as in
:func:`hwnas.darts.train.derive_picks`. ``mu = 0`` when the unconstrained choice already fits:
then nothing is spent for the sake of spending it. One multiplier treats alike decisions alike
(all of them switch at the same ``mu``), which can leave much of the budget unused; a greedy
fill then takes the upgrades with the best score gained per millisecond while the exact
latency stays within the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.darts.latency import AdditiveLatency
from hwnas.darts.supernet import Supernet
from hwnas.darts.train import derive_picks

SELECTIONS = ("perturbation", "alpha")


@torch.no_grad()
def perturbation_scores(
    supernet: Supernet,
    probabilities: Sequence[Sequence[float]],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str = "cpu",
    *,
    arch_loss: Callable[[float, list[torch.Tensor]], float] | None = None,
) -> list[np.ndarray]:
    """Rise of the architecture loss when each choice is removed from its decision's mixture (the
    rest renormalised), per decision. ``arch_loss(ce, gates)`` turns the mean validation
    cross-entropy under ``gates`` into the loss (default: the cross-entropy itself); batches are
    consumed once and kept."""
    dev = torch.device(device)
    data = [(x.to(dev), y.to(dev)) for x, y in batches]
    gates = [torch.tensor(p, dtype=torch.float32, device=dev) for p in probabilities]
    was = supernet.training
    supernet.eval()

    def loss(g: list[torch.Tensor]) -> float:
        total = sum(float(F.cross_entropy(supernet(x, g), y, reduction="sum")) for x, y in data)
        ce = total / max(1, sum(len(y) for _, y in data))
        return ce if arch_loss is None else arch_loss(ce, g)

    base = loss(gates)
    scores = []
    for d, g in enumerate(gates):
        row = np.zeros(len(g))
        for c in range(len(g)):
            rest = g.clone()
            rest[c] = 0.0
            if float(rest.sum()) <= 0:
                row[c] = np.inf  # the only choice with weight: removing it removes the decision
                continue
            trial = [*gates[:d], rest / rest.sum(), *gates[d + 1 :]]
            row[c] = loss(trial) - base
        for c, label in enumerate(supernet.decisions()[d].choices):
            if label in supernet.zero_choices:
                row[c] = -np.inf
        scores.append(row)
    supernet.train(was)
    return scores


def alpha_scores(probabilities: Sequence[Sequence[float]]) -> list[np.ndarray]:
    return [np.log(np.clip(np.asarray(p, dtype=float), 1e-12, None)) for p in probabilities]


def derive_under_budget(
    supernet: Supernet,
    scores: Sequence[np.ndarray],
    additive: AdditiveLatency,
    exact: Callable[[list[int]], float],
    target_ms: float,
    *,
    max_share: float | None,
    iterations: int = 40,
) -> tuple[list[int], float]:
    """The picks maximising ``sum(score) - mu * LAT`` per decision for the smallest ``mu >= 0``
    whose exact latency is within ``target_ms``; returns (picks, mu). When even the largest
    multiplier tried misses the target, its picks are returned (the caller repairs them)."""

    def picks_at(mu: float) -> list[int]:
        adjusted = [
            torch.as_tensor(np.nan_to_num(s, posinf=1e9, neginf=-1e9) - mu * np.asarray(w))
            for s, w in zip(scores, additive.weights, strict=True)
        ]
        return derive_picks(supernet, adjusted, max_share=max_share)

    picks = picks_at(0.0)
    if exact(picks) <= target_ms:
        return picks, 0.0
    finite = np.concatenate([s[np.isfinite(s)] for s in scores])
    spread = float(finite.max() - finite.min()) if finite.size else 1.0
    lat_step = min((float(np.min(np.diff(np.unique(w)))) for w in additive.weights if len(np.unique(w)) > 1), default=1.0)
    hi = max(spread, 1e-9) / max(lat_step, 1e-9) * 10.0
    if exact(picks_at(hi)) > target_ms:
        return picks_at(hi), hi
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if exact(picks_at(mid)) <= target_ms:
            hi = mid
        else:
            lo = mid
    return fill_budget(supernet, picks_at(hi), scores, exact, target_ms, max_share=max_share), hi


def fill_budget(
    supernet: Supernet,
    picks: list[int],
    scores: Sequence[np.ndarray],
    exact: Callable[[list[int]], float],
    target_ms: float,
    *,
    max_share: float | None,
) -> list[int]:
    """Greedy upgrades within the budget: repeatedly switch the one decision whose better-scored
    choice gains the most score per millisecond added while the exact latency stays within
    ``target_ms`` and the cap on parameter-free choices holds."""
    picks = list(picks)
    decisions = supernet.decisions()
    limit = len(decisions) if max_share is None else int(np.floor(max_share * len(decisions) + 1e-9))
    current = exact(picks)
    for _ in range(sum(len(d.choices) for d in decisions)):
        skips = sum(d.choices[p] in supernet.skip_choices for d, p in zip(decisions, picks, strict=True))
        best: tuple[float, int, int, float] | None = None
        for i, d in enumerate(decisions):
            for c in range(len(d.choices)):
                gain = float(scores[i][c] - scores[i][picks[i]])
                if c == picks[i] or not np.isfinite(gain) or gain <= 0:
                    continue
                if d.choices[c] in supernet.skip_choices and d.choices[picks[i]] not in supernet.skip_choices and skips + 1 > limit:
                    continue
                trial = [*picks[:i], c, *picks[i + 1 :]]
                lat = exact(trial)
                if lat > target_ms:
                    continue
                rate = gain / max(lat - current, 1e-6)
                if best is None or rate > best[0]:
                    best = (rate, i, c, lat)
        if best is None:
            break
        _, i, c, current = best
        picks[i] = c
    return picks
