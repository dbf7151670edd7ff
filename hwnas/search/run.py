"""One search run: resolve -> run folder -> study -> trials (or DARTS) -> report -> export.

The stages live in their own modules (:mod:`.config`, :mod:`.rundir`, :mod:`.study`,
:mod:`.pipeline`, :mod:`.coordinate`, :mod:`.results`); :class:`Search` runs them in order.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas import trials as T
from hwnas.errors import InfeasibleError, TrialsFailedError
from hwnas.search import export_worker, results, rundir
from hwnas.search.config import IDENTITY_VERSION, Plan, SearchConfig, resolve
from hwnas.search.coordinate import Coordinator, count_done
from hwnas.search.pipeline import TrialPipeline
from hwnas.search.progress import TrialClock, clock_text
from hwnas.search.reference import ReferenceMonitor
from hwnas.search.rundir import VERSION_KEY, write_json
from hwnas.search.study import open_study
from hwnas.storage import display_url, fail_stale_trials
from hwnas.trials import TrialRecord
from hwnas.units import format_ms

if TYPE_CHECKING:
    import optuna

    from hwnas.spaces import Arch


class Search:
    """Runs (or resumes) the study of one :class:`SearchConfig`; checks it whole on construction."""

    def __init__(self, config: SearchConfig, *, log: Callable[[str], None] | None = None) -> None:
        """``log`` takes each progress line; by default they go to the ``hwnas.search`` logger at
        INFO (``logging.basicConfig(level=logging.INFO)`` shows them)."""
        self.config = config
        self.log = log = log if log is not None else logging.getLogger("hwnas.search").info
        self.plan: Plan = resolve(config, log=log)
        for warning in self.plan.warnings:
            log(warning)
        self.space = self.plan.space
        self.device = self.plan.device
        self.evaluator = self.plan.evaluator
        self.out = self.plan.out
        self.pipeline = TrialPipeline(self.plan, log=log)
        self.monitor = ReferenceMonitor(self.plan, log=log)
        self._best: TrialRecord | None = None
        self._t0 = time.perf_counter()
        self._done0 = 0
        self._trial_clock = TrialClock()
        self._worker: export_worker.ExportWorker | None = None

    # -- the study ------------------------------------------------------------------
    def _study(self) -> optuna.Study:
        return open_study(self.plan)

    def records(self, study: optuna.Study) -> list[TrialRecord]:
        return results.records(study)

    # -- the run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import optuna

        self._t0 = t0 = time.perf_counter()
        self._trial_clock = TrialClock()
        c, plan = self.config, self.plan
        # Every up-front check runs before anything is written to --out: a refused start leaves
        # no folder, config.json or journal behind to block the corrected command.
        resumed = rundir.check(self.out, c.identity())
        if not resumed:
            self._check_before_writing()
        made = rundir.create(self.out)
        try:
            study = self._study()  # a study of another run in a given --storage is refused here
        except BaseException:
            if made:
                rundir.remove_if_empty(self.out)
            raise
        exported = results.exported_so_far(self.out)  # before this run rewrites report.json
        # The storage URL (a journal by its absolute path): `hwnas report` and `hwnas export --run`
        # reopen the study with it. The latest command's settings, and every strategy that has
        # added trials to this folder.
        write_json(
            self.out / "config.json", asdict(c) | {VERSION_KEY: IDENTITY_VERSION, "strategies": _strategies_so_far(self.out, c.strategy)}
        )
        # A trial left RUNNING by a worker that is gone (kill -9, a crash) is failed and redone.
        fail_stale_trials(study, log=self.log)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            self._take(t)
        done = self._done0 = count_done(study)
        if done:
            self.log(f"resuming study {c.study!r} in {display_url(c.storage)}: {done} of {c.trials} trials done")
        elif resumed:
            self._probe_budgets()  # a folder whose earlier start ran no trial (as before)
        t_trials = time.perf_counter()
        # torch, onnx and ONNX Runtime are imported for the export on a second core while trials that
        # measure nothing run (export_worker.py); closed in the finally below, whatever happens.
        # Only where no device is measured live (a benchmark table device's source is kind "table"): a
        # lookup-table device's reference network is re-measured during the trials.
        self._worker = export_worker.start(
            export=c.export and c.strategy != "darts" and c.evaluator == "table",
            measures=any(not ch.source.cheap or (ch.device is not None and ch.source.kind != "table") for ch in plan.charged),
        )
        try:
            return self._trials_report_export(study, done, t0, t_trials, exported)
        finally:
            if self._worker is not None:
                self._worker.close()

    def _trials_report_export(self, study: optuna.Study, done: int, t0: float, t_trials: float, exported: Any) -> dict[str, Any]:
        c, plan = self.config, self.plan
        if c.strategy == "darts":
            self._run_darts(study, done)
            finished = True
        else:
            self.monitor.checkpoint(study, done)
            coordinator = Coordinator(self.pipeline, budget=int(c.trials or 0), log=self.log)
            options = {"latency_ms": c.latency_ms, "feasible": self._cheap_feasibility()}
            finished = coordinator.run(study, strategy=c.strategy, seed=c.seed, sampler_options=options, after_trial=self._after_trial)
            self.monitor.checkpoint(study, count_done(study), final=True)
        t_report = time.perf_counter()
        report = results.report(plan, study, log=self.log)
        report["wall_time_s"] = round(time.perf_counter() - t0, 2)
        # Where this command's time went (seconds): the fixed costs of a short run against its trials.
        timings = report["timings_s"] = {
            "before_trials": round(t_trials - t0, 3),
            "trials": round(t_report - t_trials, 3),
            "report": round(time.perf_counter() - t_report, 3),
        }
        results.write_report(plan, report)
        if not finished:
            raise TrialsFailedError(self._all_failed(study, report))
        if report["best"] is None:
            raise InfeasibleError(self._none_feasible(report))
        if c.export:
            t_export = time.perf_counter()
            report["export"] = results.export_best(plan, report["best"], log=self.log, worker=self._worker)
            report["measured_latency_ms"] = report["export"]["measured_latency_ms"]
            results.attach_agreement(report)  # the export's measurement joins the search's and the re-check's
            report["wall_time_s"] = round(time.perf_counter() - t0, 2)
            timings["export"] = round(time.perf_counter() - t_export, 3)
            results.write_report(plan, report)
        else:
            report["export"] = results.earlier_export(plan, report["best"], exported, log=self.log)
            results.write_report(plan, report)
        return report

    def _all_failed(self, study: optuna.Study, report: dict[str, Any]) -> str:
        """One line: the last round's trials all failed; why the last one did; what is kept."""
        import optuna

        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        why = failed[-1].user_attrs.get(T.FAILED_BECAUSE, "no reason recorded") if failed else "no reason recorded"
        t = report["trials"]
        return (
            f"stopped after {t['failed']} failed trial(s) in a row with {t['complete']} of {t['budget']} done; the last failed because: "
            f"{why}; the {t['complete']} completed trials are kept in {self.out}: fix the cause and rerun the same command to resume"
        )

    def _none_feasible(self, report: dict[str, Any]) -> str:
        """Why no trial is feasible: the budget missed most often, and the least value seen for it."""
        recs = [r for r in results.records(self._study())]
        misses: dict[str, int] = {}
        for r in recs:
            for name, v in r.constraints.items():
                if v > 0:
                    misses[name] = misses.get(name, 0) + 1
        n = report["trials"]["complete"]
        where = f"(results kept in {self.out})"
        hint = "raise it" + (" or run more --trials" if self.config.strategy != "darts" else "")
        if not misses:
            return f"none of {n} trials met the budgets; {hint} {where}"
        metric = max(misses, key=lambda k: misses[k])
        con = next(k for k in self.plan.constraints if k.metric == metric)
        least = min((r.costs[metric] for r in recs if metric in r.costs and not r.degenerate), default=None)
        if least is None:  # only networks whose output ignores the input: their figures say nothing
            least = min(r.costs[metric] for r in recs if metric in r.costs)
        return (
            f"none of {n} trials met the budgets: {misses[metric]} missed {con.flag} {con.as_flag_value(con.limit)}; "
            f"the smallest {con.name} seen is {con.format(least)}; {hint} {where}"
        )

    def _check_before_writing(self) -> None:
        """What a new run checks before its folder is made: DARTS's training device and data (the
        sampling strategies' evaluators check theirs in :func:`resolve`), then every budget."""
        c = self.config
        if c.strategy == "darts":
            from hwnas.datasets import load_data
            from hwnas.evaluate import check_train_device

            check_train_device(c.train_device)
            load_data(c.data)  # DARTS loads it again as it trains: a moment, against a folder that blocks the fix
        self._probe_budgets()

    def _probe_budgets(self) -> None:
        """Refuse, before any trial, a budget no architecture of the space can meet."""
        plan = self.plan
        for ch in plan.charged:
            for m in ch.source.metrics():
                name = ch.rename(m.name)
                con = next((k for k in plan.constraints if k.metric == name), None)
                if con is None and not ch.primary:
                    continue
                got = ch.source.lower_bound(m.name)
                if got is None:
                    continue
                cost, arch = got
                if ch.primary:
                    self.log(
                        f"search {self.space.name} on {self.device.name} under {format_ms(self.config.latency_ms)}: "
                        f"fastest probe {self.space.to_string(arch)} = {cost.value:.3f} ms ({cost.source})"
                    )
                if con is not None and cost.value > con.limit:
                    raise InfeasibleError(self._unreachable(con, cost, arch, ch))

    def _unreachable(self, con: Any, cost: Any, arch: Arch, ch: Any) -> str:
        """One line: the budget no architecture can meet, the least the space reaches, the fix."""
        # A benchmark table gives the exact minimum; other sources probe the space's smallest network.
        exact = ch.source.kind == "table"
        what = "the fastest architecture in the space" if exact else "the smallest architecture of the space"
        space = self.space.name
        fix = _round_up(cost.value, con.unit)
        if con.metric.startswith("latency_ms"):
            on = f" on {ch.device}"
            raise_ = "raise --latency" if ch.primary else "raise its --latency"
            return (
                f"no {space} architecture can meet {format_ms(con.limit)}{on}: {what} takes {cost.value:.4g} ms ({cost.source}); "
                f"{raise_} to at least {fix}"
            )
        return (
            f"no {space} architecture can meet {con.flag} {con.as_flag_value(con.limit)} ({con.name}): {what} "
            f"({self.space.to_string(arch)}) has {con.format(cost.value)} ({cost.source}); raise {con.flag} to at least {fix}"
        )

    def _cheap_feasibility(self) -> Callable[[Arch], bool] | None:
        """A budget predicate for strategies over the budgets whose costs are cheap (known before
        any trial): samplers skip proposals it refuses. None when no budget is cheap."""
        cheap = [k for k in self.plan.constraints if k.cheap]
        if not cheap:
            return None
        needed = {k.metric for k in cheap}
        charged = [ch for ch in self.plan.charged if ch.source.cheap and needed & {m.name for m in ch.metrics()}]

        def feasible(arch: Arch) -> bool:
            values: dict[str, float] = {}
            for ch in charged:
                for metric, cost in ch.source.costs(arch).items():
                    values[ch.rename(metric)] = cost.value
            return all(values[k.metric] <= k.limit for k in cheap)

        return feasible

    # -- progress ---------------------------------------------------------------------
    def _take(self, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """Take a completed trial into the pipeline's reuse cache and the best so far."""
        self.pipeline.note(trial)
        rec = TrialRecord.of(trial)
        if (
            rec.feasible
            and not rec.reused
            and (self._best is None or (rec.values[0], -rec.values[1]) > (self._best.values[0], -self._best.values[1]))
        ):
            self._best = rec
        return rec

    def _after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import optuna

        if trial.state != optuna.trial.TrialState.COMPLETE and not results.is_reused(trial):
            why = trial.user_attrs.get(T.FAILED_BECAUSE)
            self.log(f"trial {trial.number}: {trial.state.name.lower()}" + (f": {why}" if why else ""))
            return
        rec = self._take(trial)
        obj = self.plan.objectives[1]
        done = count_done(study)
        b = self._best
        best = f"best feasible {b.values[0]:.2f}% @ {obj.format(b.values[1])} (trial {b.number})" if b else "no feasible yet"
        status = f"acc {rec.values[0]:6.2f}%" if rec.feasible else "over budget "
        over = f" (over {', '.join(rec.attrs.get(T.OVER_BUDGET, []))})" if not rec.feasible else ""
        reused = " (reused)" if rec.reused else ""
        elapsed = time.perf_counter() - self._t0
        # From the recent per-trial time: the start-up before the first trial is no trial's cost.
        self._trial_clock.tick(done)
        left = self._trial_clock.eta(int(self.config.trials or 0) - done)
        eta = "?" if left is None else clock_text(left)
        net = self.space.short(self.space.from_string(rec.arch))
        self.log(
            f"[{done:>4}/{self.config.trials} {clock_text(elapsed)} eta {eta}] trial {trial.number:>4} {net}: "
            f"{status} {obj.metric.split('_')[0]} {obj.format(rec.values[1]):>10} "
            f"{rec.source(obj.metric) or ''}{over}{reused} | {best}"
        )
        self.monitor.checkpoint(study, done)

    # -- differentiable search ----------------------------------------------------------
    def _run_darts(self, study: optuna.Study, done: int) -> None:
        """Train the supernet once, derive one arch, record it as a trial (once: a rerun resumes)."""
        if any(t.user_attrs.get(T.STRATEGY) == "darts" for t in study.get_trials(deepcopy=False)):
            if done:
                self.log("darts: the derived architecture is already in the study (delete the run folder to search again)")
                return
        from hwnas.darts.run import run_darts
        from hwnas.evaluate import check_train_device

        check_train_device(self.config.train_device)  # checked before writing too, on a new run's start
        outcome = run_darts(self.space, self.plan.latency, self.config.latency_ms, self.plan.darts, data=self.config.data, log=self.log)
        (self.out / "darts.json").write_text(
            json.dumps(outcome.summary() | {"history": [h.__dict__ for h in outcome.result.history]}, indent=2) + "\n"
        )
        if self.plan.evaluator is None:
            self.plan.evaluator = _FixedAccuracy(
                outcome.supernet_valid_accuracy,
                f"darts supernet, inherited weights (batch-norm re-estimated), {outcome.data['name']} validation split",
                (outcome.test_accuracy, outcome.test_source),
            )
            self.evaluator = self.plan.evaluator
        self.log("darts: recording the derived network as a trial (its accuracy, latency and costs) ...")
        self.record_arch(study, outcome.arch, {T.STRATEGY: "darts", "darts": outcome.summary()})

    def record_arch(self, study: optuna.Study, arch: Arch, attrs: dict[str, Any]) -> None:
        """Run the trial pipeline on one given arch (DARTS's outcome) as a new trial of the study."""
        import optuna

        study.enqueue_trial({d.name: arch[d.name] for d in self.space.dimensions()}, user_attrs=attrs)
        trial = study.ask()
        try:
            values = self.pipeline.objective(trial)
        except optuna.TrialPruned:  # an earlier trial holds the same network: its numbers are reused
            self._after_trial(study, study.tell(trial, state=optuna.trial.TrialState.PRUNED))
            return
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        self._after_trial(study, study.tell(trial, values))


def _strategies_so_far(out: Path, strategy: str) -> list[str]:
    """The strategies of earlier commands in this run folder (its config.json), then ``strategy``."""
    try:
        old = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        old = None
    seen = list(old.get("strategies") or [old.get("strategy")]) if isinstance(old, dict) else []
    seen = [str(x) for x in seen if x]
    return seen if strategy in seen else [*seen, strategy]


def _round_up(value: float, unit: str) -> str:
    """``value`` rounded up to 4 significant digits, as a flag value that meets it."""
    if value <= 0 or not math.isfinite(value):
        return str(value)
    step = 10.0 ** (math.floor(math.log10(value)) - 3)
    up = round(math.ceil(value / step - 1e-9) * step, 12)
    if unit == "ms":
        return format_ms(up)
    if unit == "bytes":
        return _bytes_up(value)
    if unit == "M":
        return f"{up:g}M"
    return f"{up:g}"


def _bytes_up(value: float) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if value >= size:
            x = value / size
            step = 10.0 ** (math.floor(math.log10(x)) - 3)
            return f"{round(math.ceil(x / step - 1e-9) * step, 12):g}{unit}"
    return f"{math.ceil(value)}B"


class _FixedAccuracy:
    """The accuracy DARTS measured for its derived arch (spaces without a table evaluator)."""

    name = "darts-inherited"

    def __init__(self, value: float, source: str, test: tuple[float | None, str] = (None, "")) -> None:
        self.value, self.source, self.test = value, source, test

    def test_accuracy(self, arch: Arch) -> tuple[float | None, str]:
        return self.test

    def evaluate(self, arch: Arch, trial: Any = None) -> Any:
        from hwnas.evaluate import Accuracy

        return Accuracy(self.value, self.source)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source}

    def build_trained(self, arch: Arch) -> None:
        return None
