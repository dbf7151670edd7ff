"""``hwnas report RUN``: the Pareto front and hypervolume curve of any run, as PNG and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import UsageError
from hwnas.pareto import hypervolume_2d, is_non_dominated
from hwnas.storage import JOURNAL_PREFIX, open_storage

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
    storage_url = str(cfg.get("storage", ""))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage_url.startswith(JOURNAL_PREFIX):
        path = Path(storage_url[len(JOURNAL_PREFIX) :])
        if not path.exists():  # the run was made from another working directory
            path = run / "study.journal"
        if not path.exists():
            raise UsageError(f"the study of {run} is missing ({path}); was the run folder moved without study.journal?")
        storage_url = f"{JOURNAL_PREFIX}{path}"
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=cfg.get("study") or "hwnas", storage=storage)
    except Exception as exc:
        raise UsageError(f"cannot open the study of {run}: {str(exc).splitlines()[0]}") from None
    return cfg, study


def run_summary(run: Path) -> dict[str, Any]:
    """Trials in order with feasibility, the feasible front, and the hypervolume after each trial."""
    import optuna

    cfg, study = open_run_study(run)
    trials = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    if not trials:
        raise UsageError(f"run {run} has no completed trial yet")
    acc = np.array([t.values[0] for t in trials], dtype=float)
    lat = np.array([t.values[1] for t in trials], dtype=float)
    feasible = np.array([bool(t.constraints) and all(c <= 0 for c in t.constraints.values()) for t in trials])
    reference = (0.0, float(cfg["latency_ms"]))  # accuracy 0 %, the latency budget
    hv = []
    for k in range(1, len(trials) + 1):
        f = feasible[:k]
        hv.append(hypervolume_2d(np.c_[acc[:k][f], lat[:k][f]], reference, [True, False]) if f.any() else 0.0)
    front_mask = np.zeros(len(trials), dtype=bool)
    # A reused trial repeats an earlier network: one front point per network.
    original = np.array(["reused_from_trial" not in t.user_attrs for t in trials])
    if (feasible & original).any():
        idx = np.flatnonzero(feasible & original)
        front_mask[idx[is_non_dominated(np.c_[acc[idx], lat[idx]], [True, False])]] = True
    return {
        "run": str(run),
        "config": cfg,
        "numbers": [t.number for t in trials],
        "accuracy": acc,
        "latency_ms": lat,
        "feasible": feasible,
        "front": front_mask,
        "hypervolume": np.array(hv),
        "reference": reference,
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
    ax.axvline(cfg["latency_ms"], c="tab:red", ls="--", lw=1, label=f"budget {cfg['latency_ms']:g} ms")
    ax.set_xlabel(f"latency on {cfg['device']} (ms)")
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
    ax.set_title(f"reference point: accuracy 0 %, latency {cfg['latency_ms']:g} ms")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
