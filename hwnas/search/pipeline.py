"""The trial pipeline: arch -> costs -> constraints -> evaluate -> the trial's record.

Cheap costs come first and need no network; the torch module is built at most once per trial,
and only when a source that is not cheap (live measurement) needs it. A trial over any budget is
recorded infeasible and no accuracy is spent on it. A network already evaluated in the study
(by this worker or another) is not paid for twice: its numbers are reused, on a trial told
PRUNED (see :meth:`TrialPipeline._reuse`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from hwnas import _optuna
from hwnas import trials as T
from hwnas.evaluate import EvaluationFailed
from hwnas.search.config import Plan

if TYPE_CHECKING:
    import optuna

    from hwnas.spaces import Arch


class BudgetFilled(RuntimeError):
    """Trials done or in flight on other workers already fill the budget: this one is not run."""


class TrialPipeline:
    """Turns one Optuna trial into its objective values, with every number's source recorded."""

    def __init__(self, plan: Plan, *, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.space = plan.space
        self.log = log
        self.cost_metric = plan.objectives[1].metric
        #: Completed trials by canonical arch key (networks not to evaluate again).
        self.seen: dict[str, optuna.trial.FrozenTrial] = {}
        self.known: set[int] = set()  # numbers of the completed trials already taken into `seen`
        #: Called before each trial's work with the trial; returns False when it must not run.
        self.admit: Callable[[optuna.Trial], None] = lambda trial: None

    # -- the objective ----------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        self.admit(trial)
        arch = self.space.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.space.dimensions()})
        return self.run(trial, arch)

    def run(self, trial: optuna.Trial, arch: Arch) -> tuple[float, float]:
        """Charge ``arch``'s costs on ``trial``, check the budgets, evaluate it if it meets them."""
        key = self.space.key(arch)
        prior = self.seen.get(key)
        if prior is None:
            self.sync(trial.study)  # another worker may have evaluated it since this one last looked
            prior = self.seen.get(key)
        if prior is not None:
            self._reuse(trial, prior, arch)
        try:
            costs, sources, details = self.charge(arch)
        except EvaluationFailed as exc:  # e.g. no agent of a remote device answered
            trial.set_user_attr(T.FAILED_BECAUSE, str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(T.FAILED_BECAUSE, "interrupted (Ctrl-C) while its costs were measured; its work is redone on resume")
            raise
        record: dict[str, Any] = {T.ARCH: self.space.to_string(arch), T.COSTS: costs, T.COST_SOURCES: sources}
        record[T.STRATEGY] = self.plan.config.strategy
        why = self.space.degenerate(arch)
        if why:
            record[T.DEGENERATE] = why
        if details:
            record[T.COST_DETAILS] = details
        over = []
        violations = [con.violation(costs[con.metric]) for con in self.plan.constraints]
        if violations:
            record[T.CONSTRAINT_NAMES] = [con.metric for con in self.plan.constraints]
            _set_constraints(trial, violations)
        for con, v in zip(self.plan.constraints, violations, strict=True):
            if v > 0:
                over.append(con.name)
        cost_value = costs[self.cost_metric]
        if over:
            record[T.OVER_BUDGET] = over
            record[T.ACCURACY_SOURCE] = f"not evaluated: over the {' and '.join(over)} budget"
            trial.set_user_attr(T.RECORD, record)
            return T.NOT_EVALUATED, cost_value
        evaluator = self.plan.evaluator
        assert evaluator is not None
        try:
            acc = evaluator.evaluate(arch, trial)
        except EvaluationFailed as exc:
            trial.set_user_attr(T.FAILED_BECAUSE, str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(T.FAILED_BECAUSE, "interrupted (Ctrl-C) during its evaluation; its work is redone on resume")
            raise
        record[T.ACCURACY] = acc.value
        record[T.ACCURACY_SOURCE] = acc.source
        record.update(acc.extras)
        trial.set_user_attr(T.RECORD, record)
        return acc.value, cost_value

    def charge(self, arch: Arch) -> tuple[dict[str, float], dict[str, str], dict[str, dict[str, Any]]]:
        """Every cost of ``arch`` from every charged source (cheap ones first), with sources and details."""
        built: list[Any] = []

        def model() -> Any:
            if not built:
                built.append(self.space.build(arch))
            return built[0]

        costs: dict[str, float] = {}
        sources: dict[str, str] = {}
        details: dict[str, dict[str, Any]] = {}
        for ch in self.plan.charged:
            for metric, cost in ch.source.costs(arch, model).items():
                name = ch.rename(metric)
                costs[name] = float(cost.value)
                sources[name] = cost.source
                if cost.details:
                    details[name] = _json_safe(cost.details)
        return costs, sources, details

    def _reuse(self, trial: optuna.Trial, prior: optuna.trial.FrozenTrial, arch: Arch) -> NoReturn:
        """The same network was already evaluated in this study: reuse its numbers, don't pay twice.

        The trial is told PRUNED (it did no work; the trial budget counts it), with the numbers in
        its record: a COMPLETE copy would list the network twice in Optuna's best trials
        (``optuna best-trials``, optuna-dashboard), and show Optuna's samplers the same point twice.
        GPSampler and NSGA-II read complete trials only; TPE ranks a pruned trial below the
        complete ones, as it ranks trials in flight, which steers it off proposing the repeat again.
        """
        import optuna

        prior_rec = T.TrialRecord.of(prior)
        record = dict(prior.user_attrs.get(T.RECORD) or {})
        record[T.ARCH] = self.space.to_string(arch)
        record[T.REUSED_FROM] = prior.number
        record[T.STRATEGY] = self.plan.config.strategy
        record[T.VALUES] = list(prior_rec.values)
        if prior_rec.constraints:
            record[T.CONSTRAINT_NAMES] = list(prior_rec.constraints)
            _set_constraints(trial, list(prior_rec.constraints.values()))
        trial.set_user_attr(T.RECORD, record)
        raise optuna.TrialPruned(f"network of trial {prior.number}: its numbers are reused")

    # -- what the study holds ---------------------------------------------------------
    def note(self, trial: optuna.trial.FrozenTrial) -> None:
        """Take a completed trial into ``seen``."""
        if trial.number in self.known:
            return
        self.known.add(trial.number)
        text = T.TrialRecord.of(trial).arch
        if text:
            self.seen.setdefault(self.space.key(self.space.from_string(text)), trial)

    def sync(self, study: optuna.Study) -> None:
        """Take in the trials other workers completed (reuse their networks)."""
        import optuna

        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.number not in self.known:
                self.note(t)


def _set_constraints(trial: optuna.Trial, violations: list[float]) -> None:
    """The trial's constraint values as Optuna's list (the one form hwnas writes; see ``T.CONSTRAINTS``)."""
    _optuna.set_trial_system_attr(trial.study, trial, T.CONSTRAINTS, [float(v) for v in violations])


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        else:
            out[k] = str(v)
    return out
