"""Results of a run: trial records -> the feasible front -> ``report.json``, ``front.csv``, ``best.onnx``.

Everything reads the plan's objectives and constraints: the front is non-dominated on the
study's objective values, the CSV has a column per cost metric, the report lists each budget
with the source of its metric, and the export's metadata names the objectives.
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas import trials as T
from hwnas.pareto import hypervolume_2d
from hwnas.search.config import Plan
from hwnas.search.rundir import folder_lock, write_json
from hwnas.trials import TrialRecord

if TYPE_CHECKING:
    import optuna

    from hwnas.search.export_worker import ExportWorker
    from hwnas.spaces import Arch

#: Per-trial figures the report copies from the evaluator's extras where present.
ACCURACY_EXTRAS = ("test_accuracy", "nb201_index")


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every completed trial of the study, and every reused one (told PRUNED, see
    :meth:`~hwnas.search.pipeline.TrialPipeline._reuse`), in trial order."""
    import optuna

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))
    done = [t for t in trials if t.state == State.COMPLETE or is_reused(t)]
    return [TrialRecord.of(t) for t in sorted(done, key=lambda t: t.number)]


def is_reused(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` repeats an earlier trial's network (and holds its numbers)."""
    record = trial.user_attrs.get(T.RECORD)
    return isinstance(record, dict) and T.REUSED_FROM in record and T.VALUES in record


def summary(plan: Plan, r: TrialRecord) -> dict[str, Any]:
    """One trial as the report, the CSV and the export metadata show it."""
    a = r.attrs
    details = (a.get(T.COST_DETAILS) or {}).get("latency_ms") or {}
    out: dict[str, Any] = {
        "trial": r.number,
        "arch": r.arch,
        "accuracy": r.accuracy,
        "accuracy_source": a.get(T.ACCURACY_SOURCE),
        "test_accuracy": a.get("test_accuracy"),
        "latency_ms": r.cost("latency_ms"),
        "latency_source": r.source("latency_ms"),
        "latency_p90_ms": details.get("p90_ms"),
        "latency_iqr_ms": details.get("iqr_ms"),
    }
    if a.get("accuracy_precision") is not None:  # a search at another precision than fp32: what the accuracy is
        out["accuracy_precision"] = a["accuracy_precision"]
        out["fp32_accuracy"] = a.get("fp32_accuracy")
        out["quantization_drop"] = a.get("quantization_drop")
    for ch in plan.charged:
        for m in ch.metrics():
            if m.name != "latency_ms" and ch.device is None:
                out[m.name] = r.cost(m.name)
    out["costs_source"] = {m: s for m, s in (a.get(T.COST_SOURCES) or {}).items() if m != "latency_ms"}
    also = {ch.device: r.cost(f"latency_ms@{ch.device}") for ch in plan.also()}
    out["latency_ms_also"] = also or None
    # Each further device's latency says where it came from, as the first device's does.
    out["latency_source_also"] = {d: r.source(f"latency_ms@{d}") for d in also} or None
    out["nb201_index"] = a.get("nb201_index")
    return out


def hypervolume(plan: Plan, recs: list[TrialRecord]) -> tuple[float, tuple[float, float]]:
    """Hypervolume of the feasible front on the study's two objectives, from the reference point
    (accuracy 0, the second objective's budget where it has one, else the largest value seen);
    networks whose output ignores their input add nothing."""
    import numpy as np

    metric = plan.objectives[1].metric
    limit = next((c.limit for c in plan.constraints if c.metric == metric), None)
    feas = [r for r in recs if r.feasible and not r.degenerate]
    ref_cost = limit if limit is not None else max((r.values[1] for r in recs), default=0.0)
    ref = (0.0, float(ref_cost))
    if not feas:
        return 0.0, ref
    return hypervolume_2d(np.array([r.values for r in feas], dtype=float), ref, plan.maximize()), ref


def report(plan: Plan, study: optuna.Study, *, log: Callable[[str], None] = lambda s: None, measure: bool = True) -> dict[str, Any]:
    """The report of the study as it stands (written to report.json by the caller).

    The front is re-measured on the device (:mod:`.recheck`; ``measure=False``: only what the
    study holds already), and the best is the most accurate front network the re-measurement
    confirms under the latency budget. The reference network's checks say whether the device
    drifted (:mod:`.reference`).
    """
    import optuna

    from hwnas.search import recheck as R
    from hwnas.search import reference

    c = plan.config
    recs = records(study)
    feas = [r for r in recs if r.feasible]
    front = T.front(recs, plan.maximize())
    best = T.best(recs)
    with folder_lock(plan.out, "recheck"):  # workers sharing --out measure each network once
        rechecked = R.recheck(plan, study, front, log=log, measure=measure)
    if best is not None and rechecked.get("best") is not None and rechecked["best"] != best.number:
        best = next(r for r in front if r.number == rechecked["best"])
    # A trial another worker's budget made superfluous ("not run") is no failure, and counting it
    # would make the workers' reports differ with their timing; so is one in flight whose slot is
    # past the budget (or that has no slot yet): it is about to be refused as "not run".
    states = [t.state for t in study.get_trials(deepcopy=False) if not _superfluous(t, int(c.trials or 0))]
    lat = [v for r in recs if (v := r.cost("latency_ms")) is not None and not r.degenerate]
    trials = {
        "budget": c.trials,
        "complete": len(recs),
        "feasible": len(feas),
        "infeasible": len(recs) - len(feas),
        "reused": sum(r.reused for r in recs),
        "degenerate": sum(r.degenerate and not r.reused for r in recs),
        "failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
        "running": sum(s == optuna.trial.TrialState.RUNNING for s in states),
        "min_latency_ms": min(lat, default=None),
    }
    drops = [float(d) for r in recs if not r.reused and isinstance(d := r.attrs.get("quantization_drop"), (int, float))]
    write_front(plan, front)
    best_d = summary(plan, best) if best else None
    if best_d is not None:
        row = next((m for m in rechecked.get("members", []) if m["trial"] == best_d["trial"]), None)
        if row is not None and row["measured_ms"] is not None:
            best_d["remeasured_latency_ms"] = row["measured_ms"]
            best_d["meets_budget_when_remeasured"] = row["meets_budget"]
        if rechecked.get("best_changed_from") is not None:
            best_d["chosen_over"] = rechecked["best_changed_from"]
    if best_d is not None:
        best_d.update(held_out_test(plan, study, best_d, log=log))
    hv, ref = hypervolume(plan, recs)
    out: dict[str, Any] = {
        "space": plan.space.name,
        "dataset": c.dataset,
        "device": plan.device.name,
        "latency_budget_ms": c.latency_ms,
        "precision": c.precision or "fp32",
        # At int8 with a training evaluator: FP32 minus INT8 validation accuracy over the evaluated candidates.
        "quantization_drop": {"n": len(drops), "median": statistics.median(drops), "max": max(drops)} if drops else None,
        "also_devices": [
            {"device": ch.device, "latency_budget_ms": b, "latency_model": ch.source.describe()}
            for ch, b in zip(plan.also(), c.also_latency_ms, strict=True)
        ],
        "flops_budget_m": c.flops_m,
        "params_budget_m": c.params_m,
        "memory_budget_bytes": c.memory_bytes,
        "size_budget_bytes": c.size_bytes,
        "objectives": [{"metric": o.metric, "unit": o.unit, "direction": o.direction} for o in plan.objectives],
        "constraints": [{"metric": k.metric, "limit": k.limit, "unit": k.unit, "flag": k.flag, "cheap": k.cheap} for k in plan.constraints],
        "costs": [ch.source.describe() | {"metrics": [m.name for m in ch.metrics()], "cheap": ch.source.cheap} for ch in plan.charged],
        "strategy": c.strategy,
        # Trials by the strategy that proposed them (a rerun with another --strategy adds to the study).
        "strategies": _by_strategy(recs),
        "seed": c.seed,
        "evaluator": plan.evaluator.describe() if plan.evaluator is not None else {"name": c.evaluator},
        "latency_model": plan.latency.describe(),
        "study": c.study,
        "storage": _display(c.storage),
        "trials": trials,
        "hypervolume": hv,
        "hypervolume_reference": list(ref),
        "best": best_d,
        "front": [summary(plan, r) for r in front],
        # Networks whose output ignores their input: fast and "feasible", but no network at all.
        "front_degenerate_left_out": sum(r.degenerate for r in T.front(recs, plan.maximize(), degenerate=True)),
        "recheck": rechecked,
        "reference": reference.summary(study, plan.device.name),
    }
    # Flat keys for scripts: the best arch and its figures.
    flat = (
        "arch",
        "accuracy",
        "accuracy_source",
        "test_accuracy",
        "test_accuracy_source",
        "latency_ms",
        "latency_source",
        "flops_m",
        "params_m",
    )
    for key in flat:
        out[key] = best_d.get(key) if best_d else None
    for key in ("memory_bytes", "size_bytes"):
        if best_d and key in best_d:
            out[key] = best_d[key]
    out["latencies"] = latencies(plan, best_d)
    out["measured_latency_ms"] = None
    from hwnas.search.agreement import attach

    return attach(out)  # measurements of one network that disagree beyond their noise: warned, never stated as fact


#: The study's user attribute holding the best network's held-out test accuracy (asked once per network).
TEST_ATTR = "hwnas:test_accuracy"


def held_out_test(plan: Plan, study: optuna.Study, best: dict[str, Any], *, log: Callable[[str], None]) -> dict[str, Any]:
    """The best network's held-out test accuracy and its source, for a run whose evaluator trained
    it on the user's data: asked of the evaluator once (kept in the study), after the search and
    never during it. A benchmark table's test accuracy is the trial's own already."""
    if best.get("test_accuracy") is not None:
        return {"test_accuracy_source": best.get("test_source") or "the benchmark table's test accuracy"}
    evaluator = plan.evaluator
    if evaluator is None:
        return {"test_accuracy": None, "test_accuracy_source": "no evaluator of this run has a held-out test split"}
    kept = study.user_attrs.get(TEST_ATTR)
    if isinstance(kept, dict) and kept.get("arch") == best["arch"] and kept.get("evaluator") == evaluator.name:
        return {"test_accuracy": kept.get("value"), "test_accuracy_source": kept.get("source")}
    from hwnas.evaluate import test_accuracy

    if not hasattr(evaluator, "test_accuracy"):
        value, source = test_accuracy(evaluator, {})  # says why there is none
        return {"test_accuracy": value, "test_accuracy_source": source}
    log(f"held-out test accuracy of trial {best['trial']} (never used by the search) ...")
    value, source = test_accuracy(evaluator, plan.space.from_string(best["arch"]))
    study.set_user_attr(TEST_ATTR, {"arch": best["arch"], "evaluator": evaluator.name, "value": value, "source": source})
    return {"test_accuracy": value, "test_accuracy_source": source}


def latencies(plan: Plan, best: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The best's latency on every device of the run, the first device first: each with its
    budget and where the figure came from (a multi-device run shows every device, not the first)."""
    if best is None:
        return []
    c = plan.config
    rows = [{"device": plan.device.name, "latency_ms": best["latency_ms"], "source": best["latency_source"], "budget_ms": c.latency_ms}]
    also_ms, also_src = best.get("latency_ms_also") or {}, best.get("latency_source_also") or {}
    for ch, budget in zip(plan.also(), c.also_latency_ms, strict=True):
        rows.append({"device": ch.device, "latency_ms": also_ms.get(ch.device), "source": also_src.get(ch.device), "budget_ms": budget})
    return rows


def _by_strategy(recs: list[TrialRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in recs:
        name = str(r.attrs.get(T.STRATEGY) or "unrecorded")
        counts[name] = counts.get(name, 0) + 1
    return counts


def _superfluous(trial: optuna.trial.FrozenTrial, budget: int) -> bool:
    """A trial that never runs any work because the budget was filled before it."""
    import optuna

    if str(trial.user_attrs.get(T.FAILED_BECAUSE, "")).startswith(T.NOT_RUN):
        return True
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    worker = trial.system_attrs.get(T.WORKER)
    slot = worker.get(T.SLOT) if isinstance(worker, dict) else None
    return not isinstance(slot, int) or slot >= budget


def _display(url: str) -> str:
    from hwnas.storage import display_url

    return display_url(url)


def write_front(plan: Plan, front: list[TrialRecord]) -> None:
    """``front.csv``: a row per front network; ``latency_ms`` is the first device's, and each
    further device has its own ``latency_ms[NAME]`` and ``latency_source[NAME]`` columns."""
    metrics = [m.name for ch in plan.charged if ch.device is None for m in ch.metrics()]
    also = [ch.device for ch in plan.also()]
    per_device = [col for d in also for col in (f"latency_ms[{d}]", f"latency_source[{d}]")]
    cols = ["trial", "arch", "accuracy", "test_accuracy", "latency_ms", "latency_source", *per_device, *metrics]
    tmp = plan.out / f"front.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in front:
            row = summary(plan, r)
            for d in also:
                row[f"latency_ms[{d}]"] = (row["latency_ms_also"] or {}).get(d)
                row[f"latency_source[{d}]"] = (row["latency_source_also"] or {}).get(d)
            w.writerow(row)
    tmp.replace(plan.out / "front.csv")


def write_report(plan: Plan, data: dict[str, Any]) -> None:
    write_json(plan.out / "report.json", data)


def exported_so_far(out: Any) -> dict[str, Any] | None:
    """The export section of the run folder's report.json, as an earlier command left it."""
    import json

    try:
        earlier = json.loads((out / "report.json").read_text()).get("export")
    except (OSError, ValueError, AttributeError):
        return None
    return earlier if isinstance(earlier, dict) else None


def earlier_export(plan: Plan, best: dict[str, Any] | None, earlier: dict[str, Any] | None, *, log: Any) -> dict[str, Any] | None:
    """With ``--no-export``: the earlier export of this folder (``earlier``, from
    :func:`exported_so_far`) where ``best.onnx`` is still the best's, so the report describes the
    file; a ``best.onnx`` of another trial is removed, never left beside a report that does not
    describe it."""
    path = plan.out / "best.onnx"
    if not path.exists():
        return None
    trial = _onnx_trial(path)
    if best is not None and trial == best["trial"] and isinstance(earlier, dict):
        return earlier | {"exported_by": "an earlier command in this folder"}
    with folder_lock(plan.out, "export"):
        path.unlink(missing_ok=True)
        (plan.out / "best-fp32.onnx").unlink(missing_ok=True)  # an INT8 export's FP32 source goes with it
    now = f"the best is now trial {best['trial']}" if best else "there is no feasible best now"
    log(f"removed {path} (trial {trial}): {now}; rerun without --no-export to export it")
    return None


def _onnx_trial(path: Any) -> int | None:
    """The trial number in an exported model's metadata (None where it says none)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises DecodeError and others on a damaged file: then it is nobody's
        return None
    props = {p.key: p.value for p in model.metadata_props}
    try:
        return int(props.get("hwnas.trial", ""))
    except ValueError:
        return None


def deployment(plan: Plan, arch: Arch | None = None) -> dict[str, Any]:
    """What an application's ONNX Runtime session needs to feed ``arch``'s network (default: the
    space's smallest): the input layout, shape and value range, the normalisation, the classes and
    their names where known; and all of it as one JSON object, ``preprocessing``
    (:func:`hwnas.preprocess.preprocessing`), that a program reads (``hwnas predict`` does)."""
    import json

    from hwnas.preprocess import from_dataset, preprocessing

    arch = plan.space.smallest() if arch is None else arch
    shape = tuple(plan.space.input_shape(arch))
    c, h, w = shape
    out: dict[str, Any] = {"input_layout": "NCHW (batch, channels, height, width), float32, batch axis dynamic"}
    out["input_shape"] = f"{c}x{h}x{w}"
    data = getattr(plan.evaluator, "data", None)
    if data is None and plan.config.strategy == "darts":
        from hwnas.datasets import load_data

        data = load_data(plan.config.data)  # DARTS trained the network on it
    if data is not None and hasattr(data, "num_classes"):  # trained here on hwnas.datasets images
        pre = from_dataset(data, shape)
        out["input_range"] = f"[0, 1] (pixel x {pre['scale']:.6g})"
        out["normalisation"] = "none: the network was trained on [0, 1] inputs"
        out["num_classes"] = data.num_classes
        out["labels"] = json.dumps(pre["labels"])
        out["data"] = getattr(data, "name", None)
        out["preprocessing"] = json.dumps(pre)
        return out
    from hwnas.spaces.nb201 import INPUT_NORMALISATION

    norm = INPUT_NORMALISATION.get(str(getattr(plan.space, "dataset", "")))
    classes = getattr(plan.space, "num_classes", None)
    out["num_classes"] = classes
    if norm is not None and plan.space.name == "nb201":
        mean = [round(float(m), 6) for m in norm["mean"]]  # type: ignore[attr-defined]
        std = [round(float(x), 6) for x in norm["std"]]  # type: ignore[attr-defined]
        out["input_range"] = "[0, 1] (8-bit pixel / 255), then normalised"
        out["normalisation"] = json.dumps({"mean": mean, "std": std}) + (
            " (per channel, RGB; NAS-Bench-201's training pipeline, which the benchmark accuracy is for)"
        )
        labels = norm["labels"] or [str(i) for i in range(int(classes or 0))]
        out["labels"] = json.dumps(norm["labels"]) if norm["labels"] else None
        names = [str(x) for x in labels]  # type: ignore[attr-defined]
        out["preprocessing"] = json.dumps(preprocessing(shape, scale=1 / 255, mean=mean, std=std, labels=names))
    return out


def export_best(plan: Plan, best: dict[str, Any], *, log: Any, worker: ExportWorker | None = None) -> dict[str, Any]:
    """Export the best feasible arch to ``best.onnx`` (checked, parity, re-measured where it can be);
    in ``worker`` (export_worker.py: torch already imported there) where one was started."""
    from hwnas.export import export_verified

    arch = plan.space.from_string(best["arch"])
    out = plan.out / "best.onnx"
    log(f"exporting trial {best['trial']} to {out} (checker, parity, re-measure)")
    meta = {
        "trial": best["trial"],
        "accuracy": best["accuracy"],
        "accuracy_source": best["accuracy_source"],
        "test_accuracy": best["test_accuracy"],
        "device": plan.device.name,
        "objectives": [o.metric for o in plan.objectives],
        "budgets": {k.metric: k.limit for k in plan.constraints},
    }
    for key in ("latency_ms", "latency_source", "flops_m", "params_m", "memory_bytes", "size_bytes"):
        if key in best:
            meta[key] = best[key]
    meta.update(deployment(plan, arch))
    # An evaluator with trained weights (the supernet's) exports the network it scored, weights included.
    trained = plan.evaluator.build_trained(arch) if plan.evaluator is not None else None
    precision = plan.config.precision or "fp32"
    inputs = None
    # A trained network is calibrated on its training images and compared on its validation split.
    if precision == "int8" and trained is not None:
        from hwnas.evaluate.quantized import export_inputs

        inputs = export_inputs(plan.evaluator, seed=plan.config.seed)
    job: dict[str, Any] = {
        "space": plan.space,
        "arch": arch,
        "path": out,
        "device": plan.device,
        "metadata": meta,
        "seed": plan.config.seed,
        "trained": trained,
        "precision": precision,
        "calibration": inputs[0] if inputs else None,
        "parity_inputs": inputs[1] if inputs else None,
    }
    with folder_lock(plan.out, "export"):  # workers sharing --out export one at a time
        result = worker.export(**job) if worker is not None and trained is None else None
        if result is None:
            result = export_verified(**job)
    d = result.as_dict()
    d["predicted_latency_ms"] = best["latency_ms"]
    d["predicted_source"] = best["latency_source"]
    measured = d["measured_latency_ms"]
    d["predicted_vs_measured_pct"] = None if measured is None else round(100.0 * (best["latency_ms"] - measured) / measured, 2)
    if measured is None:
        d["not_measured_because"] = f"{plan.device.name} is a table device; its latency comes from the benchmark table"
    return d


def attach_agreement(report: dict[str, Any]) -> dict[str, Any]:
    """The report's latency agreement and warnings again, once the export has re-measured the best."""
    from hwnas.search.agreement import attach

    return attach(report)
