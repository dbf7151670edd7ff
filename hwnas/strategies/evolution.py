"""Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019, "AmoebaNet").

Each new candidate: draw ``tournament`` members of the population (the ``population`` most
recent completed trials), take the fittest, mutate it. The population ages: the oldest
member leaves, not the worst, which keeps the search exploring. Fitness is multi-objective and
constraint-aware: feasible before infeasible (the least violation first), then Pareto rank,
then the first objective (accuracy). The population is read from the study on every call, so
a resumed or distributed search continues the same evolution.

hwnas adds two things Optuna cannot know: children that repeat an evaluated network (up to
functional equivalence, e.g. isomorphic NAS-Bench-201 cells) are mutated again, and where
latency is cheap to know beforehand (a table), children predicted to miss the budget are
mutated again instead of spending a trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.spaces import SearchSpace
from hwnas.strategies._common import Feasible, TrialArchs, arch_of, complete_trials, fitness_keys, propose_unique, search_space
from hwnas.strategies._seeded import SeededSampler
from hwnas.strategies._surrogate import predict_first_objective

if TYPE_CHECKING:
    import optuna


class RegularizedEvolutionSampler(SeededSampler):
    """Aging evolution over a hwnas search space.

    Args:
        space: the search space (for sampling, mutation and equivalence).
        population: P, the number of most recent completed trials that form the population.
        tournament: S, members drawn per selection (S <= P).
        mutations: dimensions changed per child.
        selection: ``"pareto"`` (rank, then accuracy) or ``"first"`` (accuracy only).
        screen: candidate children drawn per proposal; above 1, a ridge predictor fitted on the
            evaluated trials picks the most promising (predictor-guided evolution); 1 is plain REA.
        feasible: optional cheap predicate; children predicted infeasible are redrawn.
        seed: seed of the sampler's own generator.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        population: int = 20,
        tournament: int = 10,
        mutations: int = 1,
        selection: str = "pareto",
        screen: int = 3,
        feasible: Feasible | None = None,
        seed: int | None = None,
    ) -> None:
        if population < 2:
            raise ValueError(f"population must be >= 2, got {population}")
        if not 1 <= tournament <= population:
            raise ValueError(f"tournament must be in 1..population ({population}), got {tournament}")
        if mutations < 1:
            raise ValueError(f"mutations must be >= 1, got {mutations}")
        if selection not in ("pareto", "first"):
            raise ValueError(f"selection must be 'pareto' or 'first', got {selection!r}")
        if screen < 1:
            raise ValueError(f"screen must be >= 1, got {screen}")
        self.space = space
        self.screen = screen
        self._codes: dict[int, np.ndarray] = {}
        self.population = population
        self.tournament = tournament
        self.mutations = mutations
        self.selection = selection
        self.feasible = feasible
        self._init_streams(seed)
        self._archs = TrialArchs(space)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return search_space(self.space)

    def select_parent(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial:
        """Tournament selection among the ``population`` most recent trials (aging)."""
        population = trials[-self.population :]
        keys = fitness_keys(population, list(study.directions), self.selection)
        picks = self._rng.choice(len(population), size=min(self.tournament, len(population)), replace=False)
        best = min(picks, key=lambda i: (keys[i], -population[i].number))
        return population[int(best)]

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        trials = complete_trials(study)
        seen = self._archs.tried(study)
        if len(trials) < self.population:
            arch = propose_unique(lambda: self.space.sample(self._rng), self.space, seen, self.feasible)
            return dict(arch)
        parent = arch_of(self.space, self.select_parent(study, trials))
        assert parent is not None
        children = []
        for _ in range(self.screen):
            child = propose_unique(
                lambda: self.space.mutate(parent, self._rng, self.mutations),
                self.space,
                seen,
                self.feasible,
                tries=50,
                rescue=lambda: self.space.sample(self._rng),
            )
            if self.space.equivalence_key(child) in seen:
                break  # exhausted: nothing new left to screen
            seen.add(self.space.equivalence_key(child))
            children.append(child)
        if len(children) <= 1:
            return dict(children[0] if children else child)
        return dict(children[int(np.argmax(predict_first_objective(self.space, study, trials, children, self._codes)))])

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)
