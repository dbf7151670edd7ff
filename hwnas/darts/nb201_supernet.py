"""The NAS-Bench-201 supernet: every one of the 5 ops on each of the 6 edges, shared by all cells.

As in the NAS-Bench-201 paper's DARTS and GDAS runs, one set of architecture parameters
(6 edges x 5 ops) drives every cell of the network; the skeleton (stem, residual reductions,
head) is the space's own network, module for module, so a derived cell inherits its weights
(``subnet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.benchdata import NB201_EDGES, NB201_OPS
from hwnas.darts.supernet import Decision, Supernet
from hwnas.spaces import Arch
from hwnas.spaces._nb201_model import Cell, NB201Network, ResNetBasicBlock, make_op
from hwnas.spaces.nb201 import NB201Space


class MixedOp(nn.Module):
    """Sum of the candidate ops weighted by a gate; ops with a zero gate (and ``none``) are not run."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, channels) for op in NB201_OPS)
        self._zero = NB201_OPS.index("none")

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        for i, op in enumerate(self.ops):
            if i == self._zero or not bool(gate[i] != 0):
                continue  # 'none' outputs zeros: its term vanishes exactly
            y = gate[i] * op(x)
            out = y if out is None else out + y
        # Every gate zero but 'none': the edge outputs zeros (keeping the graph connected to the gate).
        return out if out is not None else x * 0.0 * gate[self._zero]


class MixedCell(nn.Module):
    """The NB201 cell with a :class:`MixedOp` on each edge."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(channels) for _ in Cell.EDGES)

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor]) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in (1, 2, 3):
            total = None
            for source in range(target):
                y = self.edges[k](nodes[source], gates[k])
                total = y if total is None else total + y
                k += 1
            nodes.append(total)  # type: ignore[arg-type]
        return nodes[3]


class NB201Supernet(Supernet):
    """Weight-sharing NB201 network over ``space`` (its channels and cells per stage).

    Args:
        space: the NB201 space (channels, cells per stage).
        num_classes: classifier outputs (the user's data, e.g. 10 for digits).
        in_channels: channels of the input images (1 for digits).
    """

    skip_choices = frozenset({"skip_connect", "none"})
    zero_choices = frozenset({"none"})
    #: The collapse guard's limit: at most 2 of the 6 edges parameter-free (DARTS+'s rule).
    max_skip_share = 2 / 6

    space: NB201Space

    def __init__(self, space: NB201Space, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        c = space.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        c_prev = c
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResNetBasicBlock(c_prev, width))
            layers.extend(MixedCell(width) for _ in range(space.cells_per_stage))
            c_prev = width
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self._decisions = [Decision(edge, tuple(NB201_OPS)) for edge in NB201_EDGES]

    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(gates) != len(self._decisions):
            raise ValueError(f"need {len(self._decisions)} gates, got {len(gates)}")
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, gates) if isinstance(layer, MixedCell) else layer(x)
        x = self.lastact(x)
        return self.classifier(torch.flatten(self.global_pooling(x), 1))

    def derive(self, picks: Sequence[int]) -> Arch:
        return self.space.canonical({d.name: d.choices[int(p)] for d, p in zip(self._decisions, picks, strict=True)})

    def picks_of(self, arch: Arch) -> list[int]:
        arch = self.space.validate(arch)
        return [d.choices.index(arch[d.name]) for d in self._decisions]

    def subnet(self, picks: Sequence[int]) -> NB201Network:
        """The stand-alone network of the derived cell, with the supernet's weights."""
        arch = self.derive(picks)
        net = NB201Network(
            [arch[e] for e in NB201_EDGES],
            channels=self.space.channels,
            cells_per_stage=self.space.cells_per_stage,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        )
        net.stem.load_state_dict(self.stem.state_dict())
        for mine, theirs in zip(self.cells, net.cells, strict=True):
            if isinstance(mine, MixedCell):
                assert isinstance(theirs, Cell)
                for edge, op, p in zip(mine.edges, theirs.edges, picks, strict=True):
                    assert isinstance(edge, MixedOp)
                    op.load_state_dict(edge.ops[int(p)].state_dict())
            else:
                theirs.load_state_dict(mine.state_dict())
        net.lastact.load_state_dict(self.lastact.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net
