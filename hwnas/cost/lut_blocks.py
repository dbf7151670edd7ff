"""The units a latency lookup table is keyed by: functions over the space's block codec.

Each space owns its codec (:meth:`~hwnas.spaces.SearchSpace.lut_codec`, e.g.
``hwnas/spaces/_mbconv_lut.py``); these are its three questions asked of a space. A block key is
a short string that fixes everything that changes the block's latency (op, channels, kernel,
expansion, stride, input size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch


def blocks_of(space: SearchSpace, arch: Arch) -> list[str]:
    """Block keys of ``arch`` in network order (repeated blocks repeated)."""
    return space.lut_codec().blocks(arch)


def all_blocks(space: SearchSpace, resolutions: Sequence[int] | None = None) -> list[str]:
    """Every block key the space can produce (mbconv: at the given input resolutions)."""
    return space.lut_codec().all_blocks(resolutions)


def build_block(space: SearchSpace, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """A module computing block ``key`` and its (C, H, W) input shape."""
    return space.lut_codec().build_block(key)
