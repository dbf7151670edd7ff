"""Devices: one small TOML file each, under ``devices/`` (built in) or a user folder.

Every file says ``name``, ``kind`` and optionally ``description``, ``batch`` and ``precision``
(fp32 | int8 | fp16, what its kind supports; ``--precision`` overrides it); the other keys
belong to its kind, registered in :data:`hwnas.cost.source.DEVICE_KINDS` with their types and
ranges (see :mod:`hwnas.cost.kinds` for the built-in ones):

* ``onnxruntime``: latency is measured live with an ONNX Runtime execution provider
  (``cpu``, ``cuda``), with the threads, batch, warm-up and repeat counts of the file, or
  predicted from a lookup table that ``hwnas profile`` built for it.
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

_EXAMPLE = 'name = "cpu"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"'
#: Keys every device file may hold, whatever its kind.
COMMON_KEYS = ("name", "kind", "description", "batch", "precision")
#: Upper limit of ``batch``: a larger value is a typo (or exhausts memory).
MAX_BATCH = 4096


@dataclass(frozen=True)
class TableRef:
    """Where a table device's latencies for one space live."""

    table: str
    estimated: bool
    source: str


@dataclass(frozen=True)
class Device:
    """A latency target, as read from its TOML file; ``settings`` holds its kind's own keys."""

    name: str
    kind: str
    description: str
    batch: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    #: What the device times: fp32 as exported, int8 quantized first (:mod:`hwnas.cost.quantize`).
    precision: str = "fp32"

    def with_precision(self, precision: str) -> Device:
        """This device at ``precision`` (UsageError naming what its kind supports otherwise)."""
        from dataclasses import replace

        from hwnas.cost.quantize import check_precision
        from hwnas.cost.source import device_kind

        check_precision(precision, device_kind(self.kind).precisions(self), device=self.name, provider=self.provider)
        return self if precision == self.precision else replace(self, precision=precision)

    # The onnxruntime kind's settings, read where a measurement needs them.
    @property
    def provider(self) -> str:
        return str(self.settings.get("provider", ""))

    @property
    def threads(self) -> int:
        return int(self.settings.get("threads", 1))

    @property
    def warmup(self) -> int:
        return int(self.settings.get("warmup", 20))

    @property
    def repeats(self) -> int:
        return int(self.settings.get("repeats", 100))

    @property
    def tables(self) -> dict[str, TableRef]:
        return dict(self.settings.get("tables", {}))

    def measurement_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hwnas.cost.measure.measure_onnx` for this device."""
        return {"provider": self.provider, "threads": self.threads, "batch": self.batch, "warmup": self.warmup, "repeats": self.repeats}

    @property
    def measured(self) -> bool:
        """Whether its latency is measured live (so ``hwnas profile`` can build its table)."""
        from hwnas.cost.source import device_kind

        return device_kind(self.kind).measured

    def covers(self, space: str) -> bool:
        from hwnas.cost.source import device_kind

        return device_kind(self.kind).covers(self, space)

    def spaces_text(self) -> str:
        from hwnas.cost.source import device_kind

        return device_kind(self.kind).spaces_text(self)


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


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def _type_name(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def get_key(
    data: dict[str, Any], key: str, typ: type | tuple[type, ...], path: Any, *, default: Any = None, where: str = "", example: str = ""
) -> Any:
    """``data[key]`` checked for type (a bool is never an int), or ``default``; UsageError naming
    the file and the key when it is missing (and has no default) or has the wrong type."""
    if key not in data:
        if default is not None:
            return default
        inside = f" in [{where.rstrip('.')}]" if where else ""
        raise UsageError(f"device file {path} lacks key {key!r}{inside}; a minimal file reads: {_EXAMPLE!r}")
    value = data[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise UsageError(
            f"device file {path}: {where}{key} = {value!r} has the wrong type; expected {_type_name(typ)}, e.g. {example or _EXAMPLE}"
        )
    return value


def refuse_unknown_keys(data: dict[str, Any], valid: tuple[str, ...] | list[str], path: Any, where: str = "") -> None:
    for key in data:
        if key not in valid:
            raise UsageError(
                f"device file {path}: unknown key {where + key!r}{did_you_mean(key, list(valid))}; valid keys: {', '.join(valid)}"
            )


def check_range(path: Any, key: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise UsageError(f"device file {path}: {key} = {value} must be >= {low:g}")
    if high is not None and value > high:
        raise UsageError(f"device file {path}: {key} = {value} is too large (at most {high:g})")


def load_device_file(path: Path) -> Device:
    """Read and check one device TOML file.

    Every key is checked: its type, its range, and that it is a key of the file's kind (a typo
    such as ``thread = 4`` is refused, not ignored). The kind, from the registry, says which keys
    it takes.

    Raises:
        UsageError: a one-line message naming the file and the bad key.
    """
    from hwnas.cost.source import device_kind, device_kinds

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
    name = get_key(data, "name", str, path, example='name = "mydevice"')
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"device file {path}: name = {name!r} must be 1-64 letters, digits, '_', '.', '+' or '-' "
            '(it names run folders and tables), e.g. name = "my_board"'
        )
    kind_name = get_key(data, "kind", str, path, example='kind = "onnxruntime"')
    kinds = device_kinds()
    if kind_name not in kinds:
        raise UsageError(f"device file {path}: kind = {kind_name!r} is not one of {kinds}{did_you_mean(kind_name, kinds)}")
    kind = device_kind(kind_name)
    refuse_unknown_keys(data, [*COMMON_KEYS, *kind.keys], path)
    description = get_key(data, "description", str, path, default=name, example='description = "my board"')
    batch = get_key(data, "batch", int, path, default=1, example="batch = 1")
    check_range(path, "batch", batch, 1, MAX_BATCH)
    settings: dict[str, Any] = {}
    for key, spec in kind.keys.items():
        value = get_key(data, key, spec.type, path, default=spec.default, example=spec.example)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(path, key, value, spec.low, spec.high)
        settings[key] = value
    if kind.parse is not None:
        settings = kind.parse(settings, path)
    precision = get_key(data, "precision", str, path, default="fp32", example='precision = "int8"')
    device = Device(name=name, kind=kind_name, description=description, batch=batch, settings=settings, path=str(path))
    if precision != device.precision:
        try:
            device = device.with_precision(precision)
        except UsageError as exc:
            raise UsageError(f"device file {path}: precision = {precision!r}: {exc}") from None
    return device


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


def load_all() -> tuple[list[Device], dict[Path, str]]:
    """Every device of :func:`device_dirs`, for a listing: the devices that load, and for each file
    that does not, its one-line error (one bad file in ``$HWNAS_DEVICES`` hides none of the others;
    ``--device`` naming it still refuses it, through :func:`get_device`)."""
    good: list[Device] = []
    bad: dict[Path, str] = {}
    files = _scan(tuple(device_dirs()))
    for name in sorted(files):
        try:
            good.append(get_device(name))
        except UsageError as exc:
            bad[files[name]] = str(exc)
    return good, bad


#: Names users type for a device that has another name here: name -> (device, why that one).
DEVICE_ALIASES = {
    "gpu": ("cuda", "hwnas calls this machine's NVIDIA GPU 'cuda', as PyTorch and ONNX Runtime do"),
    "nvidia": ("cuda", "hwnas calls this machine's NVIDIA GPU 'cuda', as PyTorch and ONNX Runtime do"),
    "host": ("cpu", "'cpu' is this machine's CPU, measured live with ONNX Runtime"),
    "local": ("cpu", "'cpu' is this machine's CPU, measured live with ONNX Runtime"),
    "raspberrypi": ("raspi4", "'raspi4' is the Raspberry Pi 4's measured NAS-Bench-201 table"),
    "rpi": ("raspi4", "'raspi4' is the Raspberry Pi 4's measured NAS-Bench-201 table"),
    "pi": ("raspi4", "'raspi4' is the Raspberry Pi 4's measured NAS-Bench-201 table"),
}


def get_device(name: str) -> Device:
    """The device called ``name``, or the device file at path ``name`` (ending in .toml)."""
    if name.endswith(".toml"):
        return load_device_file(Path(name))
    files = _scan(tuple(device_dirs()))
    if name not in files:
        valid = sorted(files)
        alias = DEVICE_ALIASES.get(name.lower())
        hint = f" (did you mean {alias[0]!r}? {alias[1]})" if alias and alias[0] in files else did_you_mean(name, valid)
        raise UsageError(
            f"unknown device {name!r}{hint}; run 'hwnas devices' for the list (e.g. cpu, pixel3) or pass a device file path ending in .toml"
        )
    device = load_device_file(files[name])
    if device.name != name:
        raise UsageError(f"device file {files[name]} says name = {device.name!r}; it must match the file name {name!r}")
    return device


#: Built-in devices measured through another runtime where theirs is missing here: device -> the device that
#: measures instead. ``cuda`` is ONNX Runtime's CUDA provider (onnxruntime-gpu), else PyTorch on the GPU.
DEVICE_FALLBACKS = {"cuda": "cuda_torch"}


def runnable(device: Device, log: Any = None) -> Device:
    """``device``, or the device of :data:`DEVICE_FALLBACKS` that measures it where its own runtime
    is missing here and the fallback's is not; says which in one line through ``log``, and the
    fallback's ``settings["chosen"]`` says why (its latency source's ``describe()``, so the report).
    Where neither runs, ``device`` itself: its kind's preflight then refuses it with its own line."""
    from dataclasses import replace

    from hwnas.cost.source import device_kind

    fallback = DEVICE_FALLBACKS.get(device.name)
    if fallback is None or Path(device.path).resolve().parent != builtin_devices_dir():
        return device
    say = log or (lambda line: None)
    try:
        device_kind(device.kind).preflight(device)
    except UsageError as exc:
        missing = str(exc).split(";")[0]
    else:
        say(f"device {device.name}: measuring with {device.description}")
        return device
    other = get_device(fallback)
    try:
        device_kind(other.kind).preflight(other)
    except UsageError:
        return device
    why = f"--device {device.name}: {missing}; measuring with {other.name} instead: {other.description}"
    say(why)
    return replace(other, settings={**other.settings, "chosen": why})
