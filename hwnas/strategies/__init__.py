"""Search strategies: a registry of factories returning Optuna samplers.

Every multi-trial strategy is an Optuna sampler over the one study of a run, so all share
the same trials, Pareto front and storage, and their state is rebuilt from the study's
history on resume. Samplers never import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas.registry import Registry

if TYPE_CHECKING:
    import optuna

SamplerFactory = Callable[..., "optuna.samplers.BaseSampler"]
STRATEGIES: Registry[SamplerFactory] = Registry("strategy")


@STRATEGIES.register("random")
def random_sampler(*, seed: int, **_: Any) -> optuna.samplers.BaseSampler:
    """Uniform random search: the baseline every other strategy must beat."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@STRATEGIES.register("tpe")
def tpe_sampler(*, seed: int, **_: Any) -> optuna.samplers.BaseSampler:
    """Multivariate TPE (Bergstra et al. 2011; Falkner et al. 2018), constraint-aware through
    ``trial.set_constraint``: feasible trials rank before infeasible ones in its split."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=True)


def make_sampler(name: str, *, seed: int, **options: Any) -> optuna.samplers.BaseSampler:
    return STRATEGIES.get(name)(seed=seed, **options)
