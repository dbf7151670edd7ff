"""What the agent runs on (PROTOCOL.md, ``fingerprint``): a cached static part, clock and temperature read fresh."""

from __future__ import annotations

import functools
import glob
import os
import platform
import socket
from typing import Any

#: CPU flags that change what ONNX Runtime's kernels can do.
ISA_OF_INTEREST = tuple("sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile neon asimd asimddp sve sve2".split())


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _cpuinfo_fields(key: str) -> list[str]:
    text = _read("/proc/cpuinfo") or ""
    values = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key:
            values.append(value.strip())
    return values


@functools.cache
def static() -> dict[str, Any]:
    """The part that does not change while the agent runs."""
    import onnxruntime as ort

    models = _cpuinfo_fields("model name") or _cpuinfo_fields("hardware")
    flags = set((_cpuinfo_fields("flags") or _cpuinfo_fields("features") or [""])[0].split())
    machine = platform.machine()
    if machine in ("aarch64", "arm64") and not flags:
        flags.add("neon")  # AArch64 always has Advanced SIMD, even where /proc does not say (macOS)
    return {
        "machine": machine,
        "cpu": models[0] if models else (platform.processor() or machine),
        "isa": sorted(f for f in ISA_OF_INTEREST if f in flags),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": list(ort.get_available_providers()),
        "hostname": socket.gethostname(),
    }


def cpu_mhz() -> float | None:
    """The current clock of CPU 0 in MHz (cpufreq, else /proc/cpuinfo), or None where not exposed."""
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if khz is not None:
        try:
            return round(int(khz.strip()) / 1000.0, 1)
        except ValueError:
            pass
    mhz = _cpuinfo_fields("cpu mhz")
    try:
        return round(float(mhz[0]), 1) if mhz else None
    except ValueError:
        return None


def temperature_c() -> float | None:
    """The hottest thermal zone in degrees Celsius, or None where /sys/class/thermal exposes none."""
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        text = _read(path)
        try:
            temps.append(int((text or "").strip()) / 1000.0)
        except ValueError:
            continue
    return round(max(temps), 1) if temps else None


def load_1m() -> float | None:
    """The one-minute load average (runnable processes), or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def dynamic() -> dict[str, Any]:
    """What changes while the agent runs: ``cpu_mhz``, ``temperature_c`` and ``load_1m``, read now."""
    return {"cpu_mhz": cpu_mhz(), "temperature_c": temperature_c(), "load_1m": load_1m()}


def fingerprint() -> dict[str, Any]:
    """The static part plus :func:`dynamic`."""
    return {**static(), **dynamic()}
