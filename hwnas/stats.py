"""Small statistics used to fit and check latency predictors (NumPy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two 1-D arrays (ties handled as in tau-b), O(n^2)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("kendall_tau needs two 1-D arrays of equal length")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), k=1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = float(np.sum(da * db))
    n_a, n_b = float(np.sum(da != 0)), float(np.sum(db != 0))
    if n_a == 0 or n_b == 0:
        return float("nan")
    return concordant_minus_discordant / np.sqrt(n_a * n_b)


def prediction_stats(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    """Share within +-5 % and +-10 %, mean absolute percentage error, Kendall tau, worst error."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = p / m - 1.0
    return {
        "n": len(m),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "mape_pct": float(100 * np.mean(np.abs(rel))),
        "kendall_tau": kendall_tau(p, m),
        "worst_pct": float(100 * rel[np.argmax(np.abs(rel))]) if len(rel) else float("nan"),
        "mean_bias_pct": float(100 * np.mean(rel)),
    }


def fit_relative_ridge(x: np.ndarray, y: np.ndarray, *, lam: float = 1e-4) -> tuple[np.ndarray, float]:
    """Linear model ``y ~ x @ coef + intercept`` minimising squared *relative* error plus a ridge
    penalty on standardised coefficients (features on very different scales, some collinear).

    Returns ``(coef, intercept)`` in the original units of ``x``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    z = (x - mu) / sd
    w = 1.0 / y
    a = np.c_[z, np.ones(len(y))] * w[:, None]
    rhs = y * w
    # Ridge as extra rows (no penalty on the intercept); lstsq copes with collinear features.
    penalty = np.sqrt(lam * len(y)) * np.eye(a.shape[1])[:-1]
    sol = np.linalg.lstsq(np.vstack([a, penalty]), np.r_[rhs, np.zeros(len(penalty))], rcond=None)[0]
    beta, b0 = sol[:-1], sol[-1]
    coef = beta / sd
    return coef, float(b0 - np.dot(coef, mu))
