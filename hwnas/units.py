"""Parsers for user-facing quantities (latency budgets with units, counts with suffixes)."""

from __future__ import annotations

import math
import re

from hwnas.errors import UsageError

_LATENCY = re.compile(r"(?P<num>\d+(?:\.\d+)?|\.\d+)(?P<unit>us|µs|ms|s)")
_TO_MS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}


def parse_latency_ms(text: str) -> float:
    """Parse ``'20ms'``, ``'500us'`` or ``'0.02s'`` into milliseconds.

    The unit is required and no space is allowed, so ``20`` and ``20 ms`` are refused
    with an example rather than guessed.

    Raises:
        UsageError: naming the value and giving a valid example.
    """
    raw = text
    m = _LATENCY.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        hint = ""
        if isinstance(text, str):
            t = text.strip()
            if re.fullmatch(r"-?\d+(\.\d+)?", t):
                hint = " (a unit is required)"
            elif re.fullmatch(r"\d+(\.\d+)?\s+(us|µs|ms|s)", t):
                hint = " (no space between number and unit)"
            elif t.startswith("-"):
                hint = " (it must be positive)"
        raise UsageError(f"invalid latency {raw!r}{hint}; write a positive number with a unit us, ms or s, e.g. 20ms, 500us, 0.02s")
    value = float(m["num"]) * _TO_MS[m["unit"]]
    if not math.isfinite(value):
        raise UsageError(f"invalid latency {raw!r}: the number is too large, e.g. 20ms")
    if value <= 0:
        raise UsageError(f"invalid latency {raw!r}: it must be positive, e.g. 20ms")
    return value


def format_ms(value_ms: float) -> str:
    """Inverse of :func:`parse_latency_ms` for file names and messages: ``20ms``, ``0.5ms``."""
    text = f"{value_ms:.12f}".rstrip("0").rstrip(".")
    return f"{text}ms"
