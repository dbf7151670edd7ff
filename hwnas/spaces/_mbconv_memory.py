"""The MBConv network as an operator list for peak activation memory (no torch).

Op for op as :mod:`hwnas.spaces._mbconv_model` runs in ONNX Runtime: every conv is one
operator with its BatchNorm folded and its ReLU6 fused (stem, 1x1 expansion, depthwise, head;
the linear 1x1 projection has no activation); a block with a residual adds its input, which
stays live through the whole block, to the projection. The head is global pooling and a
linear layer (Flatten is a view, Dropout the identity at inference). See
:mod:`hwnas.cost.memory` for what is counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.spaces._liveness import BYTES_PER_ELEMENT, Op, peak_activation_bytes
from hwnas.spaces.mbconv import LAST_CHANNELS, STEM_CHANNELS, make_divisible

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch
    from hwnas.spaces.mbconv import MBBlock, MBConvSpace

_INPUT = "input"


def _conv_size(size: int, kernel: int, stride: int) -> int:
    """Output height of a conv with padding ``kernel // 2`` (the model's ``ConvBNAct``)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def block_ops(block: MBBlock, x: str, prefix: str) -> list[Op]:
    """The operators of one inverted-residual block reading tensor ``x``; the last writes its output."""
    hidden = round(block.c_in * block.expansion)  # as the model's InvertedResidual
    size_out = _conv_size(block.size_in, block.kernel, block.stride)
    ops: list[Op] = []
    h = x
    if block.expansion != 1:
        ops.append(Op(f"{prefix}/expand", (x,), f"{prefix}/expand", hidden * block.size_in**2 * BYTES_PER_ELEMENT, "conv"))
        h = f"{prefix}/expand"
    ops.append(Op(f"{prefix}/dw", (h,), f"{prefix}/dw", hidden * size_out**2 * BYTES_PER_ELEMENT, "conv"))
    ops.append(Op(f"{prefix}/project", (f"{prefix}/dw",), f"{prefix}/project", block.c_out * size_out**2 * BYTES_PER_ELEMENT, "conv"))
    if block.residual:
        ops.append(Op(f"{prefix}/add", (x, f"{prefix}/project"), f"{prefix}/add", block.c_out * size_out**2 * BYTES_PER_ELEMENT, "add"))
    return ops


def mbconv_ops(space: MBConvSpace, arch: Arch) -> list[Op]:
    """The operators the MBConv network of ``space`` (in_channels, num_classes) runs for ``arch``, in order.

    The input tensor is named ``"input"``; the last op writes the logits.
    """
    blocks = space.blocks(arch)  # validates; validating again would double the cost of a call
    stem_size = _conv_size(int(arch["resolution"]), 3, 2)
    stem_channels = make_divisible(STEM_CHANNELS * arch["width"])
    ops = [Op("stem", (_INPUT,), "stem", stem_channels * stem_size**2 * BYTES_PER_ELEMENT, "conv")]
    for i, block in enumerate(blocks):
        ops += block_ops(block, ops[-1].output, f"block{i}")
    last = blocks[-1]
    size = _conv_size(last.size_in, last.kernel, last.stride)
    last_channels = make_divisible(LAST_CHANNELS * max(1.0, arch["width"]))
    ops.append(Op("head/conv", (ops[-1].output,), "head/conv", last_channels * size**2 * BYTES_PER_ELEMENT, "conv"))
    ops.append(Op("head/gap", ("head/conv",), "head/gap", last_channels * BYTES_PER_ELEMENT, "gap"))
    ops.append(Op("head/linear", ("head/gap",), "head/linear", space.num_classes * BYTES_PER_ELEMENT, "linear"))
    return ops


def mbconv_peak_bytes(space: MBConvSpace, arch: Arch) -> int:
    """Peak activation bytes (batch 1, float32) of the MBConv network of ``space`` for ``arch``."""
    ops = mbconv_ops(space, arch)  # validates
    resolution = int(arch["resolution"])
    return peak_activation_bytes(ops, _INPUT, space.in_channels * resolution**2 * BYTES_PER_ELEMENT)[0]
