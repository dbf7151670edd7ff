"""Closed-form MACs, parameters and weight bytes against the networks they describe.

The references are what hwnas measures on a built network: fvcore's conv + linear count (as
:func:`hwnas.cost.flops.compute_cost`), ``sum(p.numel())`` of its parameters, and the
initializer bytes of its TorchScript ONNX export.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pytest

from hwnas.errors import UsageError
from hwnas.spaces import Arch, SearchSpace, get_space
from hwnas.spaces._counts import Counts
from hwnas.spaces._mbconv_counts import mbconv_counts
from hwnas.spaces._nb201_counts import nb201_counts
from hwnas.spaces.mbconv import MBConvSpace, mobilenet_v2_arch
from hwnas.spaces.nb201 import NB201Space

if TYPE_CHECKING:
    import torch

#: fvcore operators that compute_cost sums into flops_m.
_MAC_OPS = ("conv", "linear", "matmul", "addmm")
#: Random networks compared with fvcore per space (each costs a build and a trace: 1000 took 6 and 12
#: minutes of CI's 2 cores); the test also checks they hold every choice of every dimension.
#: HWNAS_FVCORE_ARCHS=1000 runs the larger sample.
_N_RANDOM = int(os.environ.get("HWNAS_FVCORE_ARCHS", "120"))
_N_EXPORTED = 15

#: The registered spaces, and variants that exercise every attribute the counts must honour.
_SPACES: dict[str, SearchSpace] = {
    "nb201": get_space("nb201"),
    "nb201-in16-c8-n2": NB201Space(dataset="imagenet16-120", channels=8, cells_per_stage=2),
    "mbconv": get_space("mbconv"),
    "mbconv-gray-10": MBConvSpace(num_classes=10, in_channels=1),
}


def _counts(space: SearchSpace, arch: Arch) -> Counts:
    if isinstance(space, NB201Space):
        return nb201_counts(space, arch)
    assert isinstance(space, MBConvSpace)
    return mbconv_counts(space, arch)


def _largest(space: SearchSpace) -> Arch:
    if isinstance(space, NB201Space):
        return {d.name: "nor_conv_3x3" for d in space.dimensions()}
    # mbconv: 224 px, width 1.4, depth 4, kernel 7 and expansion 6 everywhere.
    return space.canonical({d.name: max(d.choices) for d in space.dimensions()})


def _archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    rng = np.random.default_rng(seed)
    return [space.smallest(), _largest(space)] + [space.sample(rng) for _ in range(n)]


# -- hand-computed numbers (no torch) -----------------------------------------------------------


def test_nb201_cell_cost_is_the_sum_of_its_conv_edges() -> None:
    space = NB201Space(channels=16, cells_per_stage=1)
    convs = space.validate({e: "nor_conv_3x3" for e in space.dimension_map()})
    skips = space.smallest()
    # One 3x3 edge of the first stage: c_out * c_in * k * k * H * W. Each later stage doubles
    # the channels and halves the side, so its edges cost the same.
    per_edge = 16 * 16 * 3 * 3 * 32 * 32
    assert nb201_counts(space, convs).macs - nb201_counts(space, skips).macs == 3 * 6 * per_edge
    conv_bn_params = sum(c * c * 9 + 2 * c for c in (16, 32, 64))
    assert nb201_counts(space, convs).params - nb201_counts(space, skips).params == 6 * conv_bn_params


def test_nb201_largest_cell_matches_the_benchmark_paper() -> None:
    space = get_space("nb201")
    stem = 16 * 3 * 9 * 32 * 32
    cells = 3 * 5 * 6 * (16 * 16 * 9 * 32 * 32)
    # conv_a (stride 2) + conv_b + the shortcut's 1x1 conv after a 2x2 pool, at 16x16 then 8x8.
    reductions = sum(co * ci * 9 * p + co * co * 9 * p + co * ci * p for ci, co, p in ((16, 32, 256), (32, 64, 64)))
    classifier = 64 * 10
    counts = _counts(space, _largest(space))
    assert counts.macs == stem + cells + reductions + classifier == 220_119_680
    # NAS-Bench-201 (Dong & Yang, 2020) lists its largest CIFAR-10 network at 220.11 MFLOPs, 1.53 M params.
    assert round(counts.flops_m, 2) == 220.12 and round(counts.params_m, 2) == 1.53
    assert counts.params == 1_531_546


def test_mobilenet_v2_matches_torchvision() -> None:
    space = MBConvSpace()
    arch = mobilenet_v2_arch(224, 1.0)
    counts = _counts(space, arch)
    # fvcore's count; the paper (Sandler et al., 2018) rounds it to 300 M multiply-adds.
    # torchvision's mobilenet_v2 has the same 3,504,872 parameters.
    assert counts.macs == 300_774_272
    assert counts.params == 3_504_872
    # Deployed, each BN after a conv (stem, 1x1 expand unless expansion 1, depthwise, project,
    # head) is a bias of one float per channel instead of a scale and a shift.
    blocks = space.blocks(arch)
    bn_channels = 32 + sum(b.c_in * b.expansion * (1 + (b.expansion != 1)) + b.c_out for b in blocks) + 1280
    assert counts.weight_bytes == 4 * (counts.params - bn_channels) == 13_951_264
    assert counts.flops_m == counts.macs / 1e6 and counts.params_m == counts.params / 1e6


def test_counts_reject_an_unknown_op() -> None:
    space = NB201Space()
    with pytest.raises(UsageError, match="nor_conv_5x5"):
        nb201_counts(space, {**space.smallest(), "1<-0": "nor_conv_5x5"})


def test_counting_imports_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from hwnas.spaces import get_space
        from hwnas.spaces._mbconv_counts import mbconv_counts
        from hwnas.spaces._nb201_counts import nb201_counts

        rng = np.random.default_rng(0)
        nb201, mbconv = get_space("nb201"), get_space("mbconv")
        assert nb201_counts(nb201, nb201.sample(rng)).macs > 0
        assert mbconv_counts(mbconv, mbconv.sample(rng)).macs > 0
        assert "torch" not in sys.modules, "counting imported torch"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- against the built networks -------------------------------------------------------------------


def _fvcore_macs(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import warns about torch.jit on torch >= 2.9
        from fvcore.nn import FlopCountAnalysis

    # no_grad: the traced operators are the same, the trace is faster without autograd records.
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, torch.zeros(1, *input_shape))
        by_op = analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_operator()
    return int(sum(v for k, v in by_op.items() if k in _MAC_OPS))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("space_name", ["nb201", "mbconv"])
def test_macs_and_params_equal_fvcore_and_numel(space_name: str) -> None:
    space = _SPACES[space_name]
    archs = _archs(space, _N_RANDOM, seed=0)
    unseen = [(d.name, c) for d in space.dimensions() for c in d.choices if all(a[d.name] != c for a in archs)]
    assert not unseen, f"the sample misses {len(unseen)} choices, e.g. {unseen[:3]}: raise HWNAS_FVCORE_ARCHS"
    wrong = []
    for arch in archs:
        model = space.build(arch).eval()  # built once for both references
        expected = (_fvcore_macs(model, space.input_shape(arch)), sum(p.numel() for p in model.parameters()))
        got = _counts(space, arch)
        if (got.macs, got.params) != expected:
            wrong.append(f"{space.to_string(arch)}: closed form {(got.macs, got.params)}, built {expected}")
    assert not wrong, f"{len(wrong)} of {_N_RANDOM + 2} differ, e.g.\n" + "\n".join(wrong[:5])


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("space_name", ["nb201-in16-c8-n2", "mbconv-gray-10"])
def test_counts_honour_the_space_attributes(space_name: str) -> None:
    from hwnas.cost.flops import compute_cost

    space = _SPACES[space_name]
    for arch in _archs(space, 3, seed=1):
        model = space.build(arch)
        cost = compute_cost(model, space.input_shape(arch))  # what the search records
        counts = _counts(space, arch)
        assert (counts.flops_m, counts.params_m) == (cost.flops_m, cost.params_m), space.to_string(arch)


def _as_trained(model: torch.nn.Module, seed: int) -> None:
    """Give every BN statistic and bias distinct values, as training does.

    The TorchScript exporter merges initializers of equal value, and a fresh network is full of
    them (every folded bias is 0, every BN scale and running variance 1), so its export is a few
    KB smaller than that of any trained network of the same architecture.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # The 1-D tensors are the BN scales, shifts and running statistics and the linear bias;
        # values in [0.5, 1.5) keep every running variance valid.
        for t in model.state_dict().values():
            if t.dim() == 1 and t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)


def _export_weight_bytes(space: SearchSpace, arch: Arch, seed: int) -> int:
    import onnx
    from onnx import numpy_helper

    from hwnas.cost._onnx import to_onnx_bytes

    model = space.build(arch)
    _as_trained(model, seed)
    proto = onnx.load_from_string(to_onnx_bytes(model.eval(), space.input_shape(arch), exporter="torchscript"))
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT}
    return sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("space_name", ["nb201", "mbconv"])
def test_weight_bytes_of_the_extremes_equal_the_onnx_initializers(space_name: str) -> None:
    space = _SPACES[space_name]
    for seed, arch in enumerate(_archs(space, 0, seed=0)):
        assert _counts(space, arch).weight_bytes == _export_weight_bytes(space, arch, seed), space.to_string(arch)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("space_name", list(_SPACES))
def test_weight_bytes_equal_the_onnx_initializers(space_name: str) -> None:
    space = _SPACES[space_name]
    wrong = []
    for seed, arch in enumerate(_archs(space, _N_EXPORTED, seed=2)):
        got, expected = _counts(space, arch).weight_bytes, _export_weight_bytes(space, arch, seed)
        if got != expected:
            wrong.append(f"{space.to_string(arch)}: closed form {got}, ONNX {expected}")
    assert not wrong, "\n".join(wrong)
