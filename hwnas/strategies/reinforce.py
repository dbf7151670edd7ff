"""REINFORCE with a factorised softmax policy, as an Optuna sampler (Williams 1992; Zoph & Le, ICLR 2017).

The policy is one softmax per dimension of the space: ``pi(a) = prod_d softmax(theta_d)[a_d]``.
After each completed trial it takes a policy-gradient step

    theta_d += lr * ((R - b) * (onehot(a_d) - p_d) + entropy * dH/dtheta_d)

with ``b`` a moving average of past rewards and ``H = -sum p log p`` the policy's entropy
(its gradient ``-p * (log p + H)`` keeps the policy from collapsing early). The reward is
MnasNet's (Tan et al., CVPR 2019): ``R = ACC * (LAT / T) ** w`` with ``w = alpha`` if
``LAT <= T`` else ``beta``; ``soft``: alpha = beta = -0.07, ``hard``: alpha = 0, beta = -1,
``constraint``: R = ACC when feasible, 0 otherwise.

hwnas spends no accuracy evaluation on a candidate over budget, so for infeasible trials the
unknown ACC is replaced by the moving average of evaluated accuracies (its expectation under the
current policy). The policy is rebuilt from the study's history (replayed in trial order), so a
resumed or distributed search continues the same learning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.spaces import Arch, SearchSpace
from hwnas.strategies._common import Feasible, TrialArchs, arch_of, complete_trials, propose_unique, search_space
from hwnas.strategies._seeded import SeededSampler
from hwnas.trials import is_feasible

if TYPE_CHECKING:
    import optuna

REWARDS = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0), "constraint": (0.0, None)}


def mnasnet_reward(accuracy: float, latency: float, target: float, mode: str) -> float:
    """MnasNet's reward ``ACC * (LAT/T)^w`` (accuracy as a fraction in [0, 1])."""
    alpha, beta = REWARDS[mode]
    if beta is None:  # hard constraint
        return accuracy if latency <= target else 0.0
    w = alpha if latency <= target else beta
    # Degenerate cells can have a ~0 latency in a table; keep the power finite.
    return float(accuracy * (max(latency, 1e-9 * target) / target) ** w)


class ReinforceSampler(SeededSampler):
    """Policy-gradient architecture search over a hwnas space.

    Args:
        space: the search space.
        latency_target_ms: T of the reward (the run's latency budget).
        reward: ``"soft"``, ``"hard"`` or ``"constraint"``.
        lr: learning rate of the logits.
        baseline_decay: momentum of the moving-average baseline.
        entropy: weight of the entropy bonus.
        feasible: optional cheap predicate; proposals predicted infeasible are redrawn.
        seed: seed of the sampler's generator.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        latency_target_ms: float,
        reward: str = "soft",
        lr: float = 0.5,
        baseline_decay: float = 0.9,
        entropy: float = 0.01,
        feasible: Feasible | None = None,
        seed: int | None = None,
    ) -> None:
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {sorted(REWARDS)}, got {reward!r}")
        if not latency_target_ms > 0:
            raise ValueError(f"latency_target_ms must be > 0, got {latency_target_ms}")
        if lr <= 0 or not 0 <= baseline_decay < 1 or entropy < 0:
            raise ValueError(f"need lr > 0, 0 <= baseline_decay < 1, entropy >= 0; got {lr}, {baseline_decay}, {entropy}")
        self.space = space
        self.target = latency_target_ms
        self.reward_mode = reward
        self.lr = lr
        self.decay = baseline_decay
        self.entropy = entropy
        self.feasible = feasible
        self._init_streams(seed)
        self._archs = TrialArchs(space)
        self._dims = space.dimensions()
        self.reset()

    def reset(self) -> None:
        self.logits = [np.zeros(len(d.choices)) for d in self._dims]
        self.baseline: float | None = None
        self.mean_accuracy: float | None = None
        self._replayed: list[int] = []

    def probabilities(self) -> list[np.ndarray]:
        out = []
        for z in self.logits:
            e = np.exp(z - z.max())
            out.append(e / e.sum())
        return out

    def entropy_value(self) -> float:
        return float(sum(-(p * np.log(p)).sum() for p in self.probabilities()))

    def update(self, arch: Arch, accuracy: float | None, latency: float) -> float:
        """One REINFORCE step for a completed trial; returns the reward used."""
        if accuracy is not None:
            acc = accuracy / 100.0
            self.mean_accuracy = acc if self.mean_accuracy is None else self.decay * self.mean_accuracy + (1 - self.decay) * acc
        else:
            acc = self.mean_accuracy if self.mean_accuracy is not None else 0.0
            if self.reward_mode == "constraint":
                acc = 0.0
        reward = mnasnet_reward(acc, latency, self.target, self.reward_mode)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        for d, (dim, p) in enumerate(zip(self._dims, self.probabilities(), strict=True)):
            onehot = np.zeros(len(dim.choices))
            onehot[dim.choices.index(arch[dim.name])] = 1.0
            h = -(p * np.log(p)).sum()
            grad = advantage * (onehot - p) + self.entropy * (-p * (np.log(p) + h))
            self.logits[d] = self.logits[d] + self.lr * grad
        self.baseline = self.decay * self.baseline + (1 - self.decay) * reward
        return reward

    def _sync(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Bring the policy up to date with the study: replay new trials, or rebuild if history changed."""
        numbers = [t.number for t in trials]
        if numbers[: len(self._replayed)] != self._replayed:
            self.reset()
        for t in trials[len(self._replayed) :]:
            arch = arch_of(self.space, t)
            if arch is not None and t.values is not None:
                feasible = is_feasible(t.constraints)
                self.update(arch, t.values[0] if feasible else None, t.values[1] if len(t.values) > 1 else self.target)
            self._replayed.append(t.number)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return search_space(self.space)

    def _draw(self) -> Arch:
        arch = {}
        for dim, p in zip(self._dims, self.probabilities(), strict=True):
            arch[dim.name] = dim.choices[int(self._rng.choice(len(p), p=p))]
        return self.space.canonical(arch)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        trials = complete_trials(study)
        self._sync(trials)
        seen = self._archs.tried(study)
        return dict(propose_unique(self._draw, self.space, seen, self.feasible))

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)
