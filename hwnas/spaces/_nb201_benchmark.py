"""NAS-Bench-201's accuracies after 200 epochs, looked up by arch index (Dong & Yang, ICLR 2020;
NATS-Bench, TPAMI 2021).

The search signal is the validation accuracy where the benchmark has one (CIFAR-10:
``cifar10-valid`` split, trained on 25k images and validated on the other 25k); the test
accuracy (trained on all 50k, tested on the 10k test set) is reported beside it, never searched
on. CIFAR-100 and ImageNet16-120 ship test accuracies only, so there the signal is the test
accuracy and its description says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.benchdata import nb201_table
from hwnas.spaces._benchmark import Benchmark, BenchmarkAccuracy

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch
    from hwnas.spaces.nb201 import NB201Space

#: dataset -> (signal metric, signal description, test metric)
METRICS = {
    "cifar10": ("cifar10-valid/valid", "validation accuracy, cifar10-valid split", "cifar10/test"),
    "cifar100": ("cifar100/test", "test accuracy (no validation split shipped)", "cifar100/test"),
    "imagenet16-120": ("imagenet16-120/test", "test accuracy (no validation split shipped)", "imagenet16-120/test"),
}


class NB201Benchmark(Benchmark):
    """The shipped NAS-Bench-201 table for the space's dataset."""

    name = "NAS-Bench-201"
    epochs = 200
    index_key = "nb201_index"

    def __init__(self, space: NB201Space) -> None:
        self.space = space
        self.dataset = space.dataset
        signal_metric, self.signal, self.test_metric = METRICS[self.dataset]
        table = nb201_table()
        self._signal = table.metric(signal_metric)
        self._test = table.metric(self.test_metric)

    def index(self, arch: Arch) -> int:
        return self.space.index(arch)

    def arch(self, index: int) -> Arch:
        return self.space.from_index(index)

    def accuracy(self, arch: Arch) -> BenchmarkAccuracy:
        i = self.index(arch)
        return BenchmarkAccuracy(index=i, value=float(self._signal[i]), test_value=float(self._test[i]))
