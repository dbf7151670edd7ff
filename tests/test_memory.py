"""Peak activation memory: the liveness rule, hand-computed blocks, and the closed forms of both
spaces against an independent count on the graph ONNX Runtime executes."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from hwnas.benchdata import NB201_EDGES
from hwnas.cost.memory import Op, onnx_ops, ort_profiled_peak_bytes, peak_activation_bytes
from hwnas.spaces._mbconv_memory import block_ops, mbconv_ops, mbconv_peak_bytes
from hwnas.spaces._nb201_memory import nb201_ops, nb201_peak_bytes
from hwnas.spaces.mbconv import RESOLUTIONS, WIDTHS, MBBlock, MBConvSpace
from hwnas.spaces.nb201 import NB201Space


# -- the liveness rule ---------------------------------------------------------------------
def test_inverted_residual_block_by_hand() -> None:
    # MobileNetV2 block, c_in = c_out = 24, expansion 6 (hidden 144), 3x3 depthwise, stride 1,
    # 56x56 = 3136 pixels, so one channel is 3136 * 4 = 12,544 bytes. The input x is held for
    # the residual add through the whole block.
    #   expand  1x1 24->144:  x 24 + expanded 144              = 168 ch
    #   dw      3x3 144:      x 24 + expanded 144 + dw 144     = 312 ch  <- peak
    #   project 1x1 144->24:  x 24 + dw 144 + projected 24     = 192 ch
    #   add:                  x 24 + projected 24 + sum 24     =  72 ch
    # peak = 312 * 3136 * 4 = 3,913,728 bytes
    ch = 56 * 56 * 4
    ops = [
        Op("expand", ("x",), "e", 144 * ch),
        Op("dw", ("e",), "d", 144 * ch),
        Op("project", ("d",), "p", 24 * ch),
        Op("add", ("x", "p"), "y", 24 * ch),
    ]
    assert peak_activation_bytes(ops, "x", 24 * ch) == (3_913_728, "dw")
    built = block_ops(MBBlock(24, 24, 3, 6, 1, 56), "x", "b")
    assert [op.output_bytes for op in built] == [op.output_bytes for op in ops]
    assert peak_activation_bytes(built, "x", 24 * ch) == (3_913_728, "b/dw")


def test_inverted_block_without_residual_by_hand() -> None:
    # c_in 24 -> c_out 32, expansion 6, stride 1, 56x56: no residual, so x dies after the expand.
    #   expand:  x 24 + expanded 144 = 168 ch
    #   dw:      expanded 144 + dw 144 = 288 ch  <- peak
    #   project: dw 144 + projected 32 = 176 ch
    # peak = 288 * 3136 * 4 = 3,612,672 bytes
    ch = 56 * 56 * 4
    built = block_ops(MBBlock(24, 32, 3, 6, 1, 56), "x", "b")
    assert [op.kind for op in built] == ["conv", "conv", "conv"]
    assert peak_activation_bytes(built, "x", 24 * ch) == (3_612_672, "b/dw")
    # Stride 2: the depthwise writes 144 ch at 28x28, a quarter of a 56x56 channel each (36 ch
    # at 56x56). expand: 24 + 144 = 168; dw: 144 + 36 = 180 <- peak; project: 36 + 8 = 44.
    # peak = 180 * 3136 * 4 = 2,257,920 bytes
    assert peak_activation_bytes(block_ops(MBBlock(24, 32, 3, 6, 2, 56), "x", "b"), "x", 24 * ch) == (2_257_920, "b/dw")


def test_dag_node_held_for_later_edges_and_output_kept() -> None:
    # n0 -> a; n0 -> b; a + b -> s; s + n0 -> out: n0 stays live until the last add.
    ops = [
        Op("a", ("n0",), "a", 10),
        Op("b", ("n0",), "b", 20),
        Op("s", ("a", "b"), "s", 30),
        Op("out", ("s", "n0"), "out", 1),
    ]
    # a: n0 5 + a 10 = 15; b: 5 + 10 + 20 = 35; s: 5 + 10 + 20 + 30 = 65; out: 5 + 30 + 1 = 36
    assert peak_activation_bytes(ops, "n0", 5) == (65, "s")
    # An op reading one tensor twice counts it once; an extra output is held to the end.
    assert peak_activation_bytes([Op("sq", ("x", "x"), "y", 3), Op("z", ("y",), "z", 1)], "x", 2) == (5, "sq")
    assert peak_activation_bytes([Op("a", ("x",), "a", 7), Op("b", ("a",), "b", 1)], "x", 2, outputs=("a", "b")) == (9, "a")


def test_liveness_rejects_malformed_schedules() -> None:
    with pytest.raises(ValueError, match="empty"):
        peak_activation_bytes([], "x", 1)
    with pytest.raises(ValueError, match="'y'"):
        peak_activation_bytes([Op("a", ("y",), "a", 1)], "x", 1)
    with pytest.raises(ValueError, match="already written"):
        peak_activation_bytes([Op("a", ("x",), "a", 1), Op("b", ("a",), "a", 1)], "x", 1)


# -- closed forms against the ONNX Runtime graph -------------------------------------------
#: Op kinds of the closed forms and ONNX op types, mapped onto one vocabulary.
_CLOSED_KIND = {"avgpool3": "pool", "avgpool2": "pool", "zero": "mul"}
_ONNX_KIND = {
    "Conv": "conv",
    "FusedConv": "conv",
    "Relu": "relu",
    "AveragePool": "pool",
    "GlobalAveragePool": "gap",
    "Mul": "mul",
    "Add": "add",
    "BatchNormalization": "bn",
    "Gemm": "linear",
}


def _largest(space) -> dict:  # type: ignore[no-untyped-def]
    if isinstance(space, NB201Space):
        return {e: "nor_conv_3x3" for e in NB201_EDGES}
    return space.canonical({d.name: max(d.choices) for d in space.dimensions()})


_CASES = {
    # name: (space, number of random archs, with smallest and largest)
    "nb201": (NB201Space(), 8, True),
    "mbconv": (MBConvSpace(), 8, True),
    "nb201-imagenet16-c8x2": (NB201Space(dataset="imagenet16-120", channels=8, cells_per_stage=2), 3, False),
    "mbconv-in1-k10": (MBConvSpace(num_classes=10, in_channels=1), 3, False),
}


def _archs(name: str) -> list[dict]:
    space, n, extremes = _CASES[name]
    rng = np.random.default_rng(2024)
    archs = [space.sample(rng) for _ in range(n)]
    return archs + ([space.smallest(), _largest(space)] if extremes else [])


def _closed_ops(space, arch) -> list[Op]:  # type: ignore[no-untyped-def]
    return nb201_ops(space, arch) if isinstance(space, NB201Space) else mbconv_ops(space, arch)


def _closed_peak(space, arch) -> int:  # type: ignore[no-untyped-def]
    return nb201_peak_bytes(space, arch) if isinstance(space, NB201Space) else mbconv_peak_bytes(space, arch)


def _export(space, arch) -> bytes:  # type: ignore[no-untyped-def]
    from hwnas.cost._onnx import to_onnx_bytes

    return to_onnx_bytes(space.build(arch).eval(), space.input_shape(arch), exporter="torchscript")


def _in_exporter_order(ops: list[Op], onnx_bytes: bytes) -> list[Op]:
    """ORT's ops re-sorted into the exported graph's node order (PyTorch's forward order).

    ORT keeps the output name of the last node it fuses (a FusedConv is named by its ReLU's output).
    """
    import onnx

    position = {o: k for k, node in enumerate(onnx.load_from_string(onnx_bytes).graph.node) for o in node.output}
    return sorted(ops, key=lambda op: position[op.output])


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("case", list(_CASES))
def test_closed_form_matches_onnx_runtime_graph(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    space = _CASES[case][0]
    ratios = []
    for arch in _archs(case):
        closed = _closed_ops(space, arch)
        c, h, w = space.input_shape(arch)
        peak, _ = peak_activation_bytes(closed, "input", c * h * w * 4)
        assert _closed_peak(space, arch) == peak
        onnx_bytes = _export(space, arch)
        ops, input_name, input_bytes, outputs = onnx_ops(onnx_bytes)
        # Op for op the same tensors: kinds and sizes (CSE, fusions, none edges, shapes).
        assert Counter((_CLOSED_KIND.get(o.kind, o.kind), o.output_bytes) for o in closed) == Counter(
            (_ONNX_KIND.get(o.kind, o.kind), o.output_bytes) for o in ops
        ), space.to_string(arch)
        # Run in the exported graph's order, ORT's graph has exactly the closed form's peak.
        assert peak_activation_bytes(_in_exporter_order(ops, onnx_bytes), input_name, input_bytes, outputs=outputs)[0] == peak
        ratios.append(peak / peak_activation_bytes(ops, input_name, input_bytes, outputs=outputs)[0])
    with capsys.disabled():
        print(
            f"\n[memory] {case}: closed form / ORT-graph peak over {len(ratios)} archs: "
            f"min {min(ratios):.3f} median {statistics.median(ratios):.3f} max {max(ratios):.3f}"
        )
    if isinstance(space, MBConvSpace):
        assert ratios == [1.0] * len(ratios)  # a chain: ORT has no other order to run it in
    else:
        # The same tensors, but ORT's executor runs the cell's DAG in its own topological order
        # (a reverse DFS from the outputs), e.g. node 3's first sum before node 2. In a cell
        # every tensor has one size S and the peaks are 3S-5S, so the orders differ by at most
        # 5/3; 150 random CIFAR-10 archs gave 137 equal, 9 at 4/5, 3 at 5/4 and 1 at 4/3.
        assert all(3 / 5 <= r <= 5 / 3 for r in ratios), ratios


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("case", ["nb201", "mbconv"])
def test_onnx_count_matches_ort_arena_profile(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """ORT's own per-kernel arena stats, with buffer reuse off, give exactly the ONNX-graph count."""
    space = _CASES[case][0]
    for arch in _archs(case)[:2]:
        onnx_bytes = _export(space, arch)
        ops, input_name, input_bytes, outputs = onnx_ops(onnx_bytes)
        counted = peak_activation_bytes(ops, input_name, input_bytes, outputs=outputs)[0]
        assert ort_profiled_peak_bytes(onnx_bytes) == counted
        with_reuse = ort_profiled_peak_bytes(onnx_bytes, mem_reuse=True)
        with capsys.disabled():
            print(f"\n[memory] {case} {space.to_string(arch)}: ORT arena with buffer reuse / count {with_reuse / counted:.3f}")


# -- properties of the closed forms --------------------------------------------------------
def test_nb201_two_cells_per_stage_give_the_full_peak() -> None:
    for space in (NB201Space(), NB201Space(dataset="imagenet16-120", channels=4, cells_per_stage=3)):
        rng = np.random.default_rng(7)
        for _ in range(60):
            arch = space.sample(rng)
            c, h, w = space.input_shape(arch)
            assert nb201_peak_bytes(space, arch) == peak_activation_bytes(nb201_ops(space, arch), "input", c * h * w * 4)[0]


def test_nb201_peak_scales_with_channels_and_pixels() -> None:
    # The peak is inside a cell, where every tensor is channels x H x W: doubling the channels
    # doubles it, 16x16 inputs quarter it, and the number of classes does not matter.
    rng = np.random.default_rng(3)
    base = NB201Space()
    for _ in range(30):
        arch = base.sample(rng)
        peak = nb201_peak_bytes(base, arch)
        assert nb201_peak_bytes(NB201Space(channels=32), arch) == 2 * peak
        assert nb201_peak_bytes(NB201Space(dataset="cifar100"), arch) == peak
        assert 4 * nb201_peak_bytes(NB201Space(dataset="imagenet16-120"), arch) == peak
    # none edges still run (x * 0 tensors): the all-none cell holds as much as the all-skip one and more.
    assert nb201_peak_bytes(base, {e: "none" for e in NB201_EDGES}) > nb201_peak_bytes(base, base.smallest())


def test_mbconv_peak_monotone_in_resolution_width_and_expansion() -> None:
    space = MBConvSpace()
    rng = np.random.default_rng(11)
    for _ in range(20):
        arch = space.sample(rng)
        by_res = [mbconv_peak_bytes(space, {**arch, "resolution": r}) for r in RESOLUTIONS]
        assert all(a < b for a, b in itertools.pairwise(by_res)), by_res
        by_width = [mbconv_peak_bytes(space, {**arch, "width": w}) for w in WIDTHS]
        assert all(a <= b for a, b in itertools.pairwise(by_width)) and by_width[0] < by_width[-1], by_width
        all_e6 = {k: (6 if k.endswith("_e") else v) for k, v in arch.items()}
        all_e3 = {k: (3 if k.endswith("_e") else v) for k, v in arch.items()}
        assert mbconv_peak_bytes(space, all_e3) <= mbconv_peak_bytes(space, arch) <= mbconv_peak_bytes(space, all_e6)
        assert mbconv_peak_bytes(space, all_e3) < mbconv_peak_bytes(space, all_e6)
        # Kernels change no tensor size (padding k // 2), so they cannot change the peak.
        all_k7 = {k: (7 if k.endswith("_k") else v) for k, v in arch.items()}
        assert mbconv_peak_bytes(space, space.canonical(all_k7)) == mbconv_peak_bytes(space, arch)


def test_peak_between_local_and_total_bounds() -> None:
    # A peak is at least what one op touches and at most every tensor at once.
    rng = np.random.default_rng(5)
    for space in (NB201Space(), MBConvSpace(num_classes=10)):
        for _ in range(10):
            arch = space.sample(rng)
            ops = _closed_ops(space, arch)
            c, h, w = space.input_shape(arch)
            size = {"input": c * h * w * 4, **{op.output: op.output_bytes for op in ops}}
            local = max(sum(size[t] for t in set(op.inputs)) + op.output_bytes for op in ops)
            peak = peak_activation_bytes(ops, "input", size["input"])[0]
            assert local <= peak <= sum(size.values())


def test_closed_forms_are_fast_and_torch_free(capsys: pytest.CaptureFixture[str]) -> None:
    code = (
        "import sys\n"
        "from hwnas.spaces.nb201 import NB201Space\n"
        "from hwnas.spaces.mbconv import MBConvSpace, mobilenet_v2_arch\n"
        "from hwnas.spaces._nb201_memory import nb201_peak_bytes\n"
        "from hwnas.spaces._mbconv_memory import mbconv_peak_bytes\n"
        "s = NB201Space()\n"
        "print(nb201_peak_bytes(s, s.smallest()), mbconv_peak_bytes(MBConvSpace(), mobilenet_v2_arch()))\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # all-skip NB201: 160 KiB, in the first reduction; MobileNetV2-224: 5.74 MiB, at block 1's depthwise
    assert result.stdout.split() == ["163840", "6021120"]

    for space in (NB201Space(), MBConvSpace()):
        rng = np.random.default_rng(0)
        archs = [space.sample(rng) for _ in range(200)]
        times = []
        for arch in archs:
            start = time.perf_counter()
            _closed_peak(space, arch)
            times.append(time.perf_counter() - start)
        with capsys.disabled():
            print(f"\n[memory] {space.name}: median {statistics.median(times) * 1e6:.0f} us per arch (200 archs)")
