"""Coordination of the workers of one study: slots, the global trial budget, waiting on others.

Every trial records its worker and its *slot* (the trials done or in flight before it), which
keys its seed, so a resumed or distributed run proposes what an uninterrupted one would. The
budget counts completed and pruned trials across all workers; a worker stops once the trials
done and in flight fill it, and waits for the others' trials in flight before reporting, so
every worker writes the same report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas import _optuna
from hwnas import trials as T
from hwnas.search.pipeline import BudgetFilled, TrialPipeline
from hwnas.storage import fail_stale_trials, this_worker, trial_is_judged
from hwnas.strategies import make_sampler
from hwnas.strategies._seeding import PerTrialSeed, trial_slot

if TYPE_CHECKING:
    import optuna

#: Trial states that use up the trial budget: evaluated, or stopped early by a pruner. Failed
#: trials (a crash, a killed process, a diverged training) do not: their work is redone.
COUNTED_STATES = ("COMPLETE", "PRUNED")
#: Seconds between looks at the storage while waiting for other workers' trials in flight.
WAIT_POLL_S = 1.0


def counted_states() -> tuple[Any, ...]:
    import optuna

    return tuple(optuna.trial.TrialState[name] for name in COUNTED_STATES)


def count_done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=counted_states()))


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


class Coordinator:
    """Runs this worker's share of a study's trials under the global budget."""

    def __init__(self, pipeline: TrialPipeline, *, budget: int, log: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.budget = budget
        self.log = log
        self.worker = this_worker()
        self._slots: dict[int, int] = {}  # trial id -> slot, from start() to admit()
        pipeline.admit = self.admit

    def start(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        """Record this worker on a new trial and return the trial's slot: the trials done (counted)
        or in flight with a smaller number. The slot keys the trial's seed, so the same history
        gives the same proposal in a resumed run (a failed trial holds a number, not a slot), and
        distinct trials in flight get distinct seeds; a slot past the budget is not run."""
        slot = trial_slot(study, trial, counted_states())
        _optuna.set_trial_system_attr(study, trial, T.WORKER, {**self.worker, T.SLOT: slot})  # one storage write for both
        self._slots[_optuna.trial_id(trial)] = slot
        return slot

    def admit(self, trial: optuna.Trial) -> None:
        """Refuse a trial whose slot is past the budget (other workers filled it in a race)."""
        slot = self._slots.pop(_optuna.trial_id(trial), None)
        if slot is not None and slot >= self.budget:
            reason = f"{T.NOT_RUN} the {slot} trials done or in flight before it already fill the budget of {self.budget}"
            trial.set_user_attr(T.FAILED_BECAUSE, reason)
            raise BudgetFilled(reason)

    def stop_at_budget(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop this worker once the trials done and those in flight elsewhere fill the budget.

        Optuna's MaxTrialsCallback counts only finished trials, so each of W workers could start
        one more and overshoot by up to W - 1; a trial in flight that then fails is redone by its
        own worker (whose look finds room again), or after the wait in :meth:`run`.
        """
        fail_stale_trials(study, log=self.log)
        if count_done(study) + len(_running(study)) >= self.budget:
            study.stop()

    def run(self, study: optuna.Study, *, strategy: str, seed: int, sampler_options: dict[str, Any], after_trial: Any) -> bool:
        """Run trials until the study's counted trials fill the budget, with any other workers
        of the same study, then wait for their trials in flight so the report is final. Returns
        False when it stopped because every trial of a round failed (the budget is not met)."""
        from hwnas.evaluate import EvaluationFailed

        space = self.pipeline.space

        def factory(s: int) -> optuna.samplers.BaseSampler:
            return make_sampler(strategy, seed=s, space=space, **sampler_options)

        study.sampler = PerTrialSeed(factory, seed=seed, key=self.start)
        ran_dry = False
        while True:
            done = count_done(study)
            if done + len(_running(study)) < self.budget and not ran_dry:
                study.optimize(
                    self.pipeline.objective,
                    n_trials=self.budget - done,
                    callbacks=[after_trial, self.stop_at_budget],
                    catch=(EvaluationFailed, BudgetFilled),
                    gc_after_trial=False,
                )
                # Every trial of this round failed: stop here rather than fail forever (a rerun retries).
                ran_dry = count_done(study) == done
                continue
            if not self.await_in_flight(study):
                return not ran_dry or count_done(study) >= self.budget

    def await_in_flight(self, study: optuna.Study) -> bool:
        """Wait until no trial of another live worker is in flight (a trial whose worker is found
        gone is failed); return whether there was one to wait for. Trials whose worker no one here
        can judge (another machine, a storage without heartbeat) are not waited for."""
        said: set[int] = set()
        waited = False
        while True:
            fail_stale_trials(study, log=self.log)
            running = _running(study)
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
