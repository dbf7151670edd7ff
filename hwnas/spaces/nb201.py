"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a 4-node DAG whose 6 edges each carry one of 5 ops; the network stacks
3 stages of 5 identical cells (C = 16, 32, 64) joined by residual reduction blocks.
Architectures are ``{"1<-0": op, "2<-0": op, ...}`` dicts; the official string form
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...~0|...~1|...~2|`` and the official
index join them to the benchmark tables shipped in ``hwnas/data``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from hwnas.benchdata import NB201_EDGES, NB201_OPS, genotype_to_string, nb201_table, string_to_genotype
from hwnas.errors import UsageError
from hwnas.spaces._base import Arch, Dimension, SearchSpace

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._benchmark import Benchmark
    from hwnas.spaces._counts import Counts
    from hwnas.spaces._lut import BlockCodec

#: (channels, height, width) of the input and number of classes per benchmark dataset.
DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet16-120": ((3, 16, 16), 120),
}


#: What the benchmark's trained networks expect of their input, per dataset: RGB in [0, 1]
#: normalised with these per-channel means and standard deviations (NAS-Bench-201's training
#: pipeline, Dong & Yang 2020), and the class names where the dataset has a short list.
INPUT_NORMALISATION: dict[str, dict[str, object]] = {
    "cifar10": {
        "mean": [125.3 / 255, 123.0 / 255, 113.9 / 255],
        "std": [63.0 / 255, 62.1 / 255, 66.7 / 255],
        "labels": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
    "cifar100": {"mean": [125.3 / 255, 123.0 / 255, 113.9 / 255], "std": [63.0 / 255, 62.1 / 255, 66.7 / 255], "labels": None},
    "imagenet16-120": {"mean": [122.68 / 255, 116.66 / 255, 104.01 / 255], "std": [63.22 / 255, 61.26 / 255, 65.09 / 255], "labels": None},
}

#: The cell's input-to-output routes, as edges in order (node 0 is the input, node 3 the output).
_ROUTES: tuple[tuple[str, ...], ...] = (("3<-0",), ("1<-0", "3<-1"), ("2<-0", "3<-2"), ("1<-0", "2<-1", "3<-2"))
#: Column of each sequence of operations a route can carry in the path encoding (4 + 16 + 64).
_PATH_COLUMNS: dict[tuple[str, ...], int] = {
    seq: i for i, seq in enumerate(s for n in (1, 2, 3) for s in itertools.product([op for op in NB201_OPS if op != "none"], repeat=n))
}

#: Checked (ops of the 6 edges) -> official index; at most 15,625 entries.
_INDEX: dict[tuple[str, ...], int] = {}


class NB201Space(SearchSpace):
    """NAS-Bench-201: 5^6 = 15,625 cells, exactly the benchmark's ``infer.tiny`` network.

    Args:
        dataset: the benchmark dataset: its accuracies, input shape and classes.
        channels: channels of the first stage (the benchmark's: 16).
        cells_per_stage: cells per stage (the benchmark's: 5).
        in_channels: image channels the network takes (None: the dataset's).
        num_classes: classifier outputs (None: the dataset's).
    """

    name = "nb201"
    description = "NAS-Bench-201 cell space (15,625 cells; benchmark accuracies and device latencies shipped)"
    benchmark_datasets = tuple(DATASETS)

    def __init__(
        self,
        *,
        dataset: str = "cifar10",
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int | None = None,
        num_classes: int | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if cells_per_stage < 1:
            raise ValueError(f"cells_per_stage must be >= 1, got {cells_per_stage}")
        for arg, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        self.dataset = dataset
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        (data_channels, _, _), data_classes = DATASETS[dataset]
        self.in_channels: int = data_channels if in_channels is None else in_channels
        self._num_classes: int = data_classes if num_classes is None else num_classes
        if image_size is not None:
            if len(image_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in image_size):
                raise ValueError(f"image_size must be (height, width), each an integer >= 1, got {image_size!r}")
            image_size = (int(image_size[0]), int(image_size[1]))
        #: (height, width) of the user's images the networks are built for (None: the dataset's).
        self.image_size: tuple[int, int] | None = image_size
        self._dims = [Dimension(edge, NB201_OPS) for edge in NB201_EDGES]

    def dimensions(self) -> list[Dimension]:
        return list(self._dims)

    def to_string(self, arch: Arch) -> str:
        arch = self.validate(arch)
        return genotype_to_string([arch[e] for e in NB201_EDGES])

    def degenerate(self, arch: Arch) -> str | None:
        """A cell with no path of operations from its input (node 0) to its output (node 3): every
        path has a ``none`` edge, so every cell outputs zeros and the network a constant (9.71 %
        on CIFAR-10, chance)."""
        arch = self.validate(arch)
        reached = {0}
        for edge in NB201_EDGES:  # ordered by target node, sources before targets
            to, frm = (int(n) for n in edge.split("<-"))
            if frm in reached and arch[edge] != "none":
                reached.add(to)
        if 3 in reached:
            return None
        return (
            "no path of operations from the cell's input to its output (each path has a 'none' edge): "
            "its output does not depend on the input"
        )

    def short(self, arch: Arch) -> str:
        """The cell's ops by node, e.g. ``3+s3+sp1`` (see :data:`SHORT_OPS`): node 1's edge,
        node 2's two edges, node 3's three."""
        arch = self.validate(arch)
        codes = [SHORT_OPS[arch[e]] for e in NB201_EDGES]
        return f"{codes[0]}+{''.join(codes[1:3])}+{''.join(codes[3:6])}"

    def from_string(self, text: str) -> Arch:
        ops = string_to_genotype(text)
        return dict(zip(NB201_EDGES, ops, strict=True))

    def index(self, arch: Arch) -> int:
        """The official NAS-Bench-201 index of the arch (base-5 digits of its ops, a lookup once
        checked: strategies and cost sources ask it many times per trial)."""
        try:
            ops = tuple(arch[e] for e in NB201_EDGES)
            hit = _INDEX.get(ops)
        except (KeyError, TypeError):
            hit = None
        if hit is None:
            hit = nb201_table().index(self.to_string(arch))
            if len(arch) == len(NB201_EDGES):
                _INDEX[tuple(arch[e] for e in NB201_EDGES)] = hit
        return hit

    def equivalence_key(self, arch: Arch) -> str:
        """NATS-Bench's isomorphism class: cells that differ only in dead or permuted paths compute
        the same function (6,466 classes among the 15,625 cells)."""
        table = nb201_table()
        return f"nb201-iso-{int(table.iso_class[self.index(arch)])}"

    def features(self, arch: Arch) -> np.ndarray:
        """The one-hot encoding, then the path encoding of White et al. (BANANAS, AAAI 2021): how
        many input-to-output paths of the cell carry each sequence of operations (``none`` cuts
        a path). Accuracy in this space follows the paths more than the edges: a ridge
        predictor on both, fitted on the ranks of the accuracies of 10 to 100 evaluated cells,
        orders a local search's neighbours better than one on the one-hot encoding alone: in a
        replay of the climbs on the benchmark table (``benchmarks/climb_order.py``: 2,000
        searches of 92 evaluations without a budget), 0.89 of the searches ended at the best
        cell with these features, 0.86 with the one-hot encoding and 0.82 in random order."""
        arch = self.canonical(arch)
        paths = np.zeros(len(_PATH_COLUMNS), dtype=np.float32)
        for route in _ROUTES:
            ops = tuple(arch[edge] for edge in route)
            if "none" not in ops:
                paths[_PATH_COLUMNS[ops]] += 1.0
        return np.concatenate([self.encode(arch), paths])

    def from_index(self, index: int) -> Arch:
        table = nb201_table()
        if not 0 <= index < table.n:
            raise UsageError(f"NAS-Bench-201 index {index} is out of range; valid: 0..{table.n - 1}")
        return self.from_string(table.arch_string(index))

    def smallest(self) -> Arch:
        # All-skip: every node is a copy of the input, no conv runs in any cell. (All-none
        # computes even less but its output is constant; skip is the cheapest real network.)
        return {e: "skip_connect" for e in NB201_EDGES}

    def counts(self, arch: Arch) -> Counts:
        from hwnas.spaces._nb201_counts import nb201_counts

        return nb201_counts(self, arch)  # validates the arch

    def peak_memory_bytes(self, arch: Arch) -> int:
        from hwnas.spaces._nb201_memory import nb201_peak_bytes

        return nb201_peak_bytes(self, arch)  # validates the arch

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        _, h, w = DATASETS[self.dataset][0]
        if self.image_size is not None:
            h, w = self.image_size
        return (self.in_channels, h, w)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def build(self, arch: Arch) -> torch.nn.Module:
        from hwnas.spaces._nb201_model import NB201Network

        arch = self.validate(arch)
        return NB201Network(
            [arch[e] for e in NB201_EDGES],
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        )

    # -- what the space offers ------------------------------------------------------
    def _variant(self, *, dataset: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | None = None) -> NB201Space:
        return NB201Space(
            dataset=dataset,
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
        )

    def for_data(self, *, in_channels: int, num_classes: int, image_size: tuple[int, int] | None = None) -> NB201Space:
        """The same cells for images of ``in_channels`` channels, ``image_size`` (height, width; None:
        the benchmark dataset's) and ``num_classes`` classes (the network is fully convolutional up to
        a global pool, so any image size runs): built, timed and exported at that shape."""
        size = self.image_size if image_size is None else tuple(image_size)
        if (in_channels, num_classes, size) == (self.in_channels, self.num_classes, self.image_size):
            return self
        return self._variant(dataset=self.dataset, in_channels=in_channels, num_classes=num_classes, image_size=size)  # type: ignore[arg-type]

    def with_dataset(self, name: str) -> NB201Space:
        """The space with the benchmark accuracies, input shape and classes of dataset ``name``."""
        if name not in DATASETS:
            raise UsageError(f"--dataset {name!r} is not a NAS-Bench-201 dataset; choices: {', '.join(DATASETS)}")
        if name == self.dataset:
            return self
        (channels, _, _), classes = DATASETS[name]
        return self._variant(dataset=name, in_channels=channels, num_classes=classes)

    def benchmark(self) -> Benchmark:
        from hwnas.spaces._nb201_benchmark import NB201Benchmark

        return NB201Benchmark(self)

    def lut_codec(self) -> BlockCodec:
        from hwnas.spaces._nb201_lut import NB201Codec

        return NB201Codec(self)

    def supernet(self, *, num_classes: int, in_channels: int, resolution: int | None = None, width: float | None = None) -> torch.nn.Module:
        """The DARTS supernet of the cell (every edge a softmax mix of the 5 ops); ``resolution`` and
        ``width`` are not dimensions of this space and are ignored."""
        from hwnas.darts.nb201_supernet import NB201Supernet

        return NB201Supernet(self, num_classes=num_classes, in_channels=in_channels)


#: One character per op in :meth:`NB201Space.short`.
SHORT_OPS = {"none": "-", "skip_connect": "s", "nor_conv_1x1": "1", "nor_conv_3x3": "3", "avg_pool_3x3": "p"}


def parse_arch(space: SearchSpace, text: str) -> Arch:
    """Parse an arch given on the command line: the space's string form, or for nb201 an index."""
    text = text.strip()
    if isinstance(space, NB201Space) and text.isascii() and text.isdigit():
        return space.from_index(int(text))
    return space.validate(space.from_string(text))
