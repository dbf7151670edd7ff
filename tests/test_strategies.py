"""Contract tests for every registered strategy, and the defining properties of hwnas's own samplers."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hwnas.spaces import Arch, Dimension, SearchSpace
from hwnas.strategies import STRATEGIES, make_sampler
from hwnas.strategies.evolution import RegularizedEvolutionSampler
from hwnas.strategies.reinforce import ReinforceSampler, mnasnet_reward

optuna.logging.set_verbosity(optuna.logging.WARNING)
BUDGET = 4.0


class ToySpace(SearchSpace):
    """Three dimensions of five levels. Accuracy 10*(a+b+c), latency a+b: under a budget of 4 the
    optimum is a+b = 4, c = 4 (accuracy 80), five of the 125 points."""

    name = "toy"

    def dimensions(self) -> list[Dimension]:
        return [Dimension(n, (0, 1, 2, 3, 4)) for n in ("a", "b", "c")]

    def to_string(self, arch: Arch) -> str:
        return "{a}{b}{c}".format(**arch)

    def from_string(self, text: str) -> Arch:
        return dict(zip("abc", map(int, text), strict=True))

    def smallest(self) -> Arch:
        return {"a": 0, "b": 0, "c": 0}

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        return (1, 1, 1)

    def build(self, arch: Arch):  # type: ignore[no-untyped-def]
        raise NotImplementedError


SPACE = ToySpace()


def objective(trial: optuna.Trial) -> tuple[float, float]:
    arch = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in SPACE.dimensions()}
    lat = float(arch["a"] + arch["b"])
    trial.set_constraint("latency", lat - BUDGET)
    return (10.0 * (arch["a"] + arch["b"] + arch["c"]) if lat <= BUDGET else 0.0), lat


def best_feasible(study: optuna.Study) -> float:
    vals = [t.values[0] for t in study.trials if t.values and all(c <= 0 for c in t.constraints.values())]
    return max(vals, default=-1.0)


def _sampler(name: str, seed: int = 0, feasible=None):  # type: ignore[no-untyped-def]
    return make_sampler(name, seed=seed, space=SPACE, latency_ms=BUDGET, feasible=feasible)


@pytest.mark.parametrize("name", STRATEGIES.names())
class TestStrategyContract:
    def test_finds_the_constrained_optimum(self, name: str) -> None:
        trials = 40 if name == "gp" else 100
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(name))
        study.optimize(objective, n_trials=trials)
        assert best_feasible(study) == 80.0

    def test_resumes_from_a_stored_study(self, name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
        url = f"sqlite:///{tmp_path / 's.db'}"
        first = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(name), storage=url, study_name="s")
        first.optimize(objective, n_trials=12)
        again = optuna.load_study(study_name="s", storage=url, sampler=_sampler(name, seed=1))
        again.optimize(objective, n_trials=12)
        assert len(again.trials) == 24
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)

    def test_never_proposes_outside_the_space(self, name: str) -> None:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(name, seed=3))
        study.optimize(objective, n_trials=15)
        for t in study.trials:
            SPACE.validate({k: t.params[k] for k in "abc"})


def test_evolution_removes_the_oldest_not_the_worst() -> None:
    sampler = RegularizedEvolutionSampler(space=SPACE, population=5, tournament=5, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    # Trial 0 is the best network ever seen; five mediocre ones follow it.
    study.enqueue_trial({"a": 2, "b": 2, "c": 4})
    for c in range(5):
        study.enqueue_trial({"a": 0, "b": 0, "c": c})
    study.optimize(objective, n_trials=6)
    trials = sorted(study.trials, key=lambda t: t.number)
    # With the whole population in the tournament the fittest member always wins: it must be a
    # survivor (c = 4 of the last five), never trial 0, which has aged out although it is the best.
    for _ in range(20):
        parent = sampler.select_parent(study, trials)
        assert parent.number != 0 and parent.params["c"] == 4


def test_evolution_selection_puts_feasible_first_then_pareto_rank() -> None:
    from hwnas.strategies._common import fitness_keys

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for params in ({"a": 4, "b": 4, "c": 4}, {"a": 0, "b": 0, "c": 1}, {"a": 2, "b": 2, "c": 4}, {"a": 1, "b": 0, "c": 0}):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=4)
    t = sorted(study.trials, key=lambda t: t.number)
    keys = fitness_keys(t, list(study.directions), "pareto")
    assert keys[0][0] == 1.0  # infeasible (latency 8 > 4) sorts last
    assert keys[1][1] == 0 and keys[2][1] == 0  # both on the front: fastest, and most accurate
    assert keys[3][1] == 1  # dominated by trial 1 (slower and less accurate)
    assert min(range(4), key=lambda i: keys[i]) == 2  # front ties broken by accuracy


def test_evolution_avoids_evaluated_and_predicted_infeasible_children() -> None:
    feasible = lambda arch: arch["a"] + arch["b"] <= BUDGET  # noqa: E731
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler("evolution", feasible=feasible))
    study.optimize(objective, n_trials=40)  # 75 feasible points: room to always find a new one
    archs = [SPACE.to_string({k: t.params[k] for k in "abc"}) for t in study.trials]
    assert len(set(archs)) == len(archs)
    assert all(t.params["a"] + t.params["b"] <= BUDGET for t in study.trials)


def test_mnasnet_reward_modes() -> None:
    assert mnasnet_reward(0.9, 5.0, 5.0, "soft") == pytest.approx(0.9)
    assert mnasnet_reward(0.9, 10.0, 5.0, "soft") == pytest.approx(0.9 * 2**-0.07)  # doubling latency costs ~5 %
    assert mnasnet_reward(0.9, 2.5, 5.0, "hard") == pytest.approx(0.9)  # alpha = 0: no bonus for being faster
    assert mnasnet_reward(0.9, 10.0, 5.0, "hard") == pytest.approx(0.45)
    assert mnasnet_reward(0.9, 5.1, 5.0, "constraint") == 0.0


def test_reinforce_learns_and_its_entropy_bonus_spreads_the_policy() -> None:
    s = ReinforceSampler(space=SPACE, latency_target_ms=BUDGET, entropy=0.0, seed=0)
    good, bad = {"a": 0, "b": 0, "c": 4}, {"a": 0, "b": 0, "c": 0}
    for _ in range(30):
        s.update(good, 90.0, 1.0)
        s.update(bad, 10.0, 1.0)
    p_c = s.probabilities()[2]
    assert p_c[4] > 0.9 and p_c[0] < 0.05
    # With no advantage, only the entropy term acts: it raises the entropy.
    s2 = ReinforceSampler(space=SPACE, latency_target_ms=BUDGET, entropy=1.0, seed=0)
    s2.logits[2] = np.array([3.0, 0.0, 0.0, 0.0, 0.0])
    before = s2.entropy_value()
    s2.baseline = mnasnet_reward(0.5, 1.0, BUDGET, "soft")
    s2.update({"a": 0, "b": 0, "c": 0}, 50.0, 1.0)  # reward equals the baseline: advantage 0
    assert s2.entropy_value() > before


def test_reinforce_policy_is_rebuilt_from_history() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler("reinforce"))
    study.optimize(objective, n_trials=25)
    a = ReinforceSampler(space=SPACE, latency_target_ms=BUDGET, seed=5)
    b = ReinforceSampler(space=SPACE, latency_target_ms=BUDGET, seed=9)
    from hwnas.strategies._common import complete_trials

    a._sync(complete_trials(study))
    b._sync(complete_trials(study))
    for pa, pb in zip(a.probabilities(), b.probabilities(), strict=True):
        assert np.allclose(pa, pb)
    assert a.entropy_value() < sum(np.log(5) for _ in range(3))  # it learnt something


# -- local search -------------------------------------------------------------------------------


def _arch(t: optuna.trial.FrozenTrial) -> Arch:
    return {k: t.params[k] for k in "abc"}


def _differs_in_one(a: Arch, b: Arch) -> bool:
    return sum(a[k] != b[k] for k in a) == 1


def test_local_search_climbs_from_the_best_of_its_start() -> None:
    from hwnas.strategies.local import LocalSearchSampler

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=LocalSearchSampler(space=SPACE, n_init=5, seed=0))
    study.optimize(objective, n_trials=5)
    start = max((t for t in study.trials if t.values[0] > 0), key=lambda t: t.values[0])
    study.optimize(objective, n_trials=1)
    assert _differs_in_one(_arch(study.trials[5]), _arch(start))


def test_local_search_restarts_at_a_local_optimum() -> None:
    """Two peaks: (0, 0) beats all of its eight neighbours (same a or same b), (4, 4) is better."""
    from hwnas.strategies.local import CLIMB, LocalSearchSampler

    two = ToySpace()
    two.dimensions = lambda: [Dimension(n, (0, 1, 2, 3, 4)) for n in ("a", "b")]  # type: ignore[method-assign]

    def peaks(trial: optuna.Trial) -> tuple[float, float]:
        a, b = trial.suggest_categorical("a", [0, 1, 2, 3, 4]), trial.suggest_categorical("b", [0, 1, 2, 3, 4])
        trial.set_constraint("latency", -1.0)
        return {(0, 0): 10.0, (4, 4): 20.0}.get((a, b), 0.0), 1.0

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=LocalSearchSampler(space=two, n_init=1, seed=0))
    study.enqueue_trial({"a": 0, "b": 0})
    study.optimize(peaks, n_trials=10)
    t = sorted(study.trials, key=lambda t: t.number)
    first = [(x.params["a"], x.params["b"]) for x in t[1:9]]
    assert all(a == 0 or b == 0 for a, b in first) and len(set(first)) == 8  # the whole neighbourhood
    assert [x.system_attrs.get(CLIMB, 0) for x in t[:9]] == [0] * 9  # (an enqueued trial has no tag: climb 0)
    assert t[9].system_attrs[CLIMB] == 1  # exhausted and none better: a new climb from a random point


def _two_dims() -> ToySpace:
    two = ToySpace()
    two.dimensions = lambda: [Dimension(n, (0, 1, 2, 3, 4)) for n in ("a", "b")]  # type: ignore[method-assign]
    return two


def test_local_search_escapes_a_budget_edge_optimum_by_a_two_change_step() -> None:
    """Accuracy 3a + 5b under a + b <= 4: (4, 0) is a local optimum (lowering a loses, raising b
    breaks the budget), but trading a for b, two changes, reaches (0, 4)."""
    from hwnas.strategies.local import CLIMB, ESCAPE, LocalSearchSampler

    two = _two_dims()

    def edge(trial: optuna.Trial) -> tuple[float, float]:
        a, b = trial.suggest_categorical("a", [0, 1, 2, 3, 4]), trial.suggest_categorical("b", [0, 1, 2, 3, 4])
        trial.set_constraint("latency", a + b - 4.0)
        return (3.0 * a + 5.0 * b if a + b <= 4 else 0.0), float(a + b)

    def within(arch: Arch) -> bool:
        return arch["a"] + arch["b"] <= 4

    def run(escape: int) -> list[optuna.trial.FrozenTrial]:
        sampler = LocalSearchSampler(space=two, n_init=1, escape=escape, feasible=within, seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for a, b in ((4, 0), (0, 0), (1, 0), (2, 0), (3, 0)):  # the optimum and its feasible neighbours
            study.enqueue_trial({"a": a, "b": b})
        study.optimize(edge, n_trials=6)
        return sorted(study.trials, key=lambda t: t.number)

    plain, kicked = run(0), run(2)
    assert plain[5].system_attrs[CLIMB] == 1 and ESCAPE not in plain[5].system_attrs  # no escape: a restart
    step = kicked[5]
    assert step.system_attrs[CLIMB] == 0 and step.system_attrs[ESCAPE] == two.key({"a": 4, "b": 0})
    assert step.params["a"] != 4 and step.params["b"] != 0 and within(step.params)  # two changes, within the budget
    assert step.values[0] > 12.0  # better than the optimum it escaped from


def test_local_search_escapes_only_at_a_budget_edge_and_at_most_escape_times() -> None:
    """A single peak at (0, 0). With (0, 1) over the budget the peak is on the budget's edge: two
    escapes, then a restart. With no budget nothing is gained by escaping: a restart at once."""
    from hwnas.strategies.local import CLIMB, ESCAPE, LocalSearchSampler

    two = _two_dims()

    def run(over: tuple[int, int] | None, predicted: bool) -> list[optuna.trial.FrozenTrial]:
        def peak(trial: optuna.Trial) -> tuple[float, float]:
            a, b = trial.suggest_categorical("a", [0, 1, 2, 3, 4]), trial.suggest_categorical("b", [0, 1, 2, 3, 4])
            trial.set_constraint("latency", 1.0 if (a, b) == over else -1.0)
            return (10.0 if (a, b) == (0, 0) else 0.0), 1.0

        def within(arch: Arch) -> bool:
            return (arch["a"], arch["b"]) != over

        sampler = LocalSearchSampler(space=two, n_init=1, escape=2, feasible=within if predicted else None, seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.enqueue_trial({"a": 0, "b": 0})
        study.optimize(peak, n_trials=12)
        return sorted(study.trials, key=lambda t: t.number)

    # (0, 1) predicted over the budget: never proposed, so the 7 other neighbours are trials 1-7.
    t = run((0, 1), predicted=True)
    assert [x.system_attrs.get(ESCAPE) is not None for x in t[8:11]] == [True, True, False]
    assert all(x.params["a"] != 0 and x.params["b"] != 0 for x in t[8:10])  # two changes from (0, 0)
    assert [x.system_attrs[CLIMB] for x in t[8:11]] == [0, 0, 1]
    # (0, 1) found over the budget by its evaluation: all 8 neighbours, then the two escapes.
    t = run((0, 1), predicted=False)
    assert [x.system_attrs.get(ESCAPE) is not None for x in t[9:12]] == [True, True, False]
    free = run(None, predicted=False)  # no budget in reach: all 8 neighbours, then a restart
    assert free[9].system_attrs[CLIMB] == 1 and not any(ESCAPE in x.system_attrs for x in free)
    with pytest.raises(ValueError, match="escape"):
        LocalSearchSampler(space=two, escape=-1)


def test_tpe_proposes_only_new_networks_within_the_budget() -> None:
    """Plain TPE repeats itself on a 125-point space (and a repeat, told PRUNED by ``hwnas search``,
    reads to it as a bad point); hwnas's ``tpe`` asks again, or takes a uniform untried network."""

    def keys(study: optuna.Study) -> list[str]:
        return [SPACE.key(_arch(t)) for t in sorted(study.trials, key=lambda t: t.number)]

    def within(arch: Arch) -> bool:
        return arch["a"] + arch["b"] <= BUDGET

    plain = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("tpe", seed=0, space=None, latency_ms=BUDGET))
    plain.optimize(objective, n_trials=60)
    assert len(set(keys(plain))) < 60  # the premise: TPE alone repeats networks
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler("tpe", feasible=within))
    study.optimize(objective, n_trials=60)
    got = keys(study)
    assert len(set(got[10:])) == 50 and not set(got[10:]) & set(got[:10])  # after TPE's random start: all new
    assert all(within(_arch(t)) for t in study.trials[10:])  # and predicted within the budget
    assert best_feasible(study) == 80.0
    # 75 feasible networks: once they are all tried, a repeat (feasible) is the only proposal left.
    study.optimize(objective, n_trials=30)
    assert len(study.trials) == 90 and all(within(_arch(t)) for t in study.trials[10:])


def test_local_search_moves_to_a_better_neighbour_found_earlier() -> None:
    from hwnas.strategies.local import LocalSearchSampler

    sampler = LocalSearchSampler(space=SPACE, n_init=1, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.enqueue_trial({"a": 0, "b": 0, "c": 0})
    study.optimize(objective, n_trials=1)
    # An evaluated neighbour (found by another strategy on the same study) is better: climb on from it.
    study.sampler = optuna.samplers.RandomSampler(seed=0)
    study.enqueue_trial({"a": 0, "b": 0, "c": 4})
    study.optimize(objective, n_trials=1)
    study.sampler = sampler
    parent = sampler._climb_from(study, sorted(study.trials, key=lambda t: t.number), [study.trials[0]])
    assert parent == {"a": 0, "b": 0, "c": 4}


def test_running_trials_count_as_tried_so_parallel_workers_do_not_repeat_them() -> None:
    from hwnas.strategies._common import TrialArchs

    study = optuna.create_study(directions=["maximize", "minimize"])
    running = study.ask()
    for k in "abc":
        running.suggest_categorical(k, [0, 1, 2, 3, 4])
    archs = TrialArchs(SPACE)
    assert SPACE.equivalence_key(_arch(study.trials[0])) in archs.tried(study)


def test_ridge_predictor_recovers_a_linear_function_and_ranks_children() -> None:
    from hwnas.strategies._surrogate import RidgePredictor, predict_first_objective

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = 2.0 * x[:, 0] - x[:, 2] + 5.0
    pred = RidgePredictor(lam=1e-6).fit(x, y).predict(x)
    assert np.allclose(pred, y, atol=1e-4)
    with pytest.raises(ValueError):
        RidgePredictor().fit(x, y[:-1])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=40)
    from hwnas.strategies._common import complete_trials

    children = [{"a": 0, "b": 0, "c": c} for c in range(5)]
    score = predict_first_objective(SPACE, study, complete_trials(study), children, {})
    assert list(np.argsort(score)) == [0, 1, 2, 3, 4]  # accuracy rises with c; infeasible zeros excluded


def test_predictor_ranks_well_despite_a_long_low_tail_of_broken_networks() -> None:
    """The ranked predictor is fitted on ranks: a few networks at a far-off low accuracy (NB201's
    cells without a path, at 10 %) would otherwise take the least-squares fit, and its best pick with them."""
    import itertools

    from hwnas.strategies._common import complete_trials
    from hwnas.strategies._surrogate import predict_first_objective

    def acc(a: Arch) -> float:
        return 10.0 * a["c"] + a["a"] + a["b"] if a["a"] != a["b"] else -1000.0

    def obj(trial: optuna.Trial) -> tuple[float, float]:
        return acc({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in SPACE.dimensions()}), 0.0

    working = [dict(zip("abc", v, strict=True)) for v in itertools.product(range(5), repeat=3) if v[0] != v[1]]
    picks: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(10):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
        study.optimize(obj, n_trials=30)
        for ranked in (True, False):
            score = predict_first_objective(SPACE, study, complete_trials(study), working, {}, ranked=ranked)
            picks[ranked].append(acc(working[int(np.argmax(score))]))
    # The best is 47; the fit on the ranks picked 42 on average here, the one on the values 31.
    assert np.mean(picks[True]) >= 38 and np.mean(picks[True]) > np.mean(picks[False]) + 5, picks


def test_nb201_features_add_the_path_encoding_to_the_one_hot_one() -> None:
    from hwnas.spaces import get_space

    nb201 = get_space("nb201")
    best = nb201.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    f = nb201.features(best)
    onehot = nb201.encode(best)
    assert np.array_equal(f[: len(onehot)], onehot) and len(f) == len(onehot) + 4 + 16 + 64
    assert f[len(onehot) :].sum() == 4  # its four input-to-output paths, four different op sequences
    assert f[len(onehot) :].max() == 1
    # Cutting the direct edge (3<-0) removes one path and no other.
    cut = nb201.features({**best, "3<-0": "none"})
    assert cut[len(onehot) :].sum() == 3
    # Two cells that differ only on an edge no path uses (2<-1 when 3<-2 is none) share their paths.
    a = {**best, "3<-2": "none", "2<-1": "skip_connect"}
    b = {**best, "3<-2": "none", "2<-1": "avg_pool_3x3"}
    assert np.array_equal(nb201.features(a)[len(onehot) :], nb201.features(b)[len(onehot) :])
    # Other spaces predict from their one-hot encoding.
    assert np.array_equal(SPACE.features({"a": 1, "b": 2, "c": 3}), SPACE.encode({"a": 1, "b": 2, "c": 3}))


def _proposal_after(parent: Arch, screen: object, seed: int) -> Arch:
    """The first climb step of a local search whose start is ``parent`` (the best of eight
    enqueued networks), under a budget a + b <= 4 known to the sampler."""
    from hwnas.strategies.local import LocalSearchSampler

    start = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (2, 0, 0), (0, 2, 0)]
    sampler = LocalSearchSampler(space=SPACE, n_init=8, screen=screen, seed=seed, feasible=lambda a: a["a"] + a["b"] <= BUDGET)  # type: ignore[arg-type]
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for a, b, c in start:
        study.enqueue_trial({"a": a, "b": b, "c": c})
    study.enqueue_trial(parent)
    study.optimize(objective, n_trials=8)
    trial = study.ask()
    return {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in SPACE.dimensions()}


def test_local_search_screen_auto_orders_by_the_predictor_only_away_from_the_budget() -> None:
    away = {"a": 0, "b": 0, "c": 2}  # every one-change neighbour is within a + b <= 4
    edge = {"a": 2, "b": 2, "c": 1}  # raising a or b crosses the budget
    for parent, same_as, other in ((away, True, False), (edge, False, True)):
        got = [_proposal_after(parent, "auto", s) for s in range(5)]
        assert got == [_proposal_after(parent, same_as, s) for s in range(5)]
        assert got != [_proposal_after(parent, other, s) for s in range(5)]  # the two orders do differ here
        assert all(_differs_in_one(g, parent) for g in got)
    with pytest.raises(ValueError, match="screen"):
        from hwnas.strategies.local import LocalSearchSampler

        LocalSearchSampler(space=SPACE, screen="sometimes")  # type: ignore[arg-type]
