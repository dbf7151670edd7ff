"""hwnas: hardware-aware neural architecture search.

Find the most accurate network that meets a latency budget on the device you ship to.
The public API is re-exported lazily here so ``import hwnas`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Search": "hwnas.search",
    "SearchConfig": "hwnas.search",
    "get_space": "hwnas.spaces",
    "SPACES": "hwnas.spaces",
    "STRATEGIES": "hwnas.strategies",
    "EVALUATORS": "hwnas.evaluate",
    "get_device": "hwnas.device",
    "export_verified": "hwnas.export",
    "measure_onnx": "hwnas.cost.measure",
    "compute_cost": "hwnas.cost.flops",
    "parse_latency_ms": "hwnas.units",
    "is_non_dominated": "hwnas.pareto",
    "HwnasError": "hwnas.errors",
    "UsageError": "hwnas.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")
