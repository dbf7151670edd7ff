"""Issue 24's first-day items of the command line (2.5 export, 2.6 devices, 2.13 pictures, 2.14 help):
each test fails on the main before it (c67d7d9)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ARCH_6111 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# 2.5 hwnas export: a default device, and --out's folders created ----------------------------
class _FakeResult:
    """What export_verified returns, for tests that check which device cmd_export hands it."""

    def as_dict(self) -> dict[str, Any]:
        return {"measured_latency_ms": None, "measured_on": None, "checker": "c", "parity_max_abs_diff": 0.0, "opset": 18}


@pytest.fixture
def handed_device(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces the export (seconds of torch work) by a recorder of the device it is given."""
    import hwnas.export

    seen: dict[str, Any] = {}

    def fake(space: Any, arch: Any, out: Any, *, device: Any = None, **kw: Any) -> _FakeResult:
        seen["device"] = device
        return _FakeResult()

    monkeypatch.setattr(hwnas.export, "export_verified", fake)
    return seen


def _fake_run(tmp: Path, device: str) -> Path:
    """A run folder as 'hwnas search' leaves it, as far as 'hwnas export --run' reads it."""
    run = tmp / f"run-{device}"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"device": device, "precision": "fp32", "space": "nb201"}))
    (run / "report.json").write_text(json.dumps({"space": "nb201", "best": {"arch": ARCH_6111, "trial": 0}}))
    return run


def _device_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    """A user device folder (``$HWNAS_DEVICES``) in a temporary folder, never the real HOME."""
    folder = tmp / "devices"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    monkeypatch.setenv("HWNAS_DEVICES", str(folder))
    return folder


MINE = 'name = "mine"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\n'


def test_export_without_device_times_on_cpu(handed_device: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--arch", "6111", "--out", str(tmp_path / "m.onnx"), "--json"]) == 0
    assert handed_device["device"] is not None and handed_device["device"].name == "cpu"


def test_export_run_times_on_the_runs_device_where_it_measures(
    handed_device: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _device_folder(tmp_path, monkeypatch, {"mine.toml": MINE})
    assert main(["export", "--run", str(_fake_run(tmp_path, "mine")), "--out", str(tmp_path / "a.onnx"), "--json"]) == 0
    assert handed_device["device"].name == "mine"
    # A table device has nothing to time on: cpu, and a line saying why.
    assert main(["export", "--run", str(_fake_run(tmp_path, "pixel3")), "--out", str(tmp_path / "b.onnx"), "--json"]) == 0
    assert handed_device["device"].name == "cpu"
    assert "the run's device pixel3 is a table device (nothing to time on it): timing the model on cpu" in capsys.readouterr().err
    assert main(["export", "--run", str(_fake_run(tmp_path, "cpu")), "--no-measure", "--out", str(tmp_path / "c.onnx"), "--json"]) == 0
    assert handed_device["device"] is None


def test_export_no_measure_and_device_conflict(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, ["export", "--arch", "6111", "--no-measure", "--device", "cpu"])
    assert "--no-measure exports without timing, --device names where to time it; drop one" in err


def test_export_out_under_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "sub" / "m.onnx"
    err = _one_line_error(capsys, ["export", "--arch", "6111", "--out", str(out)])
    assert f"cannot create folder {out.parent} for --out {out}: Not a directory; pick a writable --out" in err


def test_a_refused_export_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fp16 is refused on the CPU provider inside the export, after its folder was made: it is removed again.
    out = tmp_path / "new" / "deeper" / "m.onnx"
    err = _one_line_error(capsys, ["export", "--arch", "6111", "--no-measure", "--precision", "fp16", "--out", str(out)])
    assert "fp16" in err and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_export_into_new_folders_times_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "deeper" / "m.onnx"
    assert main(["export", "--arch", "6111", "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 0 and d["measured_on"] == "cpu" and d["measured_latency_ms"] > 0


# 2.6 hwnas devices: one bad file hides none of the others --------------------------------------
def test_devices_lists_the_good_and_names_the_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _device_folder(
        tmp_path, monkeypatch, {"mine.toml": MINE, "broken.toml": 'name = "broken"\nkind = "onnxrntime"\n', "notoml.toml": "name = [\n"}
    )
    assert main(["devices"]) == 0
    captured = capsys.readouterr()
    names = [line.split()[0] for line in captured.out.splitlines()[1:]]
    assert "mine" in names and "pixel3" in names and "cpu" in names
    assert "broken" not in names and "notoml" not in names
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("hwnas: warning: not listed: device file ") for line in err), err
    assert f"{folder / 'broken.toml'}: kind = 'onnxrntime' is not one of" in err[0] and "(did you mean 'onnxruntime'?)" in err[0]
    assert f"{folder / 'notoml.toml'} is not valid TOML" in err[1]

    assert main(["devices", "--json"]) == 0
    captured = capsys.readouterr()
    listed = {d["name"] for d in json.loads(captured.out)}
    assert "mine" in listed and "broken" not in listed and len(captured.err.strip().splitlines()) == 2

    # Naming the bad file still refuses it, in one line.
    err_line = _one_line_error(capsys, ["search", "--device", "broken", "--latency", "5ms", "--out", str(tmp_path / "run")])
    assert f"{folder / 'broken.toml'}: kind = 'onnxrntime'" in err_line and not (tmp_path / "run").exists()


# 2.13 pictures: axis limits from the points, the budget where it is, units of the hypervolume ---------------
def _summary(latency: list[float], feasible: list[bool], budget: float | None = 20.0, metric: str = "latency_ms") -> dict[str, Any]:
    lat = np.array(latency, dtype=float)
    feas = np.array(feasible)
    acc = np.where(feas, 70.0 + 5.0 * np.arange(len(lat)) / max(1, len(lat) - 1), 0.0)
    front = feas.copy()
    return {
        "run": "r",
        "config": {"space": "nb201", "strategy": "random", "seed": 0, "device": "cpu", metric: budget},
        "metric": metric,
        "numbers": list(range(len(lat))),
        "accuracy": acc,
        "latency_ms": lat,
        "cost": lat,
        "feasible": feas,
        "front": front,
        "hypervolume": np.linspace(10.0, 42.5, len(lat)),
        "reference": (0.0, budget if budget is not None else float(lat.max())),
        "reference_is_budget": budget is not None,
        "degenerate_left_out": 0,
    }


def _legend(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.fixture
def figures() -> Any:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from hwnas import report

    yield report
    plt.close("all")


def test_a_far_budget_does_not_squeeze_the_points(figures: Any) -> None:
    # A 20 ms budget and points at 1-4 ms (a cpu run): the axis ends near 4 ms, the legend says where the budget is.
    fig = figures.front_figure(_summary([1.0, 2.0, 3.0, 4.0], [True] * 4))
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert 0.0 <= lo < 1.0 and 4.0 < hi < 4.5
    lo_y, hi_y = ax.get_ylim()
    assert 69.0 < lo_y < 70.0 and 75.0 < hi_y < 76.0
    legend = _legend(ax)
    assert "budget 20 ms (off the right edge)" in legend
    assert not any(t.startswith("over budget") for t in legend)  # no point was
    assert not any(line.get_xdata()[0] == 20.0 for line in ax.get_lines() if len(line.get_xdata()))


def test_a_near_budget_is_drawn_and_over_budget_points_are_listed(figures: Any) -> None:
    fig = figures.front_figure(_summary([1.0, 2.0, 3.0, 4.5], [True, True, True, False], budget=4.0))
    ax = fig.axes[0]
    legend = _legend(ax)
    assert "budget 4 ms" in legend and "over budget (accuracy not evaluated)" in legend and "feasible Pareto front" in legend
    assert "feasible" not in legend  # every feasible point is on the front: no separate series
    assert any(list(line.get_xdata()) == [4.0, 4.0] for line in ax.get_lines())
    assert ax.get_xlim()[1] > 4.5


def test_hypervolume_has_its_unit_and_reference_point(figures: Any) -> None:
    summary = _summary([1.0, 2.0, 3.0, 4.0], [True] * 4)
    assert figures.hypervolume_words(summary) == "42.5 % x ms (reference point: accuracy 0 % and latency 20 ms, the budget)"
    ax = figures.hypervolume_figure(summary).axes[0]
    assert ax.get_ylabel() == "hypervolume of the feasible front (% x ms)"
    assert ax.get_title() == "final 42.5 % x ms; reference point: accuracy 0 % and latency 20 ms, the budget"
    assert "hypervolume 42.5 % x ms" in figures.front_figure(summary).axes[0].get_title()
    flops = _summary([100.0, 200.0], [True, True], budget=None, metric="flops_m")
    assert figures.hypervolume_words(flops).endswith(
        "% x M multiply-adds (reference point: accuracy 0 % and FLOPs 200 M multiply-adds, the largest value seen)"
    )
    assert figures.front_figure(flops).axes[0].get_xlabel() == "FLOPs (M multiply-adds)"


def test_report_prints_the_hypervolume_with_unit_and_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = [
        "search",
        "--device",
        "pixel3",
        "--latency",
        "5ms",
        "--trials",
        "12",
        "--strategy",
        "random",
        "--out",
        str(run),
        "-q",
        "--no-export",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--no-plots"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert " % x ms (reference point: accuracy 0 % and latency 5 ms, the budget)" in first, first
    assert main(["report", str(run), "--no-plots", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hypervolume_unit"] == "% x ms"


# 2.14 help text -----------------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {"hwnas": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"hwnas {name}": sub for name, sub in action.choices.items()})
    return found


def test_every_flag_of_every_command_has_help() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in _subparsers(build_parser()).items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert not missing, missing


def _help_of(flag: str) -> str:
    action = next(a for a in _subparsers(build_parser())["hwnas search"]._actions if flag in a.option_strings)
    return str(action.help)


def test_training_flags_state_every_evaluators_real_defaults() -> None:
    pytest.importorskip("torch")
    from hwnas.darts.train import DartsConfig
    from hwnas.evaluate.train import DEFAULTS
    from hwnas.ofa.train import SupernetSettings

    supernet, darts = SupernetSettings(), DartsConfig()
    epochs = _help_of("--epochs")
    assert f"darts: its supernet's, default {darts.epochs};" in epochs
    assert f"train: per candidate, default {DEFAULTS['epochs']};" in epochs
    assert f"supernet: the supernet's, default {supernet.epochs})" in epochs
    assert _help_of("--lr") == f"learning rate (train: default {DEFAULTS['lr']:g}; supernet: default {supernet.lr:g})"
    assert f"supernet: default {supernet.batch})" in _help_of("--batch") and f"darts: default {darts.batch};" in _help_of("--batch")
    assert "space mbconv only" in _help_of("--evaluator")


def test_an_unknown_flag_points_to_its_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _one_line_error(capsys, ["search", "--bogus"]).endswith("see 'hwnas search --help'")
    assert _one_line_error(capsys, ["export", "--bogus"]).endswith("see 'hwnas export --help'")
    assert _one_line_error(capsys, ["--bogus"]).endswith("see 'hwnas --help'")


def test_a_flag_is_suggested_only_when_it_is_close_without_the_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    # Every flag starts with '--': counted in, '--bogus' was "close" to '--out'.
    assert "did you mean" not in _one_line_error(capsys, ["search", "--bogus"])
    assert "(did you mean '--latency'?)" in _one_line_error(capsys, ["search", "--lateny", "5ms"])
    assert "(did you mean '--seed'?)" in _one_line_error(capsys, ["search", "--seeds", "1"])
    assert "(did you mean '--no-measure'?)" in _one_line_error(capsys, ["export", "--no-measures"])


@pytest.mark.parametrize("argv", [["--help"], ["devices", "--help"], ["export", "--help"], ["report", "--help"]])
def test_help_outside_search_imports_no_search_library(argv: list[str]) -> None:
    # `hwnas --help` must stay fast (issue 24 item 11: <= 0.3 s; benchmarks/startup.py times it):
    # only `search`'s options need the registries (numpy, Optuna, torch behind them).
    code = (
        "import sys\nfrom hwnas.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy', 'optuna', 'torch', 'onnx', 'hwnas.search') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: hwnas" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_search_help_still_names_the_registries_entries() -> None:
    from hwnas.cli import build_parser
    from hwnas.search import strategy_names

    text = build_parser(only="search")._subparser("search").format_help()
    assert all(name in text for name in strategy_names()) and "--evaluator" in text
    assert "--strategy" not in build_parser(only="export")._subparser("search").format_help()


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["--latency", "20", "ms"], "--latency 20 ms: write the unit right after the number, with no space: --latency 20ms"),
        (["--latency=20", "ms"], "--latency 20 ms: write the unit right after the number, with no space: --latency 20ms"),
        (["--memory", "256", "KB"], "--memory 256 KB: write the unit right after the number, with no space: --memory 256KB"),
        (["--size", "2", "MB"], "--size 2 MB: write the unit right after the number, with no space: --size 2MB"),
        (["--flops", "300", "M"], "--flops 300 M: write the unit right after the number, with no space: --flops 300M"),
        (["--params", "1.5", "M"], "--params 1.5 M: write the unit right after the number, with no space: --params 1.5M"),
    ],
)
def test_a_space_between_number_and_unit_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], want: str) -> None:
    err = _one_line_error(capsys, ["search", *argv, "--out", str(tmp_path / "run")])
    assert err == f"hwnas: error: {want}"
    assert not (tmp_path / "run").exists()


def test_help_imports_no_torch() -> None:
    code = "import sys; from hwnas.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"
