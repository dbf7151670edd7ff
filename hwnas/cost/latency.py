"""Latency models: where a candidate's latency comes from, with the source recorded.

* :class:`MeasuredLatency` exports the candidate and times it in ONNX Runtime (``measured``).
* :class:`BenchmarkTableLatency` looks it up in a shipped benchmark table (``table``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

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


class LatencyModel(ABC):
    """Gives the latency of an architecture of one space on one device."""

    def __init__(self, device: Device, space: SearchSpace) -> None:
        self.device = device
        self.space = space

    @abstractmethod
    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        """Latency of ``arch``; ``model`` is its built module when the caller has one already."""

    @abstractmethod
    def lower_bound(self) -> tuple[Latency, Arch]:
        """The least latency the space can reach on this device (exact or a probe), and its arch."""

    def describe(self) -> dict[str, Any]:
        return {"device": self.device.name, "kind": self.device.kind}


class MeasuredLatency(LatencyModel):
    """Export to ONNX (fast TorchScript exporter) and time it with the device's ONNX Runtime provider."""

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        from hwnas.cost._onnx import to_onnx_bytes
        from hwnas.cost.measure import measure_onnx

        if model is None:
            model = self.space.build(arch)
        shape = self.space.input_shape(arch)
        onnx_bytes = to_onnx_bytes(model, shape, exporter="torchscript")
        d = self.device
        m = measure_onnx(onnx_bytes, shape, provider=d.provider, threads=d.threads, batch=d.batch, warmup=d.warmup, repeats=d.repeats)
        return Latency(ms=m.median_ms, source="measured", details=m.as_dict())

    def lower_bound(self) -> tuple[Latency, Arch]:
        arch = self.space.smallest()
        return self.latency(arch), arch

    def describe(self) -> dict[str, Any]:
        d = self.device
        return {
            "device": d.name,
            "kind": d.kind,
            "provider": d.provider,
            "threads": d.threads,
            "batch": d.batch,
            "warmup": d.warmup,
            "repeats": d.repeats,
            "statistic": "median",
        }


class BenchmarkTableLatency(LatencyModel):
    """Latency from a measured benchmark table (HELP / HW-NAS-Bench), for NAS-Bench-201."""

    def __init__(self, device: Device, space: SearchSpace) -> None:
        super().__init__(device, space)
        ref = device.tables.get(space.name)
        if ref is None:
            raise UsageError(
                f"device {device.name!r} has measured latencies for space(s) {device.spaces_text()} only, "
                f"not {space.name!r}; use --space {next(iter(device.tables), 'nb201')} or a measured device such as --device cpu"
            )
        from hwnas.benchdata import nb201_latency

        self.ref = ref
        self.values = nb201_latency(ref.table)

    def _source(self) -> str:
        return "table (estimated)" if self.ref.estimated else "table"

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        index = self.space.index(arch)  # type: ignore[attr-defined]
        return Latency(
            ms=float(self.values[index]),
            source=self._source(),
            details={"table": self.ref.table, "index": index, "reference": self.ref.source},
        )

    def lower_bound(self) -> tuple[Latency, Arch]:
        i = int(np.argmin(self.values))
        arch = self.space.from_index(i)  # type: ignore[attr-defined]
        return self.latency(arch), arch

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "kind": "table",
            "table": self.ref.table,
            "estimated": self.ref.estimated,
            "reference": self.ref.source,
        }


def latency_model_for(device: Device, space: SearchSpace) -> LatencyModel:
    """The latency model a device implies for a space."""
    if device.kind == "table":
        return BenchmarkTableLatency(device, space)
    return MeasuredLatency(device, space)
