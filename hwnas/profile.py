"""``hwnas profile``: build a device's latency lookup table for a space, and check it.

1. Measure every block the space can produce at its exact input shape (one ONNX Runtime
   session per block; warm-up, repeats, median and spread recorded).
2. Measure what else the space's calibration features read (its block codec's structure
   section; NB201: the nodes of ORT's optimised graph of every cell, see
   :mod:`hwnas.spaces._nb201_graph`).
3. Measure ``calibrate`` random networks end to end and fit the calibration model.
4. With ``check`` > 0, measure that many *other* random networks and report how well the
   table predicts them (share within +-5 % / +-10 %, MAPE, Kendall tau); stored in the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnas.cost.lut import SCHEMA, SCHEMA_VERSION, LatencyTable
from hwnas.device import Device
from hwnas.errors import UsageError
from hwnas.spaces import Arch, SearchSpace
from hwnas.stats import fit_relative_ridge, prediction_stats

Log = Callable[[str], None]

#: Each block and network is measured in this many interleaved rounds; the fastest round's median is kept.
#: A disturbance on a shared machine only ever slows a run down, and rarely hits the same model twice.
ROUNDS = 3


def measure_models(
    models: Sequence[tuple[bytes, tuple[int, ...]]], device: Device, *, rounds: int = ROUNDS, log: Log, what: str
) -> list[dict[str, Any]]:
    """Median latency of each ONNX model over ``rounds`` interleaved passes (alternating order),
    measured on ``device`` by its kind (this machine's ONNX Runtime, or a remote agent)."""
    from hwnas.cost.source import device_kind

    measure = device_kind(device.kind).measure
    if measure is None:
        raise UsageError(f"device {device.name!r} measures nothing (its latency comes from a table); profile a measured device")
    n = len(models)
    med = np.full((rounds, n), np.inf)
    stats: list[dict[str, Any]] = [{} for _ in range(n)]
    t0 = time.perf_counter()
    for r in range(rounds):
        order = range(n) if r % 2 == 0 else range(n - 1, -1, -1)
        for j, i in enumerate(order):
            data, shape = models[i]
            m = measure(device, data, shape)
            med[r, i] = m.median_ms
            if m.median_ms <= min(med[:, i]):
                stats[i] = {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms, "count": m.repeats}
            if (j + 1) % 50 == 0 or j + 1 == n:
                log(f"  {what}: round {r + 1}/{rounds}, {j + 1}/{n} ({time.perf_counter() - t0:.0f} s)")
    for i in range(n):
        stats[i]["rounds"] = rounds
        stats[i]["round_spread_pct"] = float(100 * (med[:, i].max() / med[:, i].min() - 1))
    return stats


def _export(module: Any, shape: tuple[int, ...]) -> bytes:
    from hwnas.cost._onnx import to_onnx_bytes

    return to_onnx_bytes(module, shape, exporter="torchscript")


def sample_archs(
    space: SearchSpace, n: int, rng: np.random.Generator, *, resolutions: Sequence[int] | None, exclude: set[str]
) -> list[Arch]:
    """``n`` distinct random archs, none in ``exclude``.

    Resolution (the profiled ones) and width are cycled through rather than drawn, so a small
    calibration set covers every network size evenly: the smallest networks, where fixed
    per-call costs weigh most, are otherwise easily under-represented.
    """
    dims = space.dimension_map()
    res_choices = list(resolutions) if resolutions and "resolution" in dims else None
    widths = list(dims["width"].choices) if "width" in dims else None
    out: list[Arch] = []
    for _ in range(1000 * max(n, 1)):
        if len(out) >= n:
            break
        arch = space.sample(rng)
        if res_choices:
            arch["resolution"] = res_choices[(len(out) // len(widths or [0])) % len(res_choices)]
        if widths:
            arch["width"] = widths[len(out) % len(widths)]
        arch = space.canonical(arch)
        key = space.to_string(arch)
        if key not in exclude:
            exclude.add(key)
            out.append(arch)
    return out


def measure_networks(space: SearchSpace, device: Device, archs: list[Arch], log: Log, what: str) -> np.ndarray:
    """End-to-end latency (ms) of each arch, measured as :func:`measure_models` does."""
    models = [(_export(space.build(a), space.input_shape(a)), space.input_shape(a)) for a in archs]
    return np.array([s["median_ms"] for s in measure_models(models, device, log=log, what=what)])


def build_table(
    space: SearchSpace,
    device: Device,
    *,
    resolutions: Sequence[int] | None = None,
    calibrate: int | None = None,
    check: int = 0,
    seed: int = 0,
    log: Log = lambda s: None,
) -> LatencyTable:
    """Profile ``device`` for ``space`` and return the (unsaved) table.

    Raises:
        UsageError: for a table device, a space without latency-table blocks, options the space
            cannot use (``resolutions``) or too few calibration networks.
    """
    from hwnas.cost._onnx import OPSET

    if not device.measured:
        raise UsageError(
            f"device {device.name!r} is a table device (latencies come from its benchmark table); "
            "profile a measured device such as cpu or cuda"
        )
    from hwnas.cost.source import device_kind

    kind = device_kind(device.kind)
    kind.preflight(device)  # e.g. an ONNX Runtime provider that is missing, an agent that is unreachable
    codec = space.lut_codec()
    codec.check_profile_options(resolutions=resolutions)
    calibrate = codec.default_calibrate if calibrate is None else calibrate
    if calibrate < 5:
        raise UsageError(f"--calibrate {calibrate}: at least 5 calibration networks are needed, e.g. --calibrate 40")
    t0 = time.perf_counter()
    keys = codec.all_blocks(resolutions)
    log(f"profiling {len(keys)} {space.name} blocks on {device.name} ({device.provider}, {device.threads} thread(s), batch {device.batch})")
    blocks = [codec.build_block(key) for key in keys]
    models = [(_export(module, shape), shape) for module, shape in blocks]
    entries = dict(zip(keys, measure_models(models, device, log=log, what="blocks"), strict=True))
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "space": space.name,
        "space_options": {"resolutions": list(resolutions) if resolutions else None},
        "device": {"name": device.name, "kind": device.kind, "provider": device.provider, "fingerprint": kind.fingerprint(device)},
        "runtime": {**kind.runtime(device), "opset": OPSET, "exporter": "torchscript"},
        "measurement": {
            "threads": device.threads,
            "batch": device.batch,
            "dtype": "float32",
            "warmup": device.warmup,
            "repeats": device.repeats,
            "rounds": ROUNDS,
            "statistic": "median of per-call wall times; the fastest of the interleaved rounds",
            "blocks": "each block alone in its own session",
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entries": entries,
        "calibration": {"coef": [], "intercept": 0.0, "feature_names": []},
        "check": None,
    }
    structure = codec.measure_structure(device.provider, log)
    structure_names: list[str] = []
    if structure is not None:
        data["structure"] = structure
        structure_names = list(structure["names"])
    table = LatencyTable(data=data)

    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    cal_archs = sample_archs(space, calibrate, rng, resolutions=resolutions, exclude=seen)
    check_archs = sample_archs(space, check, rng, resolutions=resolutions, exclude=seen) if check > 0 else []
    reference = codec.reference_arch(resolutions)
    # Calibration, check and reference networks are measured in the same interleaved rounds, so a
    # slow drift of the machine (about +-10 % over minutes here) moves them alike and cannot
    # masquerade as a prediction error (or hide one).
    t_measure = time.perf_counter()
    y_all = measure_networks(space, device, [*cal_archs, *check_archs, reference], log, "networks")
    measure_s = (time.perf_counter() - t_measure) / len(y_all)
    y, y_check, y_ref = y_all[: len(cal_archs)], y_all[len(cal_archs) : -1], float(y_all[-1])
    x = np.array([table.features(space, a) for a in cal_archs])
    coef, intercept = fit_relative_ridge(x, y)
    names = codec.feature_names(structure_names)
    pred = x @ coef + intercept
    data["calibration"] = {
        "model": "linear in features, fitted on relative error with a small ridge penalty",
        "feature_names": names,
        "coef": coef.tolist(),
        "intercept": intercept,
        "networks": len(cal_archs),
        "fit": prediction_stats(pred, y),
        "raw_sum_fit": prediction_stats(x[:, 0], y),
        "measured": [{"arch": space.to_string(a), "median_ms": float(v)} for a, v in zip(cal_archs, y, strict=True)],
    }
    data["reference"] = {"arch": space.to_string(reference), "median_ms": y_ref}
    data["build_seconds"] = round(time.perf_counter() - t0 - (measure_s * len(check_archs)), 1)
    log(f"built in {data['build_seconds']} s; in-sample fit: {_fmt(data['calibration']['fit'])}")
    if check_archs:
        data["check"] = _check_stats(table, space, check_archs, y_check, measure_s=measure_s, drift_pct=0.0)
        log(f"check on {len(check_archs)} held-out networks: {_fmt(data['check'])}")
    return table


def _check_stats(
    table: LatencyTable, space: SearchSpace, archs: list[Arch], measured: np.ndarray, *, measure_s: float, drift_pct: float
) -> dict[str, Any]:
    t0 = time.perf_counter()
    pred = np.array([table.predict_ms(space, a) for a in archs])
    predict_s = (time.perf_counter() - t0) / max(len(archs), 1)
    stats = prediction_stats(pred, measured)
    stats.update(
        {
            "predict_ms_per_arch": 1e3 * predict_s,
            "measure_ms_per_arch": 1e3 * measure_s,
            "speedup": measure_s / predict_s if predict_s > 0 else None,
            "machine_drift_pct": drift_pct,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "networks": [
                {"arch": space.to_string(a), "predicted_ms": float(p), "measured_ms": float(m)}
                for a, p, m in zip(archs, pred, measured, strict=True)
            ],
        }
    )
    return stats


def check_table(
    table: LatencyTable,
    space: SearchSpace,
    device: Device,
    n: int,
    *,
    rng: np.random.Generator,
    exclude: set[str] | None = None,
    resolutions: Sequence[int] | None = None,
    log: Log = lambda s: None,
) -> dict[str, Any]:
    """Measure ``n`` random networks (not used for calibration) now and compare with the table.

    The table's reference network is measured in the same rounds; ``machine_drift_pct`` says how
    much slower (+) or faster (-) the machine runs now than when the table was built.
    """
    if exclude is None:
        exclude = {m["arch"] for m in table.data["calibration"].get("measured", [])}
    resolutions = resolutions or table.data.get("space_options", {}).get("resolutions")
    archs = sample_archs(space, n, rng, resolutions=resolutions, exclude=exclude)
    ref = table.data.get("reference")
    extra = [space.from_string(ref["arch"])] if ref else []
    t1 = time.perf_counter()
    measured = measure_networks(space, device, [*archs, *extra], log, "check")
    measure_s = (time.perf_counter() - t1) / len(measured)
    drift = float(100 * (measured[-1] / ref["median_ms"] - 1)) if ref else float("nan")
    stats = _check_stats(table, space, archs, measured[: len(archs)], measure_s=measure_s, drift_pct=drift)
    log(f"check on {n} held-out networks: {_fmt(stats)}; machine drift since the build {drift:+.1f} %")
    return stats


def _fmt(s: dict[str, Any]) -> str:
    return (
        f"{100 * s['within_5pct']:.1f} % within +-5 %, {100 * s['within_10pct']:.1f} % within +-10 %, "
        f"MAPE {s['mape_pct']:.2f} %, Kendall tau {s['kendall_tau']:.3f}"
    )
