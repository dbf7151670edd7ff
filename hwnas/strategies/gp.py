"""Optuna's GPSampler with its model fitting on one torch thread.

GPSampler fits its Gaussian process and optimises the acquisition with torch, on small tensors
(a few hundred trials by six categorical choices). With torch's default of a thread per core,
the other threads spin for work more than they compute; beside any other load (a measurement, a
second job) that multiplied the cost: 40 trials of ``hwnas search --strategy gp`` on pixel3 took
48 s wall and 59 s CPU with two threads at load 3.3, against 21 s and 20 s with one
(``benchmarks/sampler_overhead.py``). The proposals are the same: one thread changes no result.
"""

from __future__ import annotations

from typing import Any

import optuna


class OneThreadGPSampler(optuna.samplers.GPSampler):
    """GPSampler whose relative sampling (the GP fit and the acquisition) runs on one torch thread."""

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        from hwnas.cost._onnx import one_torch_thread

        with one_torch_thread():
            return super().sample_relative(study, trial, search_space)
