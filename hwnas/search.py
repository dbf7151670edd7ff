"""One search run: an Optuna study of (accuracy max, latency min) under a latency budget.

Data flow per trial: the strategy's sampler proposes an arch -> latency (measured or table)
and FLOPs/parameters -> over budget: recorded infeasible, no accuracy spent -> else the
evaluator's accuracy -> the trial is stored with every number's source. After the trials:
the feasible Pareto front, the best feasible arch exported to verified ONNX, a report.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hwnas.cost.latency import LatencyModel, latency_model_for
from hwnas.device import Device, get_device
from hwnas.errors import InfeasibleError, UsageError
from hwnas.evaluate import EvalContext, EvaluationFailed, Evaluator, check_train_device, make_evaluator
from hwnas.pareto import is_non_dominated
from hwnas.spaces import Arch, SearchSpace
from hwnas.spaces.nb201 import NB201Space
from hwnas.storage import FAILED_BECAUSE, JOURNAL_PREFIX, WORKER_ATTR, display_url, fail_stale_trials, this_worker, trial_is_judged
from hwnas.strategies import STRATEGIES, make_sampler
from hwnas.strategies._seeding import PerTrialSeed, trial_slot
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
#: Trial system attribute: the trial's slot, the number of trials done or in flight before it (keys its seed).
SLOT_ATTR = "hwnas:slot"
#: Seconds between looks at the storage while waiting for other workers' trials in flight.
WAIT_POLL_S = 1.0


class BudgetFilled(RuntimeError):
    """Trials done or in flight on other workers already fill the budget: this one is not run."""


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
        device = Path(self.device).stem if self.device.endswith(".toml") else self.device  # a device file: its name, not its path
        return str(Path("hwnas-runs") / f"{self.space}-{device}-{format_ms(self.latency_ms)}-{self.strategy}-seed{self.seed}")

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
            if config.strategy != "darts" or config.evaluator_options:
                raise  # options the evaluator refuses are an error even where DARTS could go on without it
            self.evaluator = None  # the derived arch's inherited-weight accuracy, once DARTS has run
        if config.strategy == "darts":
            self._darts_config().check()
        self._seen: dict[str, optuna.trial.FrozenTrial] = {}
        self._best: tuple[float, float, int] | None = None
        self._known: set[int] = set()  # numbers of the completed trials already in _seen and _best
        self._slots: dict[int, int] = {}  # trial id -> slot, from _start_trial to _objective

    # -- run directory and study ---------------------------------------------
    def _prepare_out(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a folder; pick a new folder, e.g. --out runs/exp1")
        if out.is_dir():
            cfg = out / "config.json"
            # Another worker sharing the folder may be a moment into its start: its files don't make the folder foreign.
            starting = (".write-test", "study.journal", "config.json.")
            if not cfg.exists() and any(not p.name.startswith(starting) for p in out.iterdir()):
                raise UsageError(f"--out {out} is not empty and holds no hwnas run; pick a new or empty folder")
            if cfg.exists():
                try:
                    old = json.loads(cfg.read_text())
                except (OSError, json.JSONDecodeError):
                    raise UsageError(f"{cfg} is unreadable; pick a new --out folder") from None
                if not isinstance(old, dict):
                    raise UsageError(f"{cfg} is not an hwnas run configuration (not a JSON object); pick a new --out folder")
                diff = {k: (old.get(k), v) for k, v in self.config.identity().items() if old.get(k) != v}
                if diff:
                    k, (was, now) = next(iter(diff.items()))
                    raise UsageError(
                        f"{out} holds a run with {k}={was!r}, not {now!r}; rerun with the same settings to resume, or pick another --out"
                    )
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"  # per process: several workers may share the folder
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
            if self.evaluator is not None:
                # The evaluator's resolved settings (defaults included) and where its accuracies come from.
                study.set_user_attr("hwnas_evaluator", self.evaluator.describe())
        elif old != ident:
            k = next(k for k in ident if old.get(k) != ident[k])
            raise UsageError(
                f"study {self.config.study!r} was created with {k}={old.get(k)!r}, not {ident[k]!r}; "
                "use the same settings to resume or another --study"
            )
        return study

    # -- one trial ------------------------------------------------------------
    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        slot = self._slots.pop(trial._trial_id, None)
        if slot is not None and slot >= self.config.trials:
            # Other workers started trials first, between this worker's last look and this trial's creation.
            reason = f"not run: the {slot} trials done or in flight before it already fill the budget of {self.config.trials}"
            trial.set_user_attr(FAILED_BECAUSE, reason)
            raise BudgetFilled(reason)
        arch = self.space.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.space.dimensions()})
        text = self.space.to_string(arch)
        trial.set_user_attr("arch", text)
        prior = self._seen.get(self.space.key(arch))
        if prior is None:
            # Another worker may have evaluated it since this one last looked.
            self._sync_seen(trial.study)
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
        except KeyboardInterrupt:
            trial.set_user_attr(FAILED_BECAUSE, "interrupted (Ctrl-C) during its evaluation; its work is redone on resume")
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

        check_train_device(self.config.train_device)
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
            why = trial.user_attrs.get(FAILED_BECAUSE)
            self.log(f"trial {trial.number}: {trial.state.name.lower()}" + (f": {why}" if why else ""))
            return
        acc, lat, feasible = self._note(trial)
        done = self._count_complete(study)
        best = f"best feasible {self._best[0]:.2f}% @ {self._best[1]:.3f} ms (trial {self._best[2]})" if self._best else "no feasible yet"
        status = f"acc {acc:6.2f}%" if feasible else "over budget "
        reused = " (reused)" if "reused_from_trial" in trial.user_attrs else ""
        self.log(
            f"[{done:>4}/{self.config.trials}] trial {trial.number:>4}: {status} lat {lat:8.3f} ms "
            f"{trial.user_attrs.get('latency_source', '')}{reused} | {best}"
        )

    def _note(self, trial: optuna.trial.FrozenTrial) -> tuple[float, float, bool]:
        """Take a completed trial into ``_seen`` (networks not to evaluate again) and ``_best``."""
        arch_text = trial.user_attrs.get("arch", "?")
        key = self.space.key(self.space.from_string(arch_text))
        self._seen.setdefault(key, trial)
        self._known.add(trial.number)
        acc, lat = trial.values
        feasible = bool(trial.constraints) and all(v <= 0 for v in trial.constraints.values())
        if feasible and (self._best is None or (acc, -lat) > (self._best[0], -self._best[1])):
            self._best = (acc, lat, trial.number)
        return acc, lat, feasible

    def _sync_seen(self, study: optuna.Study) -> None:
        """Take in the trials other workers completed (reuse their networks, know their best)."""
        import optuna

        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.number not in self._known:
                self._note(t)

    def _start_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        """Record this worker on a new trial and return the trial's slot: the trials done (counted)
        or in flight with a smaller number. The slot keys the trial's seed, so the same history
        gives the same proposal in a resumed run (a failed trial holds a number, not a slot), and
        distinct trials in flight get distinct seeds; a slot past the budget is not run."""
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, self._worker)
        slot = trial_slot(study, trial, _counted_states())
        study._storage.set_trial_system_attr(trial._trial_id, SLOT_ATTR, slot)
        self._slots[trial._trial_id] = slot
        return slot

    def _stop_at_budget(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop this worker once the trials done and those in flight elsewhere fill the budget.

        Optuna's MaxTrialsCallback counts only finished trials, so each of W workers could start
        one more and overshoot by up to W - 1; a trial in flight that then fails is redone by its
        own worker (whose look finds room again), or after the wait in :meth:`_run_trials`.
        """
        import optuna

        fail_stale_trials(study, log=self.log)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if self._count_complete(study) + len(running) >= self.config.trials:
            study.stop()

    def _run_trials(self, study: optuna.Study) -> None:
        """Run trials until the study's counted trials fill the budget, with any other workers
        of the same study, then wait for their trials in flight so the report is final."""
        import optuna

        c, feasible = self.config, self._cheap_feasibility()

        def factory(seed: int) -> optuna.samplers.BaseSampler:
            return make_sampler(c.strategy, seed=seed, space=self.space, latency_ms=c.latency_ms, feasible=feasible)

        study.sampler = PerTrialSeed(factory, seed=c.seed, key=self._start_trial)
        ran_dry = False
        while True:
            done = self._count_complete(study)
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if done + len(running) < c.trials and not ran_dry:
                study.optimize(
                    self._objective,
                    n_trials=c.trials - done,
                    callbacks=[self._after_trial, self._stop_at_budget],
                    catch=(EvaluationFailed, BudgetFilled),
                    gc_after_trial=False,
                )
                # Every trial of this round failed: stop here rather than fail forever (a rerun retries).
                ran_dry = self._count_complete(study) == done
                continue
            if not self._await_in_flight(study):
                return

    def _await_in_flight(self, study: optuna.Study) -> bool:
        """Wait until no trial of another live worker is in flight (a trial whose worker is found
        gone is failed); return whether there was one to wait for. Trials whose worker no one here
        can judge (another machine, a storage without heartbeat) are not waited for."""
        import optuna

        said: set[int] = set()
        waited = False
        while True:
            fail_stale_trials(study, log=self.log)
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            judged = [t for t in running if trial_is_judged(study, t)]
            for t in running:
                if t not in judged and t.number not in said:
                    said.add(t.number)
                    self.log(
                        f"trial {t.number} is in flight on another machine and this storage has no heartbeat: not waited for; "
                        "the report counts it as running (rerun the command once it is done, or use an RDB storage)"
                    )
            if not judged:
                return waited
            if not waited:
                numbers = ", ".join(str(t.number) for t in judged)
                self.log(f"waiting for {len(judged)} trial(s) in flight on other workers ({numbers}) so that the report includes them")
            waited = True
            time.sleep(WAIT_POLL_S)

    @staticmethod
    def _count_complete(study: optuna.Study) -> int:

        return len(study.get_trials(deepcopy=False, states=_counted_states()))

    # -- the run ---------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import optuna

        t0 = time.perf_counter()
        self._prepare_out()
        # The storage URL as given: `hwnas report` and `hwnas export --run` reopen the study with it.
        self._write_json(self.out / "config.json", asdict(self.config))
        study = self._study()
        self._study_ref = study
        self._worker = this_worker()
        # A trial left RUNNING by a worker that is gone (kill -9, a crash) is failed and redone.
        fail_stale_trials(study, log=self.log)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            self._after_trial_quiet(t)
        done = self._count_complete(study)
        budget = self.config.latency_ms
        if done:
            where = display_url(self.config.storage)
            self.log(f"resuming study {self.config.study!r} in {where}: {done} of {self.config.trials} trials done")
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
                        f"raise its --latency to at least {_round_up_ms(other.ms)}"
                    )
            if bound.ms > budget:
                what = (
                    "the fastest architecture in the space"
                    if bound.source.startswith("table")
                    else "the smallest architecture of the space"
                )
                raise InfeasibleError(
                    f"no {self.space.name} architecture can meet {format_ms(budget)} on {self.device.name}: "
                    f"{what} takes {bound.ms:.4g} ms ({bound.source}); raise --latency to at least {_round_up_ms(bound.ms)}"
                )
        if self.config.strategy == "darts":
            self._run_darts(study, done)
        else:
            self._run_trials(study)
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
            with _folder_lock(self.out / ".export.lock"):  # workers sharing --out export one at a time
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
        self._note(trial)

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
            "running": sum(s == optuna.trial.TrialState.RUNNING for s in states),
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
            "storage": display_url(self.config.storage),
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
        tmp = self.out / f"front.csv.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in front:
                w.writerow(self._trial_summary(r))
        tmp.replace(self.out / "front.csv")

    def _write_report(self, report: dict[str, Any]) -> None:
        self._write_json(self.out / "report.json", report)

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        """Write whole or not at all: workers sharing the run folder may write and read it at once."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        tmp.replace(path)

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
        # An evaluator with trained weights (the supernet's) exports the network it scored, weights included.
        build_trained = getattr(self.evaluator, "build_trained", None)
        trained = build_trained(arch) if build_trained is not None else None
        result = export_verified(
            self.space, arch, self.out / "best.onnx", device=self.device, metadata=meta, seed=self.config.seed, trained=trained
        )
        d = result.as_dict()
        d["predicted_latency_ms"] = best["latency_ms"]
        d["predicted_source"] = best["latency_source"]
        measured = d["measured_latency_ms"]
        d["predicted_vs_measured_pct"] = None if measured is None else round(100.0 * (best["latency_ms"] - measured) / measured, 2)
        if measured is None:
            d["not_measured_because"] = f"{self.device.name} is a table device; its latency comes from the benchmark table"
        return d


@contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` among the processes of this machine (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _round_up_ms(value_ms: float) -> str:
    """``value_ms`` rounded up to 4 significant digits, as a --latency value that meets it."""
    if value_ms <= 0 or not math.isfinite(value_ms):
        return format_ms(value_ms)
    step = 10.0 ** (math.floor(math.log10(value_ms)) - 3)
    return format_ms(round(math.ceil(value_ms / step - 1e-9) * step, 12))


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
