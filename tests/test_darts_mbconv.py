"""The ProxylessNAS supernet of the MBConv space: decisions, derive/picks_of, gating, inherited subnets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.darts.mbconv_supernet import BLOCK_CHOICES, SKIP, MBConvSupernet, MixedBlock
from hwnas.errors import UsageError
from hwnas.spaces.mbconv import MBConvSpace

RESOLUTION, WIDTH = 160, 0.5
N_DECISIONS = 5 * 4 + 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space() -> MBConvSpace:
    return MBConvSpace(num_classes=10, in_channels=1)


@pytest.fixture(scope="module")
def supernet(space: MBConvSpace) -> MBConvSupernet:
    """A supernet whose BatchNorm layers have non-trivial statistics and affine parameters, so
    that eval-mode comparisons exercise every copied tensor."""
    torch.manual_seed(0)
    net = MBConvSupernet(space, resolution=RESOLUTION, width=WIDTH)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.5)
    return net


def _random_picks(net: MBConvSupernet, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(len(d.choices))) for d in net.decisions()]


def _one_hot(net: MBConvSupernet, picks: list[int]) -> list[torch.Tensor]:
    return [nn.functional.one_hot(torch.tensor(p), len(d.choices)).float() for p, d in zip(picks, net.decisions(), strict=True)]


def _softmax_gates(net: MBConvSupernet, seed: int = 0, requires_grad: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    alphas = [torch.randn(len(d.choices), generator=gen).requires_grad_(requires_grad) for d in net.decisions()]
    return alphas, [torch.softmax(a, 0) for a in alphas]


def _x(space: MBConvSpace) -> torch.Tensor:
    return torch.randn(2, space.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))


# -- decisions and architectures ------------------------------------------------------------
def test_decisions_count_and_labels(supernet: MBConvSupernet) -> None:
    decisions = supernet.decisions()
    assert len(decisions) == N_DECISIONS
    assert [d.name for d in decisions] == [f"s{s}b{b}" for s in range(1, 6) for b in range(1, 5)] + ["s6b1"]
    assert BLOCK_CHOICES == ("k3e3", "k3e4", "k3e6", "k5e3", "k5e4", "k5e6", "k7e3", "k7e4", "k7e6")
    for d in decisions:
        skippable = d.name[-1] in "34"
        assert d.choices == BLOCK_CHOICES + ((SKIP,) if skippable else ())
    assert supernet.skip_choices == frozenset({SKIP})
    assert sum(len(d.choices) == 10 for d in decisions) == 10


def test_derive_picks_of_round_trip(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        picks = _random_picks(supernet, rng)
        arch = supernet.derive(picks)
        assert space.validate(arch) == arch
        assert (arch["resolution"], arch["width"]) == (RESOLUTION, WIDTH)
        normal = supernet.picks_of(arch)
        assert supernet.derive(normal) == arch
        assert supernet.picks_of(supernet.derive(normal)) == normal
        # Skips come after the active blocks of each stage; without skips the picks are unchanged.
        if all(supernet.decisions()[i].choices[p] != SKIP for i, p in enumerate(picks)):
            assert normal == picks


def test_picks_of_inverts_sampled_archs(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        arch = space.canonical({**space.sample(rng), "resolution": RESOLUTION, "width": WIDTH})
        assert supernet.derive(supernet.picks_of(arch)) == arch


def test_skip_then_block_gives_the_shorter_depth(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    picks = [0] * N_DECISIONS
    choices = supernet.decisions()[2].choices
    picks[2], picks[3] = choices.index(SKIP), choices.index("k5e6")  # stage 1: block 3 skipped, block 4 k5e6
    arch = supernet.derive(picks)
    assert arch["d1"] == 3
    assert (arch["s1b3_k"], arch["s1b3_e"]) == (5, 6)
    assert space.to_string(arch).split("-")[2].split("|")[0] == "k3e3.k3e3.k5e6"
    assert supernet.picks_of(arch)[2:4] == [choices.index("k5e6"), choices.index(SKIP)]


def test_all_skips_give_depth_two(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    picks = [d.choices.index(SKIP) if SKIP in d.choices else 8 for d in supernet.decisions()]
    arch = supernet.derive(picks)
    assert [arch[f"d{s}"] for s in range(1, 6)] == [2, 2, 2, 2, 2]
    assert space.to_string(arch) == "r160-w0.5-" + "|".join(["k7e6.k7e6"] * 5 + ["k7e6"])


def test_bad_picks_and_archs_are_rejected(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    with pytest.raises(ValueError, match="21 picks"):
        supernet.derive([0] * 20)
    for bad in (9, -1, 10, True, 1.0):
        picks: list = [0] * N_DECISIONS
        picks[0] = bad
        with pytest.raises(ValueError, match="s1b1"):
            supernet.derive(picks)
    arch = supernet.derive([0] * N_DECISIONS)
    with pytest.raises(ValueError, match="resolution 224"):
        supernet.picks_of({**arch, "resolution": 224})
    with pytest.raises(ValueError, match=r"width 1\.0"):
        supernet.picks_of({**arch, "width": 1.0})
    with pytest.raises(UsageError):
        supernet.picks_of({**arch, "d1": 5})


def test_constructor_checks_its_arguments(space: MBConvSpace) -> None:
    with pytest.raises(ValueError, match="resolution"):
        MBConvSupernet(space, resolution=100, width=WIDTH)
    with pytest.raises(ValueError, match="width"):
        MBConvSupernet(space, resolution=RESOLUTION, width=0.6)
    with pytest.raises(TypeError, match="MBConvSpace"):
        MBConvSupernet(object(), resolution=RESOLUTION, width=WIDTH)  # type: ignore[arg-type]


# -- forward -----------------------------------------------------------------------------
def test_forward_shape_with_softmax_gates(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    _, gates = _softmax_gates(supernet)
    supernet.train()
    out = supernet(_x(space), gates)
    assert out.shape == (2, space.num_classes)
    assert torch.isfinite(out).all()


def test_bad_gates_are_rejected(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    _, gates = _softmax_gates(supernet)
    with pytest.raises(ValueError, match="21 gate vectors"):
        supernet(_x(space), gates[:-1])
    with pytest.raises(ValueError, match="s1b3"):
        supernet(_x(space), [*gates[:2], torch.ones(9) / 9, *gates[3:]])
    with pytest.raises(ValueError, match=r"s1b1.*all zeros"):
        supernet(_x(space), [torch.zeros(9), *gates[1:]])


def test_zero_gate_choices_are_not_run(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    calls: dict[tuple[int, int], int] = {}
    handles = []
    for i, block in enumerate(supernet.blocks):
        assert isinstance(block, MixedBlock)
        for j, op in enumerate(block.candidates):
            handles.append(op.register_forward_hook(lambda *_, key=(i, j): calls.__setitem__(key, calls.get(key, 0) + 1)))
    try:
        picks = _random_picks(supernet, np.random.default_rng(2))
        supernet(_x(space), _one_hot(supernet, picks))
        ran = {(i, p) for i, (p, d) in enumerate(zip(picks, supernet.decisions(), strict=True)) if d.choices[p] != SKIP}
        assert calls == dict.fromkeys(ran, 1)

        # A sparse gate runs exactly its non-zero candidates.
        calls.clear()
        gates = _one_hot(supernet, [0] * N_DECISIONS)
        gates[6] = torch.tensor([0.4, 0, 0, 0, 0, 0, 0, 0, 0.3, 0.3])  # s2b3: k3e3, k7e6 and skip
        supernet(_x(space), gates)
        assert calls == dict.fromkeys([(i, 0) for i in range(N_DECISIONS)] + [(6, 8)], 1)
    finally:
        for h in handles:
            h.remove()


def test_gradients_reach_gates_and_weights(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    supernet.train()
    supernet.zero_grad(set_to_none=True)
    alphas, gates = _softmax_gates(supernet, requires_grad=True)
    supernet(_x(space), gates).square().mean().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)
    assert all(p.grad is not None for p in supernet.parameters())

    # One-hot gates: only the chosen path's weights get gradients.
    supernet.zero_grad(set_to_none=True)
    picks = [0] * N_DECISIONS
    onehot = [g.requires_grad_() for g in _one_hot(supernet, picks)]
    supernet(_x(space), onehot).square().mean().backward()
    assert all(g.grad is not None and g.grad[0] != 0 for g in onehot)
    block = supernet.blocks[0]
    assert isinstance(block, MixedBlock)
    assert all(p.grad is not None for p in block.candidates[0].parameters())
    assert all(p.grad is None for p in block.candidates[1].parameters())
    supernet.zero_grad(set_to_none=True)


# -- inherited subnets --------------------------------------------------------------------
def test_subnet_matches_one_hot_forward(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    x = _x(space)
    rng = np.random.default_rng(3)
    supernet.eval()
    try:
        outputs = []
        for _ in range(3):
            picks = _random_picks(supernet, rng)
            sub = supernet.subnet(picks)
            assert not sub.training
            with torch.no_grad():
                expected = supernet(x, _one_hot(supernet, picks))
                torch.testing.assert_close(sub(x), expected, atol=1e-5, rtol=1e-5)
            outputs.append(expected)
        # The comparison can tell architectures apart.
        assert (outputs[0] - outputs[1]).abs().max() > 1e-3
    finally:
        supernet.train()


def test_subnet_is_a_copy_in_the_supernets_mode(space: MBConvSpace, supernet: MBConvSupernet) -> None:
    supernet.train()
    picks = [0] * N_DECISIONS
    sub = supernet.subnet(picks)
    assert sub.training
    assert sum(p.numel() for p in sub.parameters()) == sum(p.numel() for p in space.build(supernet.derive(picks)).parameters())
    supernet_storage = {p.data_ptr() for p in supernet.parameters()}
    assert not any(p.data_ptr() in supernet_storage for p in sub.parameters())
