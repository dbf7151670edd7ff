"""One search run: an Optuna study of (accuracy max, latency min) under a latency budget.

Data flow per trial: the strategy's sampler proposes an arch -> latency (measured or table)
and FLOPs/parameters -> over budget: recorded infeasible, no accuracy spent -> else the
evaluator's accuracy -> the trial is stored with every number's source. After the trials:
the feasible Pareto front, the best feasible arch exported to verified ONNX, a report.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hwnas.cost.latency import LatencyModel, latency_model_for
from hwnas.device import Device, get_device
from hwnas.errors import InfeasibleError, UsageError
from hwnas.evaluate import EvalContext, EvaluationFailed, Evaluator, make_evaluator
from hwnas.pareto import is_non_dominated
from hwnas.spaces import Arch, SearchSpace
from hwnas.spaces.nb201 import NB201Space
from hwnas.storage import JOURNAL_PREFIX
from hwnas.strategies import STRATEGIES, make_sampler
from hwnas.units import format_ms

if TYPE_CHECKING:
    import optuna

StudyDirection = Literal["maximize", "minimize"]
#: Settings that define a study: resuming with a different value would mix incomparable trials.
IDENTITY_KEYS = (
    "space",
    "dataset",
    "device",
    "latency_ms",
    "flops_m",
    "params_m",
    "also_devices",
    "also_latency_ms",
    "evaluator",
    "evaluator_options",
    "latency_model",
)
DIRECTIONS: list[StudyDirection] = ["maximize", "minimize"]  # accuracy %, latency ms
#: Trial states that use up the trial budget: evaluated, or stopped early by a pruner. Failed
#: trials (a crash, a killed process, a diverged training) do not: their work is redone.
COUNTED_STATES = ("COMPLETE", "PRUNED")
#: Accuracy recorded for an over-budget trial, whose accuracy is never evaluated (see accuracy_source).
NOT_EVALUATED = 0.0


@dataclass
class SearchConfig:
    """Resolved settings of one run; written to ``config.json``."""

    space: str = "nb201"
    dataset: str = "cifar10"
    device: str = "cpu"
    latency_ms: float = 20.0
    #: Optional budgets on FLOPs (conv + linear multiply-adds) and parameters, in millions.
    flops_m: float | None = None
    params_m: float | None = None
    #: Further devices, each with its own latency budget (ms), searched as constraints beside the
    #: first device (whose latency is the second objective).
    also_devices: list[str] = field(default_factory=list)
    also_latency_ms: list[float] = field(default_factory=list)
    trials: int = 100
    strategy: str = "tpe"
    seed: int = 0
    evaluator: str = "table"
    #: Settings of a training-based evaluator (e.g. epochs, pruner); part of the study's identity.
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    storage: str = ""
    study: str = ""
    export: bool = True
    latency_source: str = "auto"
    table: str = ""
    allow_foreign_table: bool = False
    #: Differentiable search (``strategy="darts"``): data, supernet training and latency term.
    data: str = "digits"
    epochs: int = 30
    warmup: int = 5
    batch: int = 64
    darts_order: int = 1
    sampling: str = "softmax"
    latency_term: str = "add#linear"
    latency_weight: float = 1.0
    #: Adapt the add#linear weight toward the latency target (dual ascent, LightNAS); False: fixed.
    adapt_latency_weight: bool = True
    #: How the trained supernet picks its architecture: perturbation (DARTS-PT) | alpha.
    selection: str = "perturbation"
    train_device: str = "cpu"
    #: Resolved from ``latency_source``: measured | lookup table | table (set by :class:`Search`).
    latency_model: str = ""

    def default_out(self) -> str:
        return str(Path("hwnas-runs") / f"{self.space}-{self.device}-{format_ms(self.latency_ms)}-{self.strategy}-seed{self.seed}")

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_KEYS}


@dataclass
class TrialRecord:
    """What one completed trial says, read back from the study."""

    number: int
    arch: str
    accuracy: float | None
    latency_ms: float
    feasible: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def build_space(config: SearchConfig) -> SearchSpace:
    from hwnas.spaces import get_space

    space = get_space(config.space)
    if isinstance(space, NB201Space) and config.dataset != space.dataset:
        space = NB201Space(dataset=config.dataset)
    return space


class Search:
    """Runs (or resumes) the study of one :class:`SearchConfig`."""

    def __init__(self, config: SearchConfig, *, log: Callable[[str], None] = lambda s: None) -> None:
        if config.trials < 1:
            raise UsageError(f"--trials must be >= 1, got {config.trials}; e.g. --trials 100")
        check_strategy(config.strategy)
        self.config = config
        self.log = log
        self.space = build_space(config)
        self.device: Device = get_device(config.device)
        self.latency_model: LatencyModel = latency_model_for(
            self.device,
            self.space,
            config.latency_source,
            table_path=config.table or None,
            allow_foreign=config.allow_foreign_table,
            log=log,
        )
        config.latency_model = self.latency_model.kind
        warning = getattr(self.latency_model, "quality_warning", lambda: None)()
        if warning:
            log(warning)
        if len(config.also_devices) != len(config.also_latency_ms):
            raise UsageError(
                f"{1 + len(config.also_devices)} devices but {1 + len(config.also_latency_ms)} latency budgets; give one --latency per "
                "--device, in the same order, e.g. --device cpu --latency 2ms --device pixel3 --latency 5ms"
            )
        names = [config.device, *config.also_devices]
        if len(set(names)) != len(names):
            raise UsageError(f"--device {names} names a device twice; name each once")
        self.also: list[tuple[Device, LatencyModel, float]] = []
        for name, budget in zip(config.also_devices, config.also_latency_ms, strict=True):
            dev = get_device(name)
            self.also.append((dev, latency_model_for(dev, self.space, "auto", log=log), budget))
        config.out = config.out or config.default_out()
        self.out = Path(config.out)
        config.storage = config.storage or f"{JOURNAL_PREFIX}{self.out / 'study.journal'}"
        config.study = config.study or "hwnas"
        self.evaluator: Evaluator | None
        context = EvalContext(
            data=config.data,
            train_device=config.train_device,
            seed=config.seed,
            out_dir=self.out,
            storage=config.storage,
            study=config.study,
            log=log,
        )
        try:
            self.evaluator = make_evaluator(config.evaluator, self.space, context=context, **config.evaluator_options)
        except UsageError:
            if config.strategy != "darts":
                raise
            self.evaluator = None  # the derived arch's inherited-weight accuracy, once DARTS has run
        if config.strategy == "darts":
            self._darts_config().check()
        self._seen: dict[str, optuna.trial.FrozenTrial] = {}
        self._best: tuple[float, float, int] | None = None

    # -- run directory and study ---------------------------------------------
    def _prepare_out(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a folder; pick a new folder, e.g. --out runs/exp1")
        if out.is_dir():
            cfg = out / "config.json"
            if not cfg.exists() and any(out.iterdir()):
                raise UsageError(f"--out {out} is not empty and holds no hwnas run; pick a new or empty folder")
            if cfg.exists():
                try:
                    old = json.loads(cfg.read_text())
                except (OSError, json.JSONDecodeError):
                    raise UsageError(f"{cfg} is unreadable; pick a new --out folder") from None
                diff = {k: (old.get(k), v) for k, v in self.config.identity().items() if old.get(k) != v}
                if diff:
                    k, (was, now) = next(iter(diff.items()))
                    raise UsageError(
                        f"{out} holds a run with {k}={was!r}, not {now!r}; rerun with the same settings to resume, or pick another --out"
                    )
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to --out {out}: {exc.strerror}; pick a writable folder") from None

    def _storage(self) -> Any:
        from hwnas.storage import open_storage

        return open_storage(self.config.storage)

    def _study(self) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = self._storage()
        study = optuna.create_study(storage=storage, study_name=self.config.study, directions=DIRECTIONS, load_if_exists=True)
        ident = self.config.identity()
        old = study.user_attrs.get("hwnas")
        if old is None:
            study.set_user_attr("hwnas", ident)
        elif old != ident:
            k = next(k for k in ident if old.get(k) != ident[k])
            raise UsageError(
                f"study {self.config.study!r} was created with {k}={old.get(k)!r}, not {ident[k]!r}; "
                "use the same settings to resume or another --study"
            )
        return study

    # -- one trial ------------------------------------------------------------
    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        arch = self.space.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.space.dimensions()})
        text = self.space.to_string(arch)
        trial.set_user_attr("arch", text)
        prior = self._seen.get(self.space.key(arch))
        if prior is not None:
            # The same network was already evaluated in this study: reuse its numbers, don't pay twice.
            old = prior
            for key, value in old.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("reused_from_trial", prior.number)
            trial.set_user_attr("arch", text)
            latency = float(old.user_attrs["latency_ms"])
            for name, value in old.constraints.items():
                trial.set_constraint(name, value)
            return float(old.values[0]), latency
        model = self.space.build(arch)
        lat = self.latency_model.latency(arch, model)
        trial.set_user_attr("latency_ms", lat.ms)
        trial.set_user_attr("latency_source", lat.source)
        for key in ("p90_ms", "iqr_ms", "repeats", "threads", "batch", "table", "index"):
            if key in lat.details:
                trial.set_user_attr(f"latency_{key}", lat.details[key])
        from hwnas.cost.flops import compute_cost

        cc = compute_cost(model, self.space.input_shape(arch))
        trial.set_user_attr("flops_m", cc.flops_m)
        trial.set_user_attr("params_m", cc.params_m)
        trial.set_user_attr("flops_source", cc.source)
        also = []
        for dev, model_, limit in self.also:
            other = model_.latency(arch, model)
            trial.set_user_attr(f"latency_ms@{dev.name}", other.ms)
            trial.set_user_attr(f"latency_source@{dev.name}", other.source)
            also.append((f"latency_ms@{dev.name}", other.ms, limit))
        over = self._set_constraints(trial, lat.ms, cc.flops_m, cc.params_m, also)
        if over:
            trial.set_user_attr("accuracy_source", f"not evaluated: over the {' and '.join(over)} budget")
            return NOT_EVALUATED, lat.ms
        assert self.evaluator is not None
        try:
            acc = self.evaluator.evaluate(arch, trial)
        except EvaluationFailed as exc:
            trial.set_user_attr("failed_because", str(exc))
            raise
        trial.set_user_attr("accuracy", acc.value)
        trial.set_user_attr("accuracy_source", acc.source)
        for key, value in acc.extras.items():
            trial.set_user_attr(key, value)
        return acc.value, lat.ms

    # -- differentiable search ------------------------------------------------
    def _darts_config(self) -> Any:
        from hwnas.darts.train import DartsConfig

        c = self.config
        return DartsConfig(
            epochs=c.epochs,
            warmup=c.warmup,
            batch=c.batch,
            order=c.darts_order,
            sampling=c.sampling,
            latency_term=c.latency_term,
            latency_weight=c.latency_weight,
            adapt_weight=c.adapt_latency_weight,
            selection=c.selection,
            target_ms=c.latency_ms,
            seed=c.seed,
            device=c.train_device,
        )

    def _run_darts(self, study: optuna.Study, done: int) -> None:
        """Train the supernet once, derive one arch, record it as a trial (once: a rerun resumes)."""
        import optuna

        if any(t.user_attrs.get("strategy") == "darts" for t in study.get_trials(deepcopy=False)):
            if done:
                self.log("darts: the derived architecture is already in the study (delete the run folder to search again)")
                return
        from hwnas.darts.run import run_darts

        if self.config.train_device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UsageError("--train-device cuda but torch sees no CUDA GPU here; use --train-device cpu")
        outcome = run_darts(
            self.space, self.latency_model, self.config.latency_ms, self._darts_config(), data=self.config.data, log=self.log
        )
        (self.out / "darts.json").write_text(
            json.dumps(outcome.summary() | {"history": [h.__dict__ for h in outcome.result.history]}, indent=2) + "\n"
        )
        if self.evaluator is None:
            self.evaluator = _FixedAccuracy(
                self.space.key(outcome.arch),
                outcome.supernet_valid_accuracy,
                f"darts supernet, inherited weights (batch-norm re-estimated), {outcome.data['name']} validation split",
            )
        study.enqueue_trial(dict(outcome.arch), user_attrs={"strategy": "darts", "darts": outcome.summary()})
        study.sampler = optuna.samplers.RandomSampler(seed=self.config.seed)
        study.optimize(self._objective, n_trials=1, callbacks=[self._after_trial], gc_after_trial=False)

    def _set_constraints(
        self, trial: optuna.Trial, latency_ms: float, flops_m: float, params_m: float, also: Sequence[tuple[str, float, float]] = ()
    ) -> list[str]:
        """Record every budget as a constraint (<= 0 is met); return the names of those missed."""
        c = self.config
        budgets = [("latency_ms", latency_ms, c.latency_ms), ("flops_m", flops_m, c.flops_m), ("params_m", params_m, c.params_m), *also]
        over = []
        for name, value, limit in budgets:
            if limit is None:
                continue
            trial.set_constraint(name, value - limit)
            if value > limit:
                over.append(name.replace("_ms@", " on ").replace("_ms", "").replace("_m", ""))
        return over

    def _after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import optuna

        if trial.state != optuna.trial.TrialState.COMPLETE:
            self.log(f"trial {trial.number}: {trial.state.name.lower()}")
            return
        arch_text = trial.user_attrs.get("arch", "?")
        key = self.space.key(self.space.from_string(arch_text))
        self._seen.setdefault(key, trial)
        acc, lat = trial.values
        feasible = bool(trial.constraints) and all(v <= 0 for v in trial.constraints.values())
        if feasible and (self._best is None or (acc, -lat) > (self._best[0], -self._best[1])):
            self._best = (acc, lat, trial.number)
        done = self._count_complete(study)
        best = f"best feasible {self._best[0]:.2f}% @ {self._best[1]:.3f} ms (trial {self._best[2]})" if self._best else "no feasible yet"
        status = f"acc {acc:6.2f}%" if feasible else "over budget "
        reused = " (reused)" if "reused_from_trial" in trial.user_attrs else ""
        self.log(
            f"[{done:>4}/{self.config.trials}] trial {trial.number:>4}: {status} lat {lat:8.3f} ms "
            f"{trial.user_attrs.get('latency_source', '')}{reused} | {best}"
        )

    @staticmethod
    def _count_complete(study: optuna.Study) -> int:

        return len(study.get_trials(deepcopy=False, states=_counted_states()))

    # -- the run ---------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import optuna

        t0 = time.perf_counter()
        self._prepare_out()
        (self.out / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        study = self._study()
        self._study_ref = study
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            self._after_trial_quiet(t)
        done = self._count_complete(study)
        budget = self.config.latency_ms
        if done:
            self.log(f"resuming study {self.config.study!r} in {self.config.storage}: {done} of {self.config.trials} trials done")
        else:
            bound, bound_arch = self.latency_model.lower_bound()
            self.log(
                f"search {self.space.name} on {self.device.name} under {format_ms(budget)}: "
                f"fastest probe {self.space.to_string(bound_arch)} = {bound.ms:.3f} ms ({bound.source})"
            )
            for dev, model_, limit in self.also:
                other, other_arch = model_.lower_bound()
                if other.ms > limit:
                    raise InfeasibleError(
                        f"no {self.space.name} architecture can meet {format_ms(limit)} on {dev.name}: "
                        f"{self.space.to_string(other_arch)} takes {other.ms:.4g} ms ({other.source}); "
                        f"raise its --latency to at least {other.ms:.4g}ms"
                    )
            if bound.ms > budget:
                what = (
                    "the fastest architecture in the space"
                    if bound.source.startswith("table")
                    else "the smallest architecture of the space"
                )
                raise InfeasibleError(
                    f"no {self.space.name} architecture can meet {format_ms(budget)} on {self.device.name}: "
                    f"{what} takes {bound.ms:.4g} ms ({bound.source}); raise --latency to at least {bound.ms:.4g}ms"
                )
        remaining = self.config.trials - done
        if self.config.strategy == "darts":
            self._run_darts(study, done)
        elif remaining > 0:
            # Seed from (seed, trials done) so a resumed run draws new candidates, deterministically.
            seed = int(np.random.SeedSequence([self.config.seed, done]).generate_state(1)[0])
            study.sampler = make_sampler(
                self.config.strategy, seed=seed, space=self.space, latency_ms=budget, feasible=self._cheap_feasibility()
            )
            study.optimize(
                self._objective,
                n_trials=remaining,
                callbacks=[
                    self._after_trial,
                    optuna.study.MaxTrialsCallback(self.config.trials, states=_counted_states()),
                ],
                catch=(EvaluationFailed,),
                gc_after_trial=False,
            )
        report = self._report(study)
        report["wall_time_s"] = round(time.perf_counter() - t0, 2)
        self._write_report(report)
        if report["best"] is None:
            raise InfeasibleError(
                f"none of {report['trials']['complete']} trials met {format_ms(budget)} on {self.device.name}; "
                f"the smallest latency seen is {report['trials']['min_latency_ms']:.4g} ms; raise --latency or run more --trials "
                f"(results kept in {self.out})"
            )
        if self.config.export:
            report["export"] = self._export(report["best"])
            report["measured_latency_ms"] = report["export"]["measured_latency_ms"]
            report["wall_time_s"] = round(time.perf_counter() - t0, 2)
            self._write_report(report)
        return report

    def _cheap_feasibility(self) -> Callable[[Arch], bool] | None:
        """A budget predicate for strategies when latency costs nothing to know (a table), else None."""
        models = [(self.latency_model, self.config.latency_ms)] + [(m, b) for _, m, b in self.also]
        if any(m.kind == "measured" for m, _ in models):
            return None
        return lambda arch: all(m.latency(arch).ms <= b for m, b in models)

    def _after_trial_quiet(self, trial: optuna.trial.FrozenTrial) -> None:
        log, self.log = self.log, lambda s: None
        try:
            self._after_trial(self._study_ref, trial)
        finally:
            self.log = log

    # -- results ---------------------------------------------------------------
    def records(self, study: optuna.Study) -> list[TrialRecord]:
        import optuna

        out = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            acc, lat = t.values
            feasible = bool(t.constraints) and all(c <= 0 for c in t.constraints.values())
            out.append(TrialRecord(t.number, t.user_attrs.get("arch", ""), acc if feasible else None, lat, feasible, dict(t.user_attrs)))
        return out

    def _report(self, study: optuna.Study) -> dict[str, Any]:
        import optuna

        recs = self.records(study)
        feas = [r for r in recs if r.feasible]
        # A reused trial repeats an earlier one's network and numbers: one front point per network.
        distinct = [r for r in feas if "reused_from_trial" not in r.attrs]
        front = []
        if distinct:
            vals = np.array([[r.accuracy, r.latency_ms] for r in distinct], dtype=float)
            mask = is_non_dominated(vals, [True, False])
            front = sorted((r for r, m in zip(distinct, mask, strict=True) if m), key=lambda r: r.latency_ms)
        best = max(distinct, key=lambda r: (r.accuracy, -r.latency_ms, -r.number)) if distinct else None
        states = [t.state for t in study.get_trials(deepcopy=False)]
        trials = {
            "budget": self.config.trials,
            "complete": len(recs),
            "feasible": len(feas),
            "infeasible": len(recs) - len(feas),
            "reused": sum("reused_from_trial" in r.attrs for r in recs),
            "failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
            "min_latency_ms": min((r.latency_ms for r in recs), default=None),
        }
        self._write_front(front)
        best_d = self._trial_summary(best) if best else None
        report: dict[str, Any] = {
            "space": self.space.name,
            "dataset": self.config.dataset if isinstance(self.space, NB201Space) else None,
            "device": self.device.name,
            "latency_budget_ms": self.config.latency_ms,
            "also_devices": [{"device": d.name, "latency_budget_ms": b, "latency_model": m.describe()} for d, m, b in self.also],
            "flops_budget_m": self.config.flops_m,
            "params_budget_m": self.config.params_m,
            "strategy": self.config.strategy,
            "seed": self.config.seed,
            "evaluator": self.evaluator.describe() if self.evaluator is not None else {"name": self.config.evaluator},
            "latency_model": self.latency_model.describe(),
            "study": self.config.study,
            "storage": self.config.storage,
            "trials": trials,
            "best": best_d,
            "front": [self._trial_summary(r) for r in front],
        }
        # Flat keys for scripts: the best arch and its figures.
        for key in ("arch", "accuracy", "accuracy_source", "test_accuracy", "latency_ms", "latency_source", "flops_m", "params_m"):
            report[key] = best_d.get(key) if best_d else None
        report["measured_latency_ms"] = None
        return report

    def _trial_summary(self, r: TrialRecord) -> dict[str, Any]:
        a = r.attrs
        return {
            "trial": r.number,
            "arch": r.arch,
            "accuracy": r.accuracy,
            "accuracy_source": a.get("accuracy_source"),
            "test_accuracy": a.get("test_accuracy"),
            "latency_ms": r.latency_ms,
            "latency_source": a.get("latency_source"),
            "latency_p90_ms": a.get("latency_p90_ms"),
            "flops_m": a.get("flops_m"),
            "params_m": a.get("params_m"),
            "latency_ms_also": {d.name: a.get(f"latency_ms@{d.name}") for d, _, _ in self.also} or None,
            "nb201_index": a.get("nb201_index"),
        }

    def _write_front(self, front: list[TrialRecord]) -> None:
        import csv

        cols = ["trial", "arch", "accuracy", "test_accuracy", "latency_ms", "latency_source", "flops_m", "params_m"]
        with open(self.out / "front.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in front:
                w.writerow(self._trial_summary(r))

    def _write_report(self, report: dict[str, Any]) -> None:
        tmp = self.out / "report.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        tmp.replace(self.out / "report.json")

    def _export(self, best: dict[str, Any]) -> dict[str, Any]:
        from hwnas.export import export_verified

        arch = self.space.from_string(best["arch"])
        self.log(f"exporting trial {best['trial']} to {self.out / 'best.onnx'} (checker, parity, re-measure)")
        meta = {
            "trial": best["trial"],
            "accuracy": best["accuracy"],
            "accuracy_source": best["accuracy_source"],
            "test_accuracy": best["test_accuracy"],
            "latency_ms": best["latency_ms"],
            "latency_source": best["latency_source"],
            "device": self.device.name,
            "flops_m": best["flops_m"],
            "params_m": best["params_m"],
        }
        result = export_verified(self.space, arch, self.out / "best.onnx", device=self.device, metadata=meta, seed=self.config.seed)
        d = result.as_dict()
        d["predicted_latency_ms"] = best["latency_ms"]
        d["predicted_source"] = best["latency_source"]
        measured = d["measured_latency_ms"]
        d["predicted_vs_measured_pct"] = None if measured is None else round(100.0 * (best["latency_ms"] - measured) / measured, 2)
        if measured is None:
            d["not_measured_because"] = f"{self.device.name} is a table device; its latency comes from the benchmark table"
        return d


def _counted_states() -> tuple[Any, ...]:
    import optuna

    return tuple(optuna.trial.TrialState[name] for name in COUNTED_STATES)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _FixedAccuracy:
    """The accuracy DARTS measured for its derived arch (spaces without a benchmark table)."""

    name = "darts-inherited"

    def __init__(self, key: str, value: float, source: str) -> None:
        self.key, self.value, self.source = key, value, source

    def evaluate(self, arch: Arch, trial: Any = None) -> Any:
        from hwnas.evaluate import Accuracy

        return Accuracy(self.value, self.source)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source}


def check_strategy(name: str) -> None:
    """UsageError (with a did-you-mean) unless ``name`` is a sampler strategy or ``darts``."""
    if name == "darts" or name in STRATEGIES:
        return
    from hwnas.registry import did_you_mean

    valid = sorted([*STRATEGIES.names(), "darts"])
    raise UsageError(f"unknown strategy {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
