"""Distributed search: several ``hwnas search`` workers on one study share one trial budget.

The PostgreSQL test needs a server: ``.ci/run`` starts one on loopback and sets
``HWNAS_TEST_POSTGRES_URL`` (e.g. ``postgresql://user:password@127.0.0.1:5432/db``, an empty
database the test may fill); where it is not set the test is skipped. The workers are real
processes started together, each with its own run folder, as on separate machines.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
import pytest

from hwnas.errors import UsageError
from hwnas.spaces import get_space
from hwnas.storage import FAILED_BECAUSE, WORKER_ATTR, open_storage
from hwnas.trials import TrialRecord

POSTGRES_URL = os.environ.get("HWNAS_TEST_POSTGRES_URL", "")
State = optuna.trial.TrialState
COUNTED = (State.COMPLETE, State.PRUNED)
#: Fields of a report that belong to the worker that wrote it, not to the study.
WORKER_LOCAL = ("wall_time_s", "timings_s")


def _search(out: Path, trials: int, strategy: str, storage: str = "", study: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "hwnas", "search", "--space", "nb201", "--device", "pixel3", "--latency", "5ms"]
    cmd += ["--strategy", strategy, "--seed", "0", "--trials", str(trials), "--out", str(out), "--no-export", "--quiet", "--json"]
    return cmd + (["--storage", storage, "--study", study] if storage else [])


def _run_together(cmds: list[list[str]], timeout: float = 600) -> list[dict[str, Any]]:
    """Start every worker at once, wait for all; return the report each printed."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [json.loads(out) for out, _ in outs]


def _audit(study: optuna.Study, budget: int, workers: int) -> dict[str, int]:
    """Check the shared study and return its figures: trials, lost, duplicated, surplus."""
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # numbers have no gaps
    lost = [t.number for t in trials if t.state in (State.RUNNING, State.WAITING)]
    assert not lost, f"trials left in flight: {lost}"
    counted = [t for t in trials if t.state in COUNTED]
    assert len(counted) == budget, f"{len(counted)} trials count toward a budget of {budget}"
    # The only failed trials are those a worker created after others had filled the budget, which
    # were not run (at most one per other worker, from the moment between its look and its ask).
    failed = [t for t in trials if t.state == State.FAIL]
    assert all(t.user_attrs.get(FAILED_BECAUSE, "").startswith("not run:") for t in failed), [t.user_attrs for t in failed]
    assert len(failed) <= workers - 1
    # A network is evaluated twice only when the two trials were in flight at the same time (a
    # reused trial copies an earlier one's numbers: no evaluation).
    space = get_space("nb201")
    evaluated = defaultdict(list)
    for t in counted:
        rec = TrialRecord.of(t)
        if not rec.reused:
            evaluated[space.key(space.from_string(rec.arch))].append(t)
    duplicated = 0
    for same in evaluated.values():
        for i, b in enumerate(same[1:], 1):
            done = min(t.datetime_complete for t in same[:i] if t.datetime_complete is not None)
            assert b.datetime_start is not None and b.datetime_start < done, (
                f"trial {b.number} evaluated the network of a trial done before it started: {[t.number for t in same[:i]]}"
            )
            duplicated += 1
    return {"workers": workers, "trials": len(counted), "lost": len(lost), "duplicated": duplicated, "not run": len(failed)}


def _same_reports(reports: list[dict[str, Any]]) -> None:
    first = {k: v for k, v in reports[0].items() if k not in WORKER_LOCAL}
    for other in reports[1:]:
        assert {k: v for k, v in other.items() if k not in WORKER_LOCAL} == first


@pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL server: set HWNAS_TEST_POSTGRES_URL (.ci/run starts one)")
def test_three_workers_share_one_budget_on_postgresql(tmp_path: Path) -> None:
    budget, workers, name = 60, 3, f"dist-{uuid.uuid4().hex[:8]}"
    cmds = [_search(tmp_path / f"worker{i}", budget, "evolution", POSTGRES_URL, name) for i in range(workers)]
    t0 = time.perf_counter()
    reports = _run_together(cmds)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=open_storage(POSTGRES_URL))
    figures = _audit(study, budget, workers)
    pids = {t.system_attrs[WORKER_ATTR]["pid"] for t in study.get_trials()}
    assert len(pids) == workers, "every worker should have run trials"
    # Every worker waited for the others' trials in flight, so each wrote the same final report.
    _same_reports(reports)
    _same_reports([json.loads((tmp_path / f"worker{i}" / "report.json").read_text()) for i in range(workers)])
    assert reports[0]["trials"]["complete"] == budget and reports[0]["trials"]["running"] == 0
    assert "hwnas-ci" not in json.dumps(reports[0])  # the password is masked in the report
    print(f"postgresql: {figures}, {wall:.1f} s")


def test_local_workers_share_the_default_journal(tmp_path: Path) -> None:
    budget, workers = 24, 2
    out = tmp_path / "run"
    reports = _run_together([_search(out, budget, "random") for _ in range(workers)])
    study = optuna.load_study(study_name="hwnas", storage=open_storage(f"journal:{out / 'study.journal'}"))
    figures = _audit(study, budget, workers)
    _same_reports(reports)
    assert json.loads((out / "report.json").read_text())["trials"] == reports[0]["trials"]
    print(f"journal: {figures}")


def test_unreachable_storage_fails_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    cmd = _search(tmp_path / "run", 3, "random", "postgresql://nobody@127.0.0.1:1/x", "x")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: cannot open storage 'postgresql://nobody@127.0.0.1:1/x'"), done.stderr
    assert time.perf_counter() - t0 < 60


def test_a_server_that_never_answers_times_out() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        t0 = time.perf_counter()
        with pytest.raises(UsageError, match="timeout"):
            open_storage(f"postgresql://user:secret@127.0.0.1:{silent.getsockname()[1]}/db")
        assert time.perf_counter() - t0 < 30


def test_passwords_are_masked_in_messages() -> None:
    with pytest.raises(UsageError) as err:
        open_storage("nosuchdb://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(err.value) and "***" in str(err.value)


def test_a_trial_a_moment_old_without_a_worker_yet_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker records itself on its trial just after creating it: in that moment, another
    worker about to report must still wait for the trial (else its report misses one)."""
    import hwnas.storage as storage_mod

    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    (frozen,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    assert WORKER_ATTR not in frozen.system_attrs
    assert storage_mod.trial_is_judged(study, frozen)  # young, no worker yet: it will get one (or be failed)
    monkeypatch.setattr(storage_mod, "_age_s", lambda t: storage_mod.GRACE_S + 1)
    assert not storage_mod.trial_is_judged(study, frozen)  # then fail_stale_trials fails it, nothing to wait for
    assert storage_mod.fail_stale_trials(study) == [trial.number]
