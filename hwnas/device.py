"""Devices: one small TOML file each, under ``devices/`` (built in) or a user folder.

Two kinds:

* ``onnxruntime``: latency is measured live with an ONNX Runtime execution provider
  (``cpu``, ``cuda``), with the threads, batch, warm-up and repeat counts of the file.
* ``table``: latency is looked up in a measured benchmark table shipped with hwnas (the 27
  HELP / HW-NAS-Bench devices), for the spaces that table covers.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hwnas.errors import UsageError
from hwnas.registry import did_you_mean

KINDS = ("onnxruntime", "table")
_EXAMPLE = 'name = "cpu"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"'


@dataclass(frozen=True)
class TableRef:
    """Where a table device's latencies for one space live."""

    table: str
    estimated: bool
    source: str


@dataclass(frozen=True)
class Device:
    """A latency target, as read from its TOML file."""

    name: str
    kind: str
    description: str
    batch: int = 1
    provider: str = ""
    threads: int = 1
    warmup: int = 20
    repeats: int = 100
    tables: dict[str, TableRef] = field(default_factory=dict)
    path: str = ""

    def measurement_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hwnas.cost.measure.measure_onnx` for this device."""
        return {"provider": self.provider, "threads": self.threads, "batch": self.batch, "warmup": self.warmup, "repeats": self.repeats}

    def covers(self, space: str) -> bool:
        return self.kind == "onnxruntime" or space in self.tables

    def spaces_text(self) -> str:
        return "any (measured)" if self.kind == "onnxruntime" else ", ".join(sorted(self.tables))


def builtin_devices_dir() -> Path:
    """The ``devices/`` folder shipped with hwnas (a source checkout or the installed copy)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "devices", here / "_devices"):
        if candidate.is_dir():
            return candidate
    raise UsageError(f"hwnas's devices folder is missing (looked in {here.parent / 'devices'}); reinstall hwnas")


def device_dirs() -> list[Path]:
    """Folders searched for device files: ``$HWNAS_DEVICES`` (os.pathsep-separated) first, then the built-ins."""
    extra = [Path(p) for p in os.environ.get("HWNAS_DEVICES", "").split(os.pathsep) if p]
    return [*extra, builtin_devices_dir()]


#: Keys a device file may hold, per kind, and the keys of a ``[latency.<space>]`` table.
KEYS = {
    "onnxruntime": ("name", "kind", "description", "provider", "threads", "batch", "warmup", "repeats"),
    "table": ("name", "kind", "description", "batch", "latency"),
}
LATENCY_KEYS = ("table", "estimated", "source")
#: Spaces with shipped benchmark latency tables (a table device can only cover these).
BENCHMARK_SPACES = ("nb201",)
#: Upper limits of the measurement settings: larger values are typos (or exhaust memory).
LIMITS = {"batch": 4096, "threads": 1024, "warmup": 100_000, "repeats": 1_000_000}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def _get(data: dict[str, Any], key: str, typ: type | tuple[type, ...], path: Path, default: Any = None, where: str = "") -> Any:
    if key not in data:
        if default is not None:
            return default
        inside = f" in [{where.rstrip('.')}]" if where else ""
        raise UsageError(f"device file {path} lacks key {key!r}{inside}; a minimal file reads: {_EXAMPLE!r}")
    value = data[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise UsageError(
            f"device file {path}: {where}{key} = {value!r} has the wrong type; expected {getattr(typ, '__name__', typ)}, "
            f"e.g. {_EXAMPLE_VALUES.get(key, _EXAMPLE)}"
        )
    return value


_EXAMPLE_VALUES = {
    "name": 'name = "mydevice"',
    "kind": 'kind = "onnxruntime"',
    "description": 'description = "my board"',
    "provider": 'provider = "CPUExecutionProvider"',
    "threads": "threads = 1",
    "batch": "batch = 1",
    "warmup": "warmup = 20",
    "repeats": "repeats = 100",
    "latency": '[latency.nb201] table = "pixel3"',
    "table": 'table = "pixel3"',
    "estimated": "estimated = false",
    "source": 'source = "where the numbers come from"',
}


def _refuse_unknown_keys(data: dict[str, Any], valid: tuple[str, ...], path: Path, where: str = "") -> None:
    for key in data:
        if key not in valid:
            raise UsageError(
                f"device file {path}: unknown key {where + key!r}{did_you_mean(key, list(valid))}; valid keys: {', '.join(valid)}"
            )


def load_device_file(path: Path) -> Device:
    """Read and check one device TOML file.

    Every key is checked: its type, its range, and that it is a key of the file's kind (a typo
    such as ``thread = 4`` is refused, not ignored).

    Raises:
        UsageError: a one-line message naming the file and the bad key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"device file {path} is not valid TOML ({exc}); a minimal file reads: {_EXAMPLE!r}") from None
    except UnicodeDecodeError:
        raise UsageError(f"device file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"cannot read device file {path}: {exc.strerror}") from None
    except ValueError as exc:  # e.g. a NUL character in the path
        raise UsageError(f"cannot read device file {str(path)!r}: {exc}") from None
    name = _get(data, "name", str, path)
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"device file {path}: name = {name!r} must be 1-64 letters, digits, '_', '.', '+' or '-' "
            '(it names run folders and tables), e.g. name = "my_board"'
        )
    kind = _get(data, "kind", str, path)
    if kind not in KINDS:
        raise UsageError(f"device file {path}: kind = {kind!r} is not one of {list(KINDS)}{did_you_mean(kind, list(KINDS))}")
    _refuse_unknown_keys(data, KEYS[kind], path)
    description = _get(data, "description", str, path, default=name)
    batch = _get(data, "batch", int, path, default=1)
    _check_range(path, "batch", batch, 1)
    if kind == "table":
        latency = _get(data, "latency", dict, path)
        if not latency:
            raise UsageError(f'device file {path}: [latency] names no space; add e.g. [latency.nb201] with table = "pixel3"')
        tables = {}
        for space, ref in latency.items():
            if not isinstance(ref, dict):
                raise UsageError(
                    f"device file {path}: [latency.{space}] must be a table with a 'table' key, e.g. {_EXAMPLE_VALUES['latency']}"
                )
            if space not in BENCHMARK_SPACES:
                raise UsageError(
                    f"device file {path}: [latency.{space}]: benchmark latency tables exist for {', '.join(BENCHMARK_SPACES)} only"
                    f'{did_you_mean(space, list(BENCHMARK_SPACES))}; measure other spaces with kind = "onnxruntime"'
                )
            where = f"latency.{space}."
            _refuse_unknown_keys(ref, LATENCY_KEYS, path, where)
            tables[space] = TableRef(
                table=_get(ref, "table", str, path, where=where),
                estimated=_get(ref, "estimated", bool, path, default=False, where=where),
                source=_get(ref, "source", str, path, default="", where=where),
            )
        return Device(name=name, kind=kind, description=description, batch=batch, tables=tables, path=str(path))
    provider = _get(data, "provider", str, path)
    threads = _get(data, "threads", int, path, default=1)
    warmup = _get(data, "warmup", int, path, default=20)
    repeats = _get(data, "repeats", int, path, default=100)
    for key, value, low in (("threads", threads, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        _check_range(path, key, value, low)
    return Device(
        name=name,
        kind=kind,
        description=description,
        batch=batch,
        provider=provider,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        path=str(path),
    )


def _check_range(path: Path, key: str, value: int, low: int) -> None:
    if value < low:
        raise UsageError(f"device file {path}: {key} = {value} must be >= {low}")
    if value > LIMITS[key]:
        raise UsageError(f"device file {path}: {key} = {value} is too large (at most {LIMITS[key]})")


@cache
def _scan(dirs: tuple[Path, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def list_devices() -> list[str]:
    return sorted(_scan(tuple(device_dirs())))


def get_device(name: str) -> Device:
    """The device called ``name``, or the device file at path ``name`` (ending in .toml)."""
    if name.endswith(".toml"):
        return load_device_file(Path(name))
    files = _scan(tuple(device_dirs()))
    if name not in files:
        valid = sorted(files)
        raise UsageError(
            f"unknown device {name!r}{did_you_mean(name, valid)}; run 'hwnas devices' for the list "
            f"(e.g. cpu, pixel3) or pass a device file path ending in .toml"
        )
    device = load_device_file(files[name])
    if device.name != name:
        raise UsageError(f"device file {files[name]} says name = {device.name!r}; it must match the file name {name!r}")
    return device
