"""Export one architecture to a verified ONNX model.

Eval mode, a dynamic batch axis, a pinned opset, ``onnx.checker`` with ``full_check``,
ONNX Runtime vs PyTorch parity on random inputs of two batch sizes, the architecture and
its figures in the model's metadata, and a re-measurement on the device.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.cost._onnx import INPUT_NAME, OPSET, make_session, to_onnx_bytes
from hwnas.cost.measure import Measurement, measure_onnx
from hwnas.device import Device
from hwnas.errors import HwnasError, UsageError
from hwnas.spaces import Arch, SearchSpace

#: ORT vs PyTorch tolerance on the logits.
PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: str
    size_bytes: int
    exporter: str
    opset: int
    checker: str
    parity_max_abs_diff: float
    parity_batches: list[int]
    measurement: Measurement | None
    measured_on: str | None
    weights: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured_latency_ms"] = self.measurement.median_ms if self.measurement else None
        return d


def export_verified(
    space: SearchSpace,
    arch: Arch,
    path: str | Path,
    *,
    device: Device | None = None,
    metadata: dict[str, Any] | None = None,
    exporter: str = "dynamo",
    seed: int = 0,
) -> ExportResult:
    """Build ``arch`` (weights initialised with ``seed``), export, check, and write it to ``path``.

    Raises:
        HwnasError: when the checker fails or ORT and PyTorch disagree beyond ``PARITY_ATOL``.
        UsageError: when ``path`` cannot be written.
    """
    import onnx
    import torch

    arch = space.validate(arch)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist; create it or pick another --out")
    torch.manual_seed(seed)
    model = space.build(arch)
    shape = space.input_shape(arch)
    _calibrate_batchnorm(model, shape, seed=seed)
    try:
        raw = to_onnx_bytes(model, shape, exporter=exporter)
    except ImportError:
        # The dynamo exporter needs onnxscript; the TorchScript exporter gives the same graph after ORT optimisation.
        exporter = "torchscript"
        raw = to_onnx_bytes(model, shape, exporter=exporter)
    proto = onnx.load_from_string(raw)
    props = {"hwnas.space": space.name, "hwnas.arch": space.to_string(arch)}
    props.update({f"hwnas.{k}": str(v) for k, v in (metadata or {}).items() if v is not None})
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HwnasError(f"exported model failed onnx.checker: {str(exc).splitlines()[0]}") from None
    data = proto.SerializeToString()

    # Parity on the CPU provider: the reference numbers, independent of the target device.
    session = make_session(data, provider="CPUExecutionProvider", threads=1)
    rng = np.random.default_rng(seed)
    worst = 0.0
    batches = [1, 3]
    for batch in batches:
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise HwnasError(f"exported model returns shape {got.shape} for batch {batch}, PyTorch {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst <= PARITY_ATOL:
        raise HwnasError(f"ONNX Runtime and PyTorch disagree by {worst:.2e} (> {PARITY_ATOL:g}) on {space.to_string(arch)}")

    _atomic_write(path, data)
    measurement = None
    if device is not None and device.kind == "onnxruntime":
        measurement = measure_onnx(str(path), shape, **device.measurement_settings())
    return ExportResult(
        path=str(path),
        size_bytes=len(data),
        exporter=exporter,
        opset=OPSET,
        checker="onnx.checker full_check passed",
        parity_max_abs_diff=worst,
        parity_batches=batches,
        measurement=measurement,
        measured_on=device.name if device is not None and measurement is not None else None,
        weights=f"untrained (initialised with seed {seed}, BatchNorm statistics from random inputs); train it before deployment",
    )


def _calibrate_batchnorm(model: Any, shape: tuple[int, ...], *, seed: int, batches: int = 4, batch_size: int = 8) -> None:
    """Give a freshly initialised model's BatchNorm layers statistics from random inputs, then eval mode.

    With the initial running statistics (mean 0, variance 1) BatchNorm is the identity, and
    activations grow through stacked residual sums (NB201 logits reach 1e3); calibrated, they
    have unit scale as in a trained network, so the ONNX parity check measures the export,
    not float32 rounding of huge numbers.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        model.eval()
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, *shape, generator=gen))
    model.eval()


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the model ordinary file permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}; pick a writable --out") from None
