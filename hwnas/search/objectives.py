"""Objectives and budgets as data.

A study has two objectives: accuracy (maximised) and one cost metric (minimised), by default the
first device's latency. Every budget is a named :class:`Constraint` on a cost metric: a trial
meets it when ``value - limit <= 0`` (Optuna's ``trial.set_constraint``). The front, the CSV,
the report, the hypervolume, the export metadata and the trial lines all read these lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hwnas.errors import UsageError
from hwnas.units import format_bytes

if TYPE_CHECKING:
    from hwnas.cost.source import CostSource, Metric


@dataclass(frozen=True)
class Objective:
    """One objective of the study: a metric, its unit and words, and its direction."""

    metric: str
    unit: str
    label: str
    direction: Literal["maximize", "minimize"]

    def format(self, value: float) -> str:
        return format_value(value, self.unit)


@dataclass(frozen=True)
class Constraint:
    """A budget: ``metric <= limit``. ``flag`` names it for the user; ``cheap`` when its metric
    is known before any trial (so samplers may skip over-budget proposals)."""

    metric: str
    limit: float
    unit: str
    label: str
    flag: str
    cheap: bool

    @property
    def name(self) -> str:
        """Short words for messages: "latency", "latency on pixel3", "FLOPs", "memory"."""
        return _SHORT.get(self.metric, self.metric.replace("latency_ms@", "latency on "))

    def violation(self, value: float) -> float:
        """``value - limit``: <= 0 is met (Optuna's constraint convention)."""
        return float(value) - self.limit

    def format(self, value: float) -> str:
        return format_value(value, self.unit)

    def as_flag_value(self, value: float) -> str:
        """``value`` as its flag takes it: ``5ms``, ``300M``, ``320KB``."""
        if self.unit == "ms":
            from hwnas.units import format_ms

            return format_ms(value)
        if self.unit == "bytes":
            return format_bytes(value)
        return f"{value:g}{self.unit if self.unit == 'M' else ''}"


_SHORT = {
    "latency_ms": "latency",
    "flops_m": "FLOPs",
    "params_m": "parameters",
    "memory_bytes": "peak memory",
    "size_bytes": "model size",
}


def format_value(value: float, unit: str) -> str:
    if unit == "bytes":
        return format_bytes(value)
    if unit == "ms":
        return f"{value:.4g} ms"
    if unit == "M":
        return f"{value:.4g} M"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.4g} {unit}"


#: Objective names the user may give (``--objective``) -> the metric they mean.
OBJECTIVE_NAMES = {"latency": "latency_ms", "flops": "flops_m", "params": "params_m", "memory": "memory_bytes", "size": "size_bytes"}
OBJECTIVES = {"accuracy": Objective("accuracy", "%", "accuracy", "maximize")}


def objective_metric(name: str) -> str:
    """The cost metric of ``--objective name``; UsageError for anything else."""
    if name in OBJECTIVE_NAMES:
        return OBJECTIVE_NAMES[name]
    from hwnas.registry import did_you_mean

    valid = list(OBJECTIVE_NAMES)
    why = " (accuracy is always the first objective)" if name == "accuracy" else ""
    raise UsageError(f"unknown objective {name!r}{why}{did_you_mean(name, valid)}; the second objective is one of: {', '.join(valid)}")


@dataclass
class Charged:
    """A cost source charged on every trial; a device's latency source is named per device
    (``latency_ms`` for the first device, ``latency_ms@NAME`` for the others)."""

    source: CostSource
    device: str | None = None
    primary: bool = False

    def rename(self, metric: str) -> str:
        if self.device is None or self.primary:
            return metric
        return f"{metric}@{self.device}"

    def metrics(self) -> list[Metric]:
        from dataclasses import replace

        return [replace(m, name=self.rename(m.name)) for m in self.source.metrics()]
