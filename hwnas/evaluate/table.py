"""The ``table`` evaluator: accuracies looked up in the space's benchmark table.

A space with a benchmark (:meth:`~hwnas.spaces.SearchSpace.benchmark`; NAS-Bench-201 for nb201)
gives every architecture's accuracies, trained once by the benchmark's authors. The search signal
is the benchmark's validation accuracy where it has one, else its test accuracy (the source says
which); the test accuracy is reported beside it, never searched on.
"""

from __future__ import annotations

from typing import Any

from hwnas.errors import UsageError
from hwnas.evaluate import Accuracy, EvalContext
from hwnas.spaces import SPACES, Arch, Benchmark, SearchSpace


class TableEvaluator:
    """Benchmark lookup (NAS-Bench-201: Dong & Yang, ICLR 2020; NATS-Bench, TPAMI 2021)."""

    name = "table"

    def __init__(self, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> None:
        benchmark = space.benchmark()
        if benchmark is None:
            with_table = " and ".join(n for n in SPACES.names() if SPACES.get(n).benchmark() is not None) or "no registered space"
            elastic = " and ".join(n for n in SPACES.names() if SPACES.get(n).offers("elastic_supernet"))
            supernet = f" or, for {elastic}, --evaluator supernet (weight sharing)" if elastic else ""
            raise UsageError(
                f"evaluator 'table' has benchmark accuracies for space {with_table} only, not {space.name!r}; "
                f"use --evaluator train (trains each candidate on --data){supernet}"
            )
        if options:
            raise UsageError(f"evaluator 'table' takes no training options, got {sorted(options)}; drop them or use --evaluator train")
        self.space = space
        self.benchmark: Benchmark = benchmark
        self.dataset = benchmark.dataset

    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        b = self.benchmark
        acc = b.accuracy(arch)
        return Accuracy(
            value=acc.value,
            source=f"table: {b.name} {b.signal}, {b.epochs} epochs",
            extras={
                "test_accuracy": acc.test_value,
                "test_source": f"table: {b.name} {b.test_metric}, {b.epochs} epochs",
                b.index_key: acc.index,
            },
        )

    def build_trained(self, arch: Arch) -> None:
        """None: it keeps no trained weights (the export's weights are untrained)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"evaluator": self.name, "dataset": self.dataset, "signal": self.benchmark.signal}
