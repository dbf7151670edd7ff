"""Torch modules of the NAS-Bench-201 network, op for op as the benchmark's ``infer.tiny``.

Ops (C channels, stride 1 inside cells): ``none`` multiplies by zero (kept in the graph, as
in the benchmark), ``skip_connect`` is the identity, ``nor_conv_kxk`` is ReLU-Conv-BN,
``avg_pool_3x3`` is a 3x3 average pool with ``count_include_pad=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Zero(nn.Module):
    """The ``none`` op: ``x * 0`` (the benchmark's ``Zero`` with stride 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class Cell(nn.Module):
    """4-node cell: node j = sum over i < j of op(i -> j)(node i); the output is node 3."""

    #: (target node, source node) of each edge, in the arch-string order.
    EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in (1, 2, 3):
            total = None
            for source in range(target):
                y = self.edges[k](nodes[source])
                total = y if total is None else total + y
                k += 1
            nodes.append(total)  # type: ignore[arg-type]
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    """Stride-2 reduction: two ReLU-Conv3x3-BN plus an AvgPool2d(2)+Conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem, 3 stages of ``cells_per_stage`` cells with reductions between, BN-ReLU-GAP-Linear head.

    Input (N, in_channels, H, W) -> logits (N, num_classes).
    """

    def __init__(
        self, ops: Sequence[str], *, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        c_prev = c
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResNetBasicBlock(c_prev, width))
            layers.extend(Cell(ops, width) for _ in range(cells_per_stage))
            c_prev = width
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))
