"""``hwnas report RUN``: the Pareto front and hypervolume curve of any run, as PNG and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import UsageError
from hwnas.pareto import hypervolume_2d
from hwnas.storage import journal_path, open_storage

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from hwnas.trials import TrialRecord

#: The cost metrics' words and units on an axis: metric -> (words, unit).
AXES = {
    "latency_ms": ("latency", "ms"),
    "flops_m": ("FLOPs", "M multiply-adds"),
    "params_m": ("parameters", "M"),
    "memory_bytes": ("peak memory", "bytes"),
    "size_bytes": ("model size", "bytes"),
}
#: A budget this far (a share of the points' spread) outside the points is still drawn as a line;
#: farther, it would squeeze the points into a corner, so the legend says where it is instead.
BUDGET_NEAR = 0.25
#: Margin around the points (a share of their spread on each axis).
MARGIN = 0.05


def open_run_study(run: Path) -> tuple[dict[str, Any], optuna.Study]:
    """The resolved config and the study of a run folder written by ``hwnas search``."""
    import optuna

    cfg_path = run / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"{cfg_path} is missing or unreadable; RUN must be a folder written by 'hwnas search'") from None
    from hwnas.search.config import IDENTITY_VERSION
    from hwnas.search.rundir import VERSION_KEY, older_hwnas

    if not isinstance(cfg, dict) or cfg.get(VERSION_KEY) != IDENTITY_VERSION:
        raise older_hwnas(f"run {run}", "rerun the search into a new --out to report it with this version")
    storage_url = str(cfg.get("storage", ""))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = journal_path(storage_url)  # a bare path, or journal:PATH (config.json of earlier versions)
    if journal is not None:
        path = Path(journal)
        if not path.exists():  # the run was made from another working directory
            path = run / "study.journal"
        if not path.exists():
            raise UsageError(f"the study of {run} is missing ({path}); was the run folder moved without study.journal?")
        storage_url = str(path)
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=cfg.get("study") or "hwnas", storage=storage)
    except Exception as exc:
        raise UsageError(f"cannot open the study of {run}: {str(exc).splitlines()[0]}") from None
    return cfg, study


def trial_of_run(run: Path, study: optuna.Study, trial: int) -> TrialRecord:
    """Trial ``trial`` of a run's study, which got an architecture (UsageError naming the valid ones otherwise)."""
    from hwnas.trials import TrialRecord

    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial not in numbers:
        raise UsageError(f"run {run} has no trial {trial}; valid: 0..{max(numbers, default=-1)}")
    rec = TrialRecord.of(numbers[trial])
    if not rec.arch:
        raise UsageError(f"trial {trial} of run {run} never got an architecture (it failed before); pick another --trial")
    return rec


def run_summary(run: Path, *, degenerate: bool = False) -> dict[str, Any]:
    """Trials in order with feasibility, the feasible front, and the hypervolume after each trial,
    on the run's two objectives (accuracy and its cost objective). Networks whose output ignores
    their input are left out unless ``degenerate`` (``degenerate_left_out`` counts them)."""
    from hwnas.search.objectives import OBJECTIVE_NAMES
    from hwnas.search.results import records
    from hwnas.trials import front as pareto_front

    cfg, study = open_run_study(run)
    recs = records(study)
    if not recs:
        raise UsageError(f"run {run} has no completed trial yet")
    left_out = 0 if degenerate else sum(r.degenerate for r in recs)
    recs = recs if degenerate else [r for r in recs if not r.degenerate]
    if not recs:
        raise UsageError(f"every trial of run {run} is a network whose output ignores its input; --include-degenerate shows them")
    metric = OBJECTIVE_NAMES.get(str(cfg.get("objective", "latency")), "latency_ms")
    acc = np.array([r.values[0] for r in recs], dtype=float)
    cost = np.array([r.values[1] for r in recs], dtype=float)
    feasible = np.array([r.feasible for r in recs])
    limit = cfg.get(metric)  # config keys are the metrics' names: latency_ms, flops_m, memory_bytes, ...
    # The reference point of search/results.py's hypervolume: accuracy 0, the budget, else the largest value seen.
    reference = (0.0, float(limit) if limit is not None else float(cost.max()))
    hv = []
    for k in range(1, len(recs) + 1):
        f = feasible[:k]
        hv.append(hypervolume_2d(np.c_[acc[:k][f], cost[:k][f]], reference, [True, False]) if f.any() else 0.0)
    on_front = {r.number for r in pareto_front(recs, [True, False], degenerate=degenerate)}
    # A multi-device run's further devices (constraints beside the first): each trial's latency on each.
    also = [str(d) for d in cfg.get("also_devices") or []]
    also_ms = {d: np.array([r.costs.get(f"latency_ms@{d}", np.nan) for r in recs], dtype=float) for d in also}
    return {
        "also_latency_ms": also_ms,
        "run": str(run),
        "config": cfg,
        "metric": metric,
        "numbers": [r.number for r in recs],
        "accuracy": acc,
        "latency_ms": cost,
        "cost": cost,
        "feasible": feasible,
        "front": np.array([r.number in on_front for r in recs]),
        "hypervolume": np.array(hv),
        "reference": reference,
        "reference_is_budget": limit is not None,
        "degenerate_left_out": left_out,
    }


def cost_words(summary: dict[str, Any], value: float) -> str:
    """``value`` of the run's cost metric with its unit: ``20 ms``, ``300 M multiply-adds``, ``320KB``."""
    from hwnas.units import format_bytes

    unit = AXES.get(summary["metric"], (summary["metric"], ""))[1]
    return format_bytes(value) if unit == "bytes" else f"{value:.4g} {unit}".strip()


def hypervolume_unit(summary: dict[str, Any]) -> str:
    """The unit of the hypervolume: accuracy (%) times the cost metric's unit, e.g. ``% x ms``."""
    return f"% x {AXES.get(summary['metric'], (summary['metric'], '1'))[1]}"


def reference_words(summary: dict[str, Any]) -> str:
    """The hypervolume's reference point in words: ``accuracy 0 % and latency 20 ms, the budget``."""
    words = AXES.get(summary["metric"], (summary["metric"], ""))[0]
    why = "the budget" if summary.get("reference_is_budget") else "the largest value seen"
    return f"accuracy 0 % and {words} {cost_words(summary, summary['reference'][1])}, {why}"


def hypervolume_words(summary: dict[str, Any]) -> str:
    """The final hypervolume with its unit and reference point, as ``hwnas report`` prints it."""
    return f"{summary['hypervolume'][-1]:.4g} {hypervolume_unit(summary)} (reference point: {reference_words(summary)})"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("hwnas report draws with matplotlib: pip install matplotlib (or pip install 'hwnas[plot]')") from None
    return plt


def _limits(values: np.ndarray) -> tuple[float, float, float]:
    """(low, high, spread) of ``values``, widened by :data:`MARGIN` of their spread; one value alone
    gets +-10 % of itself (a spread of zero would make an axis of nothing)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi > lo:
        return lo - MARGIN * (hi - lo), hi + MARGIN * (hi - lo), hi - lo
    half = (abs(hi) or 1.0) * 0.1
    return lo - half, hi + half, 2 * half


def front_figure(summary: dict[str, Any]) -> Figure:
    """The accuracy/cost figure of a run: axis limits from the points (with a margin), the budget as
    a line where it is near them, else named in the legend; only series that have points are listed."""
    plt = _pyplot()
    cfg = summary["config"]
    acc, lat, feas, front = summary["accuracy"], summary["latency_ms"], summary["feasible"], summary["front"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x_lo, x_hi, x_spread = _limits(lat)
    if float(np.min(lat)) >= 0:
        x_lo = max(0.0, x_lo)  # a cost is never negative: no axis below 0
    y_lo, y_hi, _ = _limits(acc[feas]) if feas.any() else (0.0, 100.0, 100.0)
    others = feas & ~front
    if others.any():
        ax.scatter(lat[others], acc[others], s=12, c="tab:blue", alpha=0.5, label="feasible")
    if (~feas).any():
        # Over-budget trials have no accuracy (never evaluated): drawn as ticks along the bottom.
        bottom = y_lo + 0.3 * (y_hi - y_lo) * MARGIN
        ax.scatter(
            lat[~feas],
            np.full(int((~feas).sum()), bottom),
            s=12,
            c="tab:red",
            marker="|",
            alpha=0.5,
            label="over budget (accuracy not evaluated)",
        )
    if front.any():
        order = np.argsort(lat[front])
        ax.step(lat[front][order], acc[front][order], where="post", c="black", lw=1.2, label="feasible Pareto front")
        ax.scatter(lat[front], acc[front], s=22, c="black")
    metric = summary["metric"]
    if summary.get("reference_is_budget", cfg.get(metric) is not None):
        budget = summary["reference"][1]
        label = f"budget {cost_words(summary, budget)}"
        low, high = float(np.min(lat)), float(np.max(lat))
        if low - BUDGET_NEAR * x_spread <= budget <= high + BUDGET_NEAR * x_spread:
            ax.axvline(budget, c="tab:red", ls="--", lw=1, label=label)
            x_lo, x_hi = min(x_lo, budget - MARGIN * x_spread), max(x_hi, budget + MARGIN * x_spread)
        else:
            right = budget > high
            ax.plot(
                [], [], ls="none", marker=">" if right else "<", c="tab:red", label=f"{label} (off the {'right' if right else 'left'} edge)"
            )
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    words, unit = AXES.get(metric, (metric, ""))
    ax.set_xlabel(f"latency on {cfg['device']} (ms)" if metric == "latency_ms" else f"{words} ({unit})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{cfg['space']} / {cfg['strategy']} / seed {cfg['seed']}: {len(acc)} trials, "
        f"hypervolume {summary['hypervolume'][-1]:.4g} {hypervolume_unit(summary)}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="best")  # the corner with fewest points: the over-budget ticks run along the bottom
    fig.tight_layout()
    return fig


def hypervolume_figure(summary: dict[str, Any]) -> Figure:
    """The hypervolume after each trial, with its unit and reference point."""
    plt = _pyplot()
    hv = summary["hypervolume"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(np.arange(1, len(hv) + 1), hv, c="tab:green")
    ax.set_xlabel("trials")
    ax.set_ylabel(f"hypervolume of the feasible front ({hypervolume_unit(summary)})")
    ax.set_title(f"final {hv[-1]:.4g} {hypervolume_unit(summary)}; reference point: {reference_words(summary)}", fontsize=9)
    fig.tight_layout()
    return fig


def draw(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``front.png`` and ``hypervolume.png`` into ``out_dir``."""
    plt = _pyplot()
    paths = [out_dir / "front.png", out_dir / "hypervolume.png"]
    for path, figure in zip(paths, (front_figure, hypervolume_figure), strict=True):
        fig = figure(summary)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return paths
