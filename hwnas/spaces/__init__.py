"""Search spaces: a registry of :class:`SearchSpace` instances."""

from __future__ import annotations

from hwnas.registry import Registry
from hwnas.spaces._base import Arch, Dimension, SearchSpace

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

__all__ = ["SPACES", "Arch", "Dimension", "SearchSpace", "get_space"]
