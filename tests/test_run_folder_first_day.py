"""The run folder and the table folder on a first day (issue 24, items 2.1, 2.2, 2.3 and 2.16).

A refused start writes nothing, so the corrected command runs in the same ``--out``; the default
``--out`` names every setting that makes a run distinct, so the README's commands run in order;
lookup tables live in one per-user folder that a search started anywhere reads, and its first
line says which table it uses or why none; a search leaves no lock file behind, and its
``report.json`` names its storage so that ``hwnas report`` opens that study from any folder.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from hwnas.cli import main
from hwnas.errors import InfeasibleError, UsageError
from hwnas.search import Search, SearchConfig


def _run(tmp: Path, **kw: Any) -> SearchConfig:
    base: dict[str, Any] = dict(device="pixel3", latency_ms=5.0, trials=4, strategy="random", out=str(tmp / "run"), export=False)
    return SearchConfig(**(base | kw))


# -- 2.1: a refused run writes nothing ----------------------------------------------------------
def test_an_unreachable_budget_leaves_no_folder_and_the_corrected_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["search", "--device", "pixel3", "--trials", "3", "--no-export", "--out", str(out), "-q"]
    assert main([*argv, "--latency", "0.5ms"]) == 3
    assert "raise --latency to at least" in capsys.readouterr().err
    assert not out.exists()  # before the fix: config.json and study.journal, which refused the rerun
    assert main([*argv, "--latency", "5ms"]) == 0


def test_a_refused_start_in_an_existing_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(InfeasibleError):
        Search(_run(tmp_path, latency_ms=0.5)).run()
    assert list(out.iterdir()) == []
    assert Search(_run(tmp_path)).run()["trials"]["complete"] == 4


def test_a_given_storage_holding_another_run_is_refused_before_the_folder_is_made(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    Search(_run(tmp_path, storage=storage, out=str(tmp_path / "first"))).run()
    out = tmp_path / "second"
    with pytest.raises(UsageError, match=r"holds a run with latency_ms=5\.0"):
        Search(_run(tmp_path, storage=storage, out=str(out), latency_ms=6.0)).run()
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [({"train_device": "tpu"}, "--train-device must be cpu or cuda"), ({"data": f"cifar10:{Path('no') / 'such'}"}, "does not exist")],
)
def test_darts_with_a_wrong_train_device_or_data_writes_nothing(tmp_path: Path, setting: dict[str, str], refusal: str) -> None:
    config = SearchConfig(device="pixel3", latency_ms=5.0, strategy="darts", out=str(tmp_path / "run"), export=False, **setting)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=refusal):
        Search(config).run()
    assert not (tmp_path / "run").exists()


# -- 2.2: the default --out names what makes a run distinct ---------------------------------------
def test_readme_commands_with_other_budgets_run_in_order_in_their_own_default_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["search", "--device", "pixel3", "--trials", "3", "--no-export", "-q"]
    commands = [
        ["--latency", "5ms"],
        ["--latency", "5ms", "--memory", "2MB"],  # before the fix: "holds a run with memory_bytes=None"
        ["--latency", "5ms", "--params", "1M"],
        ["--latency", "20ms", "--objective", "memory"],
    ]
    for extra in commands:
        assert main([*base, *extra]) == 0, extra
    folders = sorted(p.name for p in (tmp_path / "hwnas-runs").iterdir())
    assert len(folders) == len(commands)
    assert "nb201-pixel3-5ms-random-seed0" not in folders and "nb201-pixel3-5ms-hybrid-seed0" in folders


def test_the_default_command_keeps_its_readable_name() -> None:
    from hwnas.search.config import resolve

    assert resolve(SearchConfig()).config.out == str(Path("hwnas-runs") / "nb201-cpu-20ms-hybrid-seed0")
    assert resolve(SearchConfig(device="pixel3", latency_ms=5.0)).config.out == str(Path("hwnas-runs") / "nb201-pixel3-5ms-hybrid-seed0")


#: Values of every identity setting, as :func:`resolve` leaves them: the first of each is its default.
CHOICES: dict[str, list[Any]] = {
    "space": ["nb201", "mbconv"],
    "device": ["cpu", "pixel3", "devices/cpu25.toml", "other/cpu25.toml", "raspi4"],
    "latency_ms": [20.0, 5.0, 0.5, 0.1 + 0.2, 0.3, 1e-7],
    "flops_m": [None, 100.0, 100.5, 0.25],
    "params_m": [None, 1.0, 0.5],
    "memory_bytes": [None, 262144, 262145, 2 * 1024**2],
    "size_bytes": [None, 1024**2, 1000],
    "objective": ["latency", "flops", "params", "memory", "size"],
    "also_devices": [[], ["pixel3"], ["edgegpu"], ["pixel3", "edgegpu"]],
    "evaluator": ["table", "train", "supernet"],
    "evaluator_options": [
        {},
        {"lr": 0.05},
        {"lr": 0.1},
        {"epochs": 3, "pruner": "median"},
        {"epochs": 3, "lr": 0.05, "batch": 128, "pruner": "hyperband"},
    ],
    "precision": ["fp32", "int8", "fp16"],
}
BENCHMARK_DEVICES = ("pixel3", "raspi4")


def _resolved(rng: Any, **kw: Any) -> SearchConfig:
    """A config with what resolve fills in: the space's dataset, one budget per extra device, the
    latency model the device gives (a benchmark device its table; a measuring one live or a lookup table)."""
    kw.setdefault("space", "nb201")
    kw.setdefault("device", "cpu")
    if kw["space"] == "nb201":
        kw.setdefault("dataset", rng.choice(["cifar10", "cifar100", "imagenet16-120"]))
    kw["also_latency_ms"] = [rng.choice([5.0, 2.0]) for _ in kw.get("also_devices", [])]
    measured = ["measured", "lookup table"]
    kw.setdefault("latency_model", "table" if kw["device"] in BENCHMARK_DEVICES else rng.choice(measured))
    return SearchConfig(**kw)


def _configs(n: int) -> list[SearchConfig]:
    """``n`` configurations: each setting varied alone from the defaults, then random mixes."""
    import random

    rng = random.Random(0)
    out = [_resolved(rng)]
    for key, values in CHOICES.items():
        for v in values[1:]:
            out.append(_resolved(rng, **{key: v}))
    while len(out) < n:
        kw = {k: rng.choice(v) for k, v in CHOICES.items()}
        out.append(_resolved(rng, **kw, strategy=rng.choice(["hybrid", "random"]), seed=rng.choice([0, 1])))
    return out


def test_default_folders_differ_whenever_the_study_identity_differs() -> None:
    configs = _configs(600)
    by_name: dict[str, Any] = {}
    for c in configs:
        name = c.default_out()
        assert re.fullmatch(r"hwnas-runs[/\\][A-Za-z0-9._-]{1,170}", name), name
        key = json.dumps({**c.identity(), "strategy": c.strategy, "seed": c.seed}, sort_keys=True)
        assert by_name.setdefault(name, key) == key, f"{name} stands for two runs"
    assert len(by_name) > 500
    # fp32 and an unresolved precision are one run (resolve fills the device's fp32); so are the rest
    assert SearchConfig(precision=None).default_out() == SearchConfig(precision="fp32").default_out()


# -- 2.3: one per-user table folder ----------------------------------------------------------------
@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the Linux (XDG) default")
def test_the_table_folder_is_hwnas_tables_else_the_xdg_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.cost.lut import tables_dir

    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "mine"))
    assert tables_dir() == tmp_path / "mine"
    monkeypatch.delenv("HWNAS_TABLES")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert tables_dir() == tmp_path / "home" / ".local" / "share" / "hwnas" / "latency_tables"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert tables_dir() == tmp_path / "data" / "hwnas" / "latency_tables"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG spec: a relative path is ignored
    assert tables_dir() == tmp_path / "home" / ".local" / "share" / "hwnas" / "latency_tables"


def test_a_table_profiled_in_one_folder_serves_a_search_started_in_another(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_lut_trust import _scripted_machine

    from hwnas.device import _scan

    install = _scripted_machine(monkeypatch, tmp_path)
    tables = tmp_path / "user-tables"
    monkeypatch.setenv("HWNAS_TABLES", str(tables))
    install()
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    try:
        monkeypatch.chdir(tmp_path / "here")
        assert main(["profile", "--device", "fastcpu", "--calibrate", "10", "--check", "8", "-q"]) == 0
        assert (tables / "fastcpu-nb201.json").is_file() and not (tmp_path / "here" / "latency_tables").exists()
        capsys.readouterr()
        monkeypatch.chdir(tmp_path / "elsewhere")
        lines: list[str] = []
        search = Search(SearchConfig(device="fastcpu", latency_ms=20.0), log=lines.append)  # nothing is written before run()
        assert search.plan.config.latency_model == "lookup table"
        assert lines[0].startswith(f"latency on fastcpu: lookup table {tables / 'fastcpu-nb201.json'}"), lines
        assert search.plan.config.out.endswith("-lut-hybrid-seed0")  # its own folder: the study's latency model differs
    finally:
        _scan.cache_clear()


def test_the_first_line_says_why_no_table_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.cost.lut import tables_dir

    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    Search(SearchConfig(device="cpu", out="run"), log=lines.append)
    assert lines[0] == (
        f"no lookup table for cpu/nb201 in {tables_dir()}: measuring every candidate live; "
        "build one with 'hwnas profile --device cpu --space nb201'"
    )
    # A table where an older hwnas wrote it is not read, but named with the move that uses it.
    (tmp_path / "latency_tables").mkdir()
    (tmp_path / "latency_tables" / "cpu-nb201.json").write_text("{}")
    lines.clear()
    Search(SearchConfig(device="cpu", out="run"), log=lines.append)
    assert "latency_tables/cpu-nb201.json is where an older hwnas wrote it" in lines[0] and "measuring every candidate live" in lines[0]
    with pytest.raises(UsageError, match=f"looked for cpu-nb201.json in {re.escape(str(tables_dir()))}"):
        Search(SearchConfig(device="cpu", out="run", latency_source="lut"))


def test_the_profile_default_is_the_table_folder_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    assert "HWNAS_TABLES" in capsys.readouterr().out


# -- 2.16: no lock files left; the storage by its absolute path ----------------------------------
def test_a_search_leaves_no_lock_file_in_its_folder(tmp_path: Path) -> None:
    report = Search(_run(tmp_path, export=True)).run()
    assert report["export"] is not None
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert not [n for n in left if "lock" in n], left


def _count_under_lock(folder: str, times: int) -> None:
    from hwnas.search.rundir import folder_lock

    path = Path(folder)
    for _ in range(times):
        with folder_lock(path, "test"):
            n = int((path / "count").read_text())
            (path / "count").write_text(str(n + 1))  # read-modify-write: lost updates unless exclusive


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: the lock is a no-op there")
def test_the_folder_lock_excludes_although_its_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / "count").write_text("0")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_under_lock, args=(str(tmp_path), 150)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert (tmp_path / "count").read_text() == "600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count"]


def test_report_opens_the_runs_own_study_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.report import open_run_study

    for folder, trials in (("a", 3), ("b", 5)):  # the same relative --out from two working directories
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        report = Search(_run(Path("."), trials=trials, out="run", latency_ms=50.0)).run()
        assert report["storage"] == str(tmp_path / folder / "run" / "study.journal")
        assert json.loads(Path("run/config.json").read_text())["storage"] == report["storage"]
    # From b, a's config once said "run/study.journal", which is b's study there.
    _, study = open_run_study(tmp_path / "a" / "run")
    assert len(study.trials) == 3
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(tmp_path / "a" / "run"), "--json"]) == 0
    assert main(["export", "--run", str(tmp_path / "a" / "run"), "--trial", "0", "--out", str(tmp_path / "t0.onnx")]) == 0


def test_relative_storage_urls_are_made_absolute_and_others_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.search.config import absolute_storage

    monkeypatch.chdir(tmp_path)
    assert absolute_storage("runs/s.journal") == str(tmp_path / "runs" / "s.journal")
    assert absolute_storage("journal:runs/s.journal") == f"journal:{tmp_path / 'runs' / 's.journal'}"
    assert absolute_storage("sqlite:///runs/s.db") == f"sqlite:///{tmp_path / 'runs' / 's.db'}"
    assert absolute_storage("sqlite:///runs/s.db?timeout=5") == f"sqlite:///{tmp_path / 'runs' / 's.db'}?timeout=5"
    for kept in ("sqlite:////abs/s.db", "sqlite://", "sqlite:///:memory:", "postgresql://u:p@host/db"):
        assert absolute_storage(kept) == kept
