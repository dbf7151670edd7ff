"""Latency sources: where a candidate's latency comes from, with the source recorded.

Each is a :class:`~hwnas.cost.source.CostSource` of one metric, ``latency_ms`` on its device:

* :class:`MeasuredLatency` exports the candidate and times it in ONNX Runtime (``measured``; not cheap).
* :class:`BenchmarkTableLatency` looks it up in a shipped benchmark table (``table``; cheap).
* :class:`LookupTableLatency` predicts it from a latency lookup table built by
  ``hwnas profile`` for this device (``lookup table``; cheap).

The device kinds of :mod:`hwnas.cost.kinds` pick among them.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.cost.quantize import describe_precision
from hwnas.cost.source import Cost, CostSource, Metric, ModelGetter
from hwnas.device import Device
from hwnas.errors import UsageError
from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Latency:
    """A latency in ms, where it came from (measured / table / lookup table / predicted), and details."""

    ms: float
    source: str
    details: dict[str, Any] = field(default_factory=dict)


#: The metric every latency source gives.
LATENCY_METRIC = "latency_ms"


class LatencyModel(CostSource):
    """Gives the latency of an architecture of one space on one device (metric ``latency_ms``)."""

    #: Where its numbers come from: measured | table | lookup table.
    kind = ""

    def __init__(self, device: Device, space: SearchSpace) -> None:
        self.device = device
        self.space = space

    @abstractmethod
    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        """Latency of ``arch``; ``model`` is its built module when the caller has one already."""

    @abstractmethod
    def lower_bound_latency(self) -> tuple[Latency, Arch]:
        """The least latency the space can reach on this device (exact or a probe), and its arch."""

    # -- the CostSource interface ---------------------------------------------
    def metrics(self) -> tuple[Metric, ...]:
        return (Metric(LATENCY_METRIC, "ms", f"latency on {self.device.name}"),)

    def costs(self, arch: Arch, model: ModelGetter | None = None) -> dict[str, Cost]:
        built = model() if (model is not None and not self.cheap) else None
        lat = self.latency(arch, built)
        return {LATENCY_METRIC: Cost(lat.ms, lat.source, lat.details)}

    def lower_bound(self, metric: str = LATENCY_METRIC) -> tuple[Cost, Arch] | None:
        lat, arch = self.lower_bound_latency()
        return Cost(lat.ms, lat.source, lat.details), arch

    def describe(self) -> dict[str, Any]:
        return {"device": self.device.name, "source": self.kind, **describe_precision(self.device.precision)}


class MeasuredLatency(LatencyModel):
    """Export to ONNX (fast TorchScript exporter) and time it with the device's ONNX Runtime provider."""

    kind = "measured"
    cheap = False

    def costs(self, arch: Arch, model: ModelGetter | None = None) -> dict[str, Cost]:
        from hwnas.cost._onnx import one_torch_thread

        # Building and exporting a candidate takes one torch thread as fast as several, and the
        # others' spinning would take a core from the measurement (here or an agent's).
        with one_torch_thread():
            return super().costs(arch, model)

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        from hwnas.cost.measure import measure_onnx
        from hwnas.cost.quantize import device_bytes

        if model is None:
            model = self.space.build(arch)
        shape = self.space.input_shape(arch)
        onnx_bytes = device_bytes(self.device, model, shape)  # quantized first at int8
        m = measure_onnx(onnx_bytes, shape, **self.device.measurement_settings())
        return Latency(ms=m.median_ms, source="measured", details=m.as_dict() | {"precision": self.device.precision})

    def lower_bound_latency(self) -> tuple[Latency, Arch]:
        arch = self.space.smallest()
        return self.latency(arch), arch

    def describe(self) -> dict[str, Any]:
        d = self.device
        return {
            "device": d.name,
            "source": self.kind,
            "provider": d.provider,
            "threads": d.threads,
            "batch": d.batch,
            "warmup": d.warmup,
            "repeats": d.repeats,
            "statistic": "median",
            **describe_precision(d.precision),
        }


class BenchmarkTableLatency(LatencyModel):
    """Latency from a measured benchmark table (HELP / HW-NAS-Bench), for NAS-Bench-201."""

    kind = "table"

    def __init__(self, device: Device, space: SearchSpace) -> None:
        super().__init__(device, space)
        ref = device.tables.get(space.name)
        if ref is None:
            raise UsageError(
                f"device {device.name!r} has measured latencies for space(s) {device.spaces_text()} only, "
                f"not {space.name!r}; use --space {next(iter(device.tables), 'nb201')} or a measured device such as --device cpu"
            )
        from hwnas.benchdata import nb201_latency

        bench = space.benchmark()
        if bench is None:
            raise UsageError(f"space {space.name!r} has no benchmark to index device {device.name!r}'s latency table by")
        self.bench = bench
        self.ref = ref
        self.values = nb201_latency(ref.table)
        #: Set where ``--force`` took the table for networks of another input shape (see hwnas.cost.kinds).
        self.shape_warning: str | None = None
        #: Set where the run's networks take another input than the table's and ``--force`` was not given.
        self.shape_refusal: Exception | None = None

    def warnings(self) -> list[str]:
        return [self.shape_warning] if self.shape_warning else []

    def _source(self) -> str:
        return "table (estimated)" if self.ref.estimated else "table"

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        index = self.bench.index(arch)
        return Latency(
            ms=float(self.values[index]),
            source=self._source(),
            details={"table": self.ref.table, "index": index, "reference": self.ref.source},
        )

    def lower_bound_latency(self) -> tuple[Latency, Arch]:
        """The fastest network of the table whose output depends on its input (a constant network
        is faster, and no answer to whether a budget can be met)."""
        for i in np.argsort(self.values, kind="stable"):
            arch = self.bench.arch(int(i))
            if not self.space.degenerate(arch):
                return self.latency(arch), arch
        i = int(np.argmin(self.values))
        return self.latency(self.bench.arch(i)), self.bench.arch(i)

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "source": self.kind,
            "table": self.ref.table,
            "estimated": self.ref.estimated,
            "reference": self.ref.source,
            "precision": "fp32",
            **({"forced_for_another_shape": self.shape_warning} if self.shape_warning else {}),
        }


class LookupTableLatency(LatencyModel):
    """Prediction from a latency lookup table (``hwnas profile``): about a microsecond a candidate.

    A table that ``hwnas profile --force`` kept although it failed its check is refused, unless
    the table was loaded with ``accept_failing`` (``search --allow-failing-table``): then every
    run says so loudly.
    """

    kind = "lookup table"
    #: A check worse than this is reported as poor.
    POOR_WITHIN_10 = 0.9
    POOR_TAU = 0.8

    def __init__(self, device: Device, space: SearchSpace, table: Any, *, allow_foreign: bool = False) -> None:
        super().__init__(device, space)
        if table.space != space.name:
            raise UsageError(f"latency table {table.path} is for space {table.space!r}, not {space.name!r}; pick the table of {space.name}")
        self.table = table
        wrong = table.precision_mismatch(device.precision, device.name, space.name)
        if wrong:
            raise UsageError(wrong)
        self.mismatches = table.mismatches_for(device)
        if self.mismatches and not allow_foreign:
            raise UsageError(
                f"latency table {table.path} was not built on this machine and runtime ({self.mismatches[0]}); rebuild it with "
                f"'hwnas profile --device {device.name} --space {space.name}' or pass --allow-foreign-table to use it anyway"
            )
        self.failing = table.failing
        if self.failing and not table.accept_failing:
            raise UsageError(
                f"latency table {table.path} failed its check when it was built ({self.failing}); rebuild it on a quiet machine with "
                f"'hwnas profile --device {device.name} --space {space.name} --check 40', measure live with --latency-source measure, "
                f"or pass --table {table.path} --allow-failing-table to use it anyway"
            )

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        return Latency(ms=self.table.predict_ms(self.space, arch), source="lookup table", details={"table": self.table.path})

    def lower_bound_latency(self) -> tuple[Latency, Arch]:
        arch = self.space.smallest()
        return self.latency(arch), arch

    def warnings(self) -> list[str]:
        warning = self.quality_warning()
        return [warning] if warning else []

    def quality_warning(self) -> str | None:
        """A one-line warning when the table failed its check (used with an override), was never
        checked or checks poorly, else None."""
        if self.failing:
            return (
                f"WARNING: latency table {self.table.path} FAILED its check when it was built ({self.failing}); it is used only because "
                "of --allow-failing-table, and its latencies may be off by more than 10 %, so the budget and the front may be wrong"
            )
        check = self.table.check
        if not check:
            return (
                f"warning: latency table {self.table.path} has no accuracy check; run "
                f"'hwnas profile --device {self.device.name} --space {self.space.name} --check 50' to measure how well it predicts"
            )
        if check["within_10pct"] < self.POOR_WITHIN_10 or not check["kendall_tau"] >= self.POOR_TAU:
            return (
                f"warning: latency table {self.table.path} predicts poorly: {100 * check['within_10pct']:.0f} % of "
                f"{check['n']} checked networks within +-10 %, Kendall tau {check['kendall_tau']:.2f}; consider --latency-source measure"
            )
        return None

    def describe(self) -> dict[str, Any]:
        check = self.table.check
        return {
            "device": self.device.name,
            "source": self.kind,
            "table": self.table.path,
            "check": {k: check[k] for k in ("n", "within_5pct", "within_10pct", "mape_pct", "kendall_tau", "when")} if check else None,
            "precision": self.table.precision,
            "foreign_table_used_with_override": self.mismatches or None,
            "failing_table_used_with_override": self.failing,
        }


LATENCY_SOURCES = ("auto", "lut", "measure", "table")


def latency_model_for(
    device: Device,
    space: SearchSpace,
    source: str = "auto",
    *,
    table_path: str | None = None,
    allow_foreign: bool = False,
    log: Any = None,
) -> LatencyModel:
    """The latency source for ``device`` and ``space``, picked by the device's kind (see
    :mod:`hwnas.cost.kinds`): ``auto`` takes a table device's benchmark table, else this device's
    lookup table when one was built on this machine and runtime, else live measurement; ``lut``,
    ``measure`` and ``table`` force one source and fail with a clear message where it cannot serve.
    """
    from hwnas.cost.source import LatencyRequest, latency_source

    if source not in LATENCY_SOURCES:
        raise UsageError(f"unknown latency source {source!r}; valid: {', '.join(LATENCY_SOURCES)}")
    got = latency_source(device, space, LatencyRequest(source=source, table=table_path, allow_foreign=allow_foreign, log=log))
    return got  # type: ignore[return-value]


__all__ = [
    "LATENCY_METRIC",
    "LATENCY_SOURCES",
    "BenchmarkTableLatency",
    "Latency",
    "LatencyModel",
    "LookupTableLatency",
    "MeasuredLatency",
    "latency_model_for",
]
