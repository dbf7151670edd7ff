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

The multiplier trusts the additive model, and a cell's latency is not additive: a zero choice
(NB201's ``none``) cuts off the edges behind it, so the fastest cells within the cap use it (on
pixel3 the fastest capped cell runs at 1.58 ms, one with no ``none`` at 3.85 ms), while at the
multiplier's ceiling the model's cheapest picks ran at 4.59 ms, and a perturbation score never
selects ``none`` at all. So when even the ceiling misses the target, the choice is made on the
exact latency where the space is small enough to enumerate (NB201: 15,625 cells, 8,505 within
the cap): the best-scored architecture within the cap whose exact latency fits, a zero choice
counting below every other choice (taken only when nothing without it fits); where none fits,
the fastest one. Whenever an architecture within the cap meets the budget, the derived one does.
Larger spaces (MBConv, whose latency is a sum over its blocks) keep the ceiling's picks and the
greedy repair (:func:`hwnas.darts.train.repair_to_budget`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.darts.latency import AdditiveLatency
from hwnas.darts.supernet import Supernet
from hwnas.darts.train import derive_picks, repair_to_budget

SELECTIONS = ("perturbation", "alpha")
#: The exact search enumerates a supernet's architectures when there are at most this many.
MAX_ENUMERATED = 16_000


@torch.no_grad()
def perturbation_scores(
    supernet: Supernet,
    probabilities: Sequence[Sequence[float]],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str = "cpu",
    *,
    arch_loss: Callable[[float, list[torch.Tensor]], float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Rise of the architecture loss when each choice is removed from its decision's mixture (the
    rest renormalised), per decision. ``arch_loss(ce, gates)`` turns the mean validation
    cross-entropy under ``gates`` into the loss (default: the cross-entropy itself); batches are
    consumed once and kept. ``progress(n)`` is told the choices scored so far, after each."""
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
    scored = 0
    for d, g in enumerate(gates):
        row = np.zeros(len(g))
        for c in range(len(g)):
            if progress is not None:
                progress(scored)
            scored += 1
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
    multiplier tried misses the target: the exact search's picks (:func:`best_within_budget`)
    with ``mu = inf`` where the space can be enumerated, else the ceiling's picks (the caller
    repairs them)."""

    def picks_at(mu: float) -> list[int]:
        adjusted = [torch.as_tensor(_finite(s) - mu * np.asarray(w)) for s, w in zip(scores, additive.weights, strict=True)]
        return derive_picks(supernet, adjusted, max_share=max_share)

    picks = picks_at(0.0)
    if exact(picks) <= target_ms:
        return picks, 0.0
    finite = np.concatenate([s[np.isfinite(s)] for s in scores])
    spread = float(finite.max() - finite.min()) if finite.size else 1.0
    lat_step = min((float(np.min(np.diff(np.unique(w)))) for w in additive.weights if len(np.unique(w)) > 1), default=1.0)
    hi = max(spread, 1e-9) / max(lat_step, 1e-9) * 10.0
    if exact(picks_at(hi)) > target_ms:
        found = best_within_budget(supernet, scores, exact, target_ms, max_share=max_share)
        return (picks_at(hi), hi) if found is None else (found[0], math.inf)
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


def _finite(s: np.ndarray) -> np.ndarray:
    """Scores with +inf (a choice that must stay) and -inf (a zero choice) as +-1e9: they then
    rank above, or below, every real score, and a sum of them still orders architectures."""
    return np.nan_to_num(np.asarray(s, dtype=float), posinf=1e9, neginf=-1e9)


def capped_architectures(supernet: Supernet, max_share: float | None) -> np.ndarray | None:
    """Every pick combination with at most ``max_share`` of the decisions on a parameter-free
    choice, as an int array (architectures, decisions); None when the supernet has more than
    :data:`MAX_ENUMERATED` combinations."""
    decisions = supernet.decisions()
    sizes = [len(d.choices) for d in decisions]
    if math.prod(sizes) > MAX_ENUMERATED:
        return None
    grid = np.array(list(itertools.product(*[range(n) for n in sizes])), dtype=np.int64)
    if max_share is None:
        return grid
    free = np.zeros(len(grid), dtype=np.int64)
    for i, d in enumerate(decisions):
        free += np.isin(grid[:, i], [c for c, label in enumerate(d.choices) if label in supernet.skip_choices])
    return grid[free <= math.floor(max_share * len(decisions) + 1e-9)]


def best_within_budget(
    supernet: Supernet,
    scores: Sequence[np.ndarray],
    exact: Callable[[list[int]], float],
    target_ms: float,
    *,
    max_share: float | None,
) -> tuple[list[int], bool] | None:
    """The exact search: (picks, True) for the best-scored architecture within the cap whose exact
    latency is within ``target_ms``, else (the fastest within the cap, False); None when the
    supernet has too many architectures to enumerate. Architectures are tried best score first, so
    only those scored above the answer are timed."""
    grid = capped_architectures(supernet, max_share)
    if grid is None:
        return None
    total = np.zeros(len(grid))
    for i, s in enumerate(scores):
        total += _finite(s)[grid[:, i]]
    fastest: tuple[float, list[int]] | None = None
    for k in np.argsort(-total, kind="stable"):
        picks = grid[k].tolist()
        lat = exact(picks)
        if lat <= target_ms:
            return picks, True
        if fastest is None or lat < fastest[0]:
            fastest = (lat, picks)
    assert fastest is not None  # the grid holds at least the all-parametric architecture
    return fastest[1], False


@dataclass
class Derivation:
    """The architecture a trained supernet gives under a budget, and how it was reached."""

    #: The final picks (after the budget repair).
    picks: list[int]
    #: The selection's picks, before the repair.
    selected: list[int]
    #: The latency multiplier; ``inf`` where the exact search chose.
    multiplier: float
    repairs: list[str] = field(default_factory=list)


def derive_architecture(
    supernet: Supernet,
    scores: Sequence[np.ndarray],
    probabilities: Sequence[Sequence[float]],
    additive: AdditiveLatency,
    exact: Callable[[list[int]], float],
    target_ms: float,
    *,
    max_share: float | None,
) -> Derivation:
    """The selection under the budget (:func:`derive_under_budget`), then the greedy repair
    on the exact latency where it still misses (:func:`~hwnas.darts.train.repair_to_budget`)."""
    selected, mu = derive_under_budget(supernet, scores, additive, exact, target_ms, max_share=max_share)
    picks, repairs = repair_to_budget(supernet, selected, [list(p) for p in probabilities], exact, target_ms)
    return Derivation(picks, selected, mu, repairs)
