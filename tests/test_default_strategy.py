"""The default strategy (``hybrid``): it finds the best feasible network faster than random, covers
the front better than its local search alone, resumes from the study, and is deterministic per seed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna
import pytest

from hwnas.benchdata import nb201_latency, nb201_table
from hwnas.pareto import hypervolume_2d
from hwnas.search.config import DEFAULT_STRATEGY, SearchConfig
from hwnas.spaces import Arch, get_space
from hwnas.strategies import STRATEGIES, make_sampler
from hwnas.strategies._seeding import PerTrialSeed, trial_slot
from hwnas.strategies.hybrid import NO_CLIMB, HybridSampler, hypervolume_gain
from hwnas.strategies.local import CLIMB

optuna.logging.set_verbosity(optuna.logging.WARNING)
NB201 = get_space("nb201")
VALID = nb201_table().metric("cifar10-valid/valid")
LATENCY = nb201_latency("gold_6226")  # not the device the strategy was benchmarked on (pixel3)
BUDGET_MS = float(np.quantile(LATENCY, 0.2))
FEASIBLE = LATENCY <= BUDGET_MS
BEST = float(VALID[FEASIBLE].max())


def nb201_feasible(arch: Arch) -> bool:
    return bool(LATENCY[NB201.index(arch)] <= BUDGET_MS)


def run_nb201(sampler: optuna.samplers.BaseSampler, queries: int) -> list[int]:
    """Search the NB201 table under the budget until ``queries`` networks are evaluated (as
    ``benchmarks/strategies.py`` counts them); return the evaluated cell indices in order."""
    evaluated: list[int] = []
    values: dict[int, tuple[float, float]] = {}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = NB201.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in NB201.dimensions()})
        i = NB201.index(arch)
        trial.set_constraint("latency_ms", float(LATENCY[i]) - BUDGET_MS)
        if not FEASIBLE[i]:
            return 0.0, float(LATENCY[i])
        if i not in values:
            values[i] = (float(VALID[i]), float(LATENCY[i]))
            evaluated.append(i)
            if len(evaluated) >= queries:
                trial.study.stop()
        return values[i]

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=20 * queries)
    return evaluated


def test_hybrid_is_the_default_and_other_strategies_stay_selectable() -> None:
    assert DEFAULT_STRATEGY == "hybrid" == SearchConfig().strategy
    assert {"hybrid", "tpe", "local", "evolution", "random", "nsga2"} <= set(STRATEGIES.names())


def test_reaches_the_feasible_optimum_region_faster_than_random() -> None:
    regret = {}
    for name in ("hybrid", "random"):
        regret[name] = [
            BEST
            - max(VALID[i] for i in run_nb201(make_sampler(name, seed=s, space=NB201, latency_ms=BUDGET_MS, feasible=nb201_feasible), 60))
            for s in range(3)
        ]
    assert np.mean(regret["hybrid"]) < np.mean(regret["random"]) - 0.1, regret
    assert max(regret["hybrid"]) < 0.5, regret


def test_front_proposals_cover_the_front_better_than_the_local_search_alone() -> None:
    reference = (float(VALID.min()), BUDGET_MS)
    feasible = np.flatnonzero(FEASIBLE)
    true = hypervolume_2d(np.c_[VALID[feasible], LATENCY[feasible]], reference, [True, False])

    def ratios(front_every: int) -> list[float]:
        out = []
        for s in range(3):
            idx = run_nb201(HybridSampler(space=NB201, feasible=nb201_feasible, seed=s, front_every=front_every), 150)
            out.append(hypervolume_2d(np.c_[VALID[idx], LATENCY[idx]], reference, [True, False]) / true)
        return out

    with_front, without = ratios(4), ratios(0)  # 0: no front phase, the local search alone
    assert np.mean(with_front) > np.mean(without) + 0.02 and min(with_front) > 0.97, (with_front, without)


def _toy_objective(trial: optuna.Trial) -> tuple[float, float]:
    arch = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in NB201.dimensions()}
    i = NB201.index(NB201.canonical(arch))
    trial.set_constraint("latency_ms", float(LATENCY[i]) - BUDGET_MS)
    return (float(VALID[i]) if FEASIBLE[i] else 0.0), float(LATENCY[i])


def _params(study: optuna.Study) -> list[dict]:  # type: ignore[type-arg]
    return [t.params for t in study.trials]


def _per_trial(seed: int) -> PerTrialSeed:
    states = (optuna.trial.TrialState.COMPLETE,)

    def factory(s: int) -> optuna.samplers.BaseSampler:
        return HybridSampler(space=NB201, feasible=nb201_feasible, seed=s)

    return PerTrialSeed(factory, seed=seed, key=lambda study, trial: trial_slot(study, trial, states))


def test_deterministic_per_seed() -> None:
    runs = []
    for seed in (0, 0, 1):
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=HybridSampler(space=NB201, feasible=nb201_feasible, seed=seed)
        )
        study.optimize(_toy_objective, n_trials=30)
        runs.append(_params(study))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_resuming_proposes_what_an_uninterrupted_run_would() -> None:
    whole = optuna.create_study(directions=["maximize", "minimize"], sampler=_per_trial(7))
    whole.optimize(_toy_objective, n_trials=40)
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(directions=["maximize", "minimize"], sampler=_per_trial(7), storage=storage, study_name="s")
    first.optimize(_toy_objective, n_trials=23)  # past the random start, mid-climb, after some front proposals
    # A new sampler (as in a new process: nothing of the first run in memory) on the same study.
    again = optuna.load_study(study_name="s", storage=storage, sampler=_per_trial(7))
    again.optimize(_toy_objective, n_trials=17)
    assert _params(again) == _params(whole)
    phases = [t.system_attrs.get(CLIMB) for t in again.trials]
    assert NO_CLIMB in phases and phases == [t.system_attrs.get(CLIMB) for t in whole.trials]


def _assert_runs(space_name: str, objective: Callable[[optuna.Trial], tuple[float, float]], feasible, n: int) -> optuna.Study:  # type: ignore[no-untyped-def]
    space = get_space(space_name)
    # front_start=10: else the front phase starts when a climb ends (or after 298 trials on mbconv);
    # with it, after 10 trials, or 20 while no climb has ended at the budget's edge.
    sampler = make_sampler("hybrid", seed=0, space=space, latency_ms=1.0, feasible=feasible, front_start=10)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=n)
    assert sum(t.system_attrs.get(CLIMB) == NO_CLIMB for t in study.trials) >= (n - 20) // 4 - 1  # front proposals happened
    for t in study.trials:
        space.validate(t.params)
    return study


def test_works_on_mbconv_with_a_cost_budget_and_unconstrained() -> None:
    space = get_space("mbconv")
    dims = space.dimensions()

    def cost(arch: Arch) -> float:  # a stand-in cost that grows with every choice's position
        return float(sum(d.choices.index(arch[d.name]) for d in dims))

    def mbconv(trial: optuna.Trial) -> tuple[float, float]:
        arch = space.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in dims})
        c = cost(arch)
        trial.set_constraint("flops_m", c - 34.0)
        return (float(-((c - 33.0) ** 2)) if c <= 34.0 else 0.0), c

    study = _assert_runs("mbconv", mbconv, lambda a: cost(a) <= 34.0, 34)
    assert all(cost(space.canonical(t.params)) <= 34.0 for t in study.trials)  # the budget predicate is respected

    def unconstrained(trial: optuna.Trial) -> tuple[float, float]:
        arch = NB201.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in NB201.dimensions()})
        i = NB201.index(arch)
        return float(VALID[i]), float(LATENCY[i])

    study = _assert_runs("nb201", unconstrained, None, 34)
    assert max(t.values[0] for t in study.trials) > np.quantile(VALID, 0.99)


def test_a_single_objective_study_is_all_local_search() -> None:
    study = optuna.create_study(direction="maximize", sampler=HybridSampler(space=NB201, seed=0))
    study.optimize(
        lambda t: float(
            VALID[NB201.index(NB201.canonical({d.name: t.suggest_categorical(d.name, list(d.choices)) for d in NB201.dimensions()}))]
        ),
        n_trials=25,
    )
    assert all(t.system_attrs.get(CLIMB) != NO_CLIMB for t in study.trials)


def test_hypervolume_gain_is_the_exact_2d_improvement() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        front = rng.normal(size=(int(rng.integers(1, 10)), 2))
        points = rng.normal(size=(6, 2))
        got = hypervolume_gain(front, points)
        both = np.vstack([front, points])
        ref = both.min(axis=0) - 1e-9 * (1.0 + np.abs(both.min(axis=0)))
        base = hypervolume_2d(front, ref, [True, True])
        want = [hypervolume_2d(np.vstack([front, p[None]]), ref, [True, True]) - base for p in points]
        assert got == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("bad", [{"front_every": 1}, {"front_every": -1}, {"n_init": 0}, {"pool": -1}, {"front_start": 5}, {"escape": -1}])
def test_refuses_bad_settings(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=next(iter(bad))):
        HybridSampler(space=NB201, **bad)


def test_the_front_phase_waits_for_a_second_climb_when_the_budget_does_not_bind() -> None:
    def first(trials: list[optuna.trial.FrozenTrial], when: Callable[[int], bool]) -> int:
        return next((t.number for t in trials if when(t.system_attrs.get(CLIMB, 0))), 10**9)

    def unconstrained(trial: optuna.Trial) -> tuple[float, float]:
        i = NB201.index(NB201.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in NB201.dimensions()}))
        return float(VALID[i]), float(LATENCY[i])

    # No budget: the first climb's optimum has no neighbour over it; the front phase waits for the
    # end of the second climb (or 2 * 60 trials) and then takes every fourth proposal.
    sampler = HybridSampler(space=NB201, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(unconstrained, n_trials=140)
    trials = study.trials
    start = min(first(trials, lambda c: c >= 2), 2 * sampler.front_start)
    assert first(trials, lambda c: c >= 1) < start  # the first climb ended well before
    assert start + 3 == first(trials, lambda c: c == NO_CLIMB) < len(trials)

    # Under gold_6226's 20 % budget the first climb ends at the budget's edge: the phase starts there.
    sampler = HybridSampler(space=NB201, seed=0, feasible=nb201_feasible)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_toy_objective, n_trials=100)
    trials = study.trials
    end = first(trials, lambda c: c >= 1)
    assert sampler._local.climb_ends_at_budget_edge(study, trials[:end], 0)
    assert min(end, sampler.front_start) + 3 == first(trials, lambda c: c == NO_CLIMB)
