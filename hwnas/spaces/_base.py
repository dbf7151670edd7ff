"""The search-space interface: architectures are plain, JSON-safe dicts.

A space says what can be chosen (:meth:`SearchSpace.dimensions`), draws and checks
architectures, and builds them into torch modules. Mutation and one-hot encoding have
defaults derived from the dimensions, so a new space gets them for free.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import UsageError

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._benchmark import Benchmark
    from hwnas.spaces._counts import Counts
    from hwnas.spaces._lut import BlockCodec

Arch = dict[str, Any]
"""An architecture: ``{dimension name: choice}``, JSON-safe."""

Choice = int | float | str


@dataclass(frozen=True)
class Dimension:
    """One choice of a space: a name and its finite set of values."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"dimension {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"dimension {self.name!r} has repeated choices {self.choices}")


class SearchSpace(ABC):
    """Base class of search spaces.

    Subclasses implement :meth:`dimensions`, :meth:`build`, :meth:`input_shape`,
    :meth:`to_string`, :meth:`from_string` and :meth:`smallest`; they may override
    :meth:`canonical` when some dimensions are inactive for some architectures.

    What else a space offers is reached through it, never by its name elsewhere: its
    latency-table block codec (:meth:`lut_codec`), its DARTS and Once-for-All supernets
    (:meth:`supernet`, :meth:`elastic_supernet`), its networks for other data (:meth:`for_data`)
    and its benchmark tables (:meth:`benchmark`, :meth:`with_dataset`). By default a space has
    none of them and says so with a one-line :class:`UsageError`.
    """

    name: str = ""
    description: str = ""

    # -- what can be chosen -------------------------------------------------
    @abstractmethod
    def dimensions(self) -> list[Dimension]:
        """The choices, in a fixed order."""

    def dimension_map(self) -> dict[str, Dimension]:
        return {d.name: d for d in self.dimensions()}

    def size(self) -> int:
        """Number of points of the raw dimension grid (before canonicalisation)."""
        n = 1
        for d in self.dimensions():
            n *= len(d.choices)
        return n

    # -- architectures ------------------------------------------------------
    def canonical(self, arch: Arch) -> Arch:
        """The canonical form of a *valid* arch (inactive choices reset). Default: a copy."""
        return {d.name: arch[d.name] for d in self.dimensions()}

    def validate(self, arch: Arch) -> Arch:
        """Check every dimension is present with an allowed value; return the canonical form.

        Raises:
            UsageError: naming the first wrong dimension and its allowed values.
        """
        if not isinstance(arch, dict):
            raise UsageError(f"an architecture of space {self.name!r} must be a dict, got {type(arch).__name__}")
        dims = self.dimension_map()
        unknown = sorted(set(arch) - set(dims))
        if unknown:
            raise UsageError(f"architecture has unknown dimension(s) {unknown} for space {self.name!r}")
        for name, dim in dims.items():
            if name not in arch:
                raise UsageError(f"architecture lacks dimension {name!r} (choices: {list(dim.choices)})")
            value = arch[name]
            if not _is_choice(value, dim.choices):
                raise UsageError(f"dimension {name!r} of space {self.name!r} has value {value!r}; allowed: {list(dim.choices)}")
        return self.canonical({name: _as_choice(arch[name], dims[name].choices) for name in dims})

    def sample(self, rng: np.random.Generator) -> Arch:
        """Draw every dimension uniformly; return the canonical arch."""
        arch = {d.name: d.choices[int(rng.integers(len(d.choices)))] for d in self.dimensions()}
        return self.canonical(arch)

    def mutate(self, arch: Arch, rng: np.random.Generator, n_changes: int = 1) -> Arch:
        """Return a different canonical arch with ``n_changes`` dimensions redrawn.

        Only changes that alter the canonical form count, so a mutation never returns the
        parent (unless the space has a single point).
        """
        if n_changes < 1:
            raise ValueError(f"n_changes must be >= 1, got {n_changes}")
        parent = self.canonical(arch)
        child = dict(parent)
        dims = [d for d in self.dimensions() if len(d.choices) > 1]
        if not dims:
            return child
        changed = 0
        # Bounded: each attempt redraws one dimension; inactive dimensions may not count.
        for _ in range(50 * n_changes * len(dims)):
            d = dims[int(rng.integers(len(dims)))]
            others = [c for c in d.choices if c != child[d.name]]
            candidate = dict(child)
            candidate[d.name] = others[int(rng.integers(len(others)))]
            candidate = self.canonical(candidate)
            if candidate != child:
                child = candidate
                changed += 1
                if changed >= n_changes:
                    break
        return child

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every distinct canonical arch that differs from ``arch`` in one dimension (a local
        search's neighbourhood), in dimension and choice order."""
        parent = self.canonical(arch)
        out: dict[str, Arch] = {}
        for d in self.dimensions():
            for c in d.choices:
                if c == parent[d.name]:
                    continue
                child = self.canonical({**parent, d.name: c})
                if child != parent:
                    out.setdefault(self.key(child), child)
        return list(out.values())

    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot encoding of the canonical arch, concatenated over dimensions (float32)."""
        arch = self.canonical(arch)
        parts = []
        for d in self.dimensions():
            v = np.zeros(len(d.choices), dtype=np.float32)
            v[d.choices.index(arch[d.name])] = 1.0
            parts.append(v)
        return np.concatenate(parts)

    def features(self, arch: Arch) -> np.ndarray:
        """Inputs of the strategies' learned accuracy predictors (default: :meth:`encode`).

        A space whose networks are graphs may add what the one-hot choices hide, such as the
        paths from input to output (NAS-Bench-201)."""
        return self.encode(arch)

    def key(self, arch: Arch) -> str:
        """A stable JSON key of the canonical arch (for caches and deduplication)."""
        return json.dumps(self.canonical(arch), sort_keys=True)

    def equivalence_key(self, arch: Arch) -> str:
        """Equal for archs that compute the same function (default: equal canonical forms).

        Strategies use it to avoid spending a trial on a network already evaluated.
        """
        return self.key(arch)

    @abstractmethod
    def to_string(self, arch: Arch) -> str:
        """A short, stable string for logs, file names and the CLI."""

    def degenerate(self, arch: Arch) -> str | None:
        """Why the network's output does not depend on its input (it computes a constant), or
        None for a real network (the default: no space-specific check)."""
        return None

    def short(self, arch: Arch) -> str:
        """A few characters that tell networks apart in progress lines (default: :meth:`to_string`, cut)."""
        text = self.to_string(arch)
        return text if len(text) <= 48 else text[:45] + "..."

    @abstractmethod
    def from_string(self, text: str) -> Arch:
        """Parse :meth:`to_string`'s form; raise :class:`UsageError` with an example if malformed."""

    @abstractmethod
    def smallest(self) -> Arch:
        """The architecture with the least compute: a probe for infeasible budgets."""

    # -- models -------------------------------------------------------------
    @abstractmethod
    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""

    @abstractmethod
    def build(self, arch: Arch) -> torch.nn.Module:
        """A freshly initialised torch module for the arch (imports torch lazily)."""

    def for_data(self, *, in_channels: int, num_classes: int, image_size: tuple[int, int] | None = None) -> SearchSpace:
        """This space with networks for images of ``in_channels`` channels and ``num_classes`` classes.

        ``image_size`` (height, width) is the size of the user's images: a space whose input size is
        not searched builds, times and exports its networks at that size (one shape truth: the network
        that is timed is the one that is trained and deployed); a space that searches its input
        resolution keeps it and the images are resized to it. None: the space's own input size.

        Default: the space itself where its networks already fit that data.

        Raises:
            UsageError: where they do not and the space cannot adapt them.
        """
        have_channels, *have_size = self.input_shape(self.smallest())
        have_classes = getattr(self, "num_classes", None)
        if (have_channels, have_classes) == (in_channels, num_classes) and image_size in (None, tuple(have_size)):
            return self
        raise UsageError(
            f"space {self.name!r} builds networks for {have_channels} channel(s) and {have_classes} classes only, not "
            f"{in_channels} channel(s) and {num_classes} classes; use data shaped as its input or a space that adapts to the data"
        )

    def shape_note(self, arch: Arch, table_shape: tuple[int, int, int]) -> str | None:
        """Why a latency table measured for networks taking ``table_shape`` (C, H, W) does not
        describe ``arch``'s network in this space (None where it does): its input shape differs."""
        shape = tuple(self.input_shape(arch))
        if shape == tuple(table_shape):
            return None
        return f"this run's networks take {'x'.join(map(str, shape))} input, the table's {'x'.join(map(str, table_shape))}"

    # -- optional hooks -------------------------------------------------------
    #: Datasets :meth:`with_dataset` accepts (empty: the space has no benchmark table).
    benchmark_datasets: tuple[str, ...] = ()

    def with_dataset(self, name: str) -> SearchSpace:
        """This space with the accuracies (and input shape) of benchmark dataset ``name``.

        Raises:
            UsageError: for a space without benchmark datasets or an unknown name.
        """
        raise UsageError(f"the {self.name} space has no benchmark datasets; drop --dataset")

    def benchmark(self) -> Benchmark | None:
        """The table of trained accuracies of this space's archs, or None where it has none."""
        return None

    def counts(self, arch: Arch) -> Counts | None:
        """FLOPs (multiply-adds), parameters and weight bytes of ``arch`` in closed form, without
        building it (microseconds); None where the space has no closed form (the cost sources
        then count the built network)."""
        return None

    def peak_memory_bytes(self, arch: Arch) -> int | None:
        """Peak activation memory of ``arch`` (batch 1, float32, no operator workspace) from its
        operator graph's tensor lifetimes, without building it; None where the space has no
        closed form (the cost source then reads the exported ONNX graph)."""
        return None

    def lut_codec(self) -> BlockCodec:
        """How this space's networks split into latency-table blocks (see :mod:`hwnas.spaces._lut`).

        Raises:
            UsageError: for a space without latency-table blocks.
        """
        raise UsageError(f"space {self.name!r} has no latency-table blocks; use --latency-source measure")

    def supernet(self, *, num_classes: int, in_channels: int, resolution: int | None = None, width: float | None = None) -> torch.nn.Module:
        """The DARTS supernet of this space (a :class:`hwnas.darts.supernet.Supernet`) for data of
        ``in_channels`` channels and ``num_classes`` classes; ``resolution`` and ``width`` fix those
        dimensions where the space searches them (None: their smallest choice).

        Raises:
            UsageError: for a space without a supernet.
        """
        raise UsageError(f"no supernet for space {self.name!r}; differentiable search supports {_offering('supernet')}")

    def elastic_supernet(self, *, kernel_transform: bool = True) -> torch.nn.Module:
        """The Once-for-All supernet of this space: one network that runs every arch as a subnet.

        Raises:
            UsageError: for a space without one.
        """
        raise UsageError(f"space {self.name!r} has no elastic supernet; spaces with one: {_offering('elastic_supernet')}")

    def offers(self, hook: str) -> bool:
        """Whether this space implements the optional hook ``hook`` (one of :data:`OPTIONAL_HOOKS`)
        instead of refusing it: a cheap check before anything is built."""
        if hook not in OPTIONAL_HOOKS:
            raise ValueError(f"hook must be one of {OPTIONAL_HOOKS}, got {hook!r}")
        return getattr(type(self), hook) is not getattr(SearchSpace, hook)


#: The hooks a space may leave to the refusing defaults (see :meth:`SearchSpace.offers`).
OPTIONAL_HOOKS = ("lut_codec", "supernet", "elastic_supernet", "with_dataset")


def _offering(hook: str) -> str:
    """The registered spaces that implement ``hook``, for the messages of those that do not."""
    from hwnas.spaces import SPACES

    names = [name for name in SPACES.names() if SPACES.get(name).offers(hook)]
    return " and ".join(names) or "no registered space"


def _is_choice(value: Any, choices: tuple[Choice, ...]) -> bool:
    if isinstance(value, bool):
        return False
    for c in choices:
        if isinstance(c, str):
            if value == c:
                return True
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == c:
            return True
    return False


def _as_choice(value: Any, choices: tuple[Choice, ...]) -> Choice:
    """Return the element of ``choices`` equal to ``value`` (so 1 becomes 1.0 where 1.0 is listed)."""
    for c in choices:
        if c == value and type(c) is not bool:
            return c
    raise ValueError(value)
