"""The latency-table side of a space: its block codec.

A latency table (:mod:`hwnas.cost.lut`) stores the measured latency of every *block* a space's
networks are made of, keyed by a short string that fixes everything that changes the block's
latency (op, channels, kernel, expansion, stride, input size). A :class:`BlockCodec` says how
one space's networks split into such blocks, builds each block for measuring, and turns an
architecture into the features of the table's calibration model. A space returns its codec from
:meth:`~hwnas.spaces.SearchSpace.lut_codec`; the codecs of the built-in spaces live next to them
(``_nb201_lut.py``, ``_mbconv_lut.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hwnas.errors import UsageError

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._base import Arch, SearchSpace

Log = Callable[[str], None]


class BlockTable(Protocol):
    """What a codec reads of a latency table (:class:`hwnas.cost.lut.LatencyTable` is one)."""

    data: dict[str, Any]
    path: str

    def block_sum(self, space: SearchSpace, arch: Arch) -> float: ...


class BlockCodec(ABC):
    """How one space's networks split into latency-table blocks, and the calibration features.

    Subclasses implement :meth:`blocks`, :meth:`all_blocks` and :meth:`build_block`; the other
    methods have defaults for a space whose latency is the sum of its blocks' latencies.

    Attributes:
        space: the space whose architectures this codec keys.
        default_calibrate: calibration networks ``hwnas profile`` measures when not told.
        resolutions: input resolutions ``hwnas profile --resolution`` may pick (empty: the
            space's input size is fixed and ``--resolution`` is refused).
    """

    default_calibrate: int = 40
    resolutions: tuple[int, ...] = ()

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    # -- blocks ---------------------------------------------------------------------
    @abstractmethod
    def blocks(self, arch: Arch) -> list[str]:
        """Block keys of ``arch`` in network order (a block used twice is listed twice).

        Raises:
            UsageError: for an invalid arch.
        """

    @abstractmethod
    def all_blocks(self, resolutions: Sequence[int] | None = None) -> list[str]:
        """Every block key the space can produce (at ``resolutions``, where it has some), no repeats."""

    @abstractmethod
    def build_block(self, key: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
        """A freshly initialised module computing block ``key`` and its (C, H, W) input shape.

        Raises:
            UsageError: for a key this codec does not produce, with an example key.
        """

    # -- calibration features ------------------------------------------------------------
    def feature_names(self, structure_names: Sequence[str] = ()) -> list[str]:
        """Names of :meth:`features`; ``structure_names`` are those of the table's structure section."""
        return ["block_sum_ms", *structure_names]

    def features(self, table: BlockTable, arch: Arch) -> np.ndarray:
        """The calibration model's inputs for ``arch`` (default: the sum of its block latencies)."""
        return np.array([table.block_sum(self.space, arch)], dtype=float)

    # -- profiling ------------------------------------------------------------------------
    def reference_arch(self, resolutions: Sequence[int] | None = None) -> Arch:
        """A fixed mid-size network measured with every build and check, to see the machine drift."""
        return self.space.sample(np.random.default_rng(0))

    def check_profile_options(self, *, resolutions: Sequence[int] | None = None) -> None:
        """Refuse ``hwnas profile`` options this space cannot use.

        Raises:
            UsageError: one line naming the option, the value and what is allowed.
        """
        if not resolutions:
            return
        if not self.resolutions:
            raise UsageError(f"--resolution applies to the {_spaces_with_resolutions()} space only, not {self.space.name!r}")
        for r in resolutions:
            if r not in self.resolutions:
                raise UsageError(f"resolution {r} is not in the {self.space.name} space; choices {list(self.resolutions)}")

    def measure_structure(self, provider: str, log: Log) -> dict[str, Any] | None:
        """An extra section of the table measured after the blocks (None: the space needs none).

        The section holds ``names`` (appended to :meth:`feature_names`) and whatever
        :meth:`features` reads back; :meth:`check_structure` checks it when a table is loaded.
        """
        return None

    def check_structure(self, data: dict[str, Any], bad: Callable[[str], Exception]) -> list[str]:
        """Check a loaded table's structure section; return its names ([] where the space has none).

        Raises:
            the exception ``bad(why)`` makes, naming what is wrong.
        """
        return []

    def profile_hint(self, key: str) -> str:
        """Extra ``hwnas profile`` arguments that measure the missing block ``key`` ('' for none)."""
        return ""


def _spaces_with_resolutions() -> str:
    """Registered spaces whose codec profiles at chosen resolutions (for the message that refuses one)."""
    from hwnas.spaces import SPACES

    names = []
    for name in SPACES.names():
        try:
            if SPACES.get(name).lut_codec().resolutions:
                names.append(name)
        except UsageError:
            continue
    return " / ".join(names) or "no registered"
