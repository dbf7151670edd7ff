"""One trial record: what a completed trial says, the one definition of feasible, the one front.

Every module that reads trials back (the search, its report, ``hwnas report``, ``hwnas export
--run``, the samplers) reads them through this module, so a trial attribute is named once
(the constants below) and "feasible" means one thing everywhere: every constraint the trial
carries is met (<= 0). A trial that carries no constraint is feasible: it was searched
without budgets. Leaf module: stdlib and NumPy only (samplers use it and never import torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.pareto import is_non_dominated

# -- trial user attributes -------------------------------------------------------
# A trial's figures are written as one user attribute, RECORD, a dict holding the keys below:
# each attribute is one write (and one fsync) to a journal storage, so ten flat attributes cost
# ten times the storage time of one. TrialRecord.of() reads both that dict and flat attributes
# (which evaluators may still write during a long evaluation, e.g. a validation curve).
#: The trial's record: a dict of the keys below.
RECORD = "record"
#: The arch in the space's short string form (its parameters are the trial's Optuna params).
ARCH = "arch"
#: ``{metric: value}`` of every cost the trial was charged (latency_ms, flops_m, ...).
COSTS = "costs"
#: ``{metric: where the number came from}`` (e.g. "table", "measured", "closed form").
COST_SOURCES = "cost_sources"
#: ``{metric: {detail: value}}`` for costs with more to say (a measurement's p90, IQR, repeats).
COST_DETAILS = "cost_details"
#: The evaluator's accuracy (%) and where it came from; absent for a trial never evaluated.
ACCURACY = "accuracy"
ACCURACY_SOURCE = "accuracy_source"
#: Names of the budgets a trial missed (it was not evaluated).
OVER_BUDGET = "over_budget"
#: The number of the earlier trial whose network (and numbers) this trial repeats. Such a trial
#: is told PRUNED (it did no work), so Optuna's best trials list each network once; it counts
#: toward the trial budget, and its objective values are in the record under VALUES.
REUSED_FROM = "reused_from_trial"
#: A reused trial's objective values (Optuna keeps none for a pruned multi-objective trial).
VALUES = "values"
#: The names of the trial's constraints, in the order of the CONSTRAINTS system attribute.
CONSTRAINT_NAMES = "constraint_names"
#: Why a trial failed (a crash, a killed worker, a diverged training).
FAILED_BECAUSE = "failed_because"
#: How the reason of a trial that was never run begins: another worker filled the budget first.
#: Such a trial is no failure of any work, and reports do not count it (when it appears depends
#: on the workers' timing, and every worker must write the same report).
NOT_RUN = "not run:"
#: Why the trial's network computes a constant (its output does not depend on its input);
#: absent for a real network. Such networks stay off the reported front and the plots.
DEGENERATE = "degenerate"
#: The strategy that proposed the trial (a run folder may hold trials of several: a rerun with
#: another --strategy continues the same study).
STRATEGY = "strategy"
#: Trial system attribute: the worker that ran the trial, with the trial's slot (which keys its seed).
WORKER = "hwnas:worker"
SLOT = "slot"
#: Trial system attribute: the constraint values as one list, in the order of CONSTRAINT_NAMES
#: (Optuna's ``_CONSTRAINTS_KEY``). optuna-dashboard reads only this form, and Optuna reads it too.
#: hwnas writes no other: Optuna 5 also reads per-name keys (CONSTRAINT_PREFIX, what
#: ``trial.set_constraint`` writes and earlier hwnas versions wrote) and adds both forms up, so
#: writing both would show every constraint twice to the samplers (GPSampler would model each twice,
#: and refuse a study that mixes trials with both forms and trials with one).
CONSTRAINTS = "constraints"
CONSTRAINT_PREFIX = "constraints:"

#: Accuracy recorded as the objective value of a trial never evaluated (over a budget).
NOT_EVALUATED = 0.0


def is_feasible(constraints: Mapping[str, float] | None) -> bool:
    """The one definition: every constraint is met (<= 0); no constraint at all is feasible."""
    return all(v <= 0 for v in (constraints or {}).values())


def violation(constraints: Mapping[str, float] | None) -> float:
    """Total violation (0 when feasible), for ranking infeasible trials."""
    return float(sum(max(0.0, v) for v in (constraints or {}).values()))


@dataclass
class TrialRecord:
    """What one completed trial says, read back from the study.

    ``values`` are the study's objective values in the order of its objectives (accuracy first);
    ``costs`` every cost metric the trial was charged; ``accuracy`` is None for a trial over a
    budget (never evaluated).
    """

    number: int
    arch: str
    values: tuple[float, ...]
    constraints: dict[str, float]
    costs: dict[str, float]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return is_feasible(self.constraints)

    @property
    def accuracy(self) -> float | None:
        return float(self.values[0]) if self.feasible else None

    @property
    def degenerate(self) -> bool:
        return bool(self.attrs.get(DEGENERATE))

    @property
    def reused(self) -> bool:
        return REUSED_FROM in self.attrs

    def cost(self, metric: str) -> float | None:
        value = self.costs.get(metric)
        return None if value is None else float(value)

    def source(self, metric: str) -> str | None:
        sources = self.attrs.get(COST_SOURCES) or {}
        return sources.get(metric) if isinstance(sources, dict) else None

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """From an Optuna ``FrozenTrial``: a COMPLETE one, or a reused one (PRUNED, its values in
        the record)."""
        attrs = dict(trial.user_attrs)
        record = attrs.pop(RECORD, None)
        if isinstance(record, dict):
            attrs.update(record)
        costs = attrs.get(COSTS) or {}
        values = trial.values if trial.values is not None else attrs.get(VALUES)
        return cls(
            number=trial.number,
            arch=str(attrs.get(ARCH, "")),
            values=tuple(float(v) for v in (values or ())),
            constraints=named_constraints(getattr(trial, "system_attrs", {}) or {}, attrs.get(CONSTRAINT_NAMES)),
            costs={k: float(v) for k, v in costs.items()} if isinstance(costs, dict) else {},
            attrs=attrs,
        )


def named_constraints(system_attrs: Mapping[str, Any], names: Any = None) -> dict[str, float]:
    """A trial's constraints by name, each once, from either form Optuna reads.

    Per-name keys (earlier hwnas versions, ``trial.set_constraint``) give their names; the list
    form gets the names of ``names`` (the record's CONSTRAINT_NAMES) where they fit, else its
    positions. Where both forms are present the list only adds names the per-name keys lack, and
    a list without names adds nothing to per-name keys: it repeats them (Optuna would count both).
    """
    out = {k[len(CONSTRAINT_PREFIX) :]: float(v) for k, v in system_attrs.items() if k.startswith(CONSTRAINT_PREFIX)}
    listed = system_attrs.get(CONSTRAINTS)
    if not isinstance(listed, (list, tuple)):
        return out
    if isinstance(names, (list, tuple)) and len(names) == len(listed):
        for name, v in zip(names, listed, strict=True):
            out.setdefault(str(name), float(v))
    elif not out:
        out = {str(i): float(v) for i, v in enumerate(listed)}
    return out


def front(records: Sequence[TrialRecord], maximize: Sequence[bool], *, degenerate: bool = False) -> list[TrialRecord]:
    """The feasible, non-dominated records on the study's objective values, one per network
    (reused trials repeat an earlier network), ordered by the second objective; networks whose
    output does not depend on their input are left out unless ``degenerate``."""
    distinct = [r for r in records if r.feasible and not r.reused and (degenerate or not r.degenerate)]
    if not distinct:
        return []
    values = np.array([r.values for r in distinct], dtype=float)
    mask = is_non_dominated(values, list(maximize))
    on = [r for r, m in zip(distinct, mask, strict=True) if m]
    return sorted(on, key=lambda r: (r.values[1] if len(r.values) > 1 else 0.0, r.number))


def best(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The most accurate feasible record (ties: the cheaper second objective, then the earlier
    trial), never a network whose output does not depend on its input."""
    distinct = [r for r in records if r.feasible and not r.reused and not r.degenerate]
    if not distinct:
        return None
    return max(distinct, key=lambda r: (r.values[0], -(r.values[1] if len(r.values) > 1 else 0.0), -r.number))
