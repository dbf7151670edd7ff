"""The ``torch`` device kind: PyTorch itself as the runtime that measures (on the CPU here; CUDA tests skip without a GPU).

Measurement statistics, batch and precision honoured, a search and a lookup table through it,
the one-line refusals, and which runtime ``--device cuda`` picks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.cost import torch_runtime
from hwnas.cost.lut import LatencyTable
from hwnas.cost.measure import Measurement
from hwnas.cost.source import LatencyRequest, device_kind, latency_source
from hwnas.cost.torch_runtime import TorchLatency, TorchMeasurement, TorchModel, measure_torch
from hwnas.device import get_device, load_device_file, runnable
from hwnas.errors import UsageError
from hwnas.spaces import _nb201_graph as nb201_graph
from hwnas.spaces import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = 'name = "{name}"\nkind = "torch"\ndevice = "cpu"\nwarmup = 1\nrepeats = {repeats}\nbatch = {batch}\n'
#: A mid-sized NB201 network (convolutions on every edge into the last node).
ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"


@pytest.fixture
def devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of torch device files, searched before the built-ins."""
    folder = tmp_path / "devices"
    folder.mkdir()
    (folder / "tcpu.toml").write_text(FAST.format(name="tcpu", repeats=3, batch=1))
    monkeypatch.setenv("HWNAS_DEVICES", str(folder))
    from hwnas import device as device_mod

    device_mod._scan.cache_clear()
    yield folder
    device_mod._scan.cache_clear()


def _device(tmp_path: Path, text: str, name: str = "t") -> Any:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_device_file(path)


def _net(arch: str = ARCH) -> tuple[Any, tuple[int, ...]]:
    space = get_space("nb201")
    a = space.from_string(arch)
    return space.build(a), tuple(space.input_shape(a))


# -- measuring ------------------------------------------------------------------------
def test_measurement_has_the_statistics_of_onnx_runtime_measurements() -> None:
    module, shape = _net()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.train()
    m = measure_torch(module, shape, warmup=2, repeats=15)
    assert isinstance(m, TorchMeasurement) and isinstance(m, Measurement)
    assert set(Measurement.__dataclass_fields__) <= set(m.as_dict())
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms and m.iqr_ms >= 0
    assert (m.repeats, m.warmup, m.threads, m.batch, m.device, m.precision, m.compile) == (15, 2, 1, 1, "cpu", "fp32", "none")
    assert m.provider == "torch:cpu" and m.source == "measured (torch)" and m.timer == "perf_counter"
    assert m.clocks_before is None and m.clocks_after is None  # GPU clocks: CUDA only
    json.dumps(m.as_dict())
    # The caller's module is measured as a converted copy: still in training mode, weights untouched.
    assert module.training and all((module.state_dict()[k] == v).all() for k, v in before.items())


def test_batch_and_precision_are_honoured() -> None:
    module, shape = _net()
    model = TorchModel(module, shape)  # one module, converted anew per setting
    one = measure_torch(model, shape, batch=1, warmup=1, repeats=5)
    many = measure_torch(model, shape, batch=32, warmup=1, repeats=5)
    assert many.batch == 32 and many.median_ms > 4 * one.median_ms
    run, x = model.ready(device="cpu", precision="bf16", compile="none", batch=2, seed=0)
    assert x.dtype == next(run.parameters()).dtype == __import__("torch").bfloat16 and tuple(x.shape) == (2, *shape)


def test_torch_compile_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(module: Any, mode: Any = None) -> Any:
        def run(x: Any) -> Any:
            raise RuntimeError("InductorError: no working C++ compiler\nlong traceback text")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    module, shape = _net()
    with pytest.raises(UsageError) as info:
        measure_torch(module, shape, compile="max-autotune", warmup=1, repeats=2)
    text = str(info.value)
    assert "\n" not in text and 'torch.compile (compile = "max-autotune") failed' in text and 'compile = "none"' in text


def test_onnx_bytes_are_refused_by_the_torch_runtime() -> None:
    with pytest.raises(UsageError, match="times PyTorch modules, not ONNX files"):
        measure_torch(b"onnx", (3, 32, 32))


# -- device files and refusals -------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('precision = "fp16"\n', "fp16 is not supported by the torch:cpu provider"),
        ('compile = "fast"\n', 'compile = "fast" is not one of none, default, max-autotune'),
        ('precision = "int8"\n', "int8 is not supported"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        _device(tmp_path, 'name = "t"\nkind = "torch"\ndevice = "cpu"\n' + extra)
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def test_bad_torch_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r'device = "tpu" is not one of cpu, cuda'):
        _device(tmp_path, 'name = "t"\nkind = "torch"\ndevice = "tpu"\n')


def test_settings_land_where_tables_and_reports_read_them(tmp_path: Path) -> None:
    d = _device(tmp_path, 'name = "t"\nkind = "torch"\ndevice = "cpu"\nprecision = "bf16"\nbatch = 32\nthreads = 2\n')
    assert (d.precision, d.batch, d.threads, d.provider, d.measured) == ("bf16", 32, 2, "torch:cpu", True)
    fp, rt = device_kind("torch").fingerprint(d), device_kind("torch").runtime(d)
    assert fp["cpu"] and fp["gpu"] is None and fp["torch"] and rt["torch_runtime"].startswith("torch ")


def test_cuda_without_a_gpu_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch_runtime, "cuda_available", lambda: False)
    path = tmp_path / "tgpu.toml"
    path.write_text('name = "tgpu"\nkind = "torch"\ndevice = "cuda"\nprecision = "fp16"\n')
    assert load_device_file(path).precision == "fp16"  # fp16 is a cuda precision
    for argv in (
        ["search", "--device", str(path), "--latency", "5ms", "--trials", "2", "--out", str(tmp_path / "r"), "-q"],
        ["profile", "--device", str(path), "--out", str(tmp_path / "t.json"), "-q"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "measures with PyTorch on cuda, but torch" in err and "sees no CUDA GPU" in err, err
    with pytest.raises(UsageError, match="sees no CUDA GPU"):
        measure_torch(*_net(), device="cuda")


def test_train_device_cuda_is_refused_without_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    for extra in (["--strategy", "darts"], ["--space", "mbconv", "--evaluator", "supernet", "--data", "digits"]):
        argv = ["search", "--device", "cpu", "--latency", "5ms", "--train-device", "cuda", "--epochs", "1", "--out", str(tmp_path / "r")]
        assert main([*argv, *extra, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--train-device cuda but torch sees no CUDA GPU" in err, err


# -- --device cuda ----------------------------------------------------------------------
def _providers(monkeypatch: pytest.MonkeyPatch, cuda_ort: bool, cuda_torch: bool) -> None:
    import onnxruntime

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_ort else ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    monkeypatch.setattr(torch_runtime, "cuda_available", lambda: cuda_torch)


@pytest.mark.parametrize("cuda_torch", [True, False])
def test_device_cuda_takes_onnxruntime_gpu_where_installed(monkeypatch: pytest.MonkeyPatch, cuda_torch: bool) -> None:
    _providers(monkeypatch, cuda_ort=True, cuda_torch=cuda_torch)
    said: list[str] = []
    d = runnable(get_device("cuda"), said.append)
    assert d.name == "cuda" and d.kind == "onnxruntime" and d.provider == "CUDAExecutionProvider"
    assert said == ["device cuda: measuring with this machine's CUDA GPU, ONNX Runtime CUDAExecutionProvider (measured live)"]


def test_device_cuda_takes_pytorch_without_onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _providers(monkeypatch, cuda_ort=False, cuda_torch=True)
    said: list[str] = []
    d = runnable(get_device("cuda"), said.append)
    assert (d.name, d.kind, d.settings["device"], d.precision, d.batch) == ("cuda_torch", "torch", "cuda", "fp32", 1)
    assert len(said) == 1 and "'CUDAExecutionProvider' is not installed" in said[0] and "measuring with cuda_torch instead" in said[0]
    # The report says it too: the live source's provenance carries the choice.
    source = latency_source(d, get_space("nb201"), LatencyRequest(source="measure"))
    assert isinstance(source, TorchLatency) and source.describe()["chosen"] == said[0]
    assert source.describe()["timer"] == "CUDA events, synchronised after each call"


def test_device_cuda_without_any_cuda_keeps_the_existing_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _providers(monkeypatch, cuda_ort=False, cuda_torch=False)
    assert runnable(get_device("cuda")).name == "cuda"
    assert runnable(get_device("cpu")) == get_device("cpu")  # no fallback: untouched, nothing asked
    assert main(["search", "--device", "cuda", "--latency", "5ms", "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'CUDAExecutionProvider' is not installed" in err and "onnxruntime-gpu" in err


# -- search and lookup tables through it ---------------------------------------------------
def test_search_measures_through_pytorch_end_to_end(devices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A budget every network meets even on a busy machine (15-30 ms each at load 9 on 2 cores): the runtime is tested, not the budget.
    argv = ["search", "--device", "tcpu", "--latency", "500ms", "--trials", "4", "--strategy", "random", "--no-export", "--json"]
    assert main([*argv, "--out", str(tmp_path / "run"), "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latency_source"] == "measured (torch)" and report["accuracy_source"].startswith("table")
    assert 0 < report["latency_ms"] <= 500.0 and report["trials"]["complete"] == 4
    model = report["latency_model"]
    assert model["source"] == "torch" and model["torch_device"] == "cpu" and model["precision"] == "fp32" and model["repeats"] == 3


def test_the_source_keeps_the_contract_on_one_network(devices: Path) -> None:
    space = get_space("nb201")
    source = latency_source(get_device("tcpu"), space, LatencyRequest(source="measure"))
    assert not source.cheap and source.kind == "torch"
    costs = source.costs(space.smallest())
    assert set(costs) == {m.name for m in source.metrics()} == {"latency_ms"}
    cost = costs["latency_ms"]
    assert np.isfinite(cost.value) and cost.value > 0 and cost.source == "measured (torch)" and cost.details["batch"] == 1
    bound = source.lower_bound("latency_ms")
    assert bound is not None and space.validate(bound[1]) == space.smallest()
    json.dumps(source.describe())


@pytest.fixture
def cheap_structure(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """NB201's real structure features take a minute for all 15,625 cells: op counts stand in (as in
    test_lut.py); returns the providers they were asked for."""
    from hwnas.benchdata import nb201_table as bench

    fake = np.stack([nb201_graph.op_counts(bench().genotype(i)) * 2 for i in range(bench().n)]).astype(np.int16)
    fake = np.pad(fake, ((0, 0), (0, 2 * len(nb201_graph.NODE_TYPES) - fake.shape[1])))
    asked: list[str] = []
    monkeypatch.setattr(nb201_graph, "all_cell_features", lambda provider, **kw: asked.append(provider) or fake)
    return asked


def test_profile_builds_and_checks_a_table_through_pytorch(
    devices: Path, tmp_path: Path, cheap_structure: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tcpu-nb201.json"
    argv = ["profile", "--device", "tcpu", "--space", "nb201", "--calibrate", "8", "--out", str(out), "--force", "--json"]
    assert main([*argv, "--check", "3", "-q"]) == 0
    assert cheap_structure == ["CPUExecutionProvider"]  # ONNX Runtime's graphs: the CPU provider's, not "torch:cpu"
    table = LatencyTable.load(out, accept_failing=True)  # a 3-network check on 3 repeats passes or fails by chance
    d = table.data
    assert d["device"]["kind"] == "torch" and d["device"]["provider"] == "torch:cpu" and d["device"]["fingerprint"]["torch"]
    assert d["runtime"]["torch_runtime"].startswith("torch ") and d["check"]["n"] == 3
    assert all(e["median_ms"] > 0 and e["count"] == 3 for e in d["entries"].values())
    device = get_device("tcpu")
    assert table.mismatches_for(device) == []
    # A search on the table predicts (microseconds) instead of measuring.
    space = get_space("nb201")
    source = latency_source(device, space, LatencyRequest(source="lut", table=str(out), loaded=table))
    assert source.kind == "lookup table" and source.costs(space.from_string(ARCH))["latency_ms"].value > 0
    # Its check, as 'hwnas profile --reuse --check' runs it, through the same runtime.
    capsys.readouterr()
    assert main([*argv, "--reuse", "--check", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["check"]["n"] == 3 and "machine_drift_pct" in summary["check"]
    # Another PyTorch build, or another runtime setting, is another machine for the table.
    d["runtime"]["torch_runtime"] = "torch 0.1, CUDA None"
    assert any("torch 0.1" in why for why in LatencyTable(data=d).mismatches_for(device))
    other = _device(tmp_path, FAST.format(name="tcpu", repeats=3, batch=32))
    assert any("batch 1 != 32" in why for why in table.mismatches_for(other))


# -- on a CUDA GPU (skipped here) ---------------------------------------------------------
@pytest.mark.torch_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_measurement_uses_events_and_reads_clocks(precision: str) -> None:
    module, shape = _net()
    one = measure_torch(module, shape, device="cuda", precision=precision, warmup=5, repeats=20)
    many = measure_torch(module, shape, device="cuda", precision=precision, batch=256, warmup=5, repeats=20)
    assert one.timer == "cuda events" and one.device == "cuda" and 0 < one.min_ms <= one.median_ms <= one.p90_ms
    assert many.median_ms > one.median_ms
    fp = device_kind("torch").fingerprint(get_device("cuda_torch"))
    assert fp["gpu"] and fp["cuda"]


def test_gpu_clocks_come_from_nvidia_smi_or_are_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_runtime, "_nvml", lambda: None)  # no NVML: nvidia-smi, where it answers
    monkeypatch.setattr(torch_runtime, "_smi_last", [float("-inf"), None])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert torch_runtime.gpu_clocks() is None  # nothing answers: None, no error
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '1980, 3201, 41, [N/A]'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(torch_runtime, "_smi_last", [float("-inf"), None])
    assert torch_runtime.gpu_clocks() == {"sm_mhz": 1980.0, "mem_mhz": 3201.0, "temperature_c": 41.0, "power_w": None}


def test_export_re_measures_the_module_through_pytorch(devices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--arch", "6111", "--device", "tcpu", "--out", str(tmp_path / "m.onnx"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["measured_on"] == "tcpu" and got["measurement"]["source"] == "measured (torch)" and got["measured_latency_ms"] > 0
