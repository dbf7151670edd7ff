"""The random streams every hwnas sampler owns, restartable from a seed (per-trial seeding)."""

from __future__ import annotations

import numpy as np
import optuna as _optuna


class SeededSampler(_optuna.samplers.BaseSampler):
    """Base of hwnas's samplers: a NumPy generator for the strategy's own draws and Optuna's
    ``RandomSampler`` for parameters it leaves to chance, both restarted together by :meth:`reseed`
    (see ``_seeding.py``) while the subclass keeps its caches."""

    def _init_streams(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)
        self._random = _optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def reseed(self, seed: int) -> None:
        """Restart the random streams from ``seed``, keeping the caches (per-trial seeding, see _seeding.py)."""
        self._init_streams(seed)
