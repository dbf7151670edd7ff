"""A test-only accuracy evaluator, ``test-table``: NAS-Bench-201's table accuracies, except that
the trial numbered ``$HWNAS_TEST_HANG_AT`` (when set) first leaves a marker file in the run folder
and then takes two minutes, as a long training run would, so that a test can kill the search in
the middle of that trial.

Run hwnas with it registered: ``python tests/slow_evaluator.py search --evaluator test-table ...``;
importing the module registers it in the current process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hwnas.evaluate import EVALUATORS, Accuracy, EvalContext
from hwnas.evaluate.table import TableEvaluator
from hwnas.spaces import Arch, SearchSpace

NAME = "test-table"
HANG_S = 120.0


def marker(out_dir: Any, number: int) -> Any:
    """The file that says trial ``number`` has started its (long) evaluation."""
    return out_dir / f"evaluating-trial-{number}"


class HangingTableEvaluator(TableEvaluator):
    name = NAME

    def __init__(self, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> None:
        super().__init__(space, context=context, **options)
        self.out_dir = context.out_dir if context is not None else None
        hang = os.environ.get("HWNAS_TEST_HANG_AT")
        self.hang_at = int(hang) if hang else None

    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        if trial is not None and trial.number == self.hang_at and self.out_dir is not None:
            marker(self.out_dir, trial.number).write_text(str(os.getpid()))
            time.sleep(HANG_S)
        return super().evaluate(arch, trial)


if NAME not in EVALUATORS:
    EVALUATORS.add(NAME, HangingTableEvaluator)

if __name__ == "__main__":
    from hwnas.cli import run

    run()
