"""The latency-table block codec of the MBConv space.

Blocks: the stem at each resolution and width (``mb:stem:<channels>:h<size>``), every inverted
residual block (``mb:<c_in>-<c_out>:k<kernel>:e<expansion>:s<stride>:h<size>``) and the head
(``mb:head:<c_in>-<last>:h<size>:n<classes>``). The calibration features add the network's
weight count and the size of its expanded activations: blocks measured alone run from a warm
cache, so the sum underestimates a network by an amount that grows with how much memory the
network streams through (measured: the raw sum is about 8 % low at 224 px).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hwnas.errors import UsageError
from hwnas.spaces import mbconv as mb
from hwnas.spaces._lut import BlockCodec, BlockTable

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._base import Arch
    from hwnas.spaces.mbconv import MBConvSpace


def _block_key(c_in: int, c_out: int, k: int, e: int, s: int, h: int) -> str:
    return f"mb:{c_in}-{c_out}:k{k}:e{e}:s{s}:h{h}"


class MBConvCodec(BlockCodec):
    """Blocks and calibration features of :class:`~hwnas.spaces.mbconv.MBConvSpace`."""

    space: MBConvSpace
    default_calibrate = 80
    resolutions = mb.RESOLUTIONS

    # -- blocks ---------------------------------------------------------------------
    def blocks(self, arch: Arch) -> list[str]:
        arch = self.space.validate(arch)
        r, w = arch["resolution"], arch["width"]
        blocks = self.space.blocks(arch)
        stem = mb.make_divisible(mb.STEM_CHANNELS * w)
        last = mb.make_divisible(mb.LAST_CHANNELS * max(1.0, w))
        size_out = -(-blocks[-1].size_in // blocks[-1].stride)
        keys = [f"mb:stem:{stem}:h{r}"]
        keys += [_block_key(b.c_in, b.c_out, b.kernel, b.expansion, b.stride, b.size_in) for b in blocks]
        keys.append(f"mb:head:{blocks[-1].c_out}-{last}:h{size_out}:n{self.space.num_classes}")
        return keys

    def all_blocks(self, resolutions: Sequence[int] | None = None) -> list[str]:
        self.check_profile_options(resolutions=resolutions)
        keys: list[str] = []
        for r in resolutions or mb.RESOLUTIONS:
            for w in mb.WIDTHS:
                arch = mb.mobilenet_v2_arch(r, w)
                # Every block slot's (c_in, c_out, stride, size) is fixed by resolution and width; only
                # the first block of a stage differs from the rest, so two variants per stage suffice.
                base = self.blocks(arch)
                keys += [base[0], base[1], base[-1]]
                deepest = {**arch, **{f"d{s}": 4 for s in range(1, mb.SEARCHED_DEPTH_STAGES + 1)}}
                seen = set()
                for b in self.space.blocks(deepest)[1:]:
                    sig = (b.c_in, b.c_out, b.stride, b.size_in)
                    if sig in seen:
                        continue
                    seen.add(sig)
                    keys += [_block_key(b.c_in, b.c_out, k, e, b.stride, b.size_in) for k in mb.KERNELS for e in mb.EXPANSIONS]
        return list(dict.fromkeys(keys))

    def build_block(self, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
        from torch import nn

        from hwnas.spaces._mbconv_model import ConvBNAct, InvertedResidual

        c_img = self.space.in_channels
        if m := re.fullmatch(r"mb:stem:(\d+):h(\d+)", key):
            c, r = int(m[1]), int(m[2])
            return ConvBNAct(c_img, c, 3, stride=2), (c_img, r, r)
        if m := re.fullmatch(r"mb:(\d+)-(\d+):k(\d+):e(\d+):s(\d+):h(\d+)", key):
            c_in, c_out, k, e, s, h = map(int, m.groups())
            return InvertedResidual(c_in, c_out, k, e, s), (c_in, h, h)
        if m := re.fullmatch(r"mb:head:(\d+)-(\d+):h(\d+):n(\d+)", key):
            c_in, last, h, n = map(int, m.groups())
            head = nn.Sequential(ConvBNAct(c_in, last, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(last, n))
            return head, (c_in, h, h)
        raise UsageError(f"{key!r} is not an mbconv block key, e.g. 'mb:24-32:k5:e6:s2:h56'")

    # -- calibration features ------------------------------------------------------------
    def feature_names(self, structure_names: Sequence[str] = ()) -> list[str]:
        return ["block_sum_ms", "weights_m", "expanded_activations_m", *structure_names]

    def features(self, table: BlockTable, arch: Arch) -> np.ndarray:
        arch = self.space.validate(arch)
        total = table.block_sum(self.space, arch)
        keys = self.blocks(arch)
        weights = sum(_weights(k, self.space.in_channels) for k in keys) / 1e6
        activations = sum(_expanded_activations(k) for k in keys) / 1e6
        return np.array([total, weights, activations], dtype=float)

    # -- profiling ------------------------------------------------------------------------
    def reference_arch(self, resolutions: Sequence[int] | None = None) -> Arch:
        return mb.mobilenet_v2_arch(resolution=(resolutions or [224])[0])

    def profile_hint(self, key: str) -> str:
        m = re.fullmatch(r"mb:stem:\d+:h(\d+)", key)
        return f" --resolution {m[1]}" if m else ""


def _weights(key: str, in_channels: int) -> int:
    """Weights of an mbconv block key (convolutions and the classifier; BatchNorm folded)."""
    parts = key.split(":")
    if parts[1] == "stem":
        return 9 * in_channels * int(parts[2])
    if parts[1] == "head":
        c_in, last = map(int, parts[2].split("-"))
        return c_in * last + last * int(parts[4][1:])
    c_in, c_out = map(int, parts[1].split("-"))
    k, e = int(parts[2][1:]), int(parts[3][1:])
    hidden = c_in * e
    return (c_in * hidden if e != 1 else 0) + hidden * k * k + hidden * c_out


def _expanded_activations(key: str) -> int:
    """Elements of the expanded tensor before and after the depthwise conv of a block."""
    parts = key.split(":")
    if parts[1] in ("stem", "head"):
        return 0
    c_in = int(parts[1].split("-")[0])
    e, s, h = int(parts[3][1:]), int(parts[4][1:]), int(parts[5][1:])
    return c_in * e * (h * h + (-(-h // s)) ** 2)
