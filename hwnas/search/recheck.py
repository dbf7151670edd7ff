"""The final Pareto set re-measured on the device: predicted against measured, and the best
chosen by what the device measures.

A search ranks candidates by the latency it predicted (a lookup table) or measured once (live,
subject to noise and drift). The few networks it hands to the user are worth measuring again:
re-checking the predictions of the selected architectures measurably improves results (Laube
et al., 2022). Each front network is exported and timed once more on the device; the report
shows its predicted and re-measured latency, and when the most accurate network misses the
latency budget on re-measurement, the best becomes the most accurate one that meets it.

Re-measurements are stored in the study (user attributes ``hwnas.recheck.<trial>``), so a
resumed search or another worker reuses them and every worker reports the same numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas import trials as T
from hwnas.cost.latency import LATENCY_METRIC
from hwnas.errors import HwnasError
from hwnas.trials import TrialRecord

if TYPE_CHECKING:
    import optuna

    from hwnas.search.config import Plan

#: Study user attribute prefix of one re-measurement (followed by the trial number).
PREFIX = "hwnas.recheck."


def recheck(
    plan: Plan, study: optuna.Study, front: list[TrialRecord], *, log: Callable[[str], None], measure: bool = True
) -> dict[str, Any]:
    """Re-measure ``front`` on the plan's device (``measure=False``: only what the study holds).

    Returns the report's ``recheck`` section; its ``best`` is the most accurate front network
    whose re-measured latency meets the latency budget (None when the device measures nothing,
    when nothing was re-measured, or when no front network meets the budget on re-measurement).
    """
    from hwnas.cost.source import device_kind

    device = plan.device
    kind = device_kind(device.kind)
    members = [r for r in front if r.cost(LATENCY_METRIC) is not None]
    if kind.measure is None:
        return {
            "done": False,
            "why": f"{device.name} is a table device: its latencies are the benchmark's own measurements, and no device here can time them",
            "best": None,
        }
    if not members:
        return {"done": False, "why": "no front network has a latency on the device", "best": None}
    stored = study.user_attrs
    todo = [r for r in members if f"{PREFIX}{r.number}" not in stored]
    if todo and measure:
        log(f"re-measuring the {len(todo)} network(s) of the front on {device.name} (predicted against measured)")
        for r in todo:
            study.set_user_attr(f"{PREFIX}{r.number}", _measure(plan, r))
        stored = study.user_attrs
    limit = next((k.limit for k in plan.constraints if k.metric == LATENCY_METRIC), None)
    rows: list[dict[str, Any]] = []
    for r in members:
        got = stored.get(f"{PREFIX}{r.number}")
        predicted = float(r.cost(LATENCY_METRIC))  # type: ignore[arg-type]
        row: dict[str, Any] = {
            "trial": r.number,
            "arch": r.arch,
            "accuracy": r.accuracy,
            "predicted_ms": predicted,
            "predicted_source": r.source(LATENCY_METRIC),
            "measured_ms": None,
        }
        spread = (r.attrs.get(T.COST_DETAILS) or {}).get(LATENCY_METRIC) or {}
        if isinstance(spread, dict) and spread.get("iqr_ms") is not None:  # the search measured it: its own noise
            row |= {"predicted_p90_ms": spread.get("p90_ms"), "predicted_iqr_ms": spread.get("iqr_ms")}
        if isinstance(got, dict) and isinstance(got.get("median_ms"), (int, float)):
            measured = float(got["median_ms"])
            row |= {
                "measured_ms": measured,
                "measured_p90_ms": got.get("p90_ms"),
                "measured_iqr_ms": got.get("iqr_ms"),
                "measured_source": got.get("source"),
                "error_pct": round(100.0 * (predicted - measured) / measured, 2),
                "meets_budget": None if limit is None else measured <= limit,
            }
        elif isinstance(got, dict):
            row["not_measured_because"] = got.get("error")
        rows.append(row)
    return _section(plan, rows, limit)


def _measure(plan: Plan, r: TrialRecord) -> dict[str, Any]:
    """One front network exported (as during the search) and timed on the device; an error in words on failure."""
    from hwnas.cost.source import device_kind
    from hwnas.evaluate import EvaluationFailed

    space = plan.space
    try:
        arch = space.from_string(r.arch)
        shape = tuple(space.input_shape(arch))
        kind = device_kind(plan.device.kind)
        data = kind.prepare(plan.device, space.build(arch), shape)  # ONNX bytes, or the module for the torch kind
        m = kind.measure(plan.device, data, shape)  # type: ignore[misc]
    except (EvaluationFailed, HwnasError, OSError) as exc:
        return {"error": str(exc).splitlines()[0]}
    return {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms, "source": m.source}


def _section(plan: Plan, rows: list[dict[str, Any]], limit: float | None) -> dict[str, Any]:
    from hwnas.units import format_ms

    device = plan.device.name
    measured = [row for row in rows if row["measured_ms"] is not None]
    if not measured:
        why = next((row.get("not_measured_because") for row in rows if row.get("not_measured_because")), None)
        return {"done": False, "why": why or "not re-measured yet", "members": rows, "best": None}
    errors = [abs(row["error_pct"]) for row in measured]
    over = [row for row in measured if row["meets_budget"] is False]
    meeting = [row for row in measured if row["meets_budget"] is not False and row["accuracy"] is not None]
    # The search's best (the most accurate front network) unless the device's re-measurement puts
    # it over the budget; then the most accurate one the re-measurement confirms.
    top = max((row for row in rows if row["accuracy"] is not None), key=lambda row: (row["accuracy"], -row["predicted_ms"]), default=None)
    best: dict[str, Any] | None
    if top is not None and top.get("meets_budget") is not False:
        best = top
    else:
        best = max(meeting, key=lambda row: (row["accuracy"], -row["measured_ms"])) if meeting else None
    source = measured[0]["predicted_source"] or "search"
    text = (
        f"front re-measured on {device}: {len(measured)} network(s), {source} against re-measured latency: median |error| "
        f"{statistics.median(errors):.1f} % (max {max(errors):.1f} %)"
    )
    if limit is not None:
        if not over:
            text += f"; all meet {format_ms(limit)} when re-measured"
        else:
            text += f"; {len(over)} miss {format_ms(limit)} when re-measured (trial {', '.join(str(row['trial']) for row in over)})"
    changed = best is not None and top is not None and best["trial"] != top["trial"]
    if changed:
        assert best is not None and top is not None
        text += (
            f"; the most accurate, trial {top['trial']}, takes {top['measured_ms']:.4g} ms re-measured, so the best is "
            f"trial {best['trial']} ({best['accuracy']:.2f} %, {best['measured_ms']:.4g} ms re-measured)"
        )
    elif best is None and over:
        text += "; no front network meets the budget when re-measured: the best is the search's, flagged"
    return {
        "done": True,
        "device": device,
        "n": len(measured),
        "median_abs_error_pct": round(statistics.median(errors), 2),
        "max_abs_error_pct": round(max(errors), 2),
        "over_budget_when_measured": [row["trial"] for row in over],
        "best": best["trial"] if best else None,
        "best_changed_from": top["trial"] if changed and top else None,
        "members": rows,
        "message": text,
    }


__all__ = ["PREFIX", "recheck"]
