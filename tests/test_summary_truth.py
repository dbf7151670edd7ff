"""Issue 24, items 7-9: the summary, report.json and front.csv say what was measured, on every device,
at the run's precision, and never state noise as fact. Each test fails on the main before it."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_lut import FAST_DEVICE

from hwnas.cli import main
from hwnas.spaces import Arch, SearchSpace, get_space


@pytest.fixture(scope="module")
def fast_device_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dev") / "fastcpu.toml"
    path.write_text(FAST_DEVICE)
    return path


# -- 2.7 a multi-device run shows every device ---------------------------------------------------------
def test_a_multi_device_run_shows_every_device_in_summary_report_and_front_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.benchdata import nb201_latency, nb201_table

    out = tmp_path / "run"
    argv = ["search", "--device", "pixel3", "--latency", "5ms", "--device", "pixel2", "--latency", "10ms"]
    argv += ["--trials", "40", "--strategy", "random", "--no-export", "-q", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    index = nb201_table().index(report["arch"])
    p3, p2 = nb201_latency("pixel3")[index], nb201_latency("pixel2")[index]
    assert report["latencies"] == [
        {"device": "pixel3", "latency_ms": p3, "source": "table", "budget_ms": 5.0},
        {"device": "pixel2", "latency_ms": p2, "source": "table", "budget_ms": 10.0},
    ]
    assert report["best"]["latency_source_also"] == {"pixel2": "table"}
    assert "on pixel3 under 5 ms and pixel2 under 10 ms:" in text
    line = next(x for x in text.splitlines() if x.startswith("  latency "))
    assert f"{p3:.4g} ms on pixel3 (table), {p2:.4g} ms on pixel2 (table)" in line
    with open(out / "front.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"latency_ms[pixel2]", "latency_source[pixel2]"} <= set(rows[0])
    for row in rows:
        i = nb201_table().index(row["arch"])
        assert float(row["latency_ms"]) == nb201_latency("pixel3")[i] and float(row["latency_ms[pixel2]"]) == nb201_latency("pixel2")[i]
        assert row["latency_source[pixel2]"] == "table"


# -- 2.8 --size at INT8 is the deployed bytes -----------------------------------------------------------
def _as_trained(model: Any, seed: int) -> None:
    """Distinct BatchNorm statistics and biases, as training gives (a fresh network's zero biases
    are dropped by the exporter: see tests/test_closed_form_costs.py)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dim() == 1 and t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)


def _int8_initializers(space: SearchSpace, arch: Arch, seed: int) -> tuple[int, int, list[str]]:
    """The INT8 model hwnas deploys for ``arch``: (bytes of its weight initializers, bytes of all
    its initializers, the initializers that are neither weights nor scalars nor shape constants).

    Weight initializers are what a Conv, Gemm or BatchNormalization takes beside its input: a
    DequantizeLinear's int8/int32 tensor with its scale and zero point, or a float tensor as is
    (an unfolded BatchNorm's running statistics).
    """
    import onnx
    from onnx import numpy_helper

    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.cost.quantize import quantize_onnx, synthetic_calibration

    model = space.build(arch)
    _as_trained(model, seed)
    shape = tuple(space.input_shape(arch))
    data = quantize_onnx(to_onnx_bytes(model.eval(), shape, exporter="torchscript"), synthetic_calibration(shape), shape=shape).data
    proto = onnx.load_from_string(data)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    weights: set[str] = set()
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "BatchNormalization"):
            for x in node.input[1:]:
                p = producer.get(x)
                if p is not None and p.op_type == "DequantizeLinear":
                    weights |= {i for i in p.input if i in inits}
                elif x in inits:
                    weights.add(x)
    other = [k for k, a in inits.items() if k not in weights and a.ndim > 0 and a.dtype != np.int64]
    return sum(inits[k].nbytes for k in weights), sum(a.nbytes for a in inits.values()), other


def _check_int8_size(space: SearchSpace, archs: list[Arch]) -> list[str]:
    """The closed form equals the quantized model's weight initializers exactly. It leaves out
    the activations' scale (float32) and zero point (uint8), 5 bytes per quantized activation
    tensor, which tensors ONNX Runtime's quantizer picks from its optimised graph, and the
    exporter's shape constants: scalars and int64 vectors, under 1 % of all the initializers."""
    wrong = []
    for seed, arch in enumerate(archs):
        closed = space.counts(arch).int8_weight_bytes  # type: ignore[union-attr]
        weights, total, other = _int8_initializers(space, arch, seed)
        if closed != weights or other or not total - weights < 0.01 * total:
            wrong.append(f"{space.to_string(arch)}: closed form {closed}, INT8 weights {weights} of {total}; not weights: {other[:3]}")
    return wrong


@pytest.mark.usefixtures("one_torch_thread")
def test_int8_size_of_the_smallest_and_the_largest_cell_is_the_quantized_models_weights() -> None:
    nb201 = get_space("nb201")
    largest = {d.name: "nor_conv_3x3" for d in nb201.dimensions()}
    assert not _check_int8_size(nb201, [nb201.smallest(), largest])
    mbconv = get_space("mbconv")
    assert not _check_int8_size(mbconv, [mbconv.smallest()])


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("space_name", ["nb201", "mbconv"])
def test_int8_size_of_random_architectures_is_the_quantized_models_weights(space_name: str) -> None:
    space = get_space(space_name)
    rng = np.random.default_rng(24)
    wrong = _check_int8_size(space, [space.sample(rng) for _ in range(6)])
    assert not wrong, "\n".join(wrong)


def test_an_int8_run_charges_and_judges_the_int8_size(fast_device_file: Path, tmp_path: Path) -> None:
    from hwnas.search.config import SearchConfig, resolve

    space = get_space("nb201")
    smallest = space.counts(space.smallest())
    assert smallest is not None and smallest.int8_weight_bytes < 100_000 < smallest.weight_bytes
    plan = resolve(SearchConfig(device=str(fast_device_file), precision="int8", size_bytes=100_000, out=str(tmp_path / "run")))
    size = next(ch.source for ch in plan.charged if "size_bytes" in {m.name for m in ch.source.metrics()})
    arch = space.sample(np.random.default_rng(0))
    assert size.costs(arch)["size_bytes"].value == space.counts(arch).int8_weight_bytes  # type: ignore[union-attr]
    # The budget's up-front check sees the INT8 bytes: 100KB is reachable at INT8, not at FP32 (286KB).
    bound = size.lower_bound("size_bytes")
    assert bound is not None and bound[0].value == smallest.int8_weight_bytes
    assert "INT8" in size.describe()["models"] and size.describe()["precision"] == "int8"
    fp32 = resolve(SearchConfig(device=str(fast_device_file), size_bytes=400_000, out=str(tmp_path / "run32")))
    size32 = next(ch.source for ch in fp32.charged if "size_bytes" in {m.name for m in ch.source.metrics()})
    assert size32.costs(arch)["size_bytes"].value == space.counts(arch).weight_bytes  # type: ignore[union-attr]


# -- 2.9 measurements that disagree beyond their noise ------------------------------------------------
Figure = tuple[float, float, float]


def _report(searched: Figure, rechecked: Figure, export: Figure) -> dict[str, Any]:
    """A report of a best (trial 7) measured three times: (median, p90, IQR) each."""
    return {
        "latency_budget_ms": 3.5,
        "best": {"trial": 7, "arch": "A", "latency_ms": searched[0], "latency_p90_ms": searched[1], "latency_iqr_ms": searched[2]},
        "recheck": {
            "done": True,
            "members": [
                {
                    "trial": 7,
                    "predicted_ms": searched[0],
                    "predicted_iqr_ms": searched[2],
                    "measured_ms": rechecked[0],
                    "measured_p90_ms": rechecked[1],
                    "measured_iqr_ms": rechecked[2],
                    "error_pct": round(100 * (searched[0] - rechecked[0]) / rechecked[0], 2),
                }
            ],
        },
        "export": {"measurement": {"median_ms": export[0], "p90_ms": export[1], "iqr_ms": export[2]}},
    }


def test_the_issues_three_figures_are_warned_with_their_spread_and_the_judged_figure() -> None:
    from hwnas.search import agreement as A  # new in issue 24

    report = A.attach(_report((2.76, 2.9, 0.05), (3.00, 3.1, 0.05), (2.00, 6.08, 0.3)))
    a = report["latency_agreement"]
    assert a["disagree"] and a["noisy"] == ["export"] and a["judged_on"] == "rechecked" and a["judged_on_ms"] == 3.0
    assert [f["what"] for f in a["figures"]] == ["searched", "rechecked", "export"]
    line = a["warning"]
    assert report["warnings"] == [line] and line.startswith("warning: trial 7's latency measurements differ by 1 ms")
    assert "searched 2.76 ms (p90 2.9, IQR 0.05 ms)" in line and "re-checked 3 ms" in line
    assert "re-measured at export 2 ms (p90 6.08, IQR 0.3 ms)" in line and "is noisy" in line
    assert "the budget was judged on the re-check's 3 ms against the 3.5 ms budget" in line and A.RULE in line


def test_measurements_within_their_noise_give_no_warning() -> None:
    from hwnas.search import agreement as A  # new in issue 24

    report = A.attach(_report((2.00, 2.1, 0.05), (2.05, 2.2, 0.05), (1.98, 2.1, 0.05)))
    assert report["latency_agreement"]["disagree"] is False and report["latency_agreement"]["warning"] is None
    assert report["warnings"] == []
    # Apart by more than 10 %, but within the measurements' own IQR: noise, no warning.
    report = A.attach(_report((2.00, 2.9, 0.6), (2.40, 3.0, 0.6), (2.10, 2.9, 0.5)))
    assert report["warnings"] == []


def test_a_recheck_far_from_the_search_warns() -> None:
    from hwnas.search import agreement as A  # new in issue 24

    report = _report((3.10, 3.2, 0.05), (1.795, 1.9, 0.05), (1.8, 1.9, 0.05))
    report["recheck"]["members"].append({"trial": 9, "predicted_ms": 1.0, "measured_ms": 1.02, "error_pct": -1.96})
    A.attach(report)
    w = report["recheck"]["warning"]
    assert w is not None and w in report["warnings"]
    assert "1 of 2 network(s), up to +72.7 % (trial 7: 3.1 ms in the search, 1.795 ms re-measured)" in w
    report["recheck"]["members"] = report["recheck"]["members"][1:]
    assert A.recheck_warning(report["recheck"]) is None


@pytest.mark.slow  # two small live searches with a re-check and an export each
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("disagree", [True, False])
def test_a_live_search_warns_when_its_measurements_disagree(
    disagree: bool, fast_device_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every measurement is faked by where it is taken (the trial, the re-check, the export), so the
    disagreement is deterministic; the export uses the TorchScript exporter to stay fast."""
    import hwnas.cost.measure as M
    import hwnas.export as E
    from hwnas.cost.measure import Measurement

    figures = {"charge": (2.76, 2.9, 0.05), "_measure": (3.00, 3.1, 0.05), "export_verified": (2.00, 6.08, 0.3)}
    if not disagree:
        figures = {"charge": (2.00, 2.1, 0.05), "_measure": (2.05, 2.1, 0.05), "export_verified": (2.02, 2.1, 0.05)}

    def fake(*args: Any, **kwargs: Any) -> Measurement:
        where = {f.function for f in inspect.stack()}
        median, p90, iqr = next((v for k, v in figures.items() if k in where), (2.0, 2.1, 0.05))  # the drift checks
        return Measurement(median, p90, iqr, median * 0.9, 5, 1, 1, 1, "CPUExecutionProvider")

    monkeypatch.setattr(M, "measure_onnx", fake)
    real = E.to_onnx_bytes
    monkeypatch.setattr(E, "to_onnx_bytes", lambda model, shape, exporter="dynamo": real(model, shape, exporter="torchscript"))
    out = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--device", str(fast_device_file), "--latency", "3.5ms", "--latency-source", "measure"]
    assert main([*argv, "--trials", "3", "--strategy", "random", "--seed", "1", "-q", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    trial = report["best"]["trial"]
    warned = [x.strip() for x in text.splitlines() if x.strip().startswith(f"warning: trial {trial}'s latency measurements")]
    if disagree:
        assert len(warned) == 1 and report["warnings"] == warned
        assert "searched 2.76 ms" in warned[0] and "re-checked 3 ms" in warned[0] and "re-measured at export 2 ms (p90 6.08" in warned[0]
        assert "judged on the re-check's 3 ms against the 3.5 ms budget" in warned[0]
        assert report["latency_agreement"]["disagree"] is True and report["latency_agreement"]["judged_on"] == "rechecked"
    else:
        assert not warned and report["warnings"] == [] and report["latency_agreement"]["disagree"] is False
        assert "warning" not in text
