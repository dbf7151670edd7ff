"""The default strategy: a budget-focused local search interleaved with front-covering proposals.

``hwnas search --latency X`` asks for the best network under X, and for the accuracy/latency
front below it. Local search (White et al., UAI 2021; ``local.py``) finds the best network under
one budget with the fewest accuracy evaluations, but spends them near that network, so it covers
the rest of the front poorly; TPE and NSGA-II cover the front and rarely reach the best network.

This sampler first runs the local search alone: the best network under the budget is what was
asked for. Once its first climb reaches a local optimum at the budget's edge, or its second climb
one anywhere (or after twice as many trials as the space's encoding has features, 60 on
NAS-Bench-201 and 298 on mbconv, twice that when the first climb ended away from the budget, if
no climb ends sooner), every ``front_every``-th proposal (every fourth by default) goes to the
front and the others to the local search:

* **focus** proposals are the local search's (hill climbing through untried one-change
  neighbours of the climb's best, in the order a ridge predictor ranks them away from the budget
  and in random order at its edge; at a local optimum within two changes of the budget, up to
  three two-change neighbours a ridge predictor ranks best; then a restart), with its own
  constraint-aware fitness: feasible first, then the first objective;
* **front** proposals maximise the *predicted hypervolume improvement* over the study's feasible
  front (Emmerich et al. 2006, expected-improvement screening reduced to a point prediction):
  candidates are the untried neighbours of the front's members and a few uniform samples (none
  whose output ignores the input: such networks are the cheapest, but no network at all); a
  ridge regression on the space's encoding, fitted on the evaluated trials, predicts both
  objectives of each (``_surrogate.py``), and the candidate whose predicted point adds the most
  area to the front is proposed.

Both read everything from the study (the phase of a proposal is the count of completed trials,
the climb is each trial's ``hwnas:local_climb`` system attribute), so a resumed or distributed
search continues where it stopped. With a single objective, every proposal is a focus one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hwnas import _optuna
from hwnas.pareto import is_non_dominated
from hwnas.spaces import Arch, SearchSpace
from hwnas.strategies._common import Feasible, TrialArchs, complete_trials, propose_unique, search_space, violation
from hwnas.strategies._seeded import SeededSampler
from hwnas.strategies._surrogate import RidgePredictor
from hwnas.strategies.local import CLIMB, LocalSearchSampler

if TYPE_CHECKING:
    import optuna

#: CLIMB value of a front proposal: it belongs to no climb of the local search.
NO_CLIMB = -1
#: Candidates scored per front proposal (a bound on the work for spaces with large neighbourhoods).
MAX_CANDIDATES = 512
#: Ridge penalty of the front's predictors: few trials, so mild; 1.0 underfits a cost table's
#: near-additive per-operation latencies.
RIDGE_LAM = 0.1


class HybridSampler(SeededSampler):
    """Local search toward the best feasible network, with every ``front_every``-th proposal
    spent on the predicted largest gain in hypervolume of the feasible front.

    Args:
        space: the search space (sampling, neighbourhoods, encoding, equivalence).
        n_init: random architectures evaluated before either phase starts.
        front_every: once the front phase has started, every ``front_every``-th proposal is a
            front one (2: every other one); 0 turns the front phase off (plain local search).
        front_start: the front phase starts at the latest after this many completed trials (twice
            as many when the first climb did not end at the budget's edge; see
            :meth:`front_phase_start`). None: twice the length of the space's encoding.
        pool: uniform samples added to the front candidates (beside the front's neighbours).
        screen: the order in which the local search tries untried neighbours: a ridge
            predictor's (True), random (False), or the predictor's except at the budget's edge
            ("auto", the default; see ``local.py``). Always the predictor's sent every
            constrained climb the same way, to the same place on the budget's edge; at random,
            climbs away from the budget took more queries.
        escape: two-change neighbours the local search tries at a local optimum before it
            restarts (see ``local.py``).
        feasible: optional cheap predicate; candidates predicted infeasible are skipped.
        seed: seed of the sampler's own generator.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        n_init: int = 10,
        front_every: int = 4,
        front_start: int | None = None,
        pool: int = 64,
        screen: bool | Literal["auto"] = "auto",
        escape: int = 3,
        feasible: Feasible | None = None,
        seed: int | None = None,
    ) -> None:
        # The local search checks its own arguments (n_init, escape) and holds the space and predicate.
        self._local = LocalSearchSampler(space=space, n_init=n_init, screen=screen, escape=escape, feasible=feasible, seed=seed)
        if front_every < 0 or front_every == 1:
            raise ValueError(f"front_every must be 0 (no front phase) or >= 2, got {front_every}")
        if front_start is not None and front_start < n_init:
            raise ValueError(f"front_start must be >= n_init ({n_init}), got {front_start}")
        if pool < 0:
            raise ValueError(f"pool must be >= 0, got {pool}")
        self.front_every = front_every
        self.pool = pool
        self.front_start = 2 * max(n_init, len(space.encode(space.smallest()))) if front_start is None else front_start
        self._init_streams(seed)
        self._archs = TrialArchs(space)
        self._codes: dict[int, np.ndarray] = {}
        self._degen: dict[int, bool] = {}
        self._keys: dict[int, str] = {}  # canonical key by trial id, for completed trials
        self._owner: tuple[int, int] | None = None

    @property
    def space(self) -> SearchSpace:
        return self._local.space

    @property
    def n_init(self) -> int:
        return self._local.n_init

    @property
    def feasible(self) -> Feasible | None:
        return self._local.feasible

    def _init_streams(self, seed: int | None) -> None:
        super()._init_streams(seed)
        if hasattr(self, "_local"):  # the climb's own stream, derived from this one's seed
            self._local._init_streams(None if seed is None else int(self._rng.integers(2**32)))

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._local.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return search_space(self.space)

    def is_front_turn(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> bool:
        """Whether the proposal after the completed ``trials`` (by number) is a front one: every
        ``front_every``-th once the front phase has started (:meth:`front_phase_start`)."""
        if self.front_every == 0 or len(study.directions) < 2:
            return False
        start = self.front_phase_start(study, trials)
        done = len(trials)
        return done >= start and (done - start) % self.front_every == self.front_every - 1

    def front_phase_start(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> int:
        """Completed trials after which the front phase starts (``len(trials)`` or more: not yet).

        When the first climb has ended at the budget's edge (a one-change neighbour of its
        optimum is over the budget), the budget shapes the best network and the front's
        proposals near it help find it: the phase starts there, or after ``front_start`` trials
        if sooner. Otherwise the budget did not bind the climb and the best network is the local
        search's to find alone: the phase starts when the second climb ends, or after twice
        ``front_start`` trials (NAS-Bench-201 without a budget, climbs in random order, seeds
        0-99 of ``benchmarks/strategies.py``: mean test accuracy at 100 queries 94.281 % with
        the phase after the first climb, 94.298 % after the second)."""
        ends = [next((i for i, t in enumerate(trials) if int(t.system_attrs.get(CLIMB, 0)) > c), None) for c in (0, 1)]
        if ends[0] is not None and self._local.climb_ends_at_budget_edge(study, trials[: ends[0]], 0):
            return max(self.n_init, min(ends[0], self.front_start))
        return max(self.n_init, min(len(trials) if ends[1] is None else ends[1], 2 * self.front_start))

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if _optuna.study_owner(study) != self._owner:  # the caches below are by trial id, valid in one study
            self._owner, self._codes, self._degen, self._keys = _optuna.study_owner(study), {}, {}, {}
        trials = complete_trials(study)
        if not self.is_front_turn(study, trials):
            return self._local.sample_relative(study, trial, search_space)
        _optuna.set_trial_system_attr(study, trial, CLIMB, NO_CLIMB)
        return dict(self._front_proposal(study, trials))

    def _front_proposal(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> Arch:
        import optuna

        sign = np.array([1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions[:2]])
        # Both objectives of every trial that has them; an over-budget trial has its cost (which
        # trains the cost model) but no accuracy.
        rows, codes, ok = [], [], []
        for t in trials:
            if t.values is None or len(t.values) < 2 or not np.isfinite(t.values[1]):
                continue
            code = self._codes.get(_optuna.trial_id(t))
            if code is None:
                arch = self._archs.arch(study, t)
                if arch is None:
                    continue
                code = self._codes[_optuna.trial_id(t)] = self.space.encode(arch)
            rows.append(t)
            codes.append(code)
            ok.append(violation(t) == 0 and bool(np.isfinite(t.values[0])) and not self._degenerate(study, t))
        feasible_rows = np.flatnonzero(ok)
        if len(feasible_rows) < 3:
            return propose_unique(lambda: self.space.sample(self._rng), self.space, self._archs.tried(study), self.feasible)
        y = np.array([t.values[:2] for t in rows], dtype=float) * sign  # both maximised
        x = np.array(codes)
        fy = y[feasible_rows]
        front = [rows[feasible_rows[i]] for i in np.flatnonzero(is_non_dominated(fy, [True, True]))]
        archs = self._candidates(study, front)
        if not archs:
            return propose_unique(lambda: self.space.sample(self._rng), self.space, self._archs.tried(study), self.feasible)
        xc = np.array([self.space.encode(a) for a in archs])
        pred = np.column_stack(
            [
                RidgePredictor(RIDGE_LAM).fit(x[feasible_rows], fy[:, 0]).predict(xc),
                RidgePredictor(RIDGE_LAM).fit(x, y[:, 1]).predict(xc),
            ]
        )
        gain = hypervolume_gain(fy, pred)
        best = np.flatnonzero(gain >= gain.max() - 1e-12)
        return archs[int(self._rng.choice(best))]

    def _candidates(self, study: optuna.Study, front: list[optuna.trial.FrozenTrial]) -> list[Arch]:
        """Untried, predicted-feasible, non-degenerate neighbours of the front's members and uniform samples, in a
        random order, at most MAX_CANDIDATES. Untried means no trial has the same canonical arch:
        a functionally equivalent cell is a candidate, since its cost can differ (a cost table
        measures the operations that do not reach the output)."""
        seen = self._tried_keys(study)
        drawn: list[Arch] = []
        for t in front:
            arch = self._archs.arch(study, t)
            if arch is not None:
                drawn.extend(self.space.neighbours(arch))
        drawn.extend(self.space.sample(self._rng) for _ in range(self.pool))
        out: dict[str, Arch] = {}
        for i in self._rng.permutation(len(drawn)):
            child = drawn[int(i)]
            k = self.space.key(child)
            if k not in seen and k not in out and (self.feasible is None or self.feasible(child)) and not self.space.degenerate(child):
                out[k] = child
                if len(out) >= MAX_CANDIDATES:
                    break
        return list(out.values())

    def _degenerate(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether the trial's network ignores its input (e.g. a cell with no path of operations):
        the cheapest networks of a space, so on the front's cheap end, but no network at all; the
        report leaves them out of the front, and so does this phase."""
        got = self._degen.get(_optuna.trial_id(trial))
        if got is None:
            arch = self._archs.arch(study, trial)
            got = self._degen[_optuna.trial_id(trial)] = arch is None or self.space.degenerate(arch) is not None
        return got

    def _tried_keys(self, study: optuna.Study) -> set[str]:
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        out = set()
        for t in _optuna.cached_trials(study, states):
            key = self._keys.get(_optuna.trial_id(t))
            if key is None:
                arch = self._archs.arch(study, t)
                if arch is None:
                    continue
                key = self.space.key(arch)
                if t.state == optuna.trial.TrialState.COMPLETE:  # a running trial's parameters may still change
                    self._keys[_optuna.trial_id(t)] = key
            out.add(key)
        return out

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def hypervolume_gain(front: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Area each of ``points`` (k, 2) would add, alone, to the hypervolume of ``front`` (n, 2).

    Both objectives are maximised; the reference is the worst value of each objective seen in
    ``front`` and ``points``. Exact: the region ``front`` dominates is a staircase, and a point
    adds the part of its box below the reference corner that lies outside it.
    """
    both = np.vstack([front, points])
    ref = both.min(axis=0) - 1e-9 * (1.0 + np.abs(both.min(axis=0)))
    f = front[is_non_dominated(front, [True, True])] if len(front) else front.reshape(0, 2)
    f = f[np.argsort(f[:, 0])]  # first objective ascending, so the second descends
    # Between edges[j] and edges[j + 1] the staircase reaches heights[j] (ref[1] past the last point).
    edges = np.concatenate([[ref[0]], f[:, 0], [np.inf]])
    heights = np.concatenate([f[:, 1], [ref[1]]])
    lo = np.maximum(edges[None, :-1], ref[0])
    width = np.clip(np.minimum(edges[None, 1:], points[:, :1]) - lo, 0.0, None)
    height = np.clip(points[:, 1:] - np.maximum(heights[None, :], ref[1]), 0.0, None)
    return (width * height).sum(axis=1)
