"""Strategy gp: Optuna's GPSampler with its fit on one torch thread (hwnas/strategies/gp.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy")
torch = pytest.importorskip("torch")
import optuna  # noqa: E402

from hwnas.strategies.gp import OneThreadGPSampler  # noqa: E402


def _objective(trial: optuna.Trial) -> float:
    x = [trial.suggest_categorical(f"e{i}", ["a", "b", "c", "d", "e"]) for i in range(4)]
    return sum("abcde".index(v) * (i + 1) for i, v in enumerate(x)) % 7 + 0.1 * len(set(x))


def _study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=14)
    return study


def test_one_thread_proposes_what_gpsampler_proposes_and_restores_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a 2-core machine, whatever the test runner set
    inside: list[int] = []
    original = optuna.samplers.GPSampler.sample_relative

    def spying(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        inside.append(torch.get_num_threads())
        return original(self, study, trial, search_space)

    try:
        theirs = _study(optuna.samplers.GPSampler(seed=3))
        monkeypatch.setattr(optuna.samplers.GPSampler, "sample_relative", spying)
        ours = _study(OneThreadGPSampler(seed=3))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert [t.params for t in ours.trials] == [t.params for t in theirs.trials]
    assert len(inside) == 14 and set(inside) == {1}  # the GP's own code ran on one thread, every trial
    assert after == 2  # and the caller's count is back


def test_the_gp_strategy_is_the_one_thread_sampler() -> None:
    from hwnas.strategies import STRATEGIES

    assert isinstance(STRATEGIES.get("gp")(seed=0), OneThreadGPSampler)
