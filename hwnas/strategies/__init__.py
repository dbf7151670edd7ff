"""Search strategies: a registry of factories returning Optuna samplers.

Every multi-trial strategy is an Optuna sampler over the one study of a run, so all share
the same trials, Pareto front and storage, and their state is rebuilt from the study's
history on resume. Samplers never import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas.registry import Registry
from hwnas.spaces import SearchSpace
from hwnas.strategies._common import Feasible

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
def tpe_sampler(*, seed: int, space: SearchSpace | None = None, feasible: Feasible | None = None, **_: Any) -> optuna.samplers.BaseSampler:
    """Multivariate TPE (Bergstra et al. 2011; Falkner et al. 2018), constraint-aware through
    ``trial.set_constraint``: feasible trials rank before infeasible ones in its split. Given the
    space, it proposes only networks not yet tried and predicted within the budget (unique.py)."""
    import optuna

    def make(s: int | None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=s, multivariate=True, n_startup_trials=10, constant_liar=True)

    if space is None:
        return make(seed)
    from hwnas.strategies.unique import NewNetworksOnly

    return NewNetworksOnly(make, space=space, feasible=feasible, seed=seed)


@STRATEGIES.register("gp")
def gp_sampler(*, seed: int, **_: Any) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler; needs scipy), constraint-aware.

    Its cost grows with the trials (a GP fit per trial); its fit runs on one torch thread (gp.py).
    """
    try:
        import scipy  # noqa: F401
    except ImportError:
        from hwnas.errors import UsageError

        raise UsageError("strategy 'gp' needs scipy: pip install scipy (or pick --strategy tpe)") from None
    from hwnas.strategies.gp import OneThreadGPSampler

    return OneThreadGPSampler(seed=seed)


@STRATEGIES.register("nsga2")
def nsga2_sampler(*, seed: int, population: int = 20, **_: Any) -> optuna.samplers.BaseSampler:
    """NSGA-II (Deb et al. 2002) with a population of 20, constraint-aware."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)


@STRATEGIES.register("evolution")
def evolution_sampler(
    *, seed: int, space: SearchSpace, feasible: Feasible | None = None, latency_ms: float | None = None, **opts: Any
) -> optuna.samplers.BaseSampler:
    """Regularized (aging) evolution with Pareto, constraint-aware selection (see evolution.py)."""
    from hwnas.strategies.evolution import RegularizedEvolutionSampler

    return RegularizedEvolutionSampler(space=space, feasible=feasible, seed=seed, **opts)


@STRATEGIES.register("local")
def local_sampler(
    *, seed: int, space: SearchSpace, feasible: Feasible | None = None, latency_ms: float | None = None, **opts: Any
) -> optuna.samplers.BaseSampler:
    """Local search: predictor-ordered hill climbing over one-change neighbours (see local.py)."""
    from hwnas.strategies.local import LocalSearchSampler

    return LocalSearchSampler(space=space, feasible=feasible, seed=seed, **opts)


@STRATEGIES.register("hybrid")
def hybrid_sampler(
    *, seed: int, space: SearchSpace, feasible: Feasible | None = None, latency_ms: float | None = None, **opts: Any
) -> optuna.samplers.BaseSampler:
    """The default: local search toward the best feasible network, its steps in a predictor's
    order away from the budget, escaping a local optimum at the budget's edge by predicted
    two-change steps; once a climb ends at the budget's edge (or two climbs end), every fourth
    proposal goes to the predicted largest hypervolume gain of the front (hybrid.py)."""
    from hwnas.strategies.hybrid import HybridSampler

    return HybridSampler(space=space, feasible=feasible, seed=seed, **opts)


@STRATEGIES.register("reinforce")
def reinforce_sampler(
    *, seed: int, space: SearchSpace, latency_ms: float, feasible: Feasible | None = None, **opts: Any
) -> optuna.samplers.BaseSampler:
    """REINFORCE with MnasNet's latency-aware reward (see reinforce.py)."""
    from hwnas.strategies.reinforce import ReinforceSampler

    return ReinforceSampler(space=space, latency_target_ms=latency_ms, feasible=feasible, seed=seed, **opts)


def make_sampler(
    name: str, *, seed: int, space: SearchSpace, latency_ms: float, feasible: Feasible | None = None, **options: Any
) -> optuna.samplers.BaseSampler:
    """The sampler of strategy ``name``; ``feasible`` is a cheap budget predicate where one exists."""
    return STRATEGIES.get(name)(seed=seed, space=space, latency_ms=latency_ms, feasible=feasible, **options)
