"""Search spaces: a registry of :class:`SearchSpace` instances."""

from __future__ import annotations

from hwnas.registry import Registry
from hwnas.spaces._base import OPTIONAL_HOOKS, Arch, Dimension, SearchSpace
from hwnas.spaces._benchmark import Benchmark, BenchmarkAccuracy
from hwnas.spaces._lut import BlockCodec, BlockTable

SPACES: Registry[SearchSpace] = Registry("space")


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name`` (UsageError listing valid names otherwise)."""
    return SPACES.get(name)


def _register_builtin() -> None:
    from hwnas.spaces.mbconv import MBConvSpace
    from hwnas.spaces.nb201 import NB201Space

    SPACES.add("nb201", NB201Space())
    SPACES.add("mbconv", MBConvSpace())


_register_builtin()

__all__ = [
    "OPTIONAL_HOOKS",
    "SPACES",
    "Arch",
    "Benchmark",
    "BenchmarkAccuracy",
    "BlockCodec",
    "BlockTable",
    "Dimension",
    "SearchSpace",
    "get_space",
]
