"""Closed-form MACs, parameters and weight bytes of an MBConv-space network (no torch).

Layer for layer as :class:`hwnas.spaces._mbconv_model.MBConvNet`: a stride-2 3x3 stem, the
inverted-residual blocks of :meth:`MBConvSpace.blocks` (1x1 expansion unless the expansion
is 1, kxk depthwise, 1x1 projection; every conv followed by a BN), a 1x1 head conv to the
last channels and a linear classifier. Residual adds, pooling and dropout cost no MACs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.spaces._counts import Counts, Tally, conv_out

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch
    from hwnas.spaces.mbconv import MBConvSpace


def mbconv_counts(space: MBConvSpace, arch: Arch) -> Counts:
    """MACs, parameters and deployed weight bytes of ``space.build(arch)`` on one input.

    Honours the space's ``in_channels`` and ``num_classes``.

    Raises:
        UsageError: if ``arch`` is not an architecture of the space.
    """
    # Imported here, not at the top: mbconv.py may import this module to offer counts().
    from hwnas.spaces.mbconv import LAST_CHANNELS, make_divisible

    blocks = space.blocks(arch)  # validates the arch
    tally = Tally()
    size = conv_out(arch["resolution"], 3, 2, 1)
    tally.conv_bn(space.in_channels, blocks[0].c_in, 3, size * size)  # stem
    for b in blocks:
        hidden = round(b.c_in * b.expansion)  # as InvertedResidual
        if b.expansion != 1:
            tally.conv_bn(b.c_in, hidden, 1, size * size)
        size = conv_out(size, b.kernel, b.stride, b.kernel // 2)
        tally.conv_bn(hidden, hidden, b.kernel, size * size, groups=hidden)
        tally.conv_bn(hidden, b.c_out, 1, size * size)
    # As MBConvSpace.build: the head never narrows below 1280 channels for widths under 1.
    last_channels = make_divisible(LAST_CHANNELS * max(1.0, arch["width"]))
    tally.conv_bn(blocks[-1].c_out, last_channels, 1, size * size)
    tally.linear(last_channels, space.num_classes)
    return tally.counts()
