"""Whether the measurements of one network agree: the search's, the re-check's and the export's.

A device that measures live times the best network up to three times: in its trial, when the
front is re-checked (:mod:`.recheck`) and after the export. Each figure is a median of timed
runs with its own spread (its p90 and interquartile range). Where the medians differ by more
than that spread allows, the difference is no noise: a summary that printed one of them as the
network's latency, or said "no drift", would state noise as fact. The report then warns, names
the figures with their spread, and says which figure the latency budget was judged on. The same
holds for the front as a whole: a re-check whose figures differ from the search's by more than
noise allows says that the search compared networks on figures the device does not reproduce.

Pure functions of the report's dicts (stdlib only): :func:`attach` runs after the report is
made and again after the export adds its measurement.
"""

from __future__ import annotations

from typing import Any

#: Medians of one network within this many percent (of the smaller) agree whatever their IQRs
#: say: on this 2-core VM medians of one network move by about +-5 % over minutes when it is
#: quiet (the drift check's tolerance, :data:`hwnas.search.reference.TOLERANCE_PCT`, is the same).
TOLERANCE_PCT = 10.0
#: A measurement whose p90 exceeds its median by this factor is itself too noisy to state as a
#: figure (a quarter of its timed runs or more were disturbed).
NOISY_P90_RATIO = 1.5
#: How the report names the three figures, in the order they were taken.
WHAT = {"searched": "searched", "rechecked": "re-checked", "export": "re-measured at export"}
#: The rule that decides which figure the budget is judged on (see :mod:`.recheck`).
RULE = "the best gives way to the most accurate front network that meets the budget when re-measured"


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The best network's measured latencies: ``what`` (searched, rechecked, export), the
    median, p90 and IQR in ms. A figure without a spread (a benchmark table's, a lookup table's
    prediction) is no measurement and is left out."""
    best = report.get("best") or {}
    out: list[dict[str, Any]] = []
    if best.get("latency_p90_ms") is not None:
        out.append(_figure("searched", best.get("latency_ms"), best.get("latency_p90_ms"), best.get("latency_iqr_ms")))
    row = next((m for m in (report.get("recheck") or {}).get("members") or [] if m.get("trial") == best.get("trial")), None)
    if row is not None and row.get("measured_ms") is not None:
        out.append(_figure("rechecked", row["measured_ms"], row.get("measured_p90_ms"), row.get("measured_iqr_ms")))
    m = (report.get("export") or {}).get("measurement")
    if isinstance(m, dict) and m.get("median_ms") is not None:
        out.append(_figure("export", m["median_ms"], m.get("p90_ms"), m.get("iqr_ms")))
    return [f for f in out if f["median_ms"] is not None]


def _figure(what: str, median: Any, p90: Any, iqr: Any) -> dict[str, Any]:
    num = lambda v: float(v) if isinstance(v, (int, float)) else None  # noqa: E731
    return {"what": what, "median_ms": num(median), "p90_ms": num(p90), "iqr_ms": num(iqr)}


def allowance_ms(medians: list[float], iqrs: list[float]) -> float:
    """How far medians of one network may lie apart and still agree: the largest IQR among
    them, and at least :data:`TOLERANCE_PCT` of the smallest median."""
    return max([TOLERANCE_PCT / 100.0 * min(medians), *iqrs])


def check(report: dict[str, Any]) -> dict[str, Any] | None:
    """The report's ``latency_agreement`` section for the best network (None where fewer than
    two figures were measured and none is noisy): the figures, whether they disagree beyond
    their noise or one is too noisy to state, the figure the budget was judged on, and a
    warning line where either holds."""
    best = report.get("best")
    figs = figures(report)
    if best is None or not figs:
        return None
    medians = [f["median_ms"] for f in figs]
    spread = max(medians) - min(medians)
    allowed = allowance_ms(medians, [f["iqr_ms"] for f in figs if f["iqr_ms"] is not None])
    disagree = len(figs) > 1 and spread > allowed
    noisy = [f["what"] for f in figs if f["p90_ms"] is not None and f["p90_ms"] > NOISY_P90_RATIO * f["median_ms"]]
    if len(figs) < 2 and not noisy:
        return None
    judged = judged_on(report, figs)
    out: dict[str, Any] = {
        "trial": best["trial"],
        "arch": best["arch"],
        "figures": figs,
        "spread_ms": round(spread, 4),
        "allowed_ms": round(allowed, 4),
        "disagree": disagree,
        "noisy": noisy,
        "judged_on": judged["what"],
        "judged_on_ms": judged["ms"],
        "rule": RULE,
        "warning": None,
    }
    if disagree or noisy:
        each = "; ".join(_words(f) for f in figs)
        if disagree:
            why = f"differ by {spread:.3g} ms, more than their noise allows ({allowed:.3g} ms: the largest IQR, at least "
            why += f"{TOLERANCE_PCT:g} %)"
        else:
            why = "are too noisy to state as fact"
        if noisy:
            why += f"; {' and '.join(WHAT[w] for w in noisy)} is noisy (p90 over {NOISY_P90_RATIO:g}x its median)"
        out["warning"] = f"warning: trial {best['trial']}'s latency measurements {why}: {each}; {judged['words']}"
    return out


def _words(f: dict[str, Any]) -> str:
    spread = ", ".join(f"{k} {f[k + '_ms']:.3g}" for k in ("p90", "iqr") if f[k + "_ms"] is not None)
    return f"{WHAT[f['what']]} {f['median_ms']:.4g} ms" + (f" ({spread.replace('iqr', 'IQR')} ms)" if spread else "")


def judged_on(report: dict[str, Any], figs: list[dict[str, Any]]) -> dict[str, Any]:
    """Which figure decided that the best meets the latency budget, and the rule, in words."""
    budget = report.get("latency_budget_ms")
    at = f" against the {budget:g} ms budget" if isinstance(budget, (int, float)) else ""
    rechecked = next((f for f in figs if f["what"] == "rechecked"), None)
    best = report.get("best") or {}
    if rechecked is not None:
        flagged = best.get("meets_budget_when_remeasured") is False
        tail = (
            "; no front network met it when re-measured, so the best is the search's, flagged"
            if flagged
            else (f" (it replaced trial {best['chosen_over']}, which missed it)" if best.get("chosen_over") is not None else "")
        )
        return {
            "what": "rechecked",
            "ms": rechecked["median_ms"],
            "words": f"the budget was judged on the re-check's {rechecked['median_ms']:.4g} ms{at} ({RULE}){tail}; "
            "the export's figure is reported only",
        }
    ms = best.get("latency_ms")
    words = f"the budget was judged on the search's {ms:.4g} ms{at} (nothing re-checked it); the export's figure is reported only"
    return {"what": "searched", "ms": ms, "words": words}


def recheck_warning(recheck: dict[str, Any]) -> str | None:
    """A warning line where the re-check's figures differ from the search's beyond noise: by more
    than :data:`TOLERANCE_PCT` and more than the two measurements' IQRs together."""
    if not recheck.get("done"):
        return None
    off = []
    for row in recheck.get("members") or []:
        measured, predicted = row.get("measured_ms"), row.get("predicted_ms")
        if measured is None or predicted is None:
            continue
        iqrs = [v for v in (row.get("measured_iqr_ms"), row.get("predicted_iqr_ms")) if isinstance(v, (int, float))]
        if abs(predicted - measured) > max(TOLERANCE_PCT / 100.0 * measured, sum(iqrs)):
            off.append(row)
    if not off:
        return None
    worst = max(off, key=lambda row: abs(row["error_pct"]))
    n = len([row for row in recheck["members"] if row.get("measured_ms") is not None])
    return (
        f"warning: the front's re-measured latencies differ from the search's beyond noise (more than {TOLERANCE_PCT:g} % and the "
        f"measurements' IQRs): {len(off)} of {n} network(s), up to {worst['error_pct']:+.1f} % (trial {worst['trial']}: "
        f"{worst['predicted_ms']:.4g} ms in the search, {worst['measured_ms']:.4g} ms re-measured); the search compared networks on "
        f"figures this device does not reproduce now"
    )


def attach(report: dict[str, Any]) -> dict[str, Any]:
    """Set the report's ``latency_agreement`` section, the re-check's ``warning`` and the
    report's ``warnings`` (the lines the summary prints) from what the report holds now."""
    rc = report.get("recheck")
    if isinstance(rc, dict):
        rc["warning"] = recheck_warning(rc)
    agreement = check(report)
    report["latency_agreement"] = agreement
    lines = [rc["warning"]] if isinstance(rc, dict) and rc.get("warning") else []
    if agreement is not None and agreement["warning"]:
        lines.append(agreement["warning"])
    report["warnings"] = lines
    return report


__all__ = ["NOISY_P90_RATIO", "TOLERANCE_PCT", "attach", "check", "figures", "recheck_warning"]
