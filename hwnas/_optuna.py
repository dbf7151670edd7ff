"""The few Optuna internals hwnas needs, in one place, so an Optuna upgrade touches one file.

Optuna's public API has no way to write a trial's system attribute from a sampler or a
callback, to key a cache by trial and study, or to read the study's trials without a storage
round trip; these wrappers name each need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def storage_of(study: Any) -> Any:
    """The storage object behind ``study``."""
    return study._storage


def trial_id(trial: Any) -> int:
    """The storage's id of a trial (unique across the studies of a storage; numbers are per study)."""
    return int(trial._trial_id)


def study_owner(study: Any) -> tuple[int, int]:
    """A key of the (storage, study) pair, for caches that must not mix studies."""
    return (id(study._storage), study._study_id)


def study_id(study: Any) -> int:
    return int(study._study_id)


def set_trial_system_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Write a system attribute on a running trial from outside its objective (samplers, callbacks)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def cached_trials(study: Any, states: Sequence[Any]) -> list[Any]:
    """The study's trials in ``states``, from the storage's cache where it has one (no deep copy)."""
    return list(study._get_trials(deepcopy=False, states=tuple(states), use_cache=True))


def stale_trial_ids(study: Any) -> list[int]:
    """Ids of the study's RUNNING trials whose RDB heartbeat stopped (storages with a heartbeat only)."""
    return list(study._storage._get_stale_trial_ids(study._study_id))
