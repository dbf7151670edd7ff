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
    reference = (0.0, float(limit) if limit is not None else float(cost.max()))
    hv = []
    for k in range(1, len(recs) + 1):
        f = feasible[:k]
        hv.append(hypervolume_2d(np.c_[acc[:k][f], cost[:k][f]], reference, [True, False]) if f.any() else 0.0)
    on_front = {r.number for r in pareto_front(recs, [True, False], degenerate=degenerate)}
    return {
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
        "degenerate_left_out": left_out,
    }


def draw(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``front.png`` and ``hypervolume.png`` into ``out_dir``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("hwnas report draws with matplotlib: pip install matplotlib (or pip install 'hwnas[plot]')") from None
    cfg = summary["config"]
    acc, lat, feas, front = summary["accuracy"], summary["latency_ms"], summary["feasible"], summary["front"]
    paths = [out_dir / "front.png", out_dir / "hypervolume.png"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(lat[feas & ~front], acc[feas & ~front], s=12, c="tab:blue", alpha=0.5, label="feasible")
    # Over-budget trials have no accuracy (never evaluated): drawn as ticks along the bottom.
    bottom = float(np.min(acc[feas])) if feas.any() else 0.0
    ax.scatter(
        lat[~feas],
        np.full(int((~feas).sum()), bottom),
        s=12,
        c="tab:red",
        marker="|",
        alpha=0.5,
        label="over budget (accuracy not evaluated)",
    )
    order = np.argsort(lat[front])
    ax.step(lat[front][order], acc[front][order], where="post", c="black", lw=1.2, label="feasible Pareto front")
    ax.scatter(lat[front], acc[front], s=22, c="black")
    metric = summary["metric"]
    if cfg.get(metric) is not None:
        ax.axvline(summary["reference"][1], c="tab:red", ls="--", lw=1, label=f"budget {summary['reference'][1]:g}")
    ax.set_xlabel(f"latency on {cfg['device']} (ms)" if metric == "latency_ms" else metric)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{cfg['space']} / {cfg['strategy']} / seed {cfg['seed']}: {len(acc)} trials")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(np.arange(1, len(acc) + 1), summary["hypervolume"], c="tab:green")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume of the feasible front (% x ms)")
    ax.set_title(f"reference point: accuracy 0 %, {summary['metric']} {summary['reference'][1]:g}")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
