"""Compute cost of a model: multiply-accumulates (fvcore) and parameters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ComputeCost:
    """``flops_m``: conv + linear multiply-accumulates in millions, the field's "FLOPs" (MobileNetV2
    = 300 M). ``flops_total_m``: everything fvcore counts (adds BatchNorm and pooling).
    ``params_m``: parameters in millions."""

    flops_m: float
    flops_total_m: float
    params_m: float
    source: str = "fvcore"


def compute_cost(model: torch.nn.Module, input_shape: tuple[int, ...]) -> ComputeCost:
    """Count one forward pass of batch 1 with fvcore (jit tracing)."""
    import torch

    with warnings.catch_warnings():
        # fvcore's import raises torch.jit.script DeprecationWarnings on torch >= 2.9.
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        model.eval()
        x = torch.zeros(1, *input_shape)
        analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = analysis.by_operator()  # one trace; total() would trace again
        total = sum(by_op.values())
    macs = sum(v for k, v in by_op.items() if k in ("conv", "linear", "matmul", "addmm"))
    params = sum(p.numel() for p in model.parameters())
    return ComputeCost(flops_m=macs / 1e6, flops_total_m=total / 1e6, params_m=params / 1e6)
