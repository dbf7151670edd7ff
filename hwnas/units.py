"""Parsers for user-facing quantities (latency budgets with units, counts with suffixes).

The rules, the same for every flag that takes a quantity:

* a plain decimal number in ASCII digits (``20``, ``0.5``, ``.5``): no sign, no exponent
  (``1e3us`` is refused: write ``1000us`` or ``1ms``), no thousands separators;
* for a latency, directly followed by a unit ``us`` (or ``µs``), ``ms`` or ``s``; a number
  without a unit (``20``) is refused rather than guessed;
* for a count, optionally followed by ``K``, ``M`` or ``G`` (a plain number is a count of ones);
* positive and finite; one value per flag (``20ms,30ms`` is refused: repeat the flag).

Surrounding whitespace is ignored. Every refusal is a :class:`~hwnas.errors.UsageError`
whose one-line message quotes the value and shows one that works.
"""

from __future__ import annotations

import math
import re

from hwnas.errors import UsageError

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
# MICRO SIGN (U+00B5, what keyboards type) and GREEK SMALL LETTER MU (U+03BC, what NFKC makes of it).
_LATENCY = re.compile(_NUMBER + r"(?P<unit>us|\u00b5s|\u03bcs|ms|s)")
_TO_MS = {"us": 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, "ms": 1.0, "s": 1e3}
#: The smallest budget accepted, in ms (0.000000001us): below it :func:`format_ms` would print 0ms.
MIN_LATENCY_MS = 1e-12
_LATENCY_EXAMPLE = "write a positive number with a unit us, ms or s, e.g. 20ms, 500us, 0.02s"


def _latency_hint(t: str) -> str:
    """Why ``t`` (stripped, not a valid latency) was refused, as ' (...)', or ''."""
    if re.fullmatch(r"[+-]?[0-9.]+", t):
        return " (a unit is required)"
    if re.fullmatch(r"[0-9.]+\s+(us|µs|μs|ms|s)", t):
        return " (no space between number and unit)"
    if m := re.fullmatch(r"([0-9]+),([0-9]+)\s*(us|µs|μs|ms|s)", t):
        return f" (use a decimal point: {m[1]}.{m[2]}{m[3]})"
    if "," in t or ";" in t or re.search(r"[0-9.](us|µs|μs|ms|s)\s*[0-9]", t):
        return (
            " (one budget per --latency; for several devices repeat the pair: --device cpu --latency 20ms --device pixel3 --latency 30ms)"
        )
    if t.startswith("-"):
        return " (it must be positive)"
    if re.fullmatch(r"[+-]?[0-9.]*[eE][+-]?[0-9]+\s*(us|µs|μs|ms|s)?", t):
        return " (no exponent notation: write 1000us or 1ms, not 1e3us)"
    if re.search(r"nan|inf", t, re.IGNORECASE):
        return " (it must be a finite number)"
    if re.fullmatch(r"[0-9.]+\s*(US|MS|S|Us|Ms|uS|mS)", t):
        return " (units are lower case: us, ms, s)"
    if re.fullmatch(r"[0-9.]+\s*(msec|millis|milliseconds?|sec|seconds?|usec|microseconds?|m)", t, re.IGNORECASE):
        return " (the units are us, ms and s)"
    if not t.isascii():
        return " (use ASCII digits and the units us, µs, ms or s)"
    return ""


def parse_latency_ms(text: str) -> float:
    """Parse ``'20ms'``, ``'500us'`` or ``'0.02s'`` into milliseconds.

    The unit is required and no space is allowed, so ``20`` and ``20 ms`` are refused
    with an example rather than guessed; so are exponents (``1e3us``), signs, lists
    (``20ms,30ms``), NaN, infinity and values under :data:`MIN_LATENCY_MS`.

    Raises:
        UsageError: naming the value and giving a valid example.
    """
    raw = text
    m = _LATENCY.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        hint = _latency_hint(text.strip()) if isinstance(text, str) else f" (a {type(text).__name__}, not text)"
        raise UsageError(f"invalid latency {raw!r}{hint}; {_LATENCY_EXAMPLE}")
    value = float(m["num"]) * _TO_MS[m["unit"]]
    if not math.isfinite(value):
        raise UsageError(f"invalid latency {raw!r}: the number is too large, e.g. 20ms")
    if value <= 0:
        raise UsageError(f"invalid latency {raw!r}: it must be positive, e.g. 20ms")
    if value < MIN_LATENCY_MS:
        raise UsageError(f"invalid latency {raw!r}: it is below the smallest budget hwnas takes (0.000000001us), e.g. 20ms")
    return value


def format_ms(value_ms: float) -> str:
    """Inverse of :func:`parse_latency_ms` for file names and messages: ``20ms``, ``0.5ms``."""
    text = f"{value_ms:.12f}".rstrip("0").rstrip(".")
    return f"{text}ms"


# A count takes a unit: a bare "--flops 10" was silently ten FLOPs, not the ten million meant.
_COUNT = re.compile(_NUMBER + r"(?P<unit>[kKmMgG])")
_TO_M = {"k": 1e-3, "K": 1e-3, "m": 1.0, "M": 1.0, "g": 1e3, "G": 1e3}


def _count_hint(t: str) -> str:
    if t.startswith("-"):
        return " (it must be positive)"
    if re.fullmatch(r"\+?[0-9]+(\.[0-9]*)?|\+?\.[0-9]+", t):
        return f" (a unit is required: {t}M is {t} million, {t}K {t} thousand, {t}G {t} billion)"
    if re.fullmatch(r"[0-9.]+\s+[kKmMgG]", t):
        return " (no space between number and suffix)"
    if re.fullmatch(r"[+-]?[0-9.]*[eE][+-]?[0-9]+[kKmMgG]?", t):
        return " (no exponent notation: write 1000M or 1G)"
    if "," in t or ";" in t:
        return " (one value per flag)"
    if re.search(r"nan|inf", t, re.IGNORECASE):
        return " (it must be a finite number)"
    return ""


def parse_count_m(text: str, what: str = "count") -> float:
    """Parse ``'300M'``, ``'5M'``, ``'1.2G'``, ``'800K'`` into millions (the unit is required).

    Raises:
        UsageError: naming the value and giving a valid example.
    """
    m = _COUNT.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        hint = _count_hint(text.strip()) if isinstance(text, str) else f" (a {type(text).__name__}, not text)"
        raise UsageError(f"invalid {what} {text!r}{hint}; write a positive number with a K, M or G suffix, e.g. 300M")
    value = float(m["num"]) * _TO_M[m["unit"]]
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"invalid {what} {text!r}: it must be positive and finite, e.g. 300M")
    return value


_BYTES = re.compile(_NUMBER + r"(?P<unit>B|KB|KiB|MB|MiB|GB|GiB)")
#: Memory units are binary (1 KB = 1024 bytes), as microcontroller datasheets count SRAM and flash
#: ("320KB SRAM" is 327,680 bytes); KiB, MiB and GiB are accepted as the same.
_TO_BYTES = {"B": 1, "KB": 1024, "KiB": 1024, "MB": 1024**2, "MiB": 1024**2, "GB": 1024**3, "GiB": 1024**3}
_BYTES_EXAMPLE = "write a positive number with a unit B, KB, MB or GB (1 KB = 1024 bytes), e.g. 320KB, 2MB"


def _bytes_hint(t: str) -> str:
    if re.fullmatch(r"[+-]?[0-9.]*[eE][+-]?[0-9]+\s*([KMG]i?)?B?", t):
        return " (no exponent notation: write 1000KB or 1MB)"
    if re.fullmatch(r"[+-]?[0-9.]+", t):
        return " (a unit is required)"
    if re.fullmatch(r"[0-9.]+\s+\w+", t):
        return " (no space between number and unit)"
    if re.fullmatch(r"[0-9.]+(kb|Kb|kB|mb|Mb|mB|gb|Gb|gB|b|k|K|m|M|g|G)", t):
        return " (the units are B, KB, MB and GB, upper case)"
    return _count_hint(t)


def parse_bytes(text: str, what: str = "memory budget") -> int:
    """Parse ``'320KB'``, ``'2MB'``, ``'512B'`` (binary units) into bytes.

    Raises:
        UsageError: naming the value and giving a valid example.
    """
    m = _BYTES.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        hint = _bytes_hint(text.strip()) if isinstance(text, str) else f" (a {type(text).__name__}, not text)"
        raise UsageError(f"invalid {what} {text!r}{hint}; {_BYTES_EXAMPLE}")
    value = float(m["num"]) * _TO_BYTES[m["unit"]]
    if not math.isfinite(value) or value < 1:
        raise UsageError(f"invalid {what} {text!r}: it must be at least 1 byte, e.g. 320KB")
    if value > 2**50:
        raise UsageError(f"invalid {what} {text!r}: it is larger than any network hwnas builds (at most 1024TB), e.g. 2MB")
    return math.floor(value)


def format_bytes(value: float) -> str:
    """``327680`` -> ``'320KB'``, ``1536000`` -> ``'1.465MB'`` (binary units, 4 significant digits)."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if abs(value) >= size:
            return f"{value / size:.4g}{unit}"
    return f"{value:.4g}B"
