"""Benchmark tables of trained accuracies, as a space offers them.

A space with a tabular benchmark (NAS-Bench-201) returns a :class:`Benchmark` from
:meth:`~hwnas.spaces.SearchSpace.benchmark`: every architecture's index in the table and its
accuracies, trained once by the benchmark's authors. The ``table`` evaluator reads accuracies
through it and so works for any space that has one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch


@dataclass(frozen=True)
class BenchmarkAccuracy:
    """One architecture's entry in a benchmark table (accuracies in percent)."""

    #: Row of the architecture in the benchmark.
    index: int
    #: The search signal: a validation accuracy where the benchmark has one, else its test accuracy.
    value: float
    #: The test accuracy, reported beside the signal and never searched on.
    test_value: float


class Benchmark(ABC):
    """A table of trained accuracies for every architecture of one space and dataset.

    Attributes:
        name: the benchmark, e.g. ``NAS-Bench-201``.
        dataset: the dataset its accuracies were measured on.
        epochs: training epochs behind each accuracy.
        signal: what :attr:`BenchmarkAccuracy.value` is, in words.
        test_metric: what :attr:`BenchmarkAccuracy.test_value` is (the benchmark's metric name).
        index_key: the name an architecture's :attr:`BenchmarkAccuracy.index` is recorded under.
    """

    name: str
    dataset: str
    epochs: int
    signal: str
    test_metric: str
    index_key: str

    @abstractmethod
    def index(self, arch: Arch) -> int:
        """The benchmark's row of ``arch`` (UsageError for an arch of another space)."""

    @abstractmethod
    def arch(self, index: int) -> Arch:
        """The architecture of the benchmark's row ``index`` (UsageError when out of range)."""

    @abstractmethod
    def accuracy(self, arch: Arch) -> BenchmarkAccuracy:
        """The benchmark's accuracies of ``arch``."""
