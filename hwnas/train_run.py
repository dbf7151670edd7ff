"""``hwnas train RUN``: the final training of a run's best feasible network (or a chosen trial) on
the user's data, ending in a trained, verified, re-measured model in ``RUN/final/``.

The network is the one the run searched, built for the data (its channels, image size and classes:
the shape the search timed where the search trained on the same data). Supernet runs fine-tune
from the weights the candidate inherited; every other run trains the network from scratch. The
split is the search's (:func:`hwnas.datasets.evaluation_splits`, split seed 0): the network trains
on the training split, the curve follows the validation split, and the held-out test split is
scored once, at the end, in PyTorch and on the exported file in ONNX Runtime.

``RUN/final/`` gets ``best.onnx`` (checked, parity, re-measured on the run's device, its
``hwnas.preprocessing`` metadata), ``best-int8.onnx`` at ``--precision int8`` (calibrated on the
training images, its test accuracy in ONNX Runtime), ``report.json``, ``curve.png`` (with
matplotlib) and ``checkpoint.pt`` (a rerun resumes it, or finds the training done).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import UsageError

FINAL_DIR = "final"
#: Supernet runs fine-tune their inherited weights at this share of the learning rate from scratch.
FINE_TUNE_LR_SHARE = 0.2
FINE_TUNE_EPOCHS = 20


def train_run(
    run: Path,
    *,
    trial: int | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    flip: bool = False,
    train_device: str = "cpu",
    precision: str = "fp32",
    data: str | None = None,
    seed: int = 0,
    bake: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, export, check and re-measure (``bake``: the exports take raw pixels, their scaling and
    normalisation in the graph); returns (and writes to ``RUN/final/report.json``) the report."""
    import torch

    from hwnas.datasets import batches, evaluation_splits, load_data
    from hwnas.evaluate import check_train_device
    from hwnas.evaluate.train import SPLIT_SEED, data_space, input_size
    from hwnas.final import FinalSettings, data_warnings, estimate_seconds, train_final

    t0 = time.perf_counter()
    if precision not in ("fp32", "int8"):
        raise UsageError(f"--precision {precision!r}: hwnas train exports fp32, and int8 beside it; use --precision fp32 or int8")
    check_train_device(train_device)
    cfg, plan, study = _open(run)
    arch, number, row = _pick(plan, study, run, trial)
    spec = data or str(cfg.get("data") or "digits")
    ds = load_data(spec)
    space = data_space(plan.space, ds)
    searched = tuple(plan.space.input_shape(arch))
    shape = tuple(space.input_shape(arch))
    if searched != shape:
        log(
            f"note: the search timed this network taking {'x'.join(map(str, searched))} input; trained on {ds.name} it takes "
            f"{'x'.join(map(str, shape))}: its latency is measured again below, as the network that is deployed"
        )
    train, valid, test = evaluation_splits(ds, SPLIT_SEED)
    size = input_size(space, arch, ds)
    evaluator = getattr(plan.evaluator, "inner", plan.evaluator)
    fine_tune = getattr(evaluator, "name", "") == "supernet" and spec == cfg.get("data") and searched == shape
    base = FinalSettings()
    settings = FinalSettings(
        epochs=epochs or (FINE_TUNE_EPOCHS if fine_tune else base.epochs),
        batch=batch or base.batch,
        lr=lr or (base.lr * FINE_TUNE_LR_SHARE if fine_tune else base.lr),
        warmup_epochs=1 if fine_tune else base.warmup_epochs,
        flip=flip,
        seed=seed,
        device=train_device,
    )
    settings.check()
    out = run / FINAL_DIR
    out.mkdir(exist_ok=True)
    torch.manual_seed(seed)
    if fine_tune:
        model = evaluator.build_trained(arch).model  # type: ignore[union-attr]
        start = "fine-tuned from the weights it inherited from the run's supernet"
    else:
        model = space.build(arch)
        start = f"trained from scratch (initialised with seed {seed})"
    for line in data_warnings(len(train), ds.num_classes, settings):
        log(line)
    steps = -(-len(train) // settings.batch)
    example = next(batches(train, settings.batch, shuffle=True, seed=0, size=size))[0]
    threads = torch.get_num_threads()
    if train_device == "cpu":
        from hwnas.darts.train import default_threads

        torch.set_num_threads(default_threads())
    try:
        estimate = estimate_seconds(model, example, steps, settings, len(valid))
        log(
            f"final training of trial {number} ({space.to_string(arch)}) on {ds.name}: {len(train)} training images "
            f"({'x'.join(map(str, shape))}), {settings.epochs} epochs of {steps} batches, {settings.optimizer.upper()} lr {settings.lr:g} "
            f"warm-up {settings.warmup_epochs} + cosine, label smoothing {settings.label_smoothing}, {start}; "
            f"estimated {_minutes(estimate)} on {train_device}; checkpoint {out / 'checkpoint.pt'}"
        )

        def validate(m: torch.nn.Module) -> tuple[float, float]:
            from hwnas.training import evaluate_classifier

            return evaluate_classifier(m, batches(valid, 256, shuffle=False, size=size), train_device)

        identity = {
            "arch": space.to_string(arch),
            "space": space.name,
            "data": spec,
            "train": len(train),
            "shape": list(shape),
            "start": start,
        }
        try:
            result = train_final(
                model,
                lambda e: batches(train, settings.batch, shuffle=True, seed=seed * 7919 + e, size=size),
                steps,
                validate,
                settings,
                checkpoint=out / "checkpoint.pt",
                identity=identity,
                log=log,
            )
        except FloatingPointError as exc:
            raise UsageError(f"final training diverged: {exc}") from None
        from hwnas.training import evaluate_classifier

        model = model.cpu().eval()
        valid_acc, _ = evaluate_classifier(model, batches(valid, 256, shuffle=False, size=size))
        test_acc = evaluate_classifier(model, batches(test, 256, shuffle=False, size=size))[0] if len(test) else None
    finally:
        torch.set_num_threads(threads)
    log(
        f"final training: done in {_minutes(result.seconds)}; validation {valid_acc:.2f} %"
        + ("" if test_acc is None else f", held-out test {test_acc:.2f} %")
    )
    report = _export(plan, space, arch, number, row, model, shape, ds, train, valid, test, size, settings, precision, out, log, bake)
    report.update(
        {
            "run": str(run),
            "trial": number,
            "arch": space.to_string(arch),
            "data": spec,
            "data_name": ds.name,
            "split": {"train": len(train), "valid": len(valid), "test": len(test), "seed": SPLIT_SEED},
            "input_shape": list(shape),
            "start": start,
            "settings": asdict(settings),
            "estimated_seconds": round(estimate, 1),
            "train_seconds": round(result.seconds, 1),
            "resumed_from_epoch": result.resumed_from,
            "valid_accuracy": valid_acc,
            "test_accuracy": test_acc,
            "test_accuracy_source": (
                f"held-out test split of {ds.name} ({len(test)} images), never used for training or selection"
                if test_acc is not None
                else f"{ds.name} has no test split"
            ),
            "search_accuracy": row.get("accuracy"),
            "search_accuracy_source": row.get("accuracy_source"),
            "curve": [asdict(h) for h in result.history],
            "wall_time_s": round(time.perf_counter() - t0, 1),
        }
    )
    report["curve_png"] = _draw(report, out / "curve.png")
    from hwnas.search.rundir import write_json

    write_json(out / "report.json", report)
    return report


def _open(run: Path) -> tuple[dict[str, Any], Any, Any]:
    """The run's config, its plan (resolved again: space, device, evaluator) and its study."""
    from hwnas.report import open_run_study
    from hwnas.search.config import SearchConfig, config_fields, resolve

    if not run.is_dir():
        raise UsageError(
            f"run folder {str(run)!r} does not exist; give a folder written by 'hwnas search', e.g. hwnas train hwnas-runs/NAME"
        )
    cfg, study = open_run_study(run)
    known = set(config_fields())
    config = SearchConfig(**{k: v for k, v in cfg.items() if k in known})
    config.out = str(run)
    plan = resolve(config, log=lambda _: None)
    return cfg, plan, study


def _pick(plan: Any, study: Any, run: Path, trial: int | None) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The arch to train: trial ``trial``, else the run's best feasible (its report.json)."""
    from hwnas.report import trial_of_run
    from hwnas.trials import ACCURACY, ACCURACY_SOURCE

    if trial is None:
        try:
            best = json.loads((run / "report.json").read_text()).get("best")
        except (OSError, ValueError, AttributeError):
            best = None
        if not best:
            raise UsageError(f"run {run} has no feasible best network (its report.json names none); name a trial with --trial N")
        return plan.space.from_string(best["arch"]), int(best["trial"]), best
    rec = trial_of_run(run, study, trial)
    row = {"trial": trial, "accuracy": rec.attrs.get(ACCURACY), "accuracy_source": rec.attrs.get(ACCURACY_SOURCE)}
    return plan.space.from_string(rec.arch), trial, row


def _images(ds: Any, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    from hwnas.datasets import batches

    xs, ys = [], []
    for x, y in batches(ds, 512, shuffle=False, size=size):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _export(
    plan: Any,
    space: Any,
    arch: dict[str, Any],
    number: int,
    row: dict[str, Any],
    model: Any,
    shape: tuple[int, ...],
    ds: Any,
    train: Any,
    valid: Any,
    test: Any,
    size: int | None,
    settings: Any,
    precision: str,
    out: Path,
    log: Callable[[str], None],
    bake: bool = False,
) -> dict[str, Any]:
    from hwnas.cost.quantize import data_calibration, onnx_accuracy
    from hwnas.evaluate.supernet import TrainedNetwork
    from hwnas.export import export_int8, export_verified
    from hwnas.preprocess import baked, from_dataset, raw_pixels

    pre = from_dataset(ds, shape)
    if bake:
        model, pre = baked(model, pre)
    # What the exported files are fed: network inputs, or raw pixels where the preprocessing is baked in.
    fed = (lambda x: raw_pixels(x, pre)) if bake else (lambda x: x)
    c = plan.config
    device = plan.device.with_precision("fp32")
    meta = {
        "trial": number,
        "data": ds.name,
        "device": device.name,
        "budgets": {k.metric: k.limit for k in plan.constraints},
        "preprocessing": json.dumps(pre),
        "input_shape": "x".join(map(str, shape)),
        "num_classes": ds.num_classes,
        "labels": json.dumps(pre["labels"]),
    }
    weights = (
        f"final training: {settings.epochs} epochs {settings.optimizer.upper()} on the training split of {ds.name} "
        f"({len(train)} images, seed {settings.seed})"
    )
    trained = TrainedNetwork(model=model, input_shape=shape, data_shape=shape, weights=weights)  # type: ignore[arg-type]
    path = out / "best.onnx"
    log(f"exporting the trained network to {path} (checker, parity, re-measure on {device.name})")
    test_x, test_y = _images(test, size) if len(test) else (np.zeros((0, *shape), np.float32), np.zeros(0, np.int64))
    test_x = fed(test_x)
    result = export_verified(space, arch, path, device=device, metadata=meta, seed=settings.seed, trained=trained)
    onnx_test = onnx_accuracy(path.read_bytes(), test_x, test_y) if len(test_y) else None
    budget = c.latency_ms
    m = result.measurement
    export = result.as_dict()
    export["measurement"] = None if m is None else {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms}
    report: dict[str, Any] = {
        "device": device.name,
        "latency_budget_ms": budget,
        "latency_ms": None if m is None else m.median_ms,
        "latency_source": f"measured on {device.name} (the exported file)"
        if m is not None
        else f"{device.name} measures nothing: not re-measured",
        "meets_budget": None if m is None or budget is None else bool(m.median_ms <= budget),
        "onnx_test_accuracy": onnx_test,
        "preprocessing": pre,
        "export": export,
    }
    if m is not None:
        log(f"  {path}: {m.median_ms:.4g} ms on {device.name} (budget {budget:g} ms: {'met' if report['meets_budget'] else 'MISSED'})")
    if onnx_test is not None:
        log(f"  {path}: held-out test accuracy in ONNX Runtime {onnx_test:.2f} % ({len(test_y)} images)")
    if precision == "int8":
        train_x, valid_x = fed(_images(train, size)[0]), fed(_images(valid, size)[0])
        calibration = data_calibration(train_x, shape, name=ds.name, seed=settings.seed)
        int8_path = out / "best-int8.onnx"
        log(f"quantizing to {int8_path} (static QDQ, calibrated on {calibration.source})")
        q = export_int8(
            path,
            int8_path,
            calibration=calibration,
            parity_inputs=(valid_x, f"{len(valid_x)} images of the {ds.name} validation split"),
            device=device,
            seed=settings.seed,
        )
        int8_test = onnx_accuracy(int8_path.read_bytes(), test_x, test_y) if len(test_y) else None
        qm = q.pop("measurement")
        report["int8"] = q | {
            "test_accuracy": int8_test,
            "test_drop_points": None if int8_test is None or onnx_test is None else round(onnx_test - int8_test, 4),
            "latency_ms": None if qm is None else qm.median_ms,
            "meets_budget": None if qm is None or budget is None else bool(qm.median_ms <= budget),
        }
        if int8_test is not None:
            log(
                f"  {int8_path}: held-out test accuracy {int8_test:.2f} % (FP32 {onnx_test:.2f} %)"
                + ("" if qm is None else f", {qm.median_ms:.4g} ms")
            )
    return report


def _draw(report: dict[str, Any], path: Path) -> str | None:
    """``curve.png``: training loss and validation accuracy per epoch (None without matplotlib, said in the report)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    from matplotlib.figure import Figure

    curve = report["curve"]
    epochs = [h["epoch"] for h in curve]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(epochs, [h["valid_accuracy"] for h in curve], color="tab:blue", label="validation accuracy (%)")
    ax.plot(
        epochs, [h["train_accuracy"] for h in curve], color="tab:blue", alpha=0.4, linestyle="--", label="training accuracy (%, augmented)"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    twin = ax.twinx()
    twin.plot(epochs, [h["train_loss"] for h in curve], color="tab:orange", label="training loss")
    twin.set_ylabel("training loss")
    test = report.get("test_accuracy")
    title = f"trial {report['trial']} on {report['data_name']}" + ("" if test is None else f": held-out test {test:.2f} %")
    ax.set_title(title)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    fig.savefig(path, dpi=110)
    return str(path)


def _minutes(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"
