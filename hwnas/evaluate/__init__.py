"""Accuracy evaluators: a registry of factories ``(space, **options) -> Evaluator``.

``table`` looks accuracies up in the NAS-Bench-201 benchmark. Training-based evaluators
(proxy training, a weight-sharing supernet) register here the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hwnas.registry import Registry
from hwnas.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Accuracy:
    """An accuracy in percent (the search signal), its source, and extra figures (e.g. test accuracy)."""

    value: float
    source: str
    extras: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    name: str

    def evaluate(self, arch: Arch) -> Accuracy: ...

    def describe(self) -> dict[str, Any]: ...


EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


def make_evaluator(name: str, space: SearchSpace, **options: Any) -> Evaluator:
    """Build the evaluator ``name`` for ``space`` (UsageError for unknown names or unsupported spaces)."""
    return EVALUATORS.get(name)(space, **options)


def _register_builtin() -> None:
    from hwnas.evaluate.table import TableEvaluator

    EVALUATORS.add("table", TableEvaluator)


_register_builtin()
