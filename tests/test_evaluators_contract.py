"""Contract tests of accuracy evaluators, run for every registered evaluator on every registered space.

Parametrised over ``EVALUATORS`` x ``SPACES`` (Optuna's ``optuna.testing`` style), so a newly
registered evaluator or space is held to the contract the moment it is registered: the factory
either refuses the space with a one-line :class:`UsageError`, or gives an evaluator whose
``name`` is its registry name, whose ``describe()`` is JSON, and whose ``evaluate(arch)`` is an
:class:`Accuracy` in [0, 100] with a source. Training evaluators run on a 100-image slice of the
shipped digits for one epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SUPERNET_OPTIONS, with_trained_supernet

from hwnas.errors import UsageError
from hwnas.evaluate import EVALUATORS, Accuracy, EvalContext, Evaluator, make_evaluator
from hwnas.spaces import SPACES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Options that make an evaluator cheap here (evaluators not listed get none).
CHEAP_OPTIONS: dict[str, dict[str, Any]] = {
    "train": {"epochs": 1, "batch": 64},
    "supernet": SUPERNET_OPTIONS,
}
#: Evaluators that train a whole supernet before their first answer (a few seconds here).
SLOW = {"supernet"}


def _pairs() -> list[Any]:
    return [
        pytest.param(e, s, id=f"{e}-{s}", marks=[pytest.mark.slow] if e in SLOW else []) for e in EVALUATORS.names() for s in SPACES.names()
    ]


def _make_or_refuse(evaluator: str, space: str, data: str, out_dir: Path | None = None, **options: Any) -> Evaluator | None:
    """The evaluator, or None where its factory refuses the space (checked to be one line)."""
    try:
        return make_evaluator(evaluator, SPACES.get(space), context=EvalContext(data=data, out_dir=out_dir), **options)
    except UsageError as exc:  # any other exception fails the test
        message = str(exc)
        assert message and "\n" not in message, f"a refusal is one line: {message!r}"
        return None


@pytest.mark.parametrize(("evaluator", "space_name"), _pairs())
def test_evaluator_refuses_the_space_or_evaluates_it(
    evaluator: str, space_name: str, tiny_data: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = None
    if evaluator == "supernet" and space_name == "mbconv":  # the session's supernet: trained once, not per test
        out = with_trained_supernet(request.getfixturevalue("trained_supernet"), tmp_path / "run")
    ev = _make_or_refuse(evaluator, space_name, tiny_data, out_dir=out, **CHEAP_OPTIONS.get(evaluator, {}))
    if ev is None:
        return
    assert ev.name == evaluator
    described = ev.describe()
    assert isinstance(described, dict) and described.get("evaluator") == evaluator
    json.dumps(described)  # recorded as a study attribute

    space = SPACES.get(space_name)
    arch = space.sample(np.random.default_rng(0))
    acc = ev.evaluate(arch)
    assert isinstance(acc, Accuracy)
    assert isinstance(acc.value, float) and math.isfinite(acc.value) and 0.0 <= acc.value <= 100.0, acc.value
    assert isinstance(acc.source, str) and acc.source.strip()
    json.dumps(acc.extras)  # recorded as trial attributes
    json.dumps(ev.describe())
    # The export asks every evaluator for the weights it scored: a network of the arch, or None.
    trained = ev.build_trained(arch)
    assert trained is None or (hasattr(trained, "model") and len(tuple(trained.input_shape)) == 3)


@pytest.mark.parametrize(("evaluator", "space_name"), _pairs())
def test_unknown_options_are_refused_in_one_line(evaluator: str, space_name: str, tiny_data: str) -> None:
    options = {**CHEAP_OPTIONS.get(evaluator, {}), "not_an_option": 1}
    with pytest.raises(UsageError) as info:
        make_evaluator(evaluator, SPACES.get(space_name), context=EvalContext(data=tiny_data), **options)
    message = str(info.value)
    assert "\n" not in message
    if _make_or_refuse(evaluator, space_name, tiny_data, **CHEAP_OPTIONS.get(evaluator, {})) is not None:
        assert "not_an_option" in message or "--not-an-option" in message, message
