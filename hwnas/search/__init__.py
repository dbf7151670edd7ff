"""``hwnas search``: the accuracy/cost Pareto front of a space under budgets, as one Optuna study.

Data flow per trial: the strategy's sampler proposes an arch -> its costs from every registered
cost source (latency measured or looked up, FLOPs, parameters, memory, size) -> over any budget:
recorded infeasible, no accuracy spent -> else the evaluator's accuracy -> the trial is stored
with every number's source. After the trials: the feasible Pareto front, the best feasible arch
exported to verified ONNX, a report.

Modules, in the order of that flow: :mod:`.config` (the one validator), :mod:`.objectives`,
:mod:`.rundir`, :mod:`.study`, :mod:`.pipeline`, :mod:`.coordinate`, :mod:`.results`, :mod:`.run`.
"""

from hwnas.search.config import IDENTITY_KEYS, Plan, SearchConfig, build_space, check_strategy, resolve, strategy_names
from hwnas.search.coordinate import COUNTED_STATES
from hwnas.search.pipeline import BudgetFilled
from hwnas.search.run import Search
from hwnas.trials import TrialRecord

__all__ = [
    "COUNTED_STATES",
    "IDENTITY_KEYS",
    "BudgetFilled",
    "Plan",
    "Search",
    "SearchConfig",
    "TrialRecord",
    "build_space",
    "check_strategy",
    "resolve",
    "strategy_names",
]
