"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a 4-node DAG whose 6 edges each carry one of 5 ops; the network stacks
3 stages of 5 identical cells (C = 16, 32, 64) joined by residual reduction blocks.
Architectures are ``{"1<-0": op, "2<-0": op, ...}`` dicts; the official string form
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...~0|...~1|...~2|`` and the official
index join them to the benchmark tables shipped in ``hwnas/data``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.benchdata import NB201_EDGES, NB201_OPS, genotype_to_string, nb201_table, string_to_genotype
from hwnas.errors import UsageError
from hwnas.spaces._base import Arch, Dimension, SearchSpace

if TYPE_CHECKING:
    import torch.nn

#: (channels, height, width) of the input and number of classes per benchmark dataset.
DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet16-120": ((3, 16, 16), 120),
}


class NB201Space(SearchSpace):
    """NAS-Bench-201: 5^6 = 15,625 cells, exactly the benchmark's ``infer.tiny`` network."""

    name = "nb201"
    description = "NAS-Bench-201 cell space (15,625 cells; benchmark accuracies and device latencies shipped)"

    def __init__(self, *, dataset: str = "cifar10", channels: int = 16, cells_per_stage: int = 5) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if cells_per_stage < 1:
            raise ValueError(f"cells_per_stage must be >= 1, got {cells_per_stage}")
        self.dataset = dataset
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self._dims = [Dimension(edge, NB201_OPS) for edge in NB201_EDGES]

    def dimensions(self) -> list[Dimension]:
        return list(self._dims)

    def to_string(self, arch: Arch) -> str:
        arch = self.validate(arch)
        return genotype_to_string([arch[e] for e in NB201_EDGES])

    def from_string(self, text: str) -> Arch:
        ops = string_to_genotype(text)
        return dict(zip(NB201_EDGES, ops, strict=True))

    def index(self, arch: Arch) -> int:
        """The official NAS-Bench-201 index of the arch."""
        return nb201_table().index(self.to_string(arch))

    def equivalence_key(self, arch: Arch) -> str:
        """NATS-Bench's isomorphism class: cells that differ only in dead or permuted paths compute
        the same function (6,466 classes among the 15,625 cells)."""
        table = nb201_table()
        return f"nb201-iso-{int(table.iso_class[self.index(arch)])}"

    def from_index(self, index: int) -> Arch:
        table = nb201_table()
        if not 0 <= index < table.n:
            raise UsageError(f"NAS-Bench-201 index {index} is out of range; valid: 0..{table.n - 1}")
        return self.from_string(table.arch_string(index))

    def smallest(self) -> Arch:
        # All-skip: every node is a copy of the input, no conv runs in any cell. (All-none
        # computes even less but its output is constant; skip is the cheapest real network.)
        return {e: "skip_connect" for e in NB201_EDGES}

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        return DATASETS[self.dataset][0]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset][1]

    def build(self, arch: Arch) -> torch.nn.Module:
        from hwnas.spaces._nb201_model import NB201Network

        arch = self.validate(arch)
        return NB201Network(
            [arch[e] for e in NB201_EDGES],
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            num_classes=self.num_classes,
        )


def parse_arch(space: SearchSpace, text: str) -> Arch:
    """Parse an arch given on the command line: the space's string form, or for nb201 an index."""
    text = text.strip()
    if isinstance(space, NB201Space) and text.isascii() and text.isdigit():
        return space.from_index(int(text))
    return space.validate(space.from_string(text))
