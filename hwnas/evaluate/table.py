"""The ``table`` evaluator: NAS-Bench-201 accuracies after 200 epochs, looked up by arch index.

The search signal is the validation accuracy where the benchmark has one (CIFAR-10:
``cifar10-valid`` split, trained on 25k images and validated on the other 25k); the test
accuracy (trained on all 50k, tested on the 10k test set) is reported beside it, never
searched on. CIFAR-100 and ImageNet16-120 ship test accuracies only, so there the signal is
the test accuracy and the source says so.
"""

from __future__ import annotations

from typing import Any

from hwnas.benchdata import nb201_table
from hwnas.errors import UsageError
from hwnas.evaluate import Accuracy, EvalContext
from hwnas.spaces import Arch, SearchSpace

#: dataset -> (signal metric, signal description, report metric)
_METRICS = {
    "cifar10": ("cifar10-valid/valid", "validation accuracy, cifar10-valid split", "cifar10/test"),
    "cifar100": ("cifar100/test", "test accuracy (no validation split shipped)", "cifar100/test"),
    "imagenet16-120": ("imagenet16-120/test", "test accuracy (no validation split shipped)", "imagenet16-120/test"),
}


class TableEvaluator:
    """NAS-Bench-201 benchmark lookup (Dong & Yang, ICLR 2020; NATS-Bench, TPAMI 2021)."""

    name = "table"

    def __init__(self, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> None:
        if space.name != "nb201":
            raise UsageError(
                f"evaluator 'table' has benchmark accuracies for space nb201 only, not {space.name!r}; "
                "use --evaluator train (trains each candidate on --data) or, for mbconv, --evaluator supernet (weight sharing)"
            )
        if options:
            raise UsageError(f"evaluator 'table' takes no training options, got {sorted(options)}; drop them or use --evaluator train")
        self.space = space
        self.dataset: str = getattr(space, "dataset", "cifar10")
        signal, self._signal_text, report = _METRICS[self.dataset]
        table = nb201_table()
        self._signal = table.metric(signal)
        self._report = table.metric(report)
        self._report_name = report

    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        index = self.space.index(arch)  # type: ignore[attr-defined]
        return Accuracy(
            value=float(self._signal[index]),
            source=f"table: NAS-Bench-201 {self._signal_text}, 200 epochs",
            extras={
                "test_accuracy": float(self._report[index]),
                "test_source": f"table: NAS-Bench-201 {self._report_name}, 200 epochs",
                "nb201_index": index,
            },
        )

    def describe(self) -> dict[str, Any]:
        return {"evaluator": self.name, "dataset": self.dataset, "signal": self._signal_text}
