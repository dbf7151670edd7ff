"""The timing core shared by hwnas's local measurements and the agent's remote ones.

The timed loop is kept as bare as a plain ``session.run`` loop (one ``perf_counter_ns`` pair
per call, a preallocated result array), so measuring costs no more than running.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np

#: Input name of every model hwnas exports.
INPUT_NAME = "input"


def make_session(model: bytes | str, *, provider: str, threads: int = 1, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime session with full graph optimisation, sequential execution, ``threads`` intra-op threads.

    Args:
        model: the model's bytes (or a path, for local use only; the agent always passes bytes).
        provider: the execution provider; the CPU provider is appended as the fallback.
        threads: intra-op threads (inter-op is 1: sequential execution).
        profile_prefix: when given, session profiling is on and writes its trace under this prefix.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    providers: list[Any] = [provider]
    if provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


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


def make_feed(session: Any, input_shape: tuple[int, ...], *, batch: int, seed: int) -> dict[str, np.ndarray]:
    """One seeded float32 input of shape (batch, *input_shape) for the session's single input.

    Raises:
        ValueError: when the model does not have exactly one input.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"the model must have exactly one input (hwnas exports {INPUT_NAME!r}); it has {len(inputs)}")
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
    return {inputs[0].name: x}


def stats_ms(times_ns: np.ndarray) -> dict[str, float]:
    """Median, 90th percentile, interquartile range and minimum in milliseconds.

    Medians because single outliers on shared machines reach 2-12x the median.
    """
    times_ms = times_ns / 1e6
    q25, q50, q75, q90 = np.percentile(times_ms, [25, 50, 75, 90])
    return {"median_ms": float(q50), "p90_ms": float(q90), "iqr_ms": float(q75 - q25), "min_ms": float(times_ms.min())}


def measure(
    model: bytes | str,
    input_shape: tuple[int, ...],
    *,
    provider: str = "CPUExecutionProvider",
    threads: int = 1,
    batch: int = 1,
    warmup: int = 20,
    repeats: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure an ONNX model (bytes or a path) on one input of shape (batch, *input_shape).

    Returns:
        ``median_ms``, ``p90_ms``, ``iqr_ms``, ``min_ms`` and the settings ``repeats``, ``warmup``,
        ``threads``, ``batch``, ``provider``.
    """
    if repeats < 1 or warmup < 0 or batch < 1 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch >= 1, threads >= 1; got {repeats}, {warmup}, {batch}, {threads}")
    session = make_session(model, provider=provider, threads=threads)
    feed = make_feed(session, input_shape, batch=batch, seed=seed)
    times = time_session(session, feed, warmup=warmup, repeats=repeats)
    return {**stats_ms(times), "repeats": repeats, "warmup": warmup, "threads": threads, "batch": batch, "provider": provider}


def node_providers(
    model: bytes, input_shape: tuple[int, ...], *, provider: str, threads: int = 1, batch: int = 1, seed: int = 0
) -> dict[str, int]:
    """How many graph nodes each execution provider ran, read from one profiled run.

    A separate session from the timed one, so profiling never touches a timing; its trace file
    lives in a temporary folder that is removed on return.
    """
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-agent-") as tmp:
        session = make_session(model, provider=provider, threads=threads, profile_prefix=os.path.join(tmp, "profile"))
        session.run(None, make_feed(session, input_shape, batch=batch, seed=seed))
        path = session.end_profiling()
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
        del session
    seen: set[str] = set()
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args:
            continue
        # A node may appear in several events (fences, kernel time); count it once.
        key = str(args.get("node_index", event.get("name", "")))
        if key in seen:
            continue
        seen.add(key)
        counts[str(args["provider"])] += 1
    return dict(counts)
