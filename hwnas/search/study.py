"""The run's Optuna study: created with the objectives' directions and names, or resumed when
its identity (the settings that make trials comparable) matches."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from hwnas.search.config import Plan
from hwnas.search.rundir import check_identity

if TYPE_CHECKING:
    import optuna

#: Study user attributes: the run's identity, and the evaluator's resolved settings.
IDENTITY_ATTR = "hwnas"
EVALUATOR_ATTR = "hwnas_evaluator"


def open_study(plan: Plan) -> optuna.Study:
    """Create or resume the study of ``plan`` (UsageError when it holds other settings)."""
    import optuna

    from hwnas.storage import open_storage

    c = plan.config
    # ERROR: a failed trial is logged by hwnas in one line with its reason (failed_because);
    # Optuna's own warning would add its traceback for every one.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(c.storage)
    directions = [o.direction for o in plan.objectives]
    study = optuna.create_study(storage=storage, study_name=c.study, directions=directions, load_if_exists=True)
    ident = c.identity()
    old = study.user_attrs.get(IDENTITY_ATTR)
    if old is None:
        study.set_user_attr(IDENTITY_ATTR, ident)
        if plan.evaluator is not None:
            # The evaluator's resolved settings (defaults included) and where its accuracies come from.
            study.set_user_attr(EVALUATOR_ATTR, plan.evaluator.describe())
    else:
        check_identity(old, ident, where=f"study {c.study!r}", fix="use another --study (or another --storage)")
    # The objectives' names, which Optuna's clients show (optuna-dashboard, the plots): set on a
    # study created by an hwnas that did not name them too.
    names = [o.metric for o in plan.objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable in use since Optuna 3.2
            study.set_metric_names(names)
    return study
