"""Drift of the measuring device during a search: one fixed reference network, re-measured.

A device that measures live can change under a search: a Raspberry Pi throttles its clock when
hot, a laptop changes speed with its power source, another job takes a share of the CPU. Then
latencies measured early and late are not comparable, and nothing in the trials says so. The
search therefore times one fixed network (the space's latency-table reference, else its
smallest network) at the start, every ``every`` trials and at the end, on every unit that
measures (each agent of a farm on its own: separate devices drift separately), and the report
says how far it moved. Checks are stored in the study (user attributes ``hwnas.reference.<trials
done>``), so a resumed or distributed search adds to one series and every worker reports it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas.errors import HwnasError, UsageError
from hwnas.storage import this_worker

if TYPE_CHECKING:
    import optuna

    from hwnas.search.config import Plan
    from hwnas.spaces import Arch, SearchSpace

#: Study user attribute prefix of one check (followed by the trials done, zero-padded).
PREFIX = "hwnas.reference."
#: About this many checks over a search's budget (start and end included): each costs one
#: measurement per agent, about 5 % of a 100-trial search's measurements.
CHECKS = 5
#: The fewest trials between two checks.
MIN_EVERY = 20
#: The most timed runs of one check (the device's own repeats where fewer).
REPEATS = 100
#: A move of the reference's median beyond this (percent of the first check) is reported as drift.
#: Medians of one network on this 2-core VM stay within about +-5 % over minutes when it is quiet.
TOLERANCE_PCT = 10.0


def reference_arch(space: SearchSpace) -> Arch:
    """The space's latency-table reference network (mid-sized, fixed), else its smallest."""
    try:
        return space.lut_codec().reference_arch()
    except UsageError:
        return space.smallest()


class ReferenceMonitor:
    """Measures the reference network at checkpoints of the study's trial count.

    Inactive (every method a no-op) for a device that measures nothing (a benchmark table).
    """

    def __init__(self, plan: Plan, *, log: Callable[[str], None]) -> None:
        from hwnas.cost.source import device_kind

        self.plan = plan
        self.log = log
        self.device = plan.device
        kind = device_kind(self.device.kind)
        self.active = kind.measure is not None or kind.measure_each is not None
        budget = int(plan.config.trials or 0)
        self.every = max(MIN_EVERY, math.ceil(budget / (CHECKS - 1))) if budget else MIN_EVERY
        self.arch = reference_arch(plan.space)
        self._onnx: Any = None  # what the device's kind times (ONNX bytes, or a module)
        self._tried: set[int] = set()
        self._failed_once = False

    def checkpoint(self, study: optuna.Study, done: int, *, final: bool = False) -> None:
        """Measure the reference when ``done`` trials reached a checkpoint no one has checked yet
        (``final``: the search's end, whatever the count)."""
        if not self.active:
            return
        mark = done if final else (done // self.every) * self.every
        if mark in self._tried or _key(mark) in study.user_attrs:
            return
        self._tried.add(mark)
        # Claimed before measuring, so another worker reaching the same checkpoint meanwhile
        # does not measure it too (a claim whose measurement fails stays, without numbers).
        w = this_worker()
        study.set_user_attr(_key(mark), {"trials_done": mark, "by": f"{w['host']}:{w['pid']}", "on": {}, "claimed": True})
        record = self._measure(mark)
        if record is None:
            return
        study.set_user_attr(_key(mark), record)
        found = checks(study)
        for unit, m in record["on"].items():
            first = next((c for c in found if isinstance(c["on"].get(unit), dict)), None)
            if not isinstance(m, dict) or first is None or first["trials_done"] == mark:
                continue
            base = first["on"][unit]
            pct = 100.0 * (m["median_ms"] / base["median_ms"] - 1.0)
            if abs(pct) > TOLERANCE_PCT:
                self.log(
                    f"warning: the reference network now takes {m['median_ms']:.4g} ms on {_unit(unit, self.device.name)}, "
                    f"{pct:+.0f} % against {base['median_ms']:.4g} ms at trial {first['trials_done']}: the device drifted "
                    "(thermal throttling, another load); latencies measured now and then differ by that much"
                )

    def _measure(self, mark: int) -> dict[str, Any] | None:
        from hwnas.cost.source import device_kind, measure_each
        from hwnas.evaluate import EvaluationFailed

        space = self.plan.space
        shape = tuple(space.input_shape(self.arch))
        # A stable median is all a drift check needs: at most REPEATS timed runs, whatever the
        # trials take (a device measured with thousands of runs would spend seconds per check).
        device = dataclasses.replace(self.device, settings={**self.device.settings, "repeats": min(self.device.repeats, REPEATS)})
        try:
            if self._onnx is None:
                # What the device's kind times: ONNX bytes, or the module itself for the torch kind.
                self._onnx = device_kind(device.kind).prepare(device, space.build(self.arch), shape)
            on = measure_each(device, self._onnx, shape)
        except (EvaluationFailed, HwnasError, OSError) as exc:
            # The check informs; it never stops a search (the trials' own measurements fail loudly).
            if not self._failed_once:
                self.log(f"note: the reference network could not be measured at trial {mark}: {str(exc).splitlines()[0]}")
                self._failed_once = True
            return None
        w = this_worker()
        return {
            "trials_done": mark,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "by": f"{w['host']}:{w['pid']}",
            "arch": space.to_string(self.arch),
            "every": self.every,
            "repeats": device.repeats,
            "on": on,
        }


def _key(mark: int) -> str:
    return f"{PREFIX}{mark:07d}"


def checks(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's reference checks, by trials done."""
    attrs = study.user_attrs
    return [attrs[k] for k in sorted(k for k in attrs if k.startswith(PREFIX)) if isinstance(attrs[k], dict)]


def _unit(unit: str, device: str) -> str:
    return device if unit == "local" else f"agent {unit}"


def conditions(d: dict[str, Any]) -> list[str]:
    """A device's load, clock and temperature in words, those it reported (agent fingerprints,
    reference checks): e.g. ``["load 0.08", "1500 MHz", "61.3 °C"]``."""
    parts = []
    if d.get("load_1m") is not None:
        parts.append(f"load {d['load_1m']:g}")
    if d.get("cpu_mhz") is not None:
        parts.append(f"{d['cpu_mhz']:g} MHz")
    if d.get("temperature_c") is not None:
        parts.append(f"{d['temperature_c']:g} °C")
    return parts


def _state(point: dict[str, Any], when: str) -> str:
    """The device's conditions at one check, in words ("" where none is known)."""
    parts = conditions(point)
    return f"{', '.join(parts)} {when}" if parts else ""


def summary(study: optuna.Study, device: str) -> dict[str, Any] | None:
    """The report's ``reference`` section: per measuring unit the first, last, least and most
    median, the largest move from the first, and one line saying whether the device drifted.
    None when the search made no check (a table device)."""
    found = checks(study)
    if not found:
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for c in found:
        for unit, m in c["on"].items():
            if isinstance(m, dict) and isinstance(m.get("median_ms"), (int, float)):
                point = {"trials_done": int(c["trials_done"]), "median_ms": float(m["median_ms"])}
                series.setdefault(unit, []).append(point | {k: m.get(k) for k in ("cpu_mhz", "temperature_c", "load_1m")})
    units: dict[str, Any] = {}
    for unit, points in series.items():
        values = [p["median_ms"] for p in points]
        first, last = values[0], values[-1]
        devs = [100.0 * (v / first - 1.0) for v in values]
        worst = max(range(len(devs)), key=lambda i: abs(devs[i]))
        units[unit] = {
            "checks": len(points),
            "first_ms": first,
            "last_ms": last,
            "min_ms": min(values),
            "max_ms": max(values),
            "drift_pct": round(100.0 * (last / first - 1.0), 2),
            "max_move_pct": round(devs[worst], 2),
            "max_move_at_trial": points[worst]["trials_done"],
            "series": points,
        }
    drifted = {u: d for u, d in units.items() if abs(d["max_move_pct"]) > TOLERANCE_PCT}
    arch = found[0].get("arch")
    if not units:
        message = f"the reference network could not be measured on {device} ({len(found)} attempt(s))"
    elif drifted:
        unit, d = max(drifted.items(), key=lambda kv: abs(kv[1]["max_move_pct"]))
        a, b = d["series"][0], next(p for p in d["series"] if p["trials_done"] == d["max_move_at_trial"])
        state = "; ".join(x for x in (_state(a, "at the start"), _state(b, f"at trial {b['trials_done']}")) if x)
        message = (
            f"warning: {device} drifted during the search: the reference network took {a['median_ms']:.4g} ms at the start and "
            f"{b['median_ms']:.4g} ms at trial {b['trials_done']} ({d['max_move_pct']:+.0f} %) on {_unit(unit, device)}"
            f"{f' ({state})' if state else ''}; thermal throttling or another load: latencies measured at different times "
            "differ by that much"
        )
    else:
        n = sum(d["checks"] for d in units.values())
        worst = max(abs(d["max_move_pct"]) for d in units.values())
        lo = min(d["min_ms"] for d in units.values())
        hi = max(d["max_ms"] for d in units.values())
        where = device if list(units) == ["local"] else f"{len(units)} agent(s) of {device}"
        message = (
            f"no drift: the reference network, measured {n} times on {where}, stayed within {worst:.1f} % of its first "
            f"measurement ({lo:.4g}-{hi:.4g} ms; tolerance {TOLERANCE_PCT:g} %)"
        )
    return {
        "arch": arch,
        "every_trials": found[-1].get("every"),
        "tolerance_pct": TOLERANCE_PCT,
        "drifted": bool(drifted),
        "units": units,
        "message": message,
    }


__all__ = ["CHECKS", "PREFIX", "TOLERANCE_PCT", "ReferenceMonitor", "checks", "conditions", "reference_arch", "summary"]
