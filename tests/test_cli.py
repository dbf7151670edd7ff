"""The command line: exit codes, one-line errors without tracebacks, listings, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main

BAD_INPUTS = [
    (["search", "--space", "nb20"], "did you mean 'nb201'"),
    (["search", "--device", "pixel33"], "did you mean 'pixel3'"),
    (["search", "--strategy", "evolutoin"], "did you mean 'evolution'"),
    (["search", "--evaluator", "nope"], "invalid choice: 'nope'"),
    (["search", "--latency", "20"], "a unit is required"),
    (["search", "--latency", "-5ms"], "20ms"),
    (["search", "--latency", "0ms"], "positive"),
    (["search", "--latency", "fast"], "20ms"),
    (["search", "--latency", "20ms,30ms"], "20ms"),
    (["search", "--trials", "0"], "at least 1"),
    (["search", "--trials", "ten"], "whole number"),
    (["search", "--space", "mbconv", "--device", "pixel3"], "nb201"),
    (["search", "--space", "mbconv", "--device", "cpu"], "evaluator 'table'"),
    (["search", "--bogus"], "unrecognized arguments"),
    (["export", "--arch", "|nor_conv_9x9~0|+|"], "e.g."),
    (["export", "--arch", "99999"], "out of range"),
    (["export", "--run", "/nonexistent/run"], "report.json"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "search" and "--bogus" not in argv else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hwnas: error:")
    assert needle in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unwritable_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["search", "--device", "pixel3", "--latency", "5ms", "--trials", "2", "--out", str(blocker / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("hwnas: error:") and "--out" in err[-1]


def test_infeasible_budget_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["search", "--device", "pixel3", "--latency", "1us", "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "raise --latency to at least" in err and len(err.splitlines()) == 1


def test_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hwnas", "search", "--latency", "fast"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("hwnas: error:")


def test_devices_and_spaces_listings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("cpu", "cuda", "pixel3", "raspi4", "titan_rtx_256", "eyeriss", "fpga", "gold_6226"):
        assert f"\n{name} " in out
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 30  # cpu, cuda (ONNX Runtime), cuda_torch (PyTorch) and the 27 shipped tables
    assert {r["name"] for r in rows} >= {"cpu", "cuda", "cuda_torch"}
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert "nb201" in out and "mbconv" in out


def test_search_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
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
            str(tmp_path / "r"),
            "--json",
            "-q",
            "--no-export",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["device"] == "pixel3" and report["trials"]["complete"] == 12
    assert report["latency_ms"] <= 5.0


@pytest.mark.slow
def test_export_arch_and_run_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    assert main(["export", "--arch", "6111", "--out", str(out), "--device", "cpu", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["arch"] == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert d["parity_max_abs_diff"] <= 1e-4 and d["measured_latency_ms"] > 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0].shape == (2, 10)

    run = tmp_path / "run"
    assert main(["search", "--device", "pixel3", "--latency", "20ms", "--trials", "8", "--out", str(run), "-q", "--no-export"]) == 0
    capsys.readouterr()
    report = json.loads((run / "report.json").read_text())
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "best.onnx")]) == 0
    assert report["arch"] in capsys.readouterr().out
    assert main(["export", "--run", str(run), "--trial", "3", "--out", str(tmp_path / "t3.onnx")]) == 0
    assert (tmp_path / "t3.onnx").exists()
    assert main(["export", "--run", str(run), "--trial", "999", "--out", str(tmp_path / "x.onnx")]) == 2


PROFILE_BAD = [
    (["profile", "--device", "pixel3"], "table device"),
    (["profile", "--space", "nb201", "--resolution", "224"], "mbconv space only"),
    (["profile", "--space", "mbconv", "--resolution", "100", "--calibrate", "5"], "resolution 100"),
    (["profile", "--calibrate", "2"], "at least 5"),
    (["search", "--latency-source", "lut", "--device", "pixel3"], "cannot be measured here"),
    (["search", "--latency-source", "table", "--device", "cpu"], "no benchmark table"),
    (["search", "--latency-source", "psychic"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), PROFILE_BAD, ids=[" ".join(a) for a, _ in PROFILE_BAD])
def test_profile_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if argv[0] == "profile":
        argv = [*argv, "--out", str(tmp_path / "t.json")]
    else:
        argv = [*argv, "--out", str(tmp_path / "run")]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("hwnas: error:") and needle in err[-1], err
    assert not (tmp_path / "t.json").exists()


def test_profile_cuda_without_provider_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    code = main(["profile", "--device", "cuda", "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "not installed" in err[-1] and "onnxruntime-gpu" in err[-1]


def test_report_draws_front_and_hypervolume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "search",
                "--device",
                "pixel3",
                "--latency",
                "5ms",
                "--trials",
                "30",
                "--strategy",
                "evolution",
                "--out",
                str(run),
                "-q",
                "--no-export",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["report", str(run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["trials"] == 30 and 0 < len(rep["front"]) <= rep["feasible"]
    assert len({p["trial"] for p in rep["front"]}) == len(rep["front"])
    assert all(p["latency_ms"] <= 5.0 for p in rep["front"]) and rep["hypervolume"] > 0
    for name in ("front.png", "hypervolume.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # Hypervolume never decreases as trials accumulate.
    from hwnas.report import run_summary

    hv = run_summary(run)["hypervolume"]
    assert (np.diff(hv) >= -1e-12).all()


def test_report_of_a_non_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_several_devices_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--device", "pixel3", "--latency", "5ms", "--device", "raspi4", "--out", str(tmp_path / "r")]) == 2
    assert "one budget per device" in capsys.readouterr().err
    code = main(
        [
            "search",
            "--device",
            "pixel3",
            "--latency",
            "5ms",
            "--device",
            "raspi4",
            "--latency",
            "15ms",
            "--trials",
            "15",
            "--strategy",
            "evolution",
            "--out",
            str(tmp_path / "r2"),
            "--json",
            "-q",
            "--no-export",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["also_devices"][0]["device"] == "raspi4" and report["also_devices"][0]["latency_budget_ms"] == 15.0


def test_report_shows_every_devices_latency_on_the_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 24 item 7: a multi-device run's second device was missing from 'hwnas report'.
    argv = ["search", "--device", "pixel3", "--latency", "5ms", "--device", "raspi4", "--latency", "15ms", "--trials", "15"]
    assert main([*argv, "--out", str(tmp_path / "r"), "-q", "--no-export"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r"), "--no-plots", "--json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    assert front and all(0 < p["latency_ms@raspi4"] <= 15.0 and 0 < p["latency_ms"] <= 5.0 for p in front)
    assert main(["report", str(tmp_path / "r"), "--no-plots"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  trial")]
    assert len(lines) == len(front) and all(", raspi4 " in line and line.endswith(" ms") for line in lines)
