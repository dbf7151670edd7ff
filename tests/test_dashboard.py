"""Optuna's own clients on an hwnas run: a real optuna-dashboard, started here and read through its
HTTP API, and the real ``optuna`` CLI, both opened on the storage string that config.json records.

They must show the objectives by name, over-budget trials as infeasible, and each network once
among the best trials (a reused trial repeats an earlier network). ``hwnas dashboard RUN`` serves
the same. Tests that need optuna-dashboard skip only where it is not installed (``.[dev]`` has it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from hwnas import trials as T
from hwnas.cli import main
from hwnas.search.results import records
from hwnas.storage import open_storage

SEARCH = ["search", "--space", "nb201", "--device", "pixel3", "--latency", "5ms", "--strategy", "random", "--seed", "0"]
SEARCH += ["--no-export", "--quiet"]
#: Trials of the first command, and of the rerun that adds the repeats.
FIRST, TOTAL = 10, 14


def _needs_dashboard() -> None:
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install 'hwnas[dashboard]')")


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="hwnas", storage=open_storage(str(out / "study.journal")))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real search with over-budget trials, rerun once with repeats of earlier networks queued
    (a feasible one twice, an over-budget one once), as a sampler that proposes a network again."""
    out = tmp_path_factory.mktemp("dashboard") / "run"
    assert main([*SEARCH, "--trials", str(FIRST), "--out", str(out)]) == 0
    study = _study(out)
    recs = records(study)
    feasible = max((r for r in recs if r.feasible and not r.degenerate), key=lambda r: r.values[0])
    over = next(r for r in recs if not r.feasible)
    for number in (feasible.number, over.number, feasible.number):
        study.enqueue_trial(study.trials[number].params, skip_if_exists=False)
    assert main([*SEARCH, "--trials", str(TOTAL), "--out", str(out)]) == 0
    return out


def _storage(run: Path) -> str:
    return str(json.loads((run / "config.json").read_text())["storage"])


def _command(name: str) -> str:
    """The console script ``name`` of this Python's environment (optuna's, optuna-dashboard's)."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert exe, f"the {name} command is not installed beside {sys.executable}"
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start a server command (given by the test) and yield its base URL once its API answers."""
    procs: list[subprocess.Popen[str]] = []

    def start(cmd: list[str], port: int, cwd: Path) -> str:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} ended with {proc.returncode}: {proc.communicate()}")
            try:
                _get(f"{base}/api/studies")
                return base
            except OSError:
                assert time.monotonic() < deadline, f"{cmd} did not answer within 60 s"
                time.sleep(0.2)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def _detail(base: str) -> dict[str, Any]:
    (summary,) = [s for s in _get(f"{base}/api/studies")["study_summaries"] if s["study_name"] == "hwnas"]
    assert summary["directions"] == ["maximize", "minimize"]
    return dict(_get(f"{base}/api/studies/{summary['study_id']}"))


def test_config_records_a_storage_string_optuna_clients_open(run: Path) -> None:
    storage = _storage(run)
    assert not storage.startswith("journal:") and Path(storage) == run / "study.journal"
    assert json.loads((run / "report.json").read_text())["storage"] == storage


def test_optuna_dashboard_shows_named_objectives_and_over_budget_trials_infeasible(run: Path, server: Any) -> None:
    _needs_dashboard()
    port = _free_port()
    base = server([_command("optuna-dashboard"), _storage(run), "--host", "127.0.0.1", "--port", str(port), "--quiet"], port, run.parent)
    detail = _detail(base)
    assert detail["objective_names"] == ["accuracy", "latency_ms"]
    recs = {r.number: r for r in records(_study(run))}
    shown = {t["number"]: t for t in detail["trials"]}
    assert set(recs) <= set(shown)
    over = [n for n, r in recs.items() if T.OVER_BUDGET in r.attrs]
    assert len(over) >= 3 and len(over) < len(recs)  # the run holds both kinds
    for n, r in recs.items():
        constraints = shown[n]["constraints"]
        # One value per budget (here the latency budget), as the dashboard's feasibility reads it.
        assert constraints == [r.constraints["latency_ms"]]
        assert any(c > 0 for c in constraints) == (n in over)
    # An over-budget trial's objective value is 0 % (never evaluated): without its constraint it
    # would be plotted as a valid trial at accuracy 0.
    assert all(shown[n]["values"][0] == T.NOT_EVALUATED for n in over if recs[n].attrs.get(T.REUSED_FROM) is None)
    # The dashboard's own best-trial list holds no network twice.
    best = [tuple(sorted((p["name"], p["param_external_value"]) for p in t["params"])) for t in detail["best_trials"]]
    assert best and len(best) == len(set(best))


def test_optuna_best_trials_lists_each_network_once(run: Path) -> None:
    cmd = [_command("optuna"), "best-trials", "--storage", _storage(run), "--study-name", "hwnas", "--format", "json"]
    done = subprocess.run(cmd, cwd=run.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    recs = records(_study(run))
    reused = [r for r in recs if r.reused]
    assert len(reused) >= 3  # the three queued repeats (and any the sampler made)
    # A repeat of a network on the front: listed twice, were its trial complete.
    repeated = {r.attrs[T.REUSED_FROM] for r in reused if r.feasible}
    numbers = [t["number"] for t in listed]
    assert repeated & set(numbers), "the queued feasible repeat should be of a network on the front"
    archs = [json.dumps(t["params"], sort_keys=True) for t in listed]
    assert len(archs) == len(set(archs)), f"a network is listed twice: {numbers}"
    assert not {r.number for r in reused} & set(numbers)
    # Exactly hwnas's own feasible front (networks whose output ignores the input included, as Optuna can't tell).
    assert set(numbers) == {r.number for r in T.front(recs, [True, False], degenerate=True)}


def test_reused_trials_count_toward_the_budget_and_keep_their_numbers(run: Path) -> None:
    study = _study(run)
    trials = study.get_trials()
    State = optuna.trial.TrialState
    assert sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials) == TOTAL
    report = json.loads((run / "report.json").read_text())
    assert report["trials"]["complete"] == TOTAL and report["trials"]["reused"] >= 3
    by_number = {r.number: r for r in records(study)}
    for t in trials:
        rec = by_number[t.number]
        if rec.reused:
            assert t.state == State.PRUNED and t.values is None  # kept out of Optuna's best trials
            prior = by_number[rec.attrs[T.REUSED_FROM]]
            assert (rec.values, rec.constraints, rec.arch) == (prior.values, prior.constraints, prior.arch)
        else:
            assert t.state == State.COMPLETE
        # Optuna (its samplers, its best trials) sees each constraint once: the list form only.
        assert t.constraints == {"0": rec.constraints["latency_ms"]} and list(rec.constraints) == ["latency_ms"]


def test_hwnas_dashboard_serves_the_run_on_loopback(run: Path, server: Any) -> None:
    _needs_dashboard()
    port = _free_port()
    base = server([sys.executable, "-m", "hwnas", "dashboard", str(run), "--port", str(port)], port, run.parent)
    detail = _detail(base)
    assert detail["objective_names"] == ["accuracy", "latency_ms"]
    assert len(detail["trials"]) == TOTAL
    # Served on 127.0.0.1 only (the default host): another address of this machine is refused.
    try:
        other = socket.gethostbyname(socket.gethostname())
    except OSError:  # a host name that does not resolve: no other address to try
        other = "127.0.0.1"
    if not other.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


def test_old_config_journal_form_still_opens(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old"
    shutil.copytree(run, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["storage"] = f"journal:{old / 'study.journal'}"  # what earlier hwnas versions recorded
    (old / "config.json").write_text(json.dumps(cfg))
    assert main(["report", str(old), "--no-plots", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["front"]) >= 1
    if _has_dashboard():
        from hwnas.dashboard import dashboard_server

        srv, url = dashboard_server(old, port=_free_port())
        srv.server_close()
        assert url.startswith("http://127.0.0.1:")
    # Rerunning the search there resumes, and records the form the optuna clients open.
    assert main([*SEARCH, "--trials", str(TOTAL + 1), "--out", str(old)]) == 0
    assert json.loads((old / "config.json").read_text())["storage"] == str(old / "study.journal")


def _has_dashboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna_dashboard") is not None


def test_a_study_made_without_objective_names_gets_them_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as m:  # an hwnas that never named the objectives
        m.setattr(optuna.Study, "set_metric_names", lambda self, names: None)
        assert main([*SEARCH, "--trials", "4", "--out", str(out)]) == 0  # trial 3 is the first under 5 ms
    assert _study(out).metric_names is None
    assert main([*SEARCH, "--trials", "5", "--out", str(out)]) == 0
    assert _study(out).metric_names == ["accuracy", "latency_ms"]


def test_constraints_in_both_forms_count_once() -> None:
    both = {"constraints:latency_ms": 1.5, "constraints:flops_m": -2.0, T.CONSTRAINTS: [1.5, -2.0]}
    assert T.named_constraints(both) == {"latency_ms": 1.5, "flops_m": -2.0}
    assert T.named_constraints(both, ["latency_ms", "flops_m"]) == {"latency_ms": 1.5, "flops_m": -2.0}
    assert T.named_constraints({T.CONSTRAINTS: [1.5, -2.0]}, ["latency_ms", "flops_m"]) == {"latency_ms": 1.5, "flops_m": -2.0}
    assert T.named_constraints({T.CONSTRAINTS: [1.5]}) == {"0": 1.5}  # no names: positions
    trial = optuna.trial.create_trial(values=[80.0, 3.0], system_attrs=both, user_attrs={T.RECORD: {T.ARCH: "x"}})
    rec = T.TrialRecord.of(trial)
    assert rec.constraints == {"latency_ms": 1.5, "flops_m": -2.0} and T.violation(rec.constraints) == 1.5 and not rec.feasible


def test_dashboard_without_the_extra_is_one_line_exit_2(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    assert main(["dashboard", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hwnas[dashboard]'" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{empty}"], "config.json is missing"),
        (["{missing}"], "is not a folder"),
        (["{run}", "--port", "0"], "from 1 to 65535"),
        (["{run}", "--port", "http"], "e.g. 8080"),
        (["{run}", "--prot", "8080"], "did you mean '--port'"),
    ],
)
def test_dashboard_bad_input_is_one_line_exit_2(
    run: Path, tmp_path: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_dashboard()
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "run": run}
    assert main(["dashboard", *(a.format(**names) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hwnas: error:") and needle in err, err


def test_dashboard_on_a_port_in_use_is_one_line_exit_2(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _needs_dashboard()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["dashboard", str(run), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pick another --port" in err
