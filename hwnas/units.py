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


_COUNT = re.compile(r"(?P<num>\d+(?:\.\d+)?|\.\d+)(?P<unit>[kKmMgG]?)")
_TO_M = {"": 1e-6, "k": 1e-3, "K": 1e-3, "m": 1.0, "M": 1.0, "g": 1e3, "G": 1e3}


def parse_count_m(text: str, what: str = "count") -> float:
    """Parse ``'300M'``, ``'5M'``, ``'1.2G'``, ``'800K'`` or a plain number into millions.

    Raises:
        UsageError: naming the value and giving a valid example.
    """
    m = _COUNT.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise UsageError(f"invalid {what} {text!r}; write a positive number with an optional K, M or G suffix, e.g. 300M")
    value = float(m["num"]) * _TO_M[m["unit"]]
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"invalid {what} {text!r}: it must be positive and finite, e.g. 300M")
    return value
