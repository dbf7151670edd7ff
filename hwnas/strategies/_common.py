"""What hwnas's own samplers share: reading the study's history as archs and fitness."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas import _optuna
from hwnas.pareto import is_non_dominated
from hwnas.spaces import Arch, SearchSpace
from hwnas.trials import violation as trials_violation

if TYPE_CHECKING:
    import optuna

#: Predicts whether an arch meets the budgets before any trial is spent on it (None: unknown).
Feasible = Callable[[Arch], bool]


def search_space(space: SearchSpace) -> dict[str, Any]:
    import optuna

    return {d.name: optuna.distributions.CategoricalDistribution(list(d.choices)) for d in space.dimensions()}


def arch_of(space: SearchSpace, trial: optuna.trial.FrozenTrial) -> Arch | None:
    """The canonical arch of a trial, or None if the trial lacks some dimension."""
    try:
        return space.canonical({d.name: trial.params[d.name] for d in space.dimensions()})
    except KeyError:
        return None


class TrialArchs:
    """The canonical arch and equivalence key of each trial, computed once per completed trial
    (its parameters are final) and kept by trial id: a sampler reads the whole history on every
    proposal, and recomputing keys made that O(trials) in Python per trial."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._owner: tuple[int, int] | None = None
        self._done: dict[int, tuple[Arch, str] | None] = {}

    def get(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple[Arch, str] | None:
        import optuna

        owner = _optuna.study_owner(study)
        if owner != self._owner:
            self._owner, self._done = owner, {}
        if _optuna.trial_id(trial) in self._done:
            return self._done[_optuna.trial_id(trial)]
        arch = arch_of(self.space, trial)
        out = None if arch is None else (arch, self.space.equivalence_key(arch))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            self._done[_optuna.trial_id(trial)] = out
        return out

    def arch(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Arch | None:
        got = self.get(study, trial)
        return None if got is None else got[0]

    def tried(self, study: optuna.Study) -> set[str]:
        """Equivalence keys of every completed or running trial (running: a parallel worker's)."""
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        out = set()
        for t in _optuna.cached_trials(study, states):
            got = self.get(study, t)
            if got is not None:
                out.add(got[1])
        return out


def violation(trial: optuna.trial.FrozenTrial) -> float:
    """Total constraint violation (0 when feasible, :func:`hwnas.trials.is_feasible`)."""
    return trials_violation(trial.constraints)


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    trials = _optuna.cached_trials(study, (optuna.trial.TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def fitness_keys(trials: list[optuna.trial.FrozenTrial], directions: list[Any], selection: str) -> list[tuple[float, ...]]:
    """Sort keys, lower is better: feasible before infeasible (by violation), then by Pareto
    rank among the feasible (``selection="pareto"``) with the first objective as tie-break, or by
    the first objective alone (``selection="first"``)."""
    import optuna

    signs = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions])
    keys: list[tuple[float, ...]] = [(1.0, violation(t), 0.0) for t in trials]
    feasible = [i for i, t in enumerate(trials) if violation(t) == 0.0]
    if not feasible:
        return keys
    values = np.array([trials[i].values for i in feasible], dtype=float) * signs  # minimise all
    rank = np.zeros(len(feasible), dtype=int)
    if selection == "pareto" and values.shape[1] > 1:
        remaining = np.arange(len(feasible))
        level = 0
        while remaining.size:
            mask = is_non_dominated(values[remaining], [False] * values.shape[1])
            rank[remaining[mask]] = level
            remaining = remaining[~mask]
            level += 1
    for j, i in enumerate(feasible):
        keys[i] = (0.0, float(rank[j]), float(values[j, 0]))
    return keys


#: Uniform draws a proposal may take to find a new feasible network when its own draws found none.
RESCUE_TRIES = 2000


def propose_unique(
    draw: Callable[[], Arch],
    space: SearchSpace,
    seen: set[str],
    feasible: Feasible | None,
    *,
    tries: int = 100,
    rescue: Callable[[], Arch] | None = None,
    rescue_tries: int = RESCUE_TRIES,
) -> Arch:
    """Draw until the arch is new (up to functional equivalence) and predicted feasible; bounded.

    When ``tries`` draws find none (a parent whose neighbourhood is exhausted), ``rescue`` (e.g.
    a uniform sample) gets ``rescue_tries``: the feasible networks not yet tried can be a small
    share of the space late in a search (under a tight budget many feasible cells are the same
    network), and a draw costs microseconds. Then, so that a small or exhausted space never
    hangs the search, the first feasible arch seen (its trial reuses a tried network: no budget
    is missed), else the first new one, else the last drawn, is returned.
    """
    new_fallback = feasible_fallback = None
    arch = draw()
    for source, n in ((draw, tries), (rescue, rescue_tries)) if rescue is not None else ((draw, tries),):
        for _ in range(n):
            new = space.equivalence_key(arch) not in seen
            ok = feasible is None or feasible(arch)
            if new and ok:
                return arch
            if new and new_fallback is None:
                new_fallback = arch
            if ok and feasible_fallback is None:
                feasible_fallback = arch
            arch = source()  # type: ignore[operator]
    if feasible_fallback is not None:
        return feasible_fallback
    return new_fallback if new_fallback is not None else arch
