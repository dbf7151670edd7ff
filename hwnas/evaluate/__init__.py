"""Accuracy evaluators: a registry of factories ``(space, *, context, **options) -> Evaluator``.

``table`` looks accuracies up in the NAS-Bench-201 benchmark. Training-based evaluators
(proxy training, a weight-sharing supernet) register here the same way: they read the data,
the training device, the seed and the run folder from the :class:`EvalContext`, and their own
settings from ``options`` (``SearchConfig.evaluator_options``, recorded in the study).

An evaluator's ``evaluate(arch, trial=None)`` returns an :class:`Accuracy`. It may raise
``optuna.TrialPruned`` (a multi-fidelity evaluator stopped a poor candidate early: the trial is
recorded as pruned) or :class:`EvaluationFailed` (the candidate cannot be evaluated, e.g. its
training diverged: the trial is recorded as failed with the reason, and the search goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hwnas.registry import Registry
from hwnas.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Accuracy:
    """An accuracy in percent (the search signal), its source, and extra figures (e.g. test accuracy)."""

    value: float
    source: str
    extras: dict[str, Any] = field(default_factory=dict)


class EvaluationFailed(RuntimeError):
    """This candidate cannot be evaluated (e.g. a NaN loss); its trial fails, the search goes on."""


@dataclass(frozen=True)
class EvalContext:
    """What a training-based evaluator needs from the run it serves."""

    #: ``--data`` spec: digits | cifar10:DIR | cifar100:DIR | npz:FILE | folder:DIR
    data: str = "digits"
    #: ``--train-device``: cpu | cuda
    train_device: str = "cpu"
    seed: int = 0
    #: The run folder (checkpoints live here); None outside a search run.
    out_dir: Path | None = None
    #: The study's storage URL and name (an evaluator may keep side studies there, e.g. for pruning).
    storage: str = ""
    study: str = ""
    log: Callable[[str], None] = field(default=lambda s: None, repr=False, compare=False)
    #: The dataset of ``data``, where the run has loaded it already (a :class:`hwnas.datasets.Dataset`).
    dataset: Any = field(default=None, repr=False, compare=False)

    def load_data(self) -> Any:
        """The dataset of ``data``: the one the run loaded, else read now."""
        if self.dataset is not None:
            return self.dataset
        from hwnas.datasets import load_data

        return load_data(self.data)


def check_train_device(device: str) -> None:
    """UsageError unless ``device`` (``--train-device``) is cpu, or cuda with a GPU torch can see."""
    from hwnas.errors import UsageError

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--train-device {device} but torch sees no CUDA GPU here; use --train-device cpu")
    elif device != "cpu":
        raise UsageError(f"--train-device must be cpu or cuda, got {device!r}; e.g. --train-device cpu")


class Evaluator(Protocol):
    """Gives the accuracy of an architecture (see the module docstring)."""

    name: str

    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy: ...

    def describe(self) -> dict[str, Any]: ...

    def build_trained(self, arch: Arch) -> Any:
        """The network it scored, with the weights it scored (a ``hwnas.export.TrainedNetwork``),
        for the export; None where it keeps no weights (the export is then untrained)."""
        ...


def test_accuracy(evaluator: Any, arch: Arch) -> tuple[float | None, str]:
    """(held-out test accuracy in %, or None; where it comes from, or why there is none) of the
    network ``evaluator`` scored for ``arch``: asked once, at the end of a search, for the best
    network; never a signal of the search."""
    ask = getattr(evaluator, "test_accuracy", None)
    if ask is None:
        return None, f"evaluator {getattr(evaluator, 'name', '?')!r} has no held-out test split"
    value, source = ask(arch)
    return (None if value is None else float(value)), str(source)


EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


def make_evaluator(name: str, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> Evaluator:
    """Build the evaluator ``name`` for ``space`` (UsageError for unknown names, unsupported spaces
    or options)."""
    return EVALUATORS.get(name)(space, context=context or EvalContext(), **options)


def _register_builtin() -> None:
    from hwnas.evaluate.supernet import SupernetEvaluator
    from hwnas.evaluate.table import TableEvaluator
    from hwnas.evaluate.train import TrainEvaluator

    EVALUATORS.add("supernet", SupernetEvaluator)
    EVALUATORS.add("table", TableEvaluator)
    EVALUATORS.add("train", TrainEvaluator)


_register_builtin()
