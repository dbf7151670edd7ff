"""End-to-end behaviour of a search run: budget, feasibility, resume, results, export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hwnas.benchdata import nb201_latency, nb201_table
from hwnas.errors import InfeasibleError, UsageError
from hwnas.pareto import is_non_dominated
from hwnas.search import Search, SearchConfig
from hwnas.trials import TrialRecord


def fastest_real(values):  # type: ignore[no-untyped-def]
    """The least table latency of a network whose output depends on its input (the probe's answer)."""
    from hwnas.spaces import get_space

    nb = get_space("nb201")
    return float(next(values[i] for i in np.argsort(values, kind="stable") if not nb.degenerate(nb.from_index(int(i)))))


def _config(tmp: Path, **kw: object) -> SearchConfig:
    base: dict[str, object] = dict(
        space="nb201", device="pixel3", latency_ms=5.0, trials=60, strategy="tpe", seed=0, out=str(tmp / "run"), export=False
    )
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pixel3_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Search, dict]:
    tmp = tmp_path_factory.mktemp("pixel3")
    search = Search(_config(tmp))
    calls: list[str] = []
    inner = search.evaluator.evaluate

    def spy(arch, trial=None):  # type: ignore[no-untyped-def]
        calls.append(search.space.to_string(arch))
        return inner(arch, trial)

    search.evaluator.evaluate = spy  # type: ignore[method-assign]
    report = search.run()
    report["_evaluated"] = calls
    return search, report


def test_best_is_feasible_and_matches_the_tables(pixel3_run: tuple[Search, dict]) -> None:
    _, report = pixel3_run
    table = nb201_table()
    index = table.index(report["arch"])
    assert report["latency_ms"] <= 5.0
    assert report["latency_ms"] == nb201_latency("pixel3")[index]
    assert report["accuracy"] == table.metric("cifar10-valid/valid")[index]
    assert report["test_accuracy"] == table.metric("cifar10/test")[index]
    assert report["latency_source"] == "table"
    assert "validation" in report["accuracy_source"]
    assert report["trials"]["complete"] == 60
    assert report["flops_m"] > 0 and report["params_m"] > 0


def test_infeasible_trials_spend_no_accuracy(pixel3_run: tuple[Search, dict]) -> None:
    _, report = pixel3_run
    t = report["trials"]
    assert t["infeasible"] > 0, "the budget should exclude part of the space"
    # One evaluation per feasible trial that was not a repeat of an earlier one.
    evaluated = report["_evaluated"]
    assert len(evaluated) <= t["feasible"]
    lat = nb201_latency("pixel3")
    table = nb201_table()
    assert all(lat[table.index(a)] <= 5.0 for a in evaluated)


def test_front_is_feasible_and_non_dominated(pixel3_run: tuple[Search, dict]) -> None:
    search, report = pixel3_run
    with open(search.out / "front.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and len(rows) == len(report["front"])
    vals = np.array([[float(r["accuracy"]), float(r["latency_ms"])] for r in rows])
    assert (vals[:, 1] <= 5.0).all()
    assert is_non_dominated(vals, [True, False]).all()
    # Every feasible trial of the study is dominated by, or on, the front.
    for rec in search.records(search._study()):
        if rec.feasible and not rec.degenerate:  # a constant network is off the front by design (test_first_day)
            assert any(a >= rec.accuracy and lat <= rec.cost("latency_ms") for a, lat in vals)
    assert report["best"]["arch"] in {r["arch"] for r in rows}


def test_run_folder_holds_config_report_and_study(pixel3_run: tuple[Search, dict]) -> None:
    search, _ = pixel3_run
    files = {p.name for p in search.out.iterdir()}
    assert {"config.json", "report.json", "front.csv", "study.journal"} <= files
    cfg = json.loads((search.out / "config.json").read_text())
    assert cfg["device"] == "pixel3" and cfg["latency_ms"] == 5.0 and cfg["trials"] == 60
    report = json.loads((search.out / "report.json").read_text())
    # Every field the report had before costs became plug-ins is still there (it may gain some).
    before = (
        "space dataset device latency_budget_ms also_devices flops_budget_m params_budget_m strategy seed evaluator latency_model "
        "study storage trials best front arch accuracy accuracy_source test_accuracy latency_ms latency_source flops_m params_m "
        "measured_latency_ms wall_time_s"
    ).split()
    assert set(before) <= set(report)
    assert set("budget complete feasible infeasible reused failed running min_latency_ms".split()) <= set(report["trials"])
    point = "trial arch accuracy accuracy_source test_accuracy latency_ms latency_source latency_p90_ms flops_m params_m latency_ms_also"
    assert set((point + " nb201_index").split()) <= set(report["best"])
    assert all(set(point.split()) <= set(p) for p in report["front"])


def test_trial_records_say_where_each_number_came_from(pixel3_run: tuple[Search, dict]) -> None:
    search, _ = pixel3_run
    for t in search._study().get_trials():
        rec = TrialRecord.of(t)
        assert rec.source("latency_ms") == "table"
        assert rec.source("flops_m") == rec.source("params_m") == "closed form"
        assert rec.attrs["accuracy_source"]
        if rec.values[1] > 5.0:  # a reused trial (PRUNED) holds its values in its record
            assert rec.attrs["accuracy_source"].startswith("not evaluated")
            assert rec.attrs["over_budget"] == ["latency"]
            assert "accuracy" not in rec.attrs


def test_resume_counts_done_trials_and_keeps_them(tmp_path: Path) -> None:
    first = Search(_config(tmp_path, trials=15)).run()
    s2 = Search(_config(tmp_path, trials=25))
    report = s2.run()
    trials = s2._study().get_trials()
    assert len(trials) == 25 and report["trials"]["complete"] == 25
    assert first["trials"]["complete"] == 15
    # Rerunning with the budget already met runs nothing more.
    again = Search(_config(tmp_path, trials=25))
    again.run()
    assert len(again._study().get_trials()) == 25


def test_same_seed_same_result(tmp_path: Path) -> None:
    a = Search(_config(tmp_path / "a", trials=20, strategy="random")).run()
    b = Search(_config(tmp_path / "b", trials=20, strategy="random")).run()
    assert [r["arch"] for r in a["front"]] == [r["arch"] for r in b["front"]]


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    Search(_config(tmp_path, trials=3, latency_ms=100.0)).run()
    with pytest.raises(UsageError, match="device"):
        Search(_config(tmp_path, trials=3, latency_ms=100.0, device="raspi4")).run()


def test_non_empty_foreign_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        Search(_config(tmp_path, trials=3)).run()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_infeasible_budget_stops_at_once_with_the_fastest_latency(tmp_path: Path) -> None:
    fastest = fastest_real(nb201_latency("pixel3"))
    with pytest.raises(InfeasibleError, match=f"{fastest:.4g}"):
        Search(_config(tmp_path, latency_ms=fastest / 2)).run()


def test_no_feasible_trial_reports_smallest_latency_seen(tmp_path: Path) -> None:
    # A budget just above the fastest cell passes the probe, but random search rarely hits it.
    lat = nb201_latency("pixel3")
    budget = fastest_real(lat) * 1.0000001
    config = _config(tmp_path, latency_ms=budget, trials=5, strategy="random")
    with pytest.raises(InfeasibleError, match="smallest latency seen"):
        Search(config).run()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["trials"]["complete"] == 5 and report["best"] is None


@pytest.mark.slow
def test_live_cpu_search_exports_a_verified_model(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    config = _config(tmp_path, device="cpu", latency_ms=50.0, trials=3, strategy="random", export=True)
    report = Search(config).run()
    assert report["latency_source"] == "measured"
    ex = report["export"]
    assert ex["parity_max_abs_diff"] <= 1e-4
    assert ex["measured_latency_ms"] > 0 and report["measured_latency_ms"] == ex["measured_latency_ms"]
    path = tmp_path / "run" / "best.onnx"
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["hwnas.arch"] == report["arch"] and props["hwnas.space"] == "nb201"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.zeros((4, 3, 32, 32), np.float32)})[0]
    assert out.shape == (4, 10)


def test_any_optuna_storage_url_and_study_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    config = _config(tmp_path, trials=6, latency_ms=100.0, storage=url, study="exp-1")
    Search(config).run()
    import optuna

    study = optuna.load_study(study_name="exp-1", storage=url)
    assert len(study.trials) == 6
    assert study.user_attrs["hwnas"]["device"] == "pixel3"


def test_unusable_storage_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot open storage"):
        Search(_config(tmp_path, storage="nosuchdb://x/y")).run()


def test_flops_and_params_budgets_are_constraints(tmp_path: Path) -> None:
    search = Search(_config(tmp_path, latency_ms=100.0, trials=25, strategy="random", flops_m=60.0, params_m=0.5))
    report = search.run()
    assert report["flops_m"] <= 60.0 and report["params_m"] <= 0.5
    for t in search._study().get_trials():
        rec = TrialRecord.of(t)
        assert set(rec.constraints) == {"latency_ms", "flops_m", "params_m"} and len(t.constraints) == 3  # each once for Optuna
        over = rec.costs["flops_m"] > 60.0 or rec.costs["params_m"] > 0.5
        assert over == rec.attrs["accuracy_source"].startswith("not evaluated")
    assert report["trials"]["infeasible"] > 0


def test_several_devices_each_with_a_budget(tmp_path: Path) -> None:
    config = _config(tmp_path, latency_ms=5.0, trials=40, strategy="evolution", also_devices=["raspi4"], also_latency_ms=[12.0])
    search = Search(config)
    report = search.run()
    table = nb201_table()
    index = table.index(report["arch"])
    assert nb201_latency("pixel3")[index] <= 5.0 and nb201_latency("raspi4")[index] <= 12.0
    assert report["best"]["latency_ms_also"]["raspi4"] == nb201_latency("raspi4")[index]
    for t in search._study().get_trials():
        rec = TrialRecord.of(t)
        assert "latency_ms@raspi4" in rec.constraints
        both = rec.costs["latency_ms"] <= 5.0 and rec.costs["latency_ms@raspi4"] <= 12.0
        assert both == (not rec.attrs["accuracy_source"].startswith("not evaluated"))
    # An unreachable budget on the second device ends at once, naming that device.
    with pytest.raises(InfeasibleError, match="raspi4"):
        Search(_config(tmp_path / "x", also_devices=["raspi4"], also_latency_ms=[0.001])).run()


def test_a_round_of_failed_trials_stops_in_one_line_and_keeps_what_was_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwnas.cli import main
    from hwnas.evaluate import EvaluationFailed
    from hwnas.search.pipeline import TrialPipeline

    real = TrialPipeline.charge
    calls = {"n": 0}

    def dies_after_three(self, arch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise EvaluationFailed("no agent of device mypi answered: connection refused")
        return real(self, arch)

    monkeypatch.setattr(TrialPipeline, "charge", dies_after_three)
    out = tmp_path / "run"
    argv = ["search", "--device", "pixel3", "--latency", "50ms", "--trials", "10", "--strategy", "random", "--no-export", "-q"]
    assert main([*argv, "--out", str(out)]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no agent of device mypi answered" in err and "rerun the same command to resume" in err
    report = json.loads((out / "report.json").read_text())
    assert report["trials"]["complete"] == 3 and report["trials"]["failed"] >= 1
    from hwnas.report import open_run_study

    failed = [t for t in open_run_study(out)[1].get_trials() if t.state.name == "FAIL"]
    assert failed and all("no agent" in t.user_attrs["failed_because"] for t in failed)
    # Fixed, the same command resumes and fills the budget.
    monkeypatch.undo()
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["trials"]["complete"] == 10
