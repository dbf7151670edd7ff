"""Torch modules of the MBConv space, layer for layer as torchvision's MobileNetV2.

Only export-friendly ops: Conv2d (no bias), BatchNorm2d, ReLU6, add, AdaptiveAvgPool2d(1),
Flatten, Dropout and Linear. Weights are initialised as torchvision does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from hwnas.spaces.mbconv import MBBlock


class ConvBNAct(nn.Sequential):
    """Conv (padding k//2, no bias) + BatchNorm, followed by ReLU6 when ``act``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        padding = kernel // 2
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MBConv block: 1x1 expand (unless expansion is 1), depthwise kxk, 1x1 linear projection."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = round(c_in * expansion)
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(c_in, hidden, 1))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride=stride, groups=hidden))
        layers.append(ConvBNAct(hidden, c_out, 1, act=False))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


def init_weights(module: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation (also the MBConv supernet's, so a subnet starts as a built arch does)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MBConvNet(nn.Module):
    """Stem, inverted-residual blocks, 1x1 head conv, global pool and a linear classifier.

    Args:
        blocks: the inverted-residual blocks in order (``c_in`` of the first one is the stem's output).
        in_channels: channels of the input image.
        stem_channels: output channels of the stride-2 3x3 stem.
        last_channels: output channels of the 1x1 head conv.
        num_classes: classifier outputs.
        dropout: dropout probability before the classifier.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(
        self,
        blocks: Sequence[MBBlock],
        *,
        in_channels: int,
        stem_channels: int,
        last_channels: int,
        num_classes: int,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("MBConvNet needs at least one block")
        if blocks[0].c_in != stem_channels:
            raise ValueError(f"first block takes {blocks[0].c_in} channels but the stem gives {stem_channels}")
        layers: list[nn.Module] = [ConvBNAct(in_channels, stem_channels, 3, stride=2)]
        layers += [InvertedResidual(b.c_in, b.c_out, b.kernel, b.expansion, b.stride) for b in blocks]
        layers.append(ConvBNAct(blocks[-1].c_out, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channels, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))
