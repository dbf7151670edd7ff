"""The cost-source interface: every number a candidate costs comes from a registered source.

A source declares the metrics it gives (name, unit, direction), whether it is *cheap* (known
before any trial is spent, without building or running the network, so samplers may skip
over-budget proposals and the search can probe the budget up front), where its numbers come
from (``describe``, for the report) and what the user should know about it (``warnings``).

Two registries, after nn-Meter's backend registry and NNI's ``Profiler.profile(sample)``:

* :data:`COST_SOURCES`: the metric sources that do not depend on a device (FLOPs and parameters,
  peak activation memory, model size): ``factory(space) -> CostSource``.
* :data:`DEVICE_KINDS`: a device file's ``kind`` -> :class:`DeviceKind`, which says the keys such
  a file may hold and builds the latency source for a device and a space. A remote device, a
  PyTorch runtime or a new benchmark is one module that registers one kind here.

Built-in entries are registered on first use (:func:`_builtin`), so importing this module costs
nothing and imports no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hwnas.registry import Registry

if TYPE_CHECKING:
    import torch

    from hwnas.device import Device
    from hwnas.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Metric:
    """A cost metric: its key in trials and reports, unit, direction and words for messages."""

    name: str
    unit: str
    label: str
    direction: Literal["minimize", "maximize"] = "minimize"


@dataclass(frozen=True)
class Cost:
    """One number a candidate costs, where it came from, and details (e.g. a measurement's p90)."""

    value: float
    source: str
    details: dict[str, Any] = field(default_factory=dict)


#: A lazy getter of the candidate's torch module: built at most once per trial, only when a
#: source or the evaluator needs it.
ModelGetter = Callable[[], "torch.nn.Module"]


class CostSource(ABC):
    """Gives one or more cost metrics of an architecture.

    Attributes:
        kind: the registry name of the source (``measured``, ``lookup table``, ``table``, ...).
        cheap: True when a value costs microseconds and needs no network built or run.
    """

    kind: str = ""
    cheap: bool = True

    @abstractmethod
    def metrics(self) -> tuple[Metric, ...]:
        """The metrics :meth:`costs` returns, in a fixed order."""

    @abstractmethod
    def costs(self, arch: Arch, model: ModelGetter | None = None) -> dict[str, Cost]:
        """Every metric of :meth:`metrics` for ``arch``; ``model`` builds its module on demand."""

    def lower_bound(self, metric: str) -> tuple[Cost, Arch] | None:
        """The least value the space can reach for ``metric`` (exact or a probe) and its arch;
        None when the source cannot say."""
        return None

    def describe(self) -> dict[str, Any]:
        """Provenance for the report: what the numbers are and where they came from."""
        return {"source": self.kind}

    def warnings(self) -> list[str]:
        """One-line warnings for the user (e.g. a lookup table that predicts poorly)."""
        return []

    def at_precision(self, precision: str) -> CostSource:
        """The source for a run at ``precision`` (``fp32``, ``int8``); a source whose numbers do
        not depend on the precision returns itself."""
        return self


SourceFactory = Callable[["SearchSpace"], CostSource]
#: Device-independent metric sources, by name: ``factory(space) -> CostSource``.
COST_SOURCES: Registry[SourceFactory] = Registry("cost source")


@dataclass(frozen=True)
class KeySpec:
    """A key a device file of some kind may hold: its type, default (None: required), lower and
    upper bounds for numbers, and an example line for messages."""

    type: type | tuple[type, ...]
    default: Any = None
    low: float | None = None
    high: float | None = None
    example: str = ""


@dataclass(frozen=True)
class LatencyRequest:
    """How the user asked for a device's latency: ``source`` auto | lut | measure | table, an
    explicit lookup table, and whether a table built elsewhere may be used."""

    source: str = "auto"
    table: str | None = None
    allow_foreign: bool = False
    log: Callable[[str], None] | None = None
    #: The table at ``table``, where the caller has loaded (and so checked) it already.
    loaded: Any = None
    #: Use a table measured for networks of another input shape than the run's (``--force``; warned loudly).
    force_shape: bool = False


def onnx_model(device: Device, module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    """The module as the ONNX bytes ONNX Runtime kinds time (:func:`hwnas.cost.quantize.device_bytes`:
    the fast TorchScript export, quantized first at int8)."""
    from hwnas.cost.quantize import device_bytes

    return device_bytes(device, module, shape)


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device file.

    Attributes:
        name: the ``kind = "..."`` of the file.
        keys: the keys a file of this kind may hold beyond ``name``, ``kind``, ``description`` and
            ``batch`` (checked for type and range by :mod:`hwnas.device`); their values land in
            ``Device.settings``.
        latency: builds the latency source of a device and a space for a :class:`LatencyRequest`.
        parse: an optional extra check of the parsed settings (raises UsageError), e.g. nested tables.
        covers: whether the kind can give latencies for a space (default: any).
        measured: whether its latencies are measured live (so ``hwnas profile`` can build a table).
        summary: the "latency from" column of ``hwnas devices``.
        spaces_text: the "spaces" column of ``hwnas devices``.
        measure: times a model on the device for an input shape (C, H, W) and returns a
            :class:`hwnas.cost.measure.Measurement` (``hwnas profile``, the export's re-measurement);
            None for kinds that measure nothing. The model is what ``prepare`` made of a module.
        prepare: turns a torch module and its input shape (C, H, W) into what ``measure`` times:
            ONNX bytes (:func:`onnx_model`, the default) or, for a kind that runs PyTorch itself,
            the module (see :attr:`measures_onnx`).
        fingerprint: what identifies the hardware that measures (lookup tables are keyed to it).
        runtime: the versions of the runtime that measures (lookup tables are keyed to them too).
        preflight: called before any work; raises a one-line UsageError when the device cannot be used.
        measure_each: times ONNX model bytes on *each* unit that measures for the device (each
            agent of a farm: separate hardware that drifts on its own) -> {unit: {"median_ms",
            "p90_ms", "iqr_ms", and "cpu_mhz", "temperature_c" where known} or why it gave none};
            None: ``measure`` once, as the unit ``"local"`` (see :func:`measure_each`).
        status: live lines for ``hwnas devices`` (e.g. each agent's health and fingerprint),
            asked within the given seconds; None for kinds with nothing live to show.
        precisions: the precisions the device times (``fp32``, ``int8``, ``fp16``; see
            :mod:`hwnas.cost.quantize`); a device file's ``precision`` and ``--precision`` must be one.
    """

    name: str
    keys: Mapping[str, KeySpec]
    latency: Callable[[Device, SearchSpace, LatencyRequest], CostSource]
    parse: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    covers: Callable[[Device, str], bool] = lambda device, space: True
    measured: bool = False
    summary: Callable[[Device], str] = lambda device: device.kind
    spaces_text: Callable[[Device], str] = lambda device: "any"
    measure: Callable[[Device, Any, tuple[int, ...]], Any] | None = None
    prepare: Callable[[Device, torch.nn.Module, tuple[int, ...]], Any] = onnx_model
    fingerprint: Callable[[Device], dict[str, Any]] = lambda device: _local_fingerprint(device)
    runtime: Callable[[Device], dict[str, str]] = lambda device: _local_runtime()
    preflight: Callable[[Device], None] = lambda device: None
    measure_each: Callable[[Device, Any, tuple[int, ...]], dict[str, dict[str, Any] | str]] | None = None
    status: Callable[[Device, float], list[dict[str, Any]]] | None = None
    precisions: Callable[[Device], tuple[str, ...]] = lambda device: ("fp32",)

    @property
    def measures_onnx(self) -> bool:
        """Whether ``measure`` times ONNX bytes (so an exported file can be timed as it is)."""
        return self.prepare is onnx_model


def _local_fingerprint(device: Device) -> dict[str, Any]:
    from hwnas.cost.lut import fingerprint

    return fingerprint(device.provider)


def _local_runtime() -> dict[str, str]:
    from hwnas.cost.lut import runtime_versions

    return runtime_versions()


#: Device kinds, by the ``kind`` of a device file.
DEVICE_KINDS: Registry[DeviceKind] = Registry("device kind")

_registered = False


def _builtin() -> None:
    """Register the built-in sources and kinds once (lazily: no import cost until used)."""
    global _registered
    if _registered:
        return
    _registered = True
    from hwnas.cost import analytic, kinds, remote, torch_runtime

    analytic.register(COST_SOURCES)
    kinds.register(DEVICE_KINDS)
    remote.register(DEVICE_KINDS)
    torch_runtime.register(DEVICE_KINDS)


def device_kind(name: str) -> DeviceKind:
    """The registered device kind ``name`` (UsageError with the valid names otherwise)."""
    _builtin()
    return DEVICE_KINDS.get(name)


def device_kinds() -> list[str]:
    _builtin()
    return DEVICE_KINDS.names()


def cost_source(name: str, space: SearchSpace) -> CostSource:
    """The device-independent source ``name`` for ``space``."""
    _builtin()
    return COST_SOURCES.get(name)(space)


def cost_source_names() -> list[str]:
    _builtin()
    return COST_SOURCES.names()


def measure_each(device: Device, onnx_bytes: bytes, shape: tuple[int, ...]) -> dict[str, dict[str, Any] | str]:
    """The model timed on each unit that measures for ``device`` (see :attr:`DeviceKind.measure_each`).

    Raises:
        UsageError: for a device whose kind measures nothing (a benchmark table).
    """
    from hwnas.errors import UsageError

    kind = device_kind(device.kind)
    if kind.measure_each is not None:
        return kind.measure_each(device, onnx_bytes, shape)
    if kind.measure is None:
        raise UsageError(f"device {device.name!r} measures nothing; its latencies come from a table")
    from hwnas_agent.fingerprint import dynamic

    m = kind.measure(device, onnx_bytes, shape)
    return {"local": {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms, **dynamic()}}


def latency_source(device: Device, space: SearchSpace, request: LatencyRequest | None = None) -> CostSource:
    """The latency source of ``device`` for ``space``, picked by the device's kind."""
    return device_kind(device.kind).latency(device, space, request or LatencyRequest())
