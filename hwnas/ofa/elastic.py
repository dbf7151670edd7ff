"""An elastic MBConv supernet: every architecture of :class:`MBConvSpace` is a subnet of one network.

Once-for-All (Cai et al., ICLR 2020) shares weights between all candidates instead of giving
each its own (as the ProxylessNAS supernet of :mod:`hwnas.darts.mbconv_supernet` does). The
network is built at the largest choice of every dimension, and a candidate uses a part of it:

* **elastic kernel**: a depthwise kxk kernel is the centre of the 7x7 one, passed through a
  learned kernel transform matrix per size step (7->5, 5->3; identity at start) as in OFA;
* **elastic expansion**: a block's hidden channels are the first ``round(c_in * e)`` of the
  widest (e = 6);
* **elastic depth**: a stage runs its first ``d`` blocks;
* **elastic width**: every layer's channels are the first ``make_divisible(c * width)`` of the
  widest (width 1.4), as in slimmable / US-Nets (Yu & Huang, ICCV 2019) and OFA's ResNets;
  the 1x1 head and the classifier follow the space's rule ``1280 * max(1, width)``.

Channel importance sorting (OFA's re-ordering before shrinking expansion) is not done: the
sandwich rule trains all widths from the start, so the first channels learn to matter most.
Input resolution is not elastic: the network is fully convolutional and runs at the size of
its input (the ``resolution`` of an arch only sets the latency of the exported network).

The last BatchNorm of every residual block starts at zero (Goyal et al., 2017), so each subnet
starts as its shallowest part; the sandwich rule then trains all of them from the first epoch.

A depthwise kernel larger than ``2 * size - 1`` for an input of ``size`` pixels has taps
that only ever meet zero padding; the supernet crops them before the convolution (same
output, and on 8x8 digits most layers see 1x1 inputs, where a 7x7 depthwise convolution
otherwise costs ~50x more on CPU). On 1x1 maps it computes 1x1 convolutions as matrix
products and 1x1 depthwise ones as channel scales (the same numbers, about 1.6x faster a
training step on CPU). :func:`compact_copy` crops the kernels of a plain network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces import Arch
from hwnas.spaces._mbconv_model import ConvBNAct, InvertedResidual, MBConvNet, init_weights
from hwnas.spaces.mbconv import (
    DEPTHS,
    EXPANSIONS,
    KERNELS,
    LAST_CHANNELS,
    MAX_DEPTH,
    RESOLUTIONS,
    SEARCHED_DEPTH_STAGES,
    STAGES,
    WIDTHS,
    MBBlock,
    MBConvSpace,
    make_divisible,
)

_SIZES = tuple(sorted(KERNELS, reverse=True))  # 7, 5, 3


def _effective(kernel: int, size: int) -> int:
    """The largest odd kernel <= ``kernel`` whose taps can all meet an input of ``size`` pixels."""
    return min(kernel, 2 * size - 1)


def _crop(weight: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Centre ``kh x kw`` of a (..., K, K) kernel."""
    top, left = (weight.shape[-2] - kh) // 2, (weight.shape[-1] - kw) // 2
    return weight[..., top : top + kh, left : left + kw]


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its input, ``C <= num_features``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            # momentum None: a cumulative average (what BatchNorm recalibration uses)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            self.training or self.running_mean is None,
            factor,
            self.eps,
        )

    def copy_to(self, target: nn.BatchNorm2d) -> None:
        c = target.num_features
        assert target.running_mean is not None and target.running_var is not None
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            target.weight.copy_(self.weight[:c])
            target.bias.copy_(self.bias[:c])
            target.running_mean.copy_(self.running_mean[:c])
            target.running_var.copy_(self.running_var[:c])


class DynamicConvBN(nn.Module):
    """Dense kxk conv (no bias, padding k//2) with elastic input and output channels, BatchNorm, optional ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = DynamicBatchNorm2d(c_out)
        self.act = act

    def forward(self, x: torch.Tensor, c_out: int) -> torch.Tensor:
        w = self.conv.weight[:c_out, : x.shape[1]]
        if w.shape[-1] == 1 and x.shape[2] == x.shape[3] == 1:
            # A 1x1 conv of a 1x1 map is a matrix product: about twice as fast as the conv on CPU, forward and backward.
            y = self.bn(F.linear(x.flatten(1), w.flatten(1))[:, :, None, None])
        else:
            y = self.bn(F.conv2d(x, w, stride=self.conv.stride, padding=self.conv.padding))
        return F.relu6(y) if self.act else y

    def copy_to(self, target: ConvBNAct) -> None:
        conv, bn = target[0], target[1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        with torch.no_grad():
            conv.weight.copy_(self.conv.weight[: conv.out_channels, : conv.in_channels])
        self.bn.copy_to(bn)


class DynamicDepthwiseBN(nn.Module):
    """Depthwise conv with elastic channels and kernel (centre of the largest, OFA kernel transforms), BatchNorm, ReLU6.

    Args:
        channels: the most channels.
        stride: the conv's stride.
        kernels: the kernel sizes (odd); the weight is stored at the largest.
        transform: learn a (k^2 x k^2) matrix per size step, applied to the cropped centre (OFA);
            without it a smaller kernel is the plain centre crop.
    """

    def __init__(self, channels: int, *, stride: int, kernels: Sequence[int] = KERNELS, transform: bool = True) -> None:
        super().__init__()
        self.sizes = tuple(sorted(kernels, reverse=True))
        k = self.sizes[0]
        self.conv = nn.Conv2d(channels, channels, k, stride=stride, padding=k // 2, groups=channels, bias=False)
        self.bn = DynamicBatchNorm2d(channels)
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in zip(self.sizes, self.sizes[1:], strict=False)}
            if transform
            else {}
        )

    def kernel(self, channels: int, size: int) -> torch.Tensor:
        """The (channels, 1, size, size) weight of the ``size`` kernel."""
        if size not in self.sizes:
            raise ValueError(f"kernel {size} is not one of {self.sizes}")
        w = self.conv.weight[:channels]
        for big, small in zip(self.sizes, self.sizes[1:], strict=False):
            if big == size:
                break
            w = _crop(w, small, small)
            matrix = self.transforms[f"{big}to{small}"] if f"{big}to{small}" in self.transforms else None
            if matrix is not None:
                w = F.linear(w.reshape(channels, small * small), matrix).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        c, h, wd = x.shape[1], x.shape[2], x.shape[3]
        kh, kw = _effective(size, h), _effective(size, wd)
        w = _crop(self.kernel(c, size), kh, kw)
        if kh == kw == 1:
            y = x[:, :, :: self.conv.stride[0], :: self.conv.stride[1]] * w.view(1, c, 1, 1)  # a per-channel scale (input 1x1)
        else:
            y = F.conv2d(x, w, stride=self.conv.stride, padding=(kh // 2, kw // 2), groups=c)
        return F.relu6(self.bn(y))

    def copy_to(self, target: ConvBNAct) -> None:
        conv, bn = target[0], target[1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        with torch.no_grad():
            conv.weight.copy_(self.kernel(conv.out_channels, conv.kernel_size[0]))
        self.bn.copy_to(bn)


class ElasticBlock(nn.Module):
    """An inverted-residual block at its largest: 1x1 expand (unless ``expand`` is False), depthwise, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, hidden: int, *, stride: int, expand: bool, transform: bool) -> None:
        super().__init__()
        self.expand = DynamicConvBN(c_in, hidden, 1) if expand else None
        kernels = KERNELS if expand else (3,)  # the fixed first block is always 3x3
        self.depthwise = DynamicDepthwiseBN(hidden, stride=stride, kernels=kernels, transform=transform)
        self.project = DynamicConvBN(hidden, c_out, 1, act=False)

    def forward(self, x: torch.Tensor, spec: MBBlock) -> torch.Tensor:
        y = x
        if self.expand is not None:
            y = self.expand(y, round(spec.c_in * spec.expansion))
        y = self.project(self.depthwise(y, spec.kernel), spec.c_out)
        return x + y if spec.residual else y

    def copy_to(self, target: InvertedResidual) -> None:
        layers = list(target.conv)
        if self.expand is not None:
            self.expand.copy_to(layers.pop(0))  # type: ignore[arg-type]
        self.depthwise.copy_to(layers[0])  # type: ignore[arg-type]
        self.project.copy_to(layers[1])  # type: ignore[arg-type]


class ElasticMBConvNet(nn.Module):
    """The OFA supernet of an :class:`MBConvSpace`: the largest network, run as any of the space's archs.

    Args:
        space: the space whose archs it runs (its ``num_classes`` and ``in_channels`` shape the network).
        kernel_transform: learn OFA's kernel transform matrices (else smaller kernels are plain centre crops).

    Shapes: ``forward(x, arch)``: ``(N, in_channels, H, W) -> (N, num_classes)``, any ``H, W``.
    """

    def __init__(self, space: MBConvSpace, *, kernel_transform: bool = True) -> None:
        super().__init__()
        if not isinstance(space, MBConvSpace):
            raise TypeError(f"space must be an MBConvSpace, got {type(space).__name__}")
        self.space = space
        self.kernel_transform = kernel_transform
        widest = self.space.blocks(self.largest())
        first, slots = widest[0], widest[1:]
        self._slot_index = {(s, b): i for i, (s, b) in enumerate(_slots())}
        self.stem = DynamicConvBN(space.in_channels, first.c_in, 3, stride=2)
        self.first = ElasticBlock(first.c_in, first.c_out, first.c_in, stride=first.stride, expand=False, transform=False)
        self.blocks = nn.ModuleList(
            ElasticBlock(
                spec.c_in, spec.c_out, round(spec.c_in * spec.expansion), stride=spec.stride, expand=True, transform=kernel_transform
            )
            for spec in slots
        )
        last = make_divisible(LAST_CHANNELS * max(1.0, max(WIDTHS)))
        self.head = DynamicConvBN(slots[-1].c_out, last, 1)
        self.dropout = nn.Dropout(p=0.2)
        self.classifier = nn.Linear(last, space.num_classes)
        init_weights(self)
        # The last BatchNorm of each residual block starts at zero (Goyal et al., 2017), so every subnet starts as its
        # shallowest part: on 8x8 digits the loss otherwise sits at ln 10 for the first ~4 epochs, longer for small subnets.
        for (_, block), slot in zip(_slots(), self._elastic(), strict=True):
            if block > 1:
                nn.init.zeros_(slot.project.bn.weight)

    # -- archs -------------------------------------------------------------------
    def largest(self) -> Arch:
        """The arch that uses every weight: widest, deepest, 7x7 kernels, expansion 6."""
        arch: Arch = {"resolution": max(RESOLUTIONS), "width": max(WIDTHS)}
        arch.update({f"d{s}": max(DEPTHS) for s in range(1, SEARCHED_DEPTH_STAGES + 1)})
        for s, b in _slots():
            arch[f"s{s}b{b}_k"], arch[f"s{s}b{b}_e"] = max(KERNELS), max(EXPANSIONS)
        return self.space.validate(arch)

    def smallest(self) -> Arch:
        return self.space.smallest()

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random arch of the space."""
        return self.space.sample(rng)

    def plan(self, arch: Arch) -> tuple[int, list[tuple[int, MBBlock]], int]:
        """(stem channels, [(slot index, block)] of the active blocks (index -1: the first block), head channels)."""
        arch = self.space.validate(arch)
        specs = self.space.blocks(arch)
        width = arch["width"]
        active = [(s, b) for s, b in _slots() if b <= (arch[f"d{s}"] if s <= SEARCHED_DEPTH_STAGES else 1)]
        pairs = [(-1, specs[0])] + [(self._slot_index[sb], spec) for sb, spec in zip(active, specs[1:], strict=True)]
        return specs[0].c_in, pairs, make_divisible(LAST_CHANNELS * max(1.0, width))

    # -- forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        stem, pairs, last = self.plan(arch)
        y = self.stem(x, stem)
        blocks = self._elastic()
        for index, spec in pairs:
            y = (self.first if index < 0 else blocks[index])(y, spec)
        y = torch.flatten(F.adaptive_avg_pool2d(self.head(y, last), 1), 1)
        return F.linear(self.dropout(y), self.classifier.weight[:, : y.shape[1]], self.classifier.bias)

    # -- inheritance -------------------------------------------------------------
    def subnet(self, arch: Arch) -> MBConvNet:
        """``space.build(arch)`` with this supernet's weights and BatchNorm statistics copied in.

        In eval mode its output equals ``forward(x, arch)``. The copy shares no tensors with the
        supernet, lives on the supernet's device, and is left in the supernet's train/eval mode.
        """
        _, pairs, _ = self.plan(arch)
        like = next(self.parameters())
        net = self.space.build(arch)
        if not isinstance(net, MBConvNet):
            raise TypeError(f"MBConvSpace.build returned {type(net).__name__}, expected MBConvNet")
        net = net.to(device=like.device, dtype=like.dtype)
        features = list(net.features)
        if len(features) != len(pairs) + 2:
            raise RuntimeError(f"built network has {len(features)} feature layers, the arch gives {len(pairs) + 2}")
        self.stem.copy_to(features[0])  # type: ignore[arg-type]
        blocks = self._elastic()
        for (index, _), target in zip(pairs, features[1:-1], strict=True):
            (self.first if index < 0 else blocks[index]).copy_to(target)  # type: ignore[arg-type]
        self.head.copy_to(features[-1])  # type: ignore[arg-type]
        linear = net.classifier[1]
        assert isinstance(linear, nn.Linear)
        with torch.no_grad():
            linear.weight.copy_(self.classifier.weight[:, : linear.in_features])
            linear.bias.copy_(self.classifier.bias)
        return net.train(self.training)

    def _elastic(self) -> list[ElasticBlock]:
        return cast(list[ElasticBlock], list(self.blocks))


def _slots() -> list[tuple[int, int]]:
    """(stage, block) of every block slot, in network order."""
    return [(s, b) for s in range(1, len(STAGES) + 1) for b in range(1, MAX_DEPTH[s - 1] + 1)]


def compact_copy(net: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """A copy of ``net`` whose depthwise kernels keep only the taps an input of ``input_shape`` can reach.

    For inputs of exactly that (C, H, W) the copy computes what ``net`` computes (up to float
    rounding), and training it follows the same trajectory: the dropped taps only ever multiply
    zero padding, so their gradients are zero. It is much faster where a layer's input is far
    smaller than its kernel (e.g. 7x7 depthwise kernels on the 1x1 maps of 8x8 digits).
    """
    out = copy.deepcopy(net)
    sizes: dict[nn.Conv2d, tuple[int, int]] = {}
    depthwise = [m for m in out.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes[module] = (args[0].shape[2], args[0].shape[3])  # type: ignore[index]

    hooks = [m.register_forward_pre_hook(record) for m in depthwise]
    was = out.training
    like = next(out.parameters())
    try:
        out.eval()
        with torch.no_grad():
            out(torch.zeros(1, *input_shape, device=like.device, dtype=like.dtype))
    finally:
        for handle in hooks:
            handle.remove()
        out.train(was)
    for conv in depthwise:
        h, w = sizes[conv]
        kh, kw = _effective(conv.kernel_size[0], h), _effective(conv.kernel_size[1], w)
        if (kh, kw) == conv.kernel_size:
            continue
        with torch.no_grad():
            conv.weight = nn.Parameter(_crop(conv.weight, kh, kw).clone())
        conv.kernel_size, conv.padding = (kh, kw), (kh // 2, kw // 2)
    return out
