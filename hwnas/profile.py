"""``hwnas profile``: build a device's latency lookup table for a space, and check it.

1. Measure every block the space can produce at its exact input shape (one ONNX Runtime
   session per block; warm-up, repeats, median and spread recorded).
2. Measure what else the space's calibration features read (its block codec's structure
   section; NB201: the nodes of ORT's optimised graph of every cell, see
   :mod:`hwnas.spaces._nb201_graph`).
3. Measure ``calibrate`` random networks end to end and fit the calibration model.
4. With ``check`` > 0, measure that many *other* random networks and report how well the
   table predicts them (share within +-5 % / +-10 %, MAPE, Kendall tau); stored in the table.
5. Judge the table (:func:`judge_table`): on a busy machine a model's rounds disagree and get
   more rounds (:func:`measure_models`); a table whose check (or, without one, calibration fit)
   still misses is refused, or kept with ``force`` and marked as failing, which the search refuses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hwnas.cost.lut import SCHEMA, SCHEMA_VERSION, LatencyTable
from hwnas.device import Device
from hwnas.errors import HwnasError, UsageError
from hwnas.spaces import Arch, SearchSpace
from hwnas.stats import fit_relative_ridge, prediction_stats

Log = Callable[[str], None]
#: Progress lines of the Python API go to the ``hwnas.profile`` logger at INFO (the CLI prints them).
_LOG: Log = logging.getLogger("hwnas.profile").info

#: Each block and network is measured in at least this many interleaved rounds; the fastest round's median is kept.
#: A disturbance on a shared machine only ever slows a run down, and rarely hits the same model twice.
ROUNDS = 3
#: A measurement is settled when its two fastest rounds agree within this many per cent. A lone fastest round
#: may itself have been slowed (on a busy machine every round can be); two that agree are a quiet run confirmed.
AGREE_PCT = 3.0
#: Rounds an unsettled measurement gets at most: the extra rounds measure only the unsettled models (and the
#: reference network), so a burst of load costs some more seconds instead of a wrong table.
MAX_ROUNDS = 6
#: What a table must reach to be written: the share of networks predicted within +-10 % and Kendall tau, on
#: its held-out check, or on its calibration fit where no check was run (see :func:`judge_table`).
REQUIRED_WITHIN_10 = 0.95
REQUIRED_TAU = 0.9
#: Without a check, the in-sample fit can look perfect on a busy machine (100 % beside a held-out check
#: at 75 % here), so the table must also have at most this share of measurements that never settled.
MAX_UNSETTLED_UNCHECKED = 0.05


class UntrustedTableError(HwnasError):
    """A table missed what :func:`judge_table` requires and was not kept (``--force`` keeps it, marked)."""


def _settled(rounds_ms: Sequence[float], agree_pct: float) -> bool:
    """Whether the two fastest of ``rounds_ms`` agree within ``agree_pct`` per cent."""
    if len(rounds_ms) < 2:
        return False
    a, b = sorted(rounds_ms)[:2]
    return bool(b <= a * (1 + agree_pct / 100))


def measure_models(
    models: Sequence[tuple[bytes, tuple[int, ...]]],
    device: Device,
    *,
    rounds: int = ROUNDS,
    max_rounds: int | None = None,
    agree_pct: float = AGREE_PCT,
    always: Sequence[int] = (),
    log: Log,
    what: str,
) -> list[dict[str, Any]]:
    """Median latency of each ONNX model over interleaved passes (alternating order), measured on
    ``device`` by its kind (this machine's ONNX Runtime, or a remote agent).

    Every model gets ``rounds`` passes. A model whose two fastest rounds still differ by more than
    ``agree_pct`` per cent gets further passes, together with the models at ``always`` (a reference
    network that tracks the machine), until it settles or has had ``max_rounds`` (None:
    :data:`MAX_ROUNDS`). Each model's
    stats keep its fastest round and say how many rounds it took, their medians, their spread and
    whether it settled.
    """
    from hwnas.cost.source import device_kind

    measure = device_kind(device.kind).measure
    if measure is None:
        raise UsageError(f"device {device.name!r} measures nothing (its latency comes from a table); profile a measured device")
    max_rounds = MAX_ROUNDS if max_rounds is None else max_rounds
    n = len(models)
    med: list[list[float]] = [[] for _ in range(n)]
    stats: list[dict[str, Any]] = [{} for _ in range(n)]
    t0 = time.perf_counter()
    for r in range(max(rounds, max_rounds)):
        if r < rounds:
            todo = list(range(n))
        else:
            unsettled = [i for i in range(n) if not _settled(med[i], agree_pct)]
            if not unsettled:
                break
            todo = sorted(set(unsettled) | {i for i in always if 0 <= i < n})
            log(
                f"  {what}: {len(unsettled)} of {n} not settled (their two fastest rounds differ by more than {agree_pct:g} %); "
                f"measuring them again, round {r + 1} of at most {max_rounds} ({time.perf_counter() - t0:.0f} s)"
            )
        order = todo if r % 2 == 0 else todo[::-1]
        for j, i in enumerate(order):
            data, shape = models[i]
            m = measure(device, data, shape)
            if not med[i] or m.median_ms < min(med[i]):
                stats[i] = {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms, "count": m.repeats}
            med[i].append(m.median_ms)
            if r < rounds and ((j + 1) % 50 == 0 or j + 1 == n):
                log(f"  {what}: round {r + 1}/{rounds}, {j + 1}/{n} ({time.perf_counter() - t0:.0f} s)")
    for i in range(n):
        stats[i]["rounds"] = len(med[i])
        stats[i]["round_spread_pct"] = float(100 * (max(med[i]) / min(med[i]) - 1))
        stats[i]["settled"] = _settled(med[i], agree_pct)
        stats[i]["round_medians_ms"] = [round(v, 6) for v in med[i]]
    return stats


def _export(module: Any, shape: tuple[int, ...], device: Device) -> Any:
    """What ``device``'s kind times (its ``prepare`` hook): the ONNX bytes, quantized first at int8
    (:func:`hwnas.cost.quantize.device_bytes`), or the module itself for the torch kind."""
    from hwnas.cost.source import device_kind

    return device_kind(device.kind).prepare(device, module, shape)


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


def measure_networks(
    space: SearchSpace, device: Device, archs: list[Arch], log: Log, what: str, *, always: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """End-to-end latency stats of each arch (``median_ms`` and how it settled), measured as
    :func:`measure_models` does; ``always``: the archs measured in every extra round too."""
    models = [(_export(space.build(a), space.input_shape(a), device), space.input_shape(a)) for a in archs]
    return measure_models(models, device, always=always, log=log, what=what)


def build_table(
    space: SearchSpace,
    device: Device,
    *,
    resolutions: Sequence[int] | None = None,
    calibrate: int | None = None,
    check: int = 0,
    seed: int = 0,
    force: bool = False,
    log: Log = _LOG,
) -> LatencyTable:
    """Profile ``device`` for ``space`` and return the (unsaved) table, judged by :func:`judge_table`.

    Raises:
        UsageError: for a table device, a space without latency-table blocks, options the space
            cannot use (``resolutions``) or too few calibration networks.
        UntrustedTableError: the table misses what :func:`judge_table` requires (with ``force``
            it is returned instead, marked as failing).
    """
    from hwnas.cost._onnx import OPSET
    from hwnas.cost.quantize import describe_precision

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
    log(
        f"profiling {len(keys)} {space.name} blocks on {device.name} ({device.provider}, {device.threads} thread(s), batch {device.batch}, "
        f"{device.precision})"
    )
    log(f"  exporting the {len(keys)} blocks{' and quantizing them to INT8' if device.precision == 'int8' else ''} ...")
    blocks = [codec.build_block(key) for key in keys]
    models = [(_export(module, shape, device), shape) for module, shape in blocks]
    block_stats = measure_models(models, device, log=log, what="blocks")
    entries = dict(zip(keys, block_stats, strict=True))
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
            "dtype": {"fp32": "float32", "int8": "int8 (QDQ)"}.get(device.precision, device.precision),
            **describe_precision(device.precision),
            "warmup": device.warmup,
            "repeats": device.repeats,
            "rounds": ROUNDS,
            "max_rounds": MAX_ROUNDS,
            "agree_pct": AGREE_PCT,
            "statistic": "median of per-call wall times; the fastest of the interleaved rounds, more rounds until the two "
            "fastest agree within agree_pct",
            "blocks": "each block alone in its own session",
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entries": entries,
        "calibration": {"coef": [], "intercept": 0.0, "feature_names": []},
        "check": None,
    }
    # Structure features are ONNX Runtime's optimised graphs: a kind that runs PyTorch reads the CPU provider's.
    structure = codec.measure_structure(device.provider if kind.measures_onnx else "CPUExecutionProvider", log)
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
    archs = [*cal_archs, *check_archs, reference]
    log(
        f"  measuring {len(archs)} whole networks ({len(cal_archs)} to calibrate the table, {len(check_archs)} to check it, "
        "1 reference), interleaved rounds ..."
    )
    net_stats = measure_networks(space, device, archs, log, "networks", always=[len(archs) - 1])
    measure_s = (time.perf_counter() - t_measure) / len(archs)
    y_all = np.array([st["median_ms"] for st in net_stats])
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
    ref_stats = net_stats[-1]
    data["reference"] = {
        "arch": space.to_string(reference),
        "median_ms": y_ref,
        "round_medians_ms": ref_stats["round_medians_ms"],
        "round_spread_pct": ref_stats["round_spread_pct"],
    }
    data["build_seconds"] = round(time.perf_counter() - t0 - (measure_s * len(check_archs)), 1)
    log(f"built in {data['build_seconds']} s; in-sample fit: {_fmt(data['calibration']['fit'])}")
    if check_archs:
        data["check"] = _check_stats(table, space, check_archs, y_check, measure_s=measure_s, drift_pct=0.0)
        log(f"check on {len(check_archs)} held-out networks: {_fmt(data['check'])}")
    judge_table(table, noise_summary([*block_stats, *net_stats], ref_stats), force=force, log=log)
    return table


def noise_summary(stats: Sequence[dict[str, Any]], reference: dict[str, Any] | None) -> dict[str, Any]:
    """How unsteady the machine was while measuring: the measurements whose rounds never agreed,
    the extra rounds spent, and the spread of the reference network's rounds (its drift)."""
    return {
        "measurements": len(stats),
        "unsettled": sum(not st["settled"] for st in stats),
        "extra_rounds": sum(max(0, st["rounds"] - ROUNDS) for st in stats),
        "agree_pct": AGREE_PCT,
        "max_rounds": MAX_ROUNDS,
        "reference_spread_pct": reference["round_spread_pct"] if reference else None,
    }


def judge_table(table: LatencyTable, noise: dict[str, Any], *, force: bool, log: Log = _LOG) -> dict[str, Any]:
    """Pass or fail the table on its check (or, without one, its calibration fit) and store the
    verdict in it as ``verdict``; a table that fails is refused unless ``force``.

    The calibration fit is in-sample, so it flatters the table: a busy machine often shows there
    (it misses on a loaded machine while it is about 100 % on a quiet one), but not always, so
    without a check the share of measurements that never settled is judged too.

    Raises:
        UntrustedTableError: the table fails and ``force`` is false; the message says why and what to do.
    """
    data = table.data
    check = data.get("check")
    basis = "check" if check else "calibration fit"
    figures = check if check else data["calibration"]["fit"]
    within, tau = float(figures["within_10pct"]), float(figures["kendall_tau"])
    passed = within >= REQUIRED_WITHIN_10 and tau >= REQUIRED_TAU  # a NaN tau (all tied) fails
    what = f"{figures['n']} held-out networks" if check else f"{figures['n']} calibration networks (in-sample, no --check run)"
    reason = None
    if not passed:
        reason = (
            f"its {basis} missed: {100 * within:.1f} % of {what} within +-10 % and Kendall tau {tau:.2f}, "
            f"where {100 * REQUIRED_WITHIN_10:.0f} % and {REQUIRED_TAU:.2f} are needed"
        )
    elif not check and noise["unsettled"] > MAX_UNSETTLED_UNCHECKED * noise["measurements"]:
        passed = False
        reason = (
            f"no --check was run and {noise['unsettled']} of {noise['measurements']} measurements never settled, more than "
            f"{100 * MAX_UNSETTLED_UNCHECKED:.0f} %, so its in-sample fit ({100 * within:.1f} % within +-10 %) cannot be trusted"
        )
    verdict = {
        "passed": passed,
        "basis": basis,
        "n": figures["n"],
        "within_10pct": within,
        "kendall_tau": tau,
        "required": {"within_10pct": REQUIRED_WITHIN_10, "kendall_tau": REQUIRED_TAU},
        "reason": reason,
        "noise": noise,
        "forced": bool(force and not passed),
    }
    data["verdict"] = verdict
    log(
        f"noise: {noise['unsettled']} of {noise['measurements']} measurements never settled, {noise['extra_rounds']} extra rounds, "
        f"reference network's rounds spread {_pct(noise['reference_spread_pct'])}"
    )
    if passed:
        return verdict
    why = f"{reason}; {_noise_text(noise)}"
    if not force:
        raise UntrustedTableError(
            f"latency table for {data['device']['name']}/{data['space']} not written: {why}; quiet the machine "
            "(close other jobs, plug in the power) and rerun, or pass --force to keep it marked as failing its check"
        )
    log(f"warning: keeping a table that fails its check (--force): {why}; 'hwnas search' refuses it unless told to use it")
    return verdict


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} %"


def _noise_text(noise: dict[str, Any]) -> str:
    """What the measurements say about the machine, in a clause."""
    spread = noise.get("reference_spread_pct")
    drift = noise.get("drift_since_build_pct")
    drift = float(drift) if drift is not None and math.isfinite(drift) else None
    since = "" if drift is None else f", and it runs {drift:+.1f} % against the build"
    if noise["unsettled"] or (spread is not None and spread > noise["agree_pct"]) or (drift is not None and abs(drift) > 10):
        return (
            f"the machine was busy or unsteady: {noise['unsettled']} of {noise['measurements']} measurements never settled in "
            f"{noise['max_rounds']} rounds, the reference network's rounds spread {_pct(spread)}{since}"
        )
    return (
        f"the measurements were steady ({noise['unsettled']} of {noise['measurements']} unsettled{since}), so the table's model "
        "does not fit this device well; more --calibrate networks may help"
    )


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
    log: Log = _LOG,
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
    all_archs = [*archs, *extra]
    net_stats = measure_networks(space, device, all_archs, log, "check", always=[len(all_archs) - 1] if ref else [])
    measure_s = (time.perf_counter() - t1) / len(all_archs)
    measured = np.array([st["median_ms"] for st in net_stats])
    drift = float(100 * (measured[-1] / ref["median_ms"] - 1)) if ref else float("nan")
    stats = _check_stats(table, space, archs, measured[: len(archs)], measure_s=measure_s, drift_pct=drift)
    stats["noise"] = {**noise_summary(net_stats, net_stats[-1] if ref else None), "drift_since_build_pct": drift}
    log(f"check on {n} held-out networks: {_fmt(stats)}; machine drift since the build {drift:+.1f} %")
    return stats


def _fmt(s: dict[str, Any]) -> str:
    return (
        f"{100 * s['within_5pct']:.1f} % within +-5 %, {100 * s['within_10pct']:.1f} % within +-10 %, "
        f"MAPE {s['mape_pct']:.2f} %, Kendall tau {s['kendall_tau']:.3f}"
    )
