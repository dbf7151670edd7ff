"""Local search as an Optuna sampler (White, Nolen, Savani, "Local search is state of the art
for neural architecture search benchmarks", UAI 2021).

After ``n_init`` random architectures, each proposal is an untried neighbour (one dimension
changed) of the best architecture of the current climb: a hill climb that moves as soon as a
better neighbour is found. When the best has no untried neighbour and no better one, it is a
local optimum. With ``escape`` > 0 the climb then tries up to that many untried *two-change*
neighbours of the optimum, the ones a ridge predictor ranks best, before it gives up, when the
budget is within two changes of it: there a better network often trades a cheaper operation on
one edge for a costlier one on another, two changes that no single change reaches (an iterated
local search's kick, aimed by the predictor). A better one continues the climb from there.
Otherwise the search restarts from a random architecture (a new climb; each trial records its
climb in a system attribute). "Best" is constraint-aware: feasible before infeasible (least
violation first), then the first objective.
With ``screen``, the untried neighbours are tried in the order a ridge predictor fitted on the
evaluated trials ranks them (``_surrogate.py``), so the climb tends to take its best step first;
with ``screen="auto"``, only away from the budget: where a one-change neighbour of the climb's
best is over the budget, the best step trades accuracy against cost, which a predictor of
accuracy alone does not see, and always taking its pick sends every climb to the same place on
the budget's edge, so there the order is random.

Everything is read from the study, so a resumed or distributed search continues the same
climb; trials still running count as tried, so parallel workers do not repeat each other.
Neighbours repeating an evaluated network up to functional equivalence (isomorphic
NAS-Bench-201 cells) and, where latency is cheap to know beforehand, neighbours predicted to
miss the budget are skipped without spending a trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hwnas import _optuna
from hwnas.spaces import Arch, SearchSpace
from hwnas.strategies._common import Feasible, TrialArchs, complete_trials, fitness_keys, propose_unique, search_space, violation
from hwnas.strategies._seeded import SeededSampler
from hwnas.strategies._surrogate import predict_first_objective

if TYPE_CHECKING:
    import optuna

#: Trial system attribute: the climb (0, 1, ... one per restart) a trial belongs to.
CLIMB = "hwnas:local_climb"
#: Trial system attribute of an escape proposal: the key of the local optimum it escapes from.
ESCAPE = "hwnas:local_escape_from"
#: One-change neighbours of the optimum whose own neighbours make an escape's candidates (a bound
#: on the work in spaces with large neighbourhoods: mbconv has 64 neighbours, so 4,096 two-change ones).
ESCAPE_FAN = 16


class LocalSearchSampler(SeededSampler):
    """Best-first hill climbing over a hwnas space's one-change neighbourhoods.

    Args:
        space: the search space (sampling, neighbourhoods, equivalence).
        n_init: random architectures evaluated before the climb starts.
        screen: order untried neighbours by a ridge predictor (True), at random (False), or by
            the predictor except at the budget's edge ("auto").
        escape: two-change neighbours tried at a local optimum before a restart (0: restart at once).
        feasible: optional cheap predicate; neighbours predicted infeasible are skipped.
        seed: seed of the sampler's own generator.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        n_init: int = 10,
        screen: bool | Literal["auto"] = False,
        escape: int = 0,
        feasible: Feasible | None = None,
        seed: int | None = None,
    ) -> None:
        if n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        if escape < 0:
            raise ValueError(f"escape must be >= 0, got {escape}")
        if screen not in (True, False, "auto"):
            raise ValueError(f"screen must be True, False or 'auto', got {screen!r}")
        self.space = space
        self.n_init = n_init
        self.screen = screen
        self.escape = escape
        self.feasible = feasible
        self._init_streams(seed)
        self._codes: dict[int, np.ndarray] = {}
        self._features: dict[int, np.ndarray] = {}
        self._archs = TrialArchs(space)
        self._keys: dict[int, tuple[Any, ...]] = {}
        self._keys_owner: tuple[int, int] | None = None
        self._near: dict[str, list[tuple[Arch, str]]] = {}

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return search_space(self.space)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        trials = complete_trials(study)
        seen = self._archs.tried(study)
        climb = max((int(t.system_attrs.get(CLIMB, 0)) for t in trials), default=0)
        if len(trials) >= self.n_init:
            members = [t for t in trials if int(t.system_attrs.get(CLIMB, 0)) == climb]
            parent = self._climb_from(study, trials, members)
            fresh = self._untried(parent, seen) if parent is not None else []
            if fresh and parent is not None:
                _optuna.set_trial_system_attr(study, trial, CLIMB, climb)
                return dict(self._pick(study, trials, fresh, parent))
            kick = self._escape(study, trials, members, parent, seen) if parent is not None else None
            if kick is not None:
                _optuna.set_trial_system_attr(study, trial, CLIMB, climb)
                _optuna.set_trial_system_attr(study, trial, ESCAPE, self.space.key(parent))  # type: ignore[arg-type]
                return dict(kick)
            climb += 1  # a local optimum (or nothing to climb): restart from a random point
        _optuna.set_trial_system_attr(study, trial, CLIMB, climb)
        arch = propose_unique(lambda: self.space.sample(self._rng), self.space, seen, self.feasible)
        return dict(arch)

    def _climb_from(
        self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial], members: list[optuna.trial.FrozenTrial]
    ) -> Arch | None:
        """The best member of the current climb, moved on to any better neighbour already
        evaluated (by an earlier climb or another strategy) until none is better."""
        if not members:
            return None
        fitness = self._fitness(study, trials)
        by_key: dict[str, optuna.trial.FrozenTrial] = {}
        for t in trials:
            got = self._archs.get(study, t)
            if got is not None:
                k = got[1]
                if k not in by_key or fitness[t.number] < fitness[by_key[k].number]:
                    by_key[k] = t
        best = min(members, key=lambda t: fitness[t.number])
        for _ in range(len(trials)):
            arch = self._archs.arch(study, best)
            if arch is None:
                return None
            known = [by_key[k] for _, k in self._neighbours(arch) if k in by_key]
            better = min(known, key=lambda t: fitness[t.number], default=None)
            if better is None or fitness[better.number] >= fitness[best.number]:
                return arch
            best = better
        return self._archs.arch(study, best)

    def _fitness(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> dict[int, tuple[Any, ...]]:
        """Sort key per trial number, lower is better (feasible first, then the first objective);
        a completed trial's key never changes, so it is computed once."""
        owner = _optuna.study_owner(study)
        if owner != self._keys_owner:
            self._keys_owner, self._keys = owner, {}
        todo = [t for t in trials if _optuna.trial_id(t) not in self._keys]
        if todo:
            for t, k in zip(todo, fitness_keys(todo, list(study.directions), "first"), strict=True):
                self._keys[_optuna.trial_id(t)] = (k, -t.number)
        return {t.number: self._keys[_optuna.trial_id(t)] for t in trials}

    def _neighbours(self, arch: Arch) -> list[tuple[Arch, str]]:
        """Neighbours with their equivalence keys, cached by arch."""
        key = self.space.key(arch)
        got = self._near.get(key)
        if got is None:
            got = self._near[key] = [(n, self.space.equivalence_key(n)) for n in self.space.neighbours(arch)]
        return got

    def _untried(self, parent: Arch, seen: set[str]) -> list[Arch]:
        out, keys = [], set()
        for child, k in self._neighbours(parent):
            if k in seen or k in keys or (self.feasible is not None and not self.feasible(child)):
                continue
            keys.add(k)
            out.append(child)
        return out

    def _escape(
        self,
        study: optuna.Study,
        trials: list[optuna.trial.FrozenTrial],
        members: list[optuna.trial.FrozenTrial],
        optimum: Arch,
        seen: set[str],
    ) -> Arch | None:
        """The untried two-change neighbour of the local ``optimum`` with the best predicted first
        objective, while fewer than ``escape`` of the climb's trials escaped from it and the budget
        is within two changes of the optimum (a network there is over it: predicted so, or found
        so by its evaluation); else None. Away from a budget a restart serves better: it may find
        another basin (NAS-Bench-201 without a budget: 0.86 of 100 searches found one of the two best
        networks with restarts alone, 0.78 with escapes)."""
        key = self.space.key(optimum)
        if self.escape == 0 or sum(1 for t in members if t.system_attrs.get(ESCAPE) == key) >= self.escape:
            return None
        over = self._over_budget(study, trials)
        near = self._neighbours(optimum)
        edge = self.at_budget_edge(optimum, over)
        if len(near) > ESCAPE_FAN:
            near = [near[int(i)] for i in self._rng.choice(len(near), ESCAPE_FAN, replace=False)]
        cands: list[Arch] = []
        keys: set[str] = {self.space.equivalence_key(optimum)}
        for step, _ in near:
            for child, k in self._neighbours(step):
                if k in keys:
                    continue
                keys.add(k)
                if k in over or (self.feasible is not None and not self.feasible(child)):
                    edge = True
                elif k not in seen:
                    cands.append(child)
        if not cands or not edge:
            return None
        return self._best_predicted(study, trials, cands)

    def climb_ends_at_budget_edge(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial], climb: int) -> bool:
        """Whether the best of climb ``climb`` among ``trials`` (the climb's local optimum, once the
        next climb has begun) is at the budget's edge (:meth:`at_budget_edge`)."""
        members = [t for t in trials if int(t.system_attrs.get(CLIMB, 0)) == climb]
        if not members:
            return False
        fitness = self._fitness(study, trials)
        arch = self._archs.arch(study, min(members, key=lambda t: fitness[t.number]))
        return arch is not None and self.at_budget_edge(arch, self._over_budget(study, trials))

    def at_budget_edge(self, arch: Arch, over: set[str]) -> bool:
        """Whether a one-change neighbour of ``arch`` is over the budget: predicted so by the
        feasibility predicate, or found so (its equivalence key is in ``over``)."""
        return any(k in over or (self.feasible is not None and not self.feasible(child)) for child, k in self._neighbours(arch))

    def _over_budget(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> set[str]:
        """Equivalence keys of the evaluated networks found over the budget."""
        out = set()
        for t in trials:
            if violation(t) > 0:
                got = self._archs.get(study, t)
                if got is not None:
                    out.add(got[1])
        return out

    def _pick(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial], fresh: list[Arch], parent: Arch) -> Arch:
        if len(fresh) == 1:
            return fresh[0]
        screen = self.screen
        if screen == "auto":
            screen = not self.at_budget_edge(parent, self._over_budget(study, trials))
        if not screen:
            return fresh[int(self._rng.integers(len(fresh)))]
        return self._best_predicted(study, trials, fresh, ranked=True)

    def _best_predicted(
        self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial], archs: list[Arch], *, ranked: bool = False
    ) -> Arch:
        """The one of ``archs`` with the best predicted first objective (ties broken at random)."""
        cache = self._features if ranked else self._codes
        score = predict_first_objective(self.space, study, trials, archs, cache, ranked=ranked)
        best = np.flatnonzero(score >= score.max() - 1e-12)
        return archs[int(self._rng.choice(best))]

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)
