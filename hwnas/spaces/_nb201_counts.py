"""Closed-form MACs, parameters and weight bytes of a NAS-Bench-201 network (no torch).

Layer for layer as :class:`hwnas.spaces._nb201_model.NB201Network`: a 3x3 stem conv + BN,
three stages of identical cells (widths C, 2C, 4C) joined by two ResNet reduction blocks,
and a BN-ReLU-pool-linear head.

A cell's forward runs every one of its 6 edges, dead paths included (an edge out of a node
whose inputs are all ``none`` still convolves that node's zeros), so fvcore counts every conv
edge and a cell's cost is the sum of its edges' costs, whatever the wiring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.benchdata import NB201_EDGES
from hwnas.spaces._counts import Counts, Tally, conv_out

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch
    from hwnas.spaces.nb201 import NB201Space

#: Kernel of each op that is a ReLU-Conv-BN. The other ops execute no conv and hold no
#: parameters: ``none`` multiplies by zero, ``skip_connect`` is the identity, ``avg_pool_3x3`` pools.
_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def nb201_counts(space: NB201Space, arch: Arch) -> Counts:
    """MACs, parameters and deployed weight bytes of ``space.build(arch)`` on one input.

    Honours the space's ``channels``, ``cells_per_stage``, ``num_classes`` and dataset input shape.

    Raises:
        UsageError: if ``arch`` is not an architecture of the space.
    """
    arch = space.validate(arch)
    cell_kernels = [_CONV_KERNEL[arch[e]] for e in NB201_EDGES if arch[e] in _CONV_KERNEL]
    in_channels, height, width = space.input_shape(arch)
    c = space.channels
    tally = Tally()
    tally.conv_bn(in_channels, c, 3, height * width)  # stem: stride 1, padding 1
    c_prev = c
    for stage, channels in enumerate((c, 2 * c, 4 * c)):
        if stage > 0:
            # ResNetBasicBlock: two ReLU-Conv3x3-BN (the first of stride 2) and a shortcut that
            # pools 2x2 before its 1x1 conv, which has no BN and so exports without a bias.
            half_h, half_w = conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)
            tally.conv_bn(c_prev, channels, 3, half_h * half_w)
            tally.conv_bn(channels, channels, 3, half_h * half_w)
            tally.conv(c_prev, channels, 1, conv_out(height, 2, 2, 0) * conv_out(width, 2, 2, 0))
            height, width = half_h, half_w
        for kernel in cell_kernels:
            tally.conv_bn(channels, channels, kernel, height * width, repeat=space.cells_per_stage)
        c_prev = channels
    # lastact's BN follows the last cell's sum of edges, not a conv: export keeps it unfolded.
    tally.batch_norm(c_prev)
    tally.linear(c_prev, space.num_classes)
    return tally.counts()
