"""Exact resume: a search killed in the middle of a trial and rerun ends as if never interrupted.

The real thing is a ``kill -9`` of a search subprocess during a (deliberately long) trial; the
per-strategy checks drive each sampler directly on the NAS-Bench-201 tables, with a failed trial
and a fresh sampler (a new process) standing in for the kill, which costs milliseconds a trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from hwnas.benchdata import nb201_latency, nb201_table
from hwnas.search import Search, SearchConfig
from hwnas.spaces import get_space
from hwnas.storage import FAILED_BECAUSE, WORKER_ATTR, fail_stale_trials, this_worker, worker_gone
from hwnas.strategies import make_sampler
from hwnas.strategies._seeding import PerTrialSeed, trial_slot

HERE = Path(__file__).parent

State = optuna.trial.TrialState
COUNTED = (State.COMPLETE, State.PRUNED)


def _study(out: Path) -> optuna.Study:
    from hwnas.storage import open_storage

    return optuna.load_study(study_name="hwnas", storage=open_storage(f"journal:{out / 'study.journal'}"))


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report less what differs between a killed-and-resumed run and a straight one: the wall
    time, the storage path, the failed count, and trial numbers (the failed trial holds one)."""
    out = {k: v for k, v in report.items() if k not in ("wall_time_s", "timings_s", "storage", "export", "best", "front", "trials")}
    out["trials"] = {k: v for k, v in report["trials"].items() if k != "failed"}
    out["best"] = {k: v for k, v in report["best"].items() if k != "trial"}
    out["front"] = [{k: v for k, v in r.items() if k != "trial"} for r in report["front"]]
    return out


def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    import slow_evaluator  # registers the test-table evaluator in this process too, for the uninterrupted run

    budget, hang_at, seed = 14, 11, 3  # local search: 10 random networks, then the climb (trial 11 is its second step)
    out = tmp_path / "killed"
    cmd = [sys.executable, str(HERE / "slow_evaluator.py"), "search", "--space", "nb201", "--device", "pixel3", "--latency", "5ms"]
    cmd += ["--strategy", "local", "--trials", str(budget), "--seed", str(seed), "--evaluator", slow_evaluator.NAME]
    cmd += ["--out", str(out), "--no-export", "--quiet"]
    env = os.environ | {"HWNAS_TEST_HANG_AT": str(hang_at)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not slow_evaluator.marker(out, hang_at).exists():
            assert proc.poll() is None, f"the search ended before trial {hang_at} began evaluating: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"trial {hang_at} did not start evaluating within 180 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of trial hang_at's evaluation
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = {t.number: t for t in _study(out).get_trials()}
    assert before[hang_at].state == State.RUNNING, "the kill should leave the trial in flight"
    assert worker_gone(before[hang_at].system_attrs[WORKER_ATTR])
    kept = {n: (t.params, t.values, t.user_attrs) for n, t in before.items() if t.state == State.COMPLETE}
    assert sorted(kept) == list(range(hang_at))

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = {t.number: t for t in _study(out).get_trials()}
    # Every completed trial is kept as it was.
    for n, (params, values, attrs) in kept.items():
        assert (after[n].state, after[n].params, after[n].values, after[n].user_attrs) == (State.COMPLETE, params, values, attrs)
    # The interrupted trial is failed, with the reason, and its work is redone by the next trial.
    killed = after[hang_at]
    assert killed.state == State.FAIL
    assert "ended while running it" in killed.user_attrs[FAILED_BECAUSE]
    assert after[hang_at + 1].params == before[hang_at].params
    # The budget counts what is done: exactly `budget` counted trials, none left running.
    states = [t.state for t in after.values()]
    assert sum(s in COUNTED for s in states) == budget
    assert State.RUNNING not in states and states.count(State.FAIL) == 1

    # An uninterrupted run with the same seed: same trials in the same order, same report.
    straight_out = tmp_path / "straight"
    config = SearchConfig(space="nb201", device="pixel3", latency_ms=5.0, trials=budget, strategy="local", seed=seed)
    config.evaluator, config.out, config.export = slow_evaluator.NAME, str(straight_out), False
    Search(config).run()
    straight = [t for t in _study(straight_out).get_trials() if t.state == State.COMPLETE]
    resumed = [t for t in after.values() if t.state == State.COMPLETE]
    assert [t.params for t in resumed] == [t.params for t in straight]
    assert [t.values for t in resumed] == [t.values for t in straight]
    got = json.loads((out / "report.json").read_text())
    want = json.loads((straight_out / "report.json").read_text())
    assert got["trials"]["failed"] == 1 and want["trials"]["failed"] == 0
    assert _comparable(got) == _comparable(want)


# -- every deterministic strategy, at the sampler level ------------------------------------------
_SPACE = get_space("nb201")
_ACC = nb201_table().metric("cifar10-valid/valid")
_LAT = nb201_latency("pixel3")


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    arch = _SPACE.canonical({d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in _SPACE.dimensions()})
    i = _SPACE.index(arch)  # type: ignore[attr-defined]
    latency = float(_LAT[i])
    trial.set_constraint("latency_ms", latency - 5.0)
    return (float(_ACC[i]) if latency <= 5.0 else 0.0), latency


def _feasible(arch: dict[str, Any]) -> bool:
    return bool(_LAT[_SPACE.index(arch)] <= 5.0)  # type: ignore[attr-defined]


def _sampler(strategy: str) -> PerTrialSeed:
    """A new process's sampler: built afresh, reseeded per trial from its slot, as hwnas search does."""

    def factory(seed: int) -> optuna.samplers.BaseSampler:
        return make_sampler(strategy, seed=seed, space=_SPACE, latency_ms=5.0, feasible=_feasible)

    return PerTrialSeed(factory, seed=7, key=lambda study, trial: trial_slot(study, trial, COUNTED))


# The cut (trials done before the kill) lies past the startup of tpe (10 random trials), nsga2's
# first generation (20) and evolution's first population (20); gp (slow: a GP fit per trial) is
# cut in its 10 random startup trials, so its first fitted proposal comes after the restart.
@pytest.mark.parametrize(
    ("strategy", "budget", "cut"),
    [
        ("random", 30, 27),
        ("tpe", 30, 27),
        ("nsga2", 30, 27),
        ("evolution", 30, 27),
        ("local", 30, 27),
        ("reinforce", 30, 27),
        ("gp", 11, 9),
    ],
)
def test_strategy_proposes_the_same_after_a_failed_trial_and_a_restart(strategy: str, budget: int, cut: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    straight = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(strategy))
    straight.optimize(_objective, n_trials=budget)

    broken = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(strategy))
    broken.optimize(_objective, n_trials=cut)
    trial = broken.ask()  # the trial a kill interrupts: it has drawn its network, then fails
    drawn = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in _SPACE.dimensions()}
    broken.tell(trial, state=State.FAIL)
    broken.sampler = _sampler(strategy)  # the rerun is a new process
    broken.optimize(_objective, n_trials=budget - cut)

    done = [t for t in broken.trials if t.state == State.COMPLETE]
    assert [t.params for t in done] == [t.params for t in straight.trials]
    assert broken.trials[cut + 1].params == drawn  # the failed trial's network is the one redone


# -- which trials count as stale -----------------------------------------------------------------
def _dead_worker() -> dict[str, Any]:
    """The record of a process of this machine that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True)
    pid = int(child.communicate()[0])
    return this_worker() | {"pid": pid, "started": "0"}


def test_only_trials_whose_worker_is_gone_are_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'j.journal'}"), directions=["maximize", "minimize"])
    records = {
        "dead": _dead_worker(),
        "live": this_worker(),
        "elsewhere": this_worker() | {"machine": "another-machine", "host": "other"},
        "unknown": None,
    }
    trials = {}
    for name, record in records.items():
        trials[name] = study.ask()
        if record is not None:
            study._storage.set_trial_system_attr(trials[name]._trial_id, WORKER_ATTR, record)
    assert worker_gone(records["dead"]) and not worker_gone(records["live"]) and not worker_gone(records["elsewhere"])
    assert worker_gone(this_worker() | {"started": "1"})  # this pid, but another start time: the recorded process has ended

    assert fail_stale_trials(study) == [trials["dead"].number]
    got = {t.number: t for t in study.get_trials()}
    dead = got[trials["dead"].number]
    assert dead.state == State.FAIL and "ended while running it" in dead.user_attrs[FAILED_BECAUSE]
    for name in ("live", "elsewhere", "unknown"):
        assert got[trials[name].number].state == State.RUNNING, name
    assert fail_stale_trials(study) == []  # already failed: nothing left to do
    # A trial that never got a worker record (its process died as it began) is failed once it is old.
    monkeypatch.setattr("hwnas.storage.GRACE_S", 0)
    time.sleep(0.01)
    assert fail_stale_trials(study) == [trials["unknown"].number]
    assert "no worker recorded" in study.get_trials()[trials["unknown"].number].user_attrs[FAILED_BECAUSE]


def test_a_silent_worker_on_a_heartbeat_storage_is_failed_after_the_grace_period(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")  # ask() stands in for a worker
    elsewhere = this_worker() | {"machine": "another-machine", "host": "other", "pid": 1}
    silent, beating = study.ask(), study.ask()
    for t in (silent, beating):
        storage.set_trial_system_attr(t._trial_id, WORKER_ATTR, elsewhere)
        storage.record_heartbeat(t._trial_id)
    time.sleep(2.2)  # past the 1 s grace period at SQLite's 1 s timestamp resolution
    storage.record_heartbeat(beating._trial_id)  # this worker is alive
    assert fail_stale_trials(study) == [silent.number]
    got = {t.number: t for t in study.get_trials()}
    assert "no heartbeat" in got[silent.number].user_attrs[FAILED_BECAUSE]
    assert got[beating.number].state == State.RUNNING


def test_a_worker_starting_as_another_writes_config_json_is_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on a fresh --out: the other's config.json may appear between this worker's
    look for it and its listing of the folder; the folder is then a run, not foreign files."""
    from hwnas.search.rundir import VERSION_KEY, prepare

    config = SearchConfig(device="pixel3", latency_ms=5.0, trials=4, out=str(tmp_path / "run"))
    out = Path(config.out)
    out.mkdir()
    (out / "config.json.999.tmp").write_text("")
    real = Path.iterdir

    def racing(self: Path) -> Any:
        if self == out and not (out / "config.json").exists():
            ident = config.identity()
            (out / "config.json").write_text(
                json.dumps({k: v for k, v in ident.items() if k != "version"} | {VERSION_KEY: ident["version"]})
            )
        return real(self)

    monkeypatch.setattr(Path, "iterdir", racing)
    prepare(out, config.identity())  # before the fix: "--out ... is not empty and holds no hwnas run"
