"""Live latency: run an ONNX model in ONNX Runtime with warm-up and repeats.

The timing core (session options, the timed loop, the statistics) is ``hwnas_agent.timing``,
the same code the device agent runs, so a local and a remote measurement differ only in where
they run. The timed loop is as bare as a plain ``session.run`` loop;
``benchmarks/measure_overhead.py`` checks the ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hwnas_agent import timing as _timing
from hwnas_agent.timing import time_session

from hwnas.cost._onnx import INPUT_NAME, make_session
from hwnas.errors import UsageError

__all__ = ["INPUT_NAME", "Measurement", "check_provider", "make_session", "measure_onnx", "time_session"]


@dataclass(frozen=True)
class Measurement:
    """Latency statistics of one model on one device, in milliseconds."""

    median_ms: float
    p90_ms: float
    iqr_ms: float
    min_ms: float
    repeats: int
    warmup: int
    threads: int
    batch: int
    provider: str
    source: str = "measured"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_provider(provider: str) -> None:
    """Refuse, before any work, an ONNX Runtime execution provider that is not installed here.

    Raises:
        UsageError: naming the provider, what is installed, and how to get it.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        hint = " (install onnxruntime-gpu instead of onnxruntime)" if provider == "CUDAExecutionProvider" else ""
        raise UsageError(
            f"ONNX Runtime execution provider {provider!r} is not installed{hint}; "
            f"available here: {', '.join(available)}; e.g. use --device cpu"
        )


def measure_onnx(
    model: bytes | str,
    input_shape: tuple[int, ...],
    *,
    provider: str = "CPUExecutionProvider",
    threads: int = 1,
    batch: int = 1,
    warmup: int = 20,
    repeats: int = 100,
    seed: int = 0,
) -> Measurement:
    """Measure an ONNX model (bytes or a path) on one input of shape (batch, *input_shape).

    Returns the median, 90th percentile, interquartile range and minimum of the per-call
    times: medians because single outliers on shared machines reach 2-12x the median.
    """
    check_provider(provider)
    return Measurement(
        **_timing.measure(model, input_shape, provider=provider, threads=threads, batch=batch, warmup=warmup, repeats=repeats, seed=seed)
    )
