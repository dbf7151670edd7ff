"""Precision as a searched dimension: INT8 quantization, its refusals, table identity, an INT8 search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_lut import FAST_DEVICE

from hwnas.cli import main
from hwnas.cost.quantize import (
    MIN_CALIBRATION,
    QuantizationFailed,
    check_calibration,
    data_calibration,
    needs_reduce_range,
    onnx_accuracy,
    parity,
    quantize_onnx,
    synthetic_calibration,
)
from hwnas.device import load_device_file
from hwnas.errors import UsageError
from hwnas.evaluate import EvaluationFailed
from hwnas.trials import FAILED_BECAUSE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: An FP32 lookup table shipped with the repository (written before tables had a precision).
FP32_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evaluators" / "tables" / "cpu-mbconv.json"


@pytest.fixture(scope="module")
def fast_device_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dev") / "fastcpu.toml"
    path.write_text(FAST_DEVICE)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# -- quantization parity on a trained network -------------------------------------------------
def _trained_digits_cnn() -> tuple[Any, Any, Any]:
    """A small CNN trained 12 epochs on digits (about 3 s): (model, train split, validation split)."""
    import torch

    from hwnas.datasets import evaluation_splits, load_data

    train, valid, _ = evaluation_splits(load_data("digits"), 0)
    x, y = torch.from_numpy(np.asarray(train.x)), torch.from_numpy(train.y)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(12):
        model.train()
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 128]), y[i : i + 128]).backward()
            opt.step()
    return model.eval(), train, valid


def test_int8_parity_on_a_trained_digits_network() -> None:
    """Measured here (3 seeds, 30 epochs): top-1 agreement 99.2-99.7 %, accuracy drop 0-0.8 points,
    mean |diff| of the logits 3-4 % of their mean magnitude. The bars leave margin for other CPUs."""
    from hwnas.cost._onnx import to_onnx_bytes

    model, train, valid = _trained_digits_cnn()
    fp32 = to_onnx_bytes(model, (1, 8, 8), exporter="torchscript")
    q = quantize_onnx(fp32, data_calibration(np.asarray(train.x), (1, 8, 8), name="digits"), shape=(1, 8, 8))
    vx = np.asarray(valid.x)
    p = parity(fp32, q.data, vx, source="digits validation split")
    acc32, acc8 = onnx_accuracy(fp32, vx, valid.y), onnx_accuracy(q.data, vx, valid.y)
    assert acc32 > 85.0  # the network did learn
    assert p["inputs"] == len(vx)
    assert p["top1_agreement"] >= 0.97, p
    assert acc32 - acc8 <= 3.0, (acc32, acc8)
    assert p["mean_abs_diff"] <= 0.1 * p["fp32_logit_scale"], p
    assert 0 < p["max_abs_diff"]  # it is quantized: not the same numbers
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(q.data).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(q.data) < 0.5 * len(fp32) + 20_000  # 8-bit weights
    # Only the standard domain is imported (ORT's pre-processing had added eight unused ones, which a
    # remote agent accepting the standard domains refused).
    assert {o.domain for o in onnx.load_from_string(q.data).opset_import} <= {"", "ai.onnx"}


def test_a_layer_behind_a_none_edge_keeps_its_bias_at_int8() -> None:
    """NB201's ``none`` edge is ``x * 0``: the convolution behind it adds its (BatchNorm) bias alone.
    With MinMax's scale 1 for the zero tensor, that bias was rounded to 0 at INT8 (a trained digits
    network lost 7 points of test accuracy); a zero tensor now keeps a small scale."""
    import torch

    from hwnas.cost._onnx import to_onnx_bytes

    class DeadBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.dead = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.conv(x) + self.dead(x * 0.0)).mean((2, 3))

    torch.manual_seed(0)
    model = DeadBranch().eval()
    bn = model.dead[2]
    with torch.no_grad():  # as after training on zeros: no variance, a learnt shift of 0.3
        bn.running_mean.zero_()
        bn.running_var.zero_()
        bn.bias.fill_(0.3)
    fp32 = to_onnx_bytes(model, (4, 6, 6), exporter="torchscript")
    x = np.random.default_rng(0).random((32, 4, 6, 6), dtype=np.float32)
    q = quantize_onnx(fp32, data_calibration(x, (4, 6, 6), name="random"), shape=(4, 6, 6))
    p = parity(fp32, q.data, x, source="the calibration inputs")
    assert p["mean_abs_diff"] < 0.05, p  # with the bias rounded away every output was off by 0.3


def test_reduce_range_only_on_x86_without_vnni() -> None:
    assert needs_reduce_range({"machine": "x86_64", "isa": ["avx", "avx2", "fma"]})
    assert not needs_reduce_range({"machine": "x86_64", "isa": ["avx2", "avx512_vnni"]})
    assert not needs_reduce_range({"machine": "aarch64", "isa": ["asimd"]})


# -- refusals ---------------------------------------------------------------------------------------
def test_calibration_set_too_small_or_mismatched_names_what_is_needed() -> None:
    x = np.zeros((3, 1, 8, 8), np.float32)
    with pytest.raises(UsageError, match=f"at least {MIN_CALIBRATION}"):
        check_calibration(x, (1, 8, 8))
    with pytest.raises(UsageError, match=r"shape 1x8x8.*takes 3x32x32.*at least 16 inputs of shape 3x32x32"):
        check_calibration(np.zeros((20, 1, 8, 8), np.float32), (3, 32, 32))
    with pytest.raises(UsageError, match="NaN"):
        check_calibration(np.full((20, 1, 8, 8), np.nan, np.float32), (1, 8, 8))
    cal = synthetic_calibration((3, 32, 32), n=4)
    with pytest.raises(UsageError, match=f"holds 4 input.*at least {MIN_CALIBRATION}"):
        quantize_onnx(b"unused", cal, shape=(3, 32, 32))
    assert synthetic_calibration((1, 8, 8)).synthetic and "synthetic" in synthetic_calibration((1, 8, 8)).source


def test_a_model_that_fails_to_quantize_is_an_evaluation_failure() -> None:
    with pytest.raises(QuantizationFailed, match="INT8 quantization failed") as info:
        quantize_onnx(b"not an onnx model", synthetic_calibration((1, 8, 8)), shape=(1, 8, 8))
    assert isinstance(info.value, EvaluationFailed)  # so the search records a failed trial and goes on
    assert "\n" not in str(info.value)


def test_fp16_on_the_cpu_provider_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["search", "--device", "cpu", "--precision", "fp16", "--trials", "1", "--out", str(tmp_path / "r")]) == 2
    err = _one_line_error(capsys)
    assert "fp16" in err and "supports fp32, int8" in err and "CPUExecutionProvider" in err
    assert not (tmp_path / "r").exists()
    assert main(["profile", "--device", "cpu", "--space", "nb201", "--precision", "fp16", "--out", str(tmp_path / "t.json")]) == 2
    assert "supports fp32, int8" in _one_line_error(capsys)
    # A table device measures nothing: its benchmark latencies are FP32 only.
    assert main(["search", "--device", "pixel3", "--precision", "int8", "--trials", "1", "--out", str(tmp_path / "p")]) == 2
    assert "supports fp32" in _one_line_error(capsys)


def test_device_file_precision_is_the_default(tmp_path: Path) -> None:
    from hwnas.search.config import SearchConfig, resolve

    path = tmp_path / "int8cpu.toml"
    path.write_text(FAST_DEVICE.replace('"fastcpu"', '"int8cpu"') + 'precision = "int8"\n')
    assert load_device_file(path).precision == "int8"
    plan = resolve(SearchConfig(device=str(path), latency_source="measure", out=str(tmp_path / "run")))
    assert plan.config.precision == "int8" and plan.device.precision == "int8"
    assert plan.latency.describe()["precision"] == "int8"
    assert plan.config.identity()["precision"] == "int8"
    # --precision overrides the file.
    plan = resolve(SearchConfig(device=str(path), latency_source="measure", precision="fp32", out=str(tmp_path / "run32")))
    assert plan.device.precision == "fp32"
    bad = tmp_path / "bad.toml"
    bad.write_text(FAST_DEVICE.replace('"fastcpu"', '"bad"') + 'precision = "fp16"\n')
    with pytest.raises(UsageError, match=r"bad.toml: precision = 'fp16'.*supports fp32, int8"):
        load_device_file(bad)
    bad.write_text(FAST_DEVICE.replace('"fastcpu"', '"bad"') + 'precision = "int4"\n')
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        load_device_file(bad)


# -- identity ---------------------------------------------------------------------------------------------
def test_old_tables_read_as_fp32_and_tables_are_named_by_precision() -> None:
    from hwnas.cost.lut import LatencyTable, table_name

    assert "precision" not in json.loads(FP32_TABLE.read_text())["measurement"]
    assert LatencyTable.load(FP32_TABLE).precision == "fp32"
    assert table_name("cpu", "mbconv") == "cpu-mbconv.json"
    assert table_name("cpu", "mbconv", "int8") == "cpu-mbconv-int8.json"


def _int8_copy(tmp_path: Path) -> Path:
    data = json.loads(FP32_TABLE.read_text())
    data["measurement"]["precision"] = "int8"
    path = tmp_path / "cpu-mbconv-int8.json"
    path.write_text(json.dumps(data))
    return path


def test_a_table_of_another_precision_is_refused_even_with_allow_foreign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cost.latency import LookupTableLatency
    from hwnas.cost.lut import LatencyTable
    from hwnas.device import get_device
    from hwnas.spaces import get_space

    cpu, space = get_device("cpu"), get_space("mbconv")
    fp32, int8 = LatencyTable.load(FP32_TABLE), LatencyTable.load(_int8_copy(tmp_path))
    assert int8.precision == "int8"
    with pytest.raises(UsageError, match=r"holds fp32 latencies, but this search is at int8.*--precision int8"):
        LookupTableLatency(cpu.with_precision("int8"), space, fp32, allow_foreign=True)
    with pytest.raises(UsageError, match="holds int8 latencies, but this search is at fp32"):
        LookupTableLatency(cpu, space, int8, allow_foreign=True)
    assert "precision int8 != fp32" in int8.mismatches_for(cpu)
    assert LookupTableLatency(cpu.with_precision("int8"), space, int8, allow_foreign=True).describe()["precision"] == "int8"
    # Through the command line: one line, exit 2, nothing run.
    argv = ["search", "--space", "mbconv", "--evaluator", "supernet", "--device", "cpu", "--latency", "50ms", "--trials", "1"]
    argv += ["--allow-foreign-table", "--out", str(tmp_path / "r")]
    assert main([*argv, "--precision", "int8", "--table", str(FP32_TABLE)]) == 2
    err = _one_line_error(capsys)
    assert "holds fp32 latencies" in err and "hwnas profile --device cpu --space mbconv --precision int8" in err
    assert main([*argv, "--table", str(tmp_path / "cpu-mbconv-int8.json")]) == 2
    assert "holds int8 latencies, but this search is at fp32" in _one_line_error(capsys)


def test_precision_is_part_of_the_run_identity() -> None:
    from hwnas.search.config import IDENTITY_VERSION, SearchConfig
    from hwnas.search.rundir import check_identity

    old = SearchConfig(precision="fp32").identity()
    del old["precision"]  # a run folder from before precision existed
    check_identity(old, SearchConfig(precision="fp32").identity(), where="run", fix="x")
    with pytest.raises(UsageError, match="precision='fp32', not 'int8'"):
        check_identity(old, SearchConfig(precision="int8").identity(), where="run", fix="x")
    assert old["version"] == IDENTITY_VERSION
    assert "-int8-" in SearchConfig(precision="int8").default_out() and "int8" not in SearchConfig(precision="fp32").default_out()


# -- accuracy at INT8 -----------------------------------------------------------------------------------
def test_train_evaluator_accuracy_is_measured_after_quantization(tiny_data: str) -> None:
    from hwnas.evaluate import EvalContext
    from hwnas.evaluate.quantized import PrecisionEvaluator
    from hwnas.evaluate.table import TableEvaluator
    from hwnas.evaluate.train import TrainEvaluator
    from hwnas.spaces import get_space

    space = get_space("nb201")
    inner = TrainEvaluator(space, context=EvalContext(data=tiny_data), epochs=1)
    ev = PrecisionEvaluator(inner, "int8")
    arch = space.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    acc = ev.evaluate(arch)
    assert acc.extras["accuracy_precision"] == "int8"
    assert acc.extras["quantization_drop"] == pytest.approx(acc.extras["fp32_accuracy"] - acc.value, abs=1e-3)
    assert "INT8" in acc.source and "training split" in acc.source
    assert 0.0 <= acc.value <= 100.0 and acc.value * len(inner.valid) / 100 == pytest.approx(round(acc.value * len(inner.valid) / 100))
    assert ev.describe()["accuracy_precision"] == "int8"
    # The benchmark's accuracies stay FP32, and say so.
    table = PrecisionEvaluator(TableEvaluator(space), "int8")
    got = table.evaluate(arch)
    assert got.extras["accuracy_precision"] == "fp32" and "FP32 accuracy from the benchmark table" in got.source
    assert "not an INT8 accuracy" in table.describe()["signal"]


# -- an INT8 search, end to end --------------------------------------------------------------------------------
@pytest.mark.slow  # about 30 s on a quiet 2-core machine: a search, its re-measurement and a verified export
def test_int8_search_end_to_end_with_a_candidate_that_fails_to_quantize(
    fast_device_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first candidate's quantization fails: a failed trial with its reason, and the search goes on
    to its budget and writes the INT8 best.onnx with its FP32 source and their parity."""
    import inspect

    import onnx
    import optuna

    from hwnas.cost import quantize as Q

    real = Q.quantize_onnx
    failed: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failed and any(f.function == "charge" for f in inspect.stack()):
            failed.append(1)
            raise QuantizationFailed("INT8 quantization failed: RuntimeError: injected by the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(Q, "quantize_onnx", flaky)
    out = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--device", str(fast_device_file), "--latency", "20ms", "--precision", "int8"]
    argv += ["--latency-source", "measure", "--trials", "3", "--strategy", "random", "--out", str(out), "--json", "-q"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert failed == [1]
    assert report["precision"] == "int8" and report["trials"]["complete"] == 3 and report["trials"]["failed"] == 1
    assert report["latency_model"]["precision"] == "int8"
    assert "FP32 accuracy from the benchmark table" in report["accuracy_source"]
    from hwnas.report import open_run_study

    _, study = open_run_study(out)
    fail = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
    assert "injected by the test" in fail[0].user_attrs[FAILED_BECAUSE]
    assert json.loads((out / "config.json").read_text())["precision"] == "int8"
    # best.onnx is INT8, its FP32 source beside it, and the parity figure in the report.
    ex = report["export"]
    assert ex["precision"] == "int8" and Path(ex["fp32_path"]) == out / "best-fp32.onnx"
    int8, fp32 = onnx.load(str(out / "best.onnx")), onnx.load(str(out / "best-fp32.onnx"))
    assert "QuantizeLinear" in {n.op_type for n in int8.graph.node} and "QuantizeLinear" not in {n.op_type for n in fp32.graph.node}
    props = {p.key: p.value for p in int8.metadata_props}
    assert props["hwnas.precision"] == "int8" and props["hwnas.fp32_source"] == "best-fp32.onnx"
    assert "synthetic" in props["hwnas.calibration"]
    p = ex["int8"]["parity"]
    assert set(p) >= {"top1_agreement", "max_abs_diff", "mean_abs_diff", "inputs_source"} and "synthetic" in p["inputs_source"]
    assert ex["int8"]["calibration"]["synthetic"] is True
    assert ex["measured_latency_ms"] > 0
    shutil.rmtree(out)
