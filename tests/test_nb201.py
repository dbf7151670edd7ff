"""The NAS-Bench-201 network against the benchmark: sizes by hand formula, ops, strings and indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.benchdata import NB201_EDGES, NB201_OPS, nb201_table
from hwnas.cost.flops import compute_cost
from hwnas.errors import UsageError
from hwnas.spaces._nb201_model import Cell, NB201Network, ResNetBasicBlock
from hwnas.spaces.nb201 import NB201Space, parse_arch

C = 16
N_CELLS = 5
ALL_CONV3 = {e: "nor_conv_3x3" for e in NB201_EDGES}
ALL_NONE = {e: "none" for e in NB201_EDGES}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny forwards: one intra-op thread is as fast and avoids OpenMP spin-waits on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _relu_conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out  # conv without bias, BN weight + bias


def _expected_params(ops: list[str], num_classes: int = 10) -> int:
    """Hand count of the benchmark's infer.tiny network (C=16, N=5)."""

    def cell(c: int) -> int:
        return sum({"nor_conv_3x3": _relu_conv_bn(c, c, 3), "nor_conv_1x1": _relu_conv_bn(c, c, 1)}.get(op, 0) for op in ops)

    def reduction(c_in: int, c_out: int) -> int:
        return _relu_conv_bn(c_in, c_out, 3) + _relu_conv_bn(c_out, c_out, 3) + c_in * c_out  # + AvgPool + Conv1x1

    stem = 3 * C * 9 + 2 * C
    cells = N_CELLS * (cell(C) + cell(2 * C) + cell(4 * C))
    head = 2 * 4 * C + 4 * C * num_classes + num_classes  # lastact BN + classifier
    return stem + cells + reduction(C, 2 * C) + reduction(2 * C, 4 * C) + head


# ------------------------------------------------------------------ sizes
def test_all_conv3x3_parameters(space: NB201Space) -> None:
    model = space.build(ALL_CONV3)
    expected = (
        3 * 16 * 9 + 2 * 16                                        # stem
        + 5 * 6 * sum(c * c * 9 + 2 * c for c in (16, 32, 64))    # 3 stages x 5 cells x 6 edges
        + (16 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + 16 * 32       # reduction 16 -> 32
        + (32 * 64 * 9 + 128) + (64 * 64 * 9 + 128) + 32 * 64     # reduction 32 -> 64
        + 2 * 64 + 64 * 10 + 10                                   # lastact BN, classifier
    )  # fmt: skip
    assert expected == 1_531_546  # NAS-Bench-201's largest CIFAR-10 network, 1.53 M parameters
    assert _n_params(model) == expected


def test_parameters_of_random_cells(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    for _ in range(8):
        arch = space.sample(rng)
        assert _n_params(space.build(arch)) == _expected_params([arch[e] for e in NB201_EDGES])


@pytest.mark.parametrize("op", ["none", "skip_connect", "avg_pool_3x3"])
def test_parameter_free_cells(space: NB201Space, op: str) -> None:
    rng = np.random.default_rng(1)
    ops = [op, *(str(rng.choice(["none", "skip_connect", "avg_pool_3x3"])) for _ in range(5))]
    model = space.build(dict(zip(NB201_EDGES, ops, strict=True)))
    cells = [m for m in model.modules() if isinstance(m, Cell)]
    assert len(cells) == 3 * N_CELLS
    assert all(_n_params(cell) == 0 for cell in cells)
    assert _n_params(model) == _expected_params(["none"] * 6)


def test_structure(space: NB201Space) -> None:
    model = space.build(ALL_CONV3)
    kinds = [type(m) for m in model.cells]
    assert kinds == [Cell] * 5 + [ResNetBasicBlock] + [Cell] * 5 + [ResNetBasicBlock] + [Cell] * 5
    assert [len(cell.edges) for cell in model.cells if isinstance(cell, Cell)] == [6] * 15


def test_flops_of_all_conv3x3(space: NB201Space) -> None:
    model = space.build(ALL_CONV3)

    def conv(c_in: int, c_out: int, k: int, hw: int) -> int:
        return c_out * hw * hw * c_in * k * k  # MACs at the output resolution

    expected = (
        conv(3, 16, 3, 32)
        + 5 * 6 * (conv(16, 16, 3, 32) + conv(32, 32, 3, 16) + conv(64, 64, 3, 8))
        + conv(16, 32, 3, 16) + conv(32, 32, 3, 16) + conv(16, 32, 1, 16)  # reduction: stride-2 conv, conv, shortcut after pool
        + conv(32, 64, 3, 8) + conv(64, 64, 3, 8) + conv(32, 64, 1, 8)
        + 64 * 10  # classifier
    )  # fmt: skip
    assert expected / 1e6 == pytest.approx(220.11, rel=1e-4)  # NAS-Bench-201's largest CIFAR-10 network: 220.11 M
    cost = compute_cost(model, (3, 32, 32))
    assert round(cost.flops_m * 1e6) == expected
    assert cost.params_m == pytest.approx(_n_params(model) / 1e6, rel=1e-12)
    assert cost.flops_total_m > cost.flops_m  # BN and pooling counted only in the total


# ------------------------------------------------------------------ ops
def test_all_none_network_outputs_the_classifier_bias(space: NB201Space) -> None:
    torch.manual_seed(0)
    model = space.build(ALL_NONE).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier.bias)
        out = model(torch.randn(3, 3, 32, 32) * 5)
    assert torch.equal(out, model.classifier.bias.expand(3, -1))


def test_node3_cut_off_by_none_edges(space: NB201Space) -> None:
    # Nodes 1 and 2 compute convs, but every edge into node 3 is none: the cell outputs exact zeros.
    ops = ["nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "none", "none", "none"]
    cell = Cell(ops, 4).eval()
    with torch.no_grad():
        assert torch.equal(cell(torch.randn(2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))
        model = space.build(dict(zip(NB201_EDGES, ops, strict=True))).eval()
        torch.nn.init.normal_(model.classifier.bias)
        assert torch.equal(model(torch.randn(2, 3, 32, 32)), model.classifier.bias.expand(2, -1))


def test_none_adds_exactly_nothing() -> None:
    x = torch.randn(2, 4, 8, 8)
    # 3<-0 skip, the rest none: output is the input, bit for bit
    assert torch.equal(Cell(["none", "none", "none", "skip_connect", "none", "none"], 4)(x), x)
    # 1<-0 skip, 2<-1 skip, 3<-2 skip: a chain of copies
    assert torch.equal(Cell(["skip_connect", "none", "skip_connect", "none", "none", "skip_connect"], 4)(x), x)
    # two skip paths into node 3 add up
    assert torch.equal(Cell(["skip_connect", "none", "none", "skip_connect", "skip_connect", "none"], 4)(x), 2 * x)


def test_avg_pool_excludes_padding() -> None:
    cell = Cell(["none", "none", "none", "avg_pool_3x3", "none", "none"], 3)
    x = torch.full((1, 3, 6, 6), 7.0)
    y = cell(x)
    # count_include_pad=True would give 7 * 4/9 at the corners and 7 * 6/9 on the edges
    assert y[0, :, 0, 0].tolist() == [7.0, 7.0, 7.0]
    assert y[0, :, -1, -1].tolist() == [7.0, 7.0, 7.0]
    torch.testing.assert_close(y, x)
    # and it is a 3x3 mean inside: on a ramp the interior is unchanged, the corner is the mean of 4
    ramp = torch.arange(36.0).reshape(1, 1, 6, 6)
    z = Cell(["none", "none", "none", "avg_pool_3x3", "none", "none"], 1)(ramp)
    torch.testing.assert_close(z[0, 0, 1:-1, 1:-1], ramp[0, 0, 1:-1, 1:-1])
    assert z[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 6 + 7) / 4)


def test_reduction_halves_spatial_size() -> None:
    block = ResNetBasicBlock(16, 32)
    assert block(torch.randn(2, 16, 32, 32)).shape == (2, 32, 16, 16)
    assert block.downsample(torch.randn(2, 16, 32, 32)).shape == (2, 32, 16, 16)
    assert block.conv_a(torch.randn(2, 16, 32, 32)).shape == (2, 32, 16, 16)


def test_reduction_shortcut_is_avgpool_then_conv1x1() -> None:
    block = ResNetBasicBlock(1, 2).eval()
    with torch.no_grad():
        block.downsample[1].weight.copy_(torch.tensor([1.0, -2.0]).reshape(2, 1, 1, 1))
        torch.nn.init.zeros_(block.conv_b[2].weight)  # silence the residual branch: BN outputs its bias, 0
        torch.nn.init.zeros_(block.conv_b[2].bias)
        x = torch.arange(16.0).reshape(1, 1, 4, 4)
        means = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # 2x2 means of the 4x4 ramp
        torch.testing.assert_close(block(x)[0], torch.stack([means, -2 * means]))


@pytest.mark.parametrize(("dataset", "size"), [("cifar10", 32), ("imagenet16-120", 16)])
def test_feature_map_shapes(dataset: str, size: int) -> None:
    space = NB201Space(dataset=dataset)
    model = space.build(ALL_CONV3).eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))) for m in model.cells]
    with torch.no_grad():
        model(torch.randn(1, *space.input_shape(ALL_CONV3)))
    for h in hooks:
        h.remove()
    s = size
    expected = [(16, s, s)] * 5 + [(32, s // 2, s // 2)] * 6 + [(64, s // 4, s // 4)] * 6
    assert shapes == expected


def test_imagenet16_120(space: NB201Space) -> None:
    im = NB201Space(dataset="imagenet16-120")
    assert im.input_shape(ALL_CONV3) == (3, 16, 16)
    assert im.num_classes == 120
    model = im.build(ALL_CONV3).eval()
    assert model.classifier.out_features == 120
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 120)
    assert _n_params(model) == _expected_params(["nor_conv_3x3"] * 6, num_classes=120)
    assert NB201Space(dataset="cifar100").num_classes == 100
    assert space.input_shape(ALL_CONV3) == (3, 32, 32) and space.num_classes == 10


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"dataset": "cifar1000"}, "dataset"), ({"channels": 0}, "channels"), ({"cells_per_stage": 0}, "cells_per_stage")]
)
def test_constructor_checks(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NB201Space(**kwargs)


def test_network_rejects_unknown_op() -> None:
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 op"):
        NB201Network(["nor_conv_5x5"] * 6)


# ------------------------------------------------------------------ strings and indices
def test_strings_and_indices_agree_with_the_table(space: NB201Space) -> None:
    table = nb201_table()
    rng = np.random.default_rng(2020)
    for i in [0, 6111, 15624, *rng.integers(0, table.n, size=100).tolist()]:
        arch = dict(zip(NB201_EDGES, table.genotype(i), strict=True))
        text = space.to_string(arch)
        assert text == table.arch_string(i)
        assert space.from_string(text) == arch
        assert space.index(arch) == table.index(text) == i
        assert space.from_index(i) == arch
        assert space.validate(arch) == arch


def test_string_form(space: NB201Space) -> None:
    arch = dict(zip(NB201_EDGES, (*NB201_OPS[:5], "nor_conv_3x3"), strict=True))
    assert space.to_string(arch) == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_3x3~2|"


def test_parse_arch(space: NB201Space) -> None:
    best = parse_arch(space, "6111")
    assert space.index(best) == 6111
    assert best == space.from_index(6111)
    assert parse_arch(space, " 6111\n") == best
    assert parse_arch(space, space.to_string(best)) == best
    assert parse_arch(space, "0") == space.from_index(0)


@pytest.mark.parametrize(
    "text",
    ["15625", "99999999999", "-1", "6111.0", "", "nope", "|nor_conv_3x3~0|+", "|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|"],
)
def test_parse_arch_rejects(space: NB201Space, text: str) -> None:
    with pytest.raises(UsageError):
        parse_arch(space, text)


def test_parse_arch_rejects_superscript_digit(space: NB201Space) -> None:
    with pytest.raises(UsageError):
        parse_arch(space, "\u00b2")


@pytest.mark.parametrize("index", [-1, 15625, 10**9])
def test_from_index_range(space: NB201Space, index: int) -> None:
    with pytest.raises(UsageError, match="out of range"):
        space.from_index(index)
