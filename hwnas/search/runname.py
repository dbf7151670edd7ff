"""The default run folder's name: every setting that makes a run distinct, short and filesystem-safe.

A run folder holds one study, and resuming it with other settings is refused (see
:mod:`.rundir`), so two commands whose study identity (:meth:`SearchConfig.identity`) differs
must never default to the same folder. The name is the space, the device and its latency budget,
then each identity setting that is not at its default (a tag per setting), then the strategy and
the seed: ``nb201-cpu-20ms-hybrid-seed0``, ``nb201-cpu-5ms-mem256KB-hybrid-seed0``. Where a
setting cannot be spelled in full with ``[A-Za-z0-9._]`` (a device file's path, a data folder,
long evaluator options), the name ends with a short hash of everything it stands for, so it
stays unique.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.units import format_ms

if TYPE_CHECKING:
    from hwnas.search.config import SearchConfig

#: Characters a part keeps as they are; any other is replaced (and the name gets its hash).
_SAFE = re.compile(r"[^A-Za-z0-9._]")
#: Evaluator options longer than this, spelled out, are replaced by the hash.
_MAX_OPTIONS = 40
#: A longer name is cut and ends with the hash (file systems allow 255 bytes a name).
_MAX_NAME = 150
#: The latency models a device gives without being asked: no tag (the device names them).
_PLAIN_MODELS = ("", "measured", "table")


def run_name(config: SearchConfig) -> str:
    """The default ``--out`` folder name of ``config`` (see the module docstring)."""
    name = _Name()
    c = config
    name.add(c.space)
    if c.dataset is not None and c.dataset != _default_dataset(c.space):
        name.add(c.dataset)
    name.add(_device(c.device, name))
    name.add(_ms(c.latency_ms))
    if c.precision not in (None, "fp32"):
        name.add(str(c.precision))  # an INT8 run never lands in an FP32 run's folder
    if c.latency_model == "lookup table":
        name.add("lut")
    elif c.latency_model not in _PLAIN_MODELS:
        name.add(c.latency_model)
    for device, budget in zip(c.also_devices, c.also_latency_ms, strict=False):
        name.add(f"and.{_device(device, name)}.{_ms(budget)}")
    if len(c.also_devices) != len(c.also_latency_ms):
        name.lossy = True  # refused by resolve; the hash still tells such configs apart
    if c.flops_m is not None:
        name.add(f"flops{_num(c.flops_m)}M")
    if c.params_m is not None:
        name.add(f"params{_num(c.params_m)}M")
    if c.memory_bytes is not None:
        name.add(f"mem{_bytes(c.memory_bytes)}")
    if c.size_bytes is not None:
        name.add(f"size{_bytes(c.size_bytes)}")
    if c.objective != "latency":
        name.add(f"min.{c.objective}")
    if c.evaluator != "table":
        name.add(c.evaluator)
    if c.evaluator_options:
        options = ".".join(f"{k}{_value(v)}" for k, v in sorted(c.evaluator_options.items()))
        if len(options) > _MAX_OPTIONS:
            name.lossy = True
            options = "options"
        name.add(options)
    if c.data != "digits" and (c.evaluator != "table" or c.strategy == "darts"):  # training data that makes a difference
        name.add("data." + c.data.split(":", 1)[0])
        name.lossy = name.lossy or ":" in c.data
    name.add(c.strategy)
    name.add(f"seed{c.seed}")
    return name.text(c)


class _Name:
    def __init__(self) -> None:
        self.parts: list[str] = []
        #: A part does not spell its setting in full: the name ends with the hash.
        self.lossy = False

    def add(self, part: str) -> None:
        safe = _SAFE.sub("_", part.replace("-", "_"))
        if safe != part:
            self.lossy = True
        self.parts.append(safe)

    def text(self, config: SearchConfig) -> str:
        text = "-".join(self.parts)
        if self.lossy or len(text) > _MAX_NAME:
            text = f"{text[:_MAX_NAME]}-{_hash(config)}"
        return text


def _device(device: str, name: _Name) -> str:
    """A device by its name; a device file by its file name (its path goes into the hash)."""
    if device.endswith(".toml"):
        name.lossy = name.lossy or Path(device).name != device or not Path(device).stem
        return Path(device).stem
    return device


def _default_dataset(space: str) -> str | None:
    try:
        from hwnas.spaces import get_space

        datasets = get_space(space).benchmark_datasets
    except Exception:  # an unknown space: resolve refuses it, with its own message
        return None
    return datasets[0] if datasets else None


def _num(value: float) -> str:
    """A number exactly, as short as Python writes it (``5``, ``0.5``, ``1e-05``)."""
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _ms(value: float) -> str:
    text = format_ms(value)
    try:
        exact = float(text[:-2]) == float(value)
    except ValueError:
        exact = False
    return text if exact else f"{_num(value)}ms"


def _bytes(value: float) -> str:
    """Bytes in the largest binary unit that holds them whole: ``256KB``, ``1MB``, ``1000B``."""
    if float(value).is_integer():
        n = int(value)
        for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
            if n and n % size == 0:
                return f"{n // size}{unit}"
        return f"{n}B"
    return f"{_num(value)}B"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return _num(v)
    return str(v)


def _hash(config: SearchConfig) -> str:
    """8 hex digits of everything the name stands for."""
    key: dict[str, Any] = {**config.identity(), "strategy": config.strategy, "seed": config.seed, "data": config.data}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
