"""The units a latency lookup table is keyed by, per space: enumerate, key, build.

A block key is a short string that fixes everything that changes the block's latency
(op, channels, kernel, expansion, stride, input size). ``blocks_of(space, arch)`` lists
the keys of one architecture, ``all_blocks(space, resolutions)`` every key the space can
produce, and ``build_block(space, key)`` a torch module with its exact input shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hwnas.errors import UsageError
from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

# -- NAS-Bench-201 ------------------------------------------------------------
_NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _nb201_geometry(space: SearchSpace) -> tuple[int, int, list[tuple[int, int]]]:
    c0 = int(getattr(space, "channels", 16))
    _, h, _ = space.input_shape({})  # nb201's input shape does not depend on the arch
    stages = [(c0 * 2**i, -(-h // 2**i)) for i in range(3)]
    return c0, h, stages


def _nb201_blocks(space: SearchSpace, arch: Arch) -> list[str]:
    from hwnas.benchdata import NB201_EDGES

    n = int(getattr(space, "cells_per_stage", 5))
    keys = ["nb201:stem", "nb201:reduction1", "nb201:reduction2", "nb201:head"]
    for stage in range(3):
        for edge in NB201_EDGES:
            keys += [f"nb201:s{stage}:{arch[edge]}"] * n
    return keys


def _nb201_all(space: SearchSpace) -> list[str]:
    keys = ["nb201:stem", "nb201:reduction1", "nb201:reduction2", "nb201:head"]
    return keys + [f"nb201:s{stage}:{op}" for stage in range(3) for op in _NB201_OPS]


def _nb201_build(space: SearchSpace, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    from torch import nn

    from hwnas.spaces._nb201_model import ResNetBasicBlock, make_op

    c0, h, stages = _nb201_geometry(space)
    classes = int(getattr(space, "num_classes", 10))
    if key == "nb201:stem":
        return nn.Sequential(nn.Conv2d(3, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0)), (3, h, h)
    if m := re.fullmatch(r"nb201:reduction([12])", key):
        i = int(m[1])
        (c_in, size), (c_out, _) = stages[i - 1], stages[i]
        return ResNetBasicBlock(c_in, c_out), (c_in, size, size)
    if key == "nb201:head":
        c, size = stages[2]
        return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, classes)), (c, size, size)
    if (m := re.fullmatch(r"nb201:s([012]):(\w+)", key)) and m[2] in _NB201_OPS:
        c, size = stages[int(m[1])]
        return make_op(m[2], c), (c, size, size)
    raise UsageError(f"{key!r} is not an nb201 block key, e.g. 'nb201:s0:nor_conv_3x3'")


# -- MBConv ---------------------------------------------------------------------
def _mb_key(c_in: int, c_out: int, k: int, e: int, s: int, h: int) -> str:
    return f"mb:{c_in}-{c_out}:k{k}:e{e}:s{s}:h{h}"


def _mbconv_blocks(space: SearchSpace, arch: Arch) -> list[str]:
    from hwnas.spaces.mbconv import LAST_CHANNELS, STEM_CHANNELS, make_divisible

    arch = space.validate(arch)
    r, w = arch["resolution"], arch["width"]
    blocks = space.blocks(arch)  # type: ignore[attr-defined]
    stem = make_divisible(STEM_CHANNELS * w)
    last = make_divisible(LAST_CHANNELS * max(1.0, w))
    size_out = -(-blocks[-1].size_in // blocks[-1].stride)
    keys = [f"mb:stem:{stem}:h{r}"]
    keys += [_mb_key(b.c_in, b.c_out, b.kernel, b.expansion, b.stride, b.size_in) for b in blocks]
    keys.append(f"mb:head:{blocks[-1].c_out}-{last}:h{size_out}:n{space.num_classes}")  # type: ignore[attr-defined]
    return keys


def _mbconv_all(space: SearchSpace, resolutions: Sequence[int]) -> list[str]:
    from hwnas.spaces import mbconv as mb

    keys: list[str] = []
    for r in resolutions:
        if r not in mb.RESOLUTIONS:
            raise UsageError(f"resolution {r} is not in the mbconv space; choices {list(mb.RESOLUTIONS)}")
        for w in mb.WIDTHS:
            arch = mb.mobilenet_v2_arch(r, w)
            # Every block slot's (c_in, c_out, stride, size) is fixed by resolution and width; only
            # the first block of a stage differs from the rest, so two variants per stage suffice.
            base = _mbconv_blocks(space, arch)
            keys += [base[0], base[1], base[-1]]
            blocks = space.blocks({**arch, **{f"d{s}": 4 for s in range(1, mb.SEARCHED_DEPTH_STAGES + 1)}})  # type: ignore[attr-defined]
            seen = set()
            for b in blocks[1:]:
                sig = (b.c_in, b.c_out, b.stride, b.size_in)
                if sig in seen:
                    continue
                seen.add(sig)
                keys += [_mb_key(b.c_in, b.c_out, k, e, b.stride, b.size_in) for k in mb.KERNELS for e in mb.EXPANSIONS]
    return list(dict.fromkeys(keys))


def _mbconv_build(space: SearchSpace, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    from torch import nn

    from hwnas.spaces._mbconv_model import ConvBNAct, InvertedResidual

    c_img = int(getattr(space, "in_channels", 3))
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


# -- dispatch -------------------------------------------------------------------
def blocks_of(space: SearchSpace, arch: Arch) -> list[str]:
    """Block keys of ``arch`` in network order (repeated blocks repeated)."""
    if space.name == "nb201":
        return _nb201_blocks(space, space.validate(arch))
    if space.name == "mbconv":
        return _mbconv_blocks(space, arch)
    raise UsageError(f"space {space.name!r} has no latency-table blocks; use --latency-source measure")


def all_blocks(space: SearchSpace, resolutions: Sequence[int] | None = None) -> list[str]:
    """Every block key the space can produce (mbconv: at the given input resolutions)."""
    if space.name == "nb201":
        return _nb201_all(space)
    if space.name == "mbconv":
        from hwnas.spaces.mbconv import RESOLUTIONS

        return _mbconv_all(space, list(resolutions or RESOLUTIONS))
    raise UsageError(f"space {space.name!r} has no latency-table blocks; use --latency-source measure")


def build_block(space: SearchSpace, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """A module computing block ``key`` and its (C, H, W) input shape."""
    if space.name == "nb201":
        return _nb201_build(space, key)
    if space.name == "mbconv":
        return _mbconv_build(space, key)
    raise UsageError(f"space {space.name!r} has no latency-table blocks")
