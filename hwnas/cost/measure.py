"""Live latency: run an ONNX model in ONNX Runtime with warm-up and repeats.

The timed loop is kept as bare as a plain ``session.run`` loop (one ``perf_counter_ns``
pair per call, a preallocated result array), so measuring costs no more than running;
``benchmarks/measure_overhead.py`` checks the ratio.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hwnas.cost._onnx import INPUT_NAME, make_session
from hwnas.errors import UsageError


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


def time_session(session: Any, feed: dict[str, np.ndarray], *, warmup: int, repeats: int) -> np.ndarray:
    """Per-call wall times in ns of ``repeats`` runs after ``warmup`` untimed runs."""
    run = session.run
    for _ in range(warmup):
        run(None, feed)
    times = np.empty(repeats, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(repeats):
        t0 = clock()
        run(None, feed)
        times[i] = clock() - t0
    return times


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
    if repeats < 1 or warmup < 0 or batch < 1 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch >= 1, threads >= 1; got {repeats}, {warmup}, {batch}, {threads}")
    session = make_session(model, provider=provider, threads=threads)
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
    times_ms = time_session(session, {INPUT_NAME: x}, warmup=warmup, repeats=repeats) / 1e6
    q25, q50, q75, q90 = np.percentile(times_ms, [25, 50, 75, 90])
    return Measurement(
        median_ms=float(q50),
        p90_ms=float(q90),
        iqr_ms=float(q75 - q25),
        min_ms=float(times_ms.min()),
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        batch=batch,
        provider=provider,
    )
