"""Per-trial seeding: a trial's randomness depends on where it stands in the study, not on the process.

A sampler seeded once per process draws differently after a restart (the process starts its
stream again) and after a failed trial (the failure used up draws). Reseeding before every trial
from ``(seed, key)``, where the key counts the trials done or in flight before this one, gives a
trial the same draws whether the search ran in one go, was killed and resumed, or had a trial fail
and redone: with the history the same, a deterministic strategy then proposes the same candidate.

hwnas's own samplers keep their caches and are reseeded in place (their ``reseed(seed)``); Optuna's
are built anew for each trial (their constructor is cheap, and it drops state that the study does
not hold, such as GPSampler's cached kernel parameters, which would otherwise differ after a resume).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna as _optuna

if TYPE_CHECKING:
    import optuna


def trial_seed(seed: int, key: int) -> int:
    """The seed of the trial with ``key`` in a run seeded with ``seed`` (a 32-bit int)."""
    return int(np.random.SeedSequence([seed, key]).generate_state(1)[0])


def trial_slot(study: optuna.Study, trial: optuna.trial.FrozenTrial, counted: Sequence[optuna.trial.TrialState]) -> int:
    """The trials done (in a ``counted`` state) or in flight with a smaller number than ``trial``.

    In one process this is the number of trials done, whatever failed before; a failed trial
    holds a number but no slot, so its redo gets its slot. Trials in flight at once on several
    workers get distinct slots (each counts the ones started before it).
    """
    running = _optuna.trial.TrialState.RUNNING
    ahead = study.get_trials(deepcopy=False, states=(*counted, running))
    return sum(1 for t in ahead if t.state != running or t.number < trial.number)


class PerTrialSeed(_optuna.samplers.BaseSampler):
    """Wraps a strategy's sampler and reseeds it before each trial from ``(seed, key(study, trial))``.

    Args:
        factory: builds the strategy's sampler from a seed.
        seed: the run's seed.
        key: the trial's position, called once per trial before any sampling (the search counts
            the trials done or in flight before it; it may also record things on the trial).
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], *, seed: int, key: Callable[..., int]) -> None:
        self._factory = factory
        self._seed = seed
        self._key = key
        self._inner = factory(seed)

    @property
    def inner(self) -> optuna.samplers.BaseSampler:
        return self._inner

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seed = trial_seed(self._seed, self._key(study, trial))
        reseed = getattr(self._inner, "reseed", None)
        if callable(reseed):
            reseed(seed)
        else:
            self._inner = self._factory(seed)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
