"""The MBConv space: MobileNetV2 reproduced exactly, strings, canonical forms, export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from hwnas.errors import UsageError
from hwnas.spaces.mbconv import MBConvSpace, mobilenet_v2_arch

SEEDS = (0, 1, 2)


def _flop_count_analysis():
    with warnings.catch_warnings():
        # fvcore.nn raises torch.jit.script DeprecationWarnings at import.
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis


def _macs_by_operator(space: MBConvSpace, arch: dict) -> dict[str, int]:
    model = space.build(arch).eval()
    x = torch.zeros(1, *space.input_shape(arch))
    analysis = _flop_count_analysis()(model, x).unsupported_ops_warnings(False)
    return dict(analysis.by_operator())


def _macs(space: MBConvSpace, arch: dict) -> int:
    """Conv + linear MACs (fvcore also counts BatchNorm and pooling)."""
    ops = _macs_by_operator(space, arch)
    return ops.get("conv", 0) + ops.get("linear", 0)


@pytest.fixture(scope="module")
def space() -> MBConvSpace:
    return MBConvSpace()


def test_mobilenet_v2_parameters_match_torchvision(space: MBConvSpace) -> None:
    model = space.build(mobilenet_v2_arch())
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_mobilenet_v2_macs_match_paper(space: MBConvSpace) -> None:
    ops = _macs_by_operator(space, mobilenet_v2_arch(224, 1.0))
    assert ops["conv"] == 299_494_272
    assert ops["linear"] == 1_280_000
    assert abs(ops["conv"] + ops["linear"] - 300e6) / 300e6 < 0.01


def test_mobilenet_v2_string(space: MBConvSpace) -> None:
    text = space.to_string(mobilenet_v2_arch(160, 0.75))
    stages = "k3e6.k3e6|k3e6.k3e6.k3e6|k3e6.k3e6.k3e6.k3e6|k3e6.k3e6.k3e6|k3e6.k3e6.k3e6|k3e6"
    assert text == "r160-w0.75-" + stages
    assert space.from_string(text) == mobilenet_v2_arch(160, 0.75)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_arch_forward_shape(seed: int) -> None:
    space = MBConvSpace(num_classes=7)
    arch = space.sample(np.random.default_rng(seed))
    c, h, w = space.input_shape(arch)
    assert (c, h) == (3, arch["resolution"]) and h == w
    model = space.build(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 7)


def test_in_channels_and_constructor_checks() -> None:
    space = MBConvSpace(num_classes=10, in_channels=1)
    arch = space.smallest()
    assert space.input_shape(arch) == (1, 128, 128)
    with torch.no_grad():
        assert space.build(arch).eval()(torch.zeros(1, 1, 128, 128)).shape == (1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        MBConvSpace(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        MBConvSpace(in_channels=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MBConvSpace(10)  # type: ignore[misc]


@pytest.mark.parametrize("seed", range(20))
def test_sample_validates_and_round_trips(space: MBConvSpace, seed: int) -> None:
    arch = space.sample(np.random.default_rng(seed))
    assert space.validate(arch) == arch
    text = space.to_string(arch)
    assert space.from_string(text) == arch
    assert space.to_string(space.from_string(text)) == text
    groups = text.split("-")[2].split("|")
    assert [len(g.split(".")) for g in groups] == [arch[f"d{s}"] for s in range(1, 6)] + [1]


def test_canonical_collapses_inactive_blocks(space: MBConvSpace) -> None:
    a = mobilenet_v2_arch()  # stage 1 has depth 2: slots s1b3 and s1b4 are inactive
    b = dict(a, s1b3_k=7, s1b4_e=6)
    assert space.canonical(a) == space.canonical(b) == a
    assert space.to_string(a) == space.to_string(b)
    assert space.key(a) == space.key(b)
    # Once the slot is active, the same change matters.
    c = dict(b, d1=3)
    assert space.canonical(c) != space.canonical(dict(a, d1=3))


@pytest.mark.parametrize("seed", SEEDS)
def test_mutate_changes_canonical_arch(space: MBConvSpace, seed: int) -> None:
    rng = np.random.default_rng(seed)
    parent = space.sample(rng)
    child = space.mutate(parent, rng)
    assert child != parent
    assert space.canonical(child) == child
    assert space.to_string(child) != space.to_string(parent)


def test_validate_rejects_wrong_values(space: MBConvSpace) -> None:
    with pytest.raises(UsageError, match="s2b1_k"):
        space.validate(dict(mobilenet_v2_arch(), s2b1_k=9))
    with pytest.raises(UsageError, match="resolution"):
        space.validate(dict(mobilenet_v2_arch(), resolution=100))
    with pytest.raises(UsageError, match="d6"):
        space.validate(dict(mobilenet_v2_arch(), d6=1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mobilenet",
        "r224-w1.0",
        "x224-w1.0-k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",
        "r100-w1.0-k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",
        "r224-w2.0-k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",
        "r224-w1.0-k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6",  # five stages
        "r224-w1.0-k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",  # depth 1 in stage 1
        "r224-w1.0-k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6",  # depth 2 in stage 6
        "r224-w1.0-k3e6.k9e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",  # kernel 9
        "r224-w1.0-k3e6.k3e2|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",  # expansion 2
        "r224-w1.0-k3e6.k3x6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6.k3e6|k3e6",  # bad token
    ],
)
def test_from_string_rejects_malformed(space: MBConvSpace, text: str) -> None:
    example = space.to_string(mobilenet_v2_arch())
    with pytest.raises(UsageError) as info:
        space.from_string(text)
    message = str(info.value)
    assert example in message
    assert "\n" not in message


def test_smallest_has_least_macs(space: MBConvSpace) -> None:
    smallest = space.smallest()
    assert space.validate(smallest) == smallest
    smallest_macs = _macs(space, smallest)
    assert smallest_macs < _macs(space, mobilenet_v2_arch(128, 0.5))
    assert smallest_macs < _macs(space, mobilenet_v2_arch())
    rng = np.random.default_rng(123)
    for _ in range(3):
        assert smallest_macs < _macs(space, space.sample(rng))


def test_blocks_describe_the_built_network(space: MBConvSpace) -> None:
    blocks = space.blocks(mobilenet_v2_arch())
    assert len(blocks) == 17
    assert [b.stride for b in blocks].count(2) == 4
    assert sum(b.residual for b in blocks) == 10  # MobileNetV2's 10 residual adds
    assert (blocks[-1].c_out, blocks[-1].size_in) == (320, 7)
    assert space.blocks(mobilenet_v2_arch(224, 1.4))[0].c_in == 48


def test_module_has_no_top_level_torch_import() -> None:
    # Importing the space must stay cheap: torch is imported only inside build().
    import ast
    import inspect

    from hwnas.spaces import mbconv

    imported = set()
    for node in ast.parse(inspect.getsource(mbconv)).body:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "hwnas" in imported and "torch" not in imported


def test_onnx_export_matches_torch(space: MBConvSpace, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    arch = space.sample(np.random.default_rng(5))
    arch = dict(arch, resolution=128)
    model = space.build(arch).eval()
    x = torch.randn(1, *space.input_shape(arch))
    path = tmp_path / "mbconv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18)
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
