"""Budgets and objectives as data: memory and size budgets from the command line, another second
objective, their bad values, the one trial record, and old run folders refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hwnas.cli import main
from hwnas.search import Search, SearchConfig
from hwnas.spaces import get_space
from hwnas.trials import REUSED_FROM, TrialRecord, best, front, is_feasible
from hwnas.units import parse_bytes

BASE = ["search", "--device", "pixel3", "--latency", "20ms", "--strategy", "random", "--no-export", "--json"]


def _search(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _study_records(out: Path) -> list[TrialRecord]:
    from hwnas.report import open_run_study
    from hwnas.search.results import records

    return records(open_run_study(out)[1])


def test_memory_budget_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # NB201 CIFAR-10 peaks take four values, 160, 192, 256 and 320 KB (binary): 256KB admits all but
    # the largest (6,460 of 15,625 cells), at the boundary, as a budget <= limit should.
    report = _search([*BASE, "--trials", "30", "--memory", "256KB"], tmp_path / "run", capsys)
    limit = 256 * 1024
    assert report["memory_budget_bytes"] == limit and report["memory_bytes"] <= limit
    assert {"metric": "memory_bytes", "limit": limit, "unit": "bytes", "flag": "--memory", "cheap": True} in report["constraints"]
    space = get_space("nb201")
    recs = _study_records(tmp_path / "run")
    assert any(not r.feasible for r in recs), "the budget should exclude part of the space"
    for r in recs:
        assert r.costs["memory_bytes"] == space.peak_memory_bytes(space.from_string(r.arch))
        assert r.source("memory_bytes") == "closed form"
        assert r.feasible == (r.costs["memory_bytes"] <= limit and r.costs["latency_ms"] <= 20.0)
        if r.costs["memory_bytes"] > limit:
            assert "peak memory" in r.attrs["over_budget"] and "accuracy" not in r.attrs


def test_size_budget_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _search([*BASE, "--trials", "30", "--size", "1MB"], tmp_path / "run", capsys)
    assert report["size_budget_bytes"] == 1024**2 and report["size_bytes"] <= 1024**2
    recs = _study_records(tmp_path / "run")
    assert any(r.costs["size_bytes"] > 1024**2 for r in recs)
    assert all(r.feasible == (r.costs["size_bytes"] <= 1024**2) for r in recs)


def test_memory_as_the_second_objective(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _search([*BASE, "--trials", "25", "--objective", "memory"], tmp_path / "run", capsys)
    assert [o["metric"] for o in report["objectives"]] == ["accuracy", "memory_bytes"]
    from hwnas.report import open_run_study

    study = open_run_study(tmp_path / "run")[1]
    assert study.metric_names == ["accuracy", "memory_bytes"]
    recs = _study_records(tmp_path / "run")
    assert all(r.values[1] == r.costs["memory_bytes"] for r in recs)
    mem = [p["memory_bytes"] for p in report["front"]]
    assert mem == sorted(mem) and report["hypervolume"] > 0
    # hwnas report reads the objective from the run.
    assert main(["report", str(tmp_path / "run"), "--no-plots", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert all("memory_bytes" in p for p in shown["front"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--memory", "320"], "a unit is required"),
        (["--memory", "320kb"], "upper case"),
        (["--memory", "320 KB"], "no space"),
        (["--memory", "-5KB"], "positive"),
        (["--memory", "0KB"], "at least 1 byte"),
        (["--size", "1e3KB"], "no exponent"),
        (["--size", "2MB,3MB"], "one value per flag"),
        (["--objective", "accuracy"], "invalid choice: 'accuracy'"),
        (["--objective", "flop"], "did you mean 'flops'"),
        (["--strategy", "darts", "--objective", "memory"], "drop --objective"),
    ],
)
def test_bad_budget_values_are_one_line(argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [a for a in BASE if a not in ("--strategy", "random")] if "--strategy" in argv else BASE
    code = main([*base, *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("hwnas: error:") and needle in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--memory", "100KB"], "raise --memory to at least 160KB"),
        (["--size", "10KB"], "raise --size to at least"),
        (["--flops", "5M"], "raise --flops to at least 7.784M"),
    ],
)
def test_unreachable_budget_is_refused_before_any_trial(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*BASE, *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder (and its study) is written


def test_bytes_parse_binary_units() -> None:
    assert parse_bytes("320KB") == parse_bytes("320KiB") == 327_680
    assert parse_bytes("2MB") == 2 * 1024**2 and parse_bytes("512B") == 512 and parse_bytes("1.5GB") == 3 * 1024**3 // 2


def test_table_device_search_imports_no_torch(tmp_path: Path) -> None:
    argv = ["search", "--device", "pixel3", "--latency", "5ms", "--trials", "12", "--no-export", "-q", "--out", str(tmp_path / "r")]
    code = (
        f"import sys\nfrom hwnas.cli import main\nassert main({argv!r}) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fvcore'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- the one trial record -----------------------------------------------------------------
def _rec(n: int, acc: float, cost: float, constraints: dict[str, float], **attrs: Any) -> TrialRecord:
    return TrialRecord(number=n, arch=f"a{n}", values=(acc, cost), constraints=constraints, costs={"latency_ms": cost}, attrs=attrs)


def test_one_definition_of_feasible() -> None:
    assert is_feasible({}) and is_feasible(None) and is_feasible({"latency_ms": 0.0})
    assert not is_feasible({"latency_ms": -1.0, "flops_m": 1e-9})
    assert _rec(0, 90, 1, {}).accuracy == 90 and _rec(1, 90, 1, {"latency_ms": 0.5}).accuracy is None


def test_front_and_best_skip_infeasible_and_reused_trials() -> None:
    recs = [
        _rec(0, 80, 1.0, {"latency_ms": -1}),
        _rec(1, 90, 2.0, {"latency_ms": -1}),
        _rec(2, 85, 3.0, {"latency_ms": -1}),  # dominated by 1
        _rec(3, 99, 0.5, {"latency_ms": 2}),  # infeasible
        _rec(4, 90, 2.0, {"latency_ms": -1}, **{REUSED_FROM: 1}),  # a repeat of 1
        _rec(5, 90, 1.5, {"latency_ms": -1}),
    ]
    assert [r.number for r in front(recs, [True, False])] == [0, 5]
    top = best(recs)
    assert top is not None and top.number == 5  # 90 % at the lower cost


def test_old_run_folder_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    Search(SearchConfig(device="pixel3", latency_ms=50.0, trials=3, strategy="random", export=False, out=str(out))).run()
    cfg = json.loads((out / "config.json").read_text())
    del cfg["identity_version"], cfg["objective"], cfg["memory_bytes"], cfg["size_bytes"]  # as an older hwnas wrote it
    (out / "config.json").write_text(json.dumps(cfg))
    before = (out / "study.journal").read_bytes()
    argv = ["search", "--device", "pixel3", "--latency", "50ms", "--trials", "3", "--strategy", "random", "--no-export"]
    for cmd in ([*argv, "--out", str(out)], ["report", str(out), "--no-plots"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "older hwnas" in err, err
    assert (out / "study.journal").read_bytes() == before  # nothing mixed in


def test_old_study_in_a_shared_storage_is_refused(tmp_path: Path) -> None:
    import optuna

    from hwnas.errors import UsageError

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(storage=url, study_name="hwnas", directions=["maximize", "minimize"])
    study.set_user_attr("hwnas", {"space": "nb201", "device": "pixel3", "latency_ms": 5.0})  # no version: an older hwnas
    config = SearchConfig(device="pixel3", latency_ms=5.0, trials=3, export=False, out=str(tmp_path / "run"), storage=url)
    with pytest.raises(UsageError, match="older hwnas"):
        Search(config).run()
