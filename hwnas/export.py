"""Export one architecture to a verified ONNX model.

Eval mode, a dynamic batch axis, a pinned opset, ``onnx.checker`` with ``full_check``,
ONNX Runtime vs PyTorch parity on random inputs of two batch sizes, the architecture and
its figures in the model's metadata, and a re-measurement on the device.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hwnas.cost._onnx import INPUT_NAME, OPSET, make_session, one_torch_thread, to_onnx_bytes
from hwnas.cost.measure import Measurement
from hwnas.cost.quantize import Calibration, check_precision, supported_precisions
from hwnas.cost.source import device_kind
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
    #: (C, H, W) input shapes the parity was checked at (two when height and width are dynamic).
    parity_shapes: list[list[int]] = field(default_factory=list)
    #: Set when a trained network's check compared with float64 because PyTorch's float32 itself was off by this much.
    parity_float32_rounding: float | None = None
    #: fp32, or int8: ``path`` holds the quantized model, ``fp32_path`` its FP32 source, ``int8`` how it was made
    #: and its parity with the source (top-1 agreement, max and mean |diff| of the logits).
    precision: str = "fp32"
    fp32_path: str | None = None
    int8: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured_latency_ms"] = self.measurement.median_ms if self.measurement else None
        return d


class TrainedNetwork(Protocol):
    """A trained network to export instead of a freshly built one (e.g. from a supernet evaluator)."""

    @property
    def model(self) -> Any: ...  # torch.nn.Module of the arch, on the CPU
    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) it is deployed and timed at
    @property
    def data_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) of the images it was trained on
    @property
    def weights(self) -> str: ...  # where its weights come from, in words


def export_verified(
    space: SearchSpace,
    arch: Arch,
    path: str | Path,
    *,
    device: Device | None = None,
    metadata: dict[str, Any] | None = None,
    exporter: str = "torchscript",
    seed: int = 0,
    trained: TrainedNetwork | None = None,
    precision: str = "fp32",
    calibration: Calibration | None = None,
    parity_inputs: tuple[np.ndarray, str] | None = None,
) -> ExportResult:
    """Build ``arch`` (weights initialised with ``seed``), export, check, and write it to ``path``.

    With ``trained``, its model and weights are exported instead, timed at its ``input_shape``;
    where its ``data_shape`` differs in height and width, the model's input height and width
    are dynamic and the parity is checked at both shapes.

    With ``precision="int8"`` the checked FP32 model is written beside ``path`` (``<stem>-fp32.onnx``),
    quantized (ONNX Runtime static QDQ, :mod:`hwnas.cost.quantize`) with ``calibration`` (default: a
    seeded synthetic set), checked again, compared with its FP32 source on ``parity_inputs`` ((N, C, H, W)
    inputs and their name; default: a seeded synthetic set) and written to ``path``; the device times it.

    Raises:
        HwnasError: when the checker fails or ORT and PyTorch disagree beyond ``PARITY_ATOL``.
        UsageError: when ``path`` cannot be written, or an unsupported precision or calibration set.
        QuantizationFailed: ONNX Runtime could not quantize the model.
    """
    import onnx
    import torch

    arch = space.validate(arch)
    path = Path(path)
    _check_writable(path)  # before the export's seconds of work, not after
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UsageError(f"export seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}; e.g. --seed 0")
    if device is not None and device.measured:
        device_kind(device.kind).preflight(device)  # the re-measurement would fail only after the export's work
    if precision != "fp32":
        if device is not None:
            device.with_precision(precision)
        check_precision(precision, supported_precisions("CPUExecutionProvider"), device="cpu", provider="CPUExecutionProvider")
    shape: tuple[int, ...]
    if trained is None:
        torch.manual_seed(seed)
        model = space.build(arch)
        shape = space.input_shape(arch)
        _calibrate_batchnorm(model, shape, seed=seed)
        weights = f"untrained (initialised with seed {seed}, BatchNorm statistics from random inputs); train it before deployment"
    else:
        model, shape, weights = trained.model.eval(), tuple(trained.input_shape), trained.weights
    shapes = [shape] if trained is None or tuple(trained.data_shape) == shape else [shape, tuple(trained.data_shape)]
    # TorchScript by default: the exporter every latency hwnas measures or tables is taken with (live
    # measurement, `hwnas profile`, INT8), so the file is the graph the search timed; and about 15x
    # cheaper than dynamo (an NB201 cell 0.6 s of CPU against 9-14 s here), which dominated a short
    # search. The checks below (full checker, ORT parity at two batch sizes) are the same for both.
    try:
        raw = to_onnx_bytes(model, shape, exporter=exporter)
    except ImportError:
        # The dynamo exporter needs onnxscript; the TorchScript exporter gives the same graph after ORT optimisation.
        exporter = "torchscript"
        raw = to_onnx_bytes(model, shape, exporter=exporter)
    proto = onnx.load_from_string(raw)
    if len(shapes) > 1:
        _free_spatial_axes(proto)
    props = {"hwnas.space": space.name, "hwnas.arch": space.to_string(arch), "hwnas.weights": weights}
    props.update({f"hwnas.{k}": str(v) for k, v in (metadata or {}).items() if v is not None})
    data = _checked_bytes(proto, props, "exported model")

    # Parity on the CPU provider: the reference numbers, independent of the target device.
    session = make_session(data, provider="CPUExecutionProvider", threads=1)
    rng = np.random.default_rng(seed)
    worst = worst_failed = 0.0
    rounding = 0.0  # PyTorch float32's own error where a trained network's check fell back on float64
    batches = [1, 3]
    for batch in batches:
        for each in shapes:
            # A trained network sees images in [0, 1] (as hwnas.datasets gives them); its BatchNorm statistics fit those.
            x = rng.standard_normal((batch, *each), dtype=np.float32) if trained is None else rng.random((batch, *each), dtype=np.float32)
            with torch.no_grad(), one_torch_thread():
                expected = model(torch.from_numpy(x)).numpy()
            got = session.run(None, {INPUT_NAME: x})[0]
            if got.shape != expected.shape:
                raise HwnasError(f"exported model returns shape {got.shape} for input {x.shape}, PyTorch {expected.shape}")
            diff = float(np.max(np.abs(got - expected)))
            if trained is not None and diff > PARITY_ATOL:
                # Off its data (e.g. at the deploy resolution) a trained network can meet BatchNorm channels that had almost no
                # variance on the data, which magnify float32 rounding up to 1/sqrt(eps) per layer: ORT passes if it is within
                # twice PyTorch float32's own distance from the float64 result (plus the tolerance); fused BatchNorm rounds differently.
                ort_error, torch_error = _float64_errors(model, x, got, expected)
                if ort_error <= 2.0 * torch_error + PARITY_ATOL:
                    rounding = max(rounding, torch_error)
                    worst = max(worst, diff)
                    continue
            worst = max(worst, diff)
            worst_failed = max(worst_failed, diff)
    if not worst_failed <= PARITY_ATOL:
        raise HwnasError(f"ONNX Runtime and PyTorch disagree by {worst_failed:.2e} (> {PARITY_ATOL:g}) on {space.to_string(arch)}")

    int8 = None
    fp32_path = None
    if precision == "int8":
        fp32_path = path.with_name(f"{path.stem}-fp32{path.suffix or '.onnx'}")
        data, int8 = _quantized(data, shapes[-1], calibration, parity_inputs, seed, fp32_name=fp32_path.name)
        _atomic_write(fp32_path, proto.SerializeToString())
    _atomic_write(path, data)
    measurement = None
    kind = device_kind(device.kind) if device is not None else None
    if device is not None and kind is not None and kind.measure is not None:
        # ONNX Runtime kinds time the file as written; a kind that runs PyTorch (torch) times the module it holds.
        measurement = kind.measure(device, data if kind.measures_onnx else kind.prepare(device, model, shape), shape)
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
        weights=weights,
        parity_shapes=[list(each) for each in shapes],
        parity_float32_rounding=rounding or None,
        precision=precision,
        fp32_path=None if fp32_path is None else str(fp32_path),
        int8=int8,
    )


#: Synthetic inputs the INT8 model is compared with its FP32 source on, where no images are given.
PARITY_INPUTS = 64


def export_int8(
    fp32_path: str | Path,
    path: str | Path,
    *,
    calibration: Calibration,
    parity_inputs: tuple[np.ndarray, str],
    device: Device | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The checked FP32 model at ``fp32_path`` quantized (ONNX Runtime static QDQ) with
    ``calibration``, checked again, compared with its source on ``parity_inputs`` and written to
    ``path``; timed on ``device`` at INT8 where it measures. Returns the quantization's figures,
    with ``measurement`` (a :class:`Measurement` or None).

    Raises:
        UsageError: the file cannot be read or written; the device does not run INT8.
        QuantizationFailed: ONNX Runtime could not quantize the model.
    """
    path, fp32_path = Path(path), Path(fp32_path)
    _check_writable(path)
    try:
        fp32 = fp32_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {fp32_path}: {exc.strerror}") from None
    shape = tuple(int(v) for v in calibration.samples.shape[1:])
    at_int8 = device.with_precision("int8") if device is not None else None
    data, info = _quantized(fp32, shape, calibration, parity_inputs, seed, fp32_name=fp32_path.name)
    _atomic_write(path, data)
    measurement = None
    kind = device_kind(at_int8.kind) if at_int8 is not None else None
    if at_int8 is not None and kind is not None and kind.measure is not None and kind.measures_onnx:
        measurement = kind.measure(at_int8, data, shape)
    return {**info, "path": str(path), "measurement": measurement}


def _quantized(
    fp32: bytes,
    shape: tuple[int, ...],
    calibration: Calibration | None,
    parity_inputs: tuple[np.ndarray, str] | None,
    seed: int,
    *,
    fp32_name: str,
) -> tuple[bytes, dict[str, Any]]:
    """The INT8 model of checked FP32 bytes (metadata kept and extended, checked) and its figures."""
    import onnx

    from hwnas.cost.quantize import parity, quantize_onnx, synthetic_calibration

    calibration = calibration or synthetic_calibration(shape, seed=seed)
    q = quantize_onnx(fp32, calibration, shape=tuple(calibration.samples.shape[1:]))
    proto = onnx.load_from_string(q.data)
    props = {p.key: p.value for p in onnx.load_from_string(fp32).metadata_props}
    props |= {"hwnas.precision": "int8", "hwnas.fp32_source": fp32_name, "hwnas.quantization": q.describe()["method"]}
    props["hwnas.calibration"] = calibration.source
    data = _checked_bytes(proto, props, "quantized model")
    if parity_inputs is None:
        x = np.random.default_rng(seed + 1).random((PARITY_INPUTS, *shape), dtype=np.float32)
        parity_inputs = (x, f"synthetic: {PARITY_INPUTS} seeded uniform [0, 1) inputs (seed {seed + 1}), not the calibration set")
    figures = parity(fp32, data, parity_inputs[0], source=parity_inputs[1])
    return data, {**q.describe(), "parity": figures, "size_bytes": len(data), "fp32_size_bytes": len(fp32)}


def _checked_bytes(proto: Any, props: dict[str, str], what: str) -> bytes:
    """``proto`` with ``props`` as its metadata, through onnx.checker's full check, serialized;
    a failed check is one line naming ``what`` failed it."""
    import onnx

    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HwnasError(f"{what} failed onnx.checker: {str(exc).splitlines()[0]}") from None
    return bytes(proto.SerializeToString())


def _float64_errors(model: Any, x: np.ndarray, got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(ONNX Runtime's, PyTorch float32's) largest distance from ``model``'s float64 result on ``x``."""
    import torch

    exact64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        exact = exact64(torch.from_numpy(x).double()).numpy()
    return float(np.max(np.abs(got - exact))), float(np.max(np.abs(expected - exact)))


def _free_spatial_axes(proto: Any) -> None:
    """Make the input's height and width dynamic (the exporter fixed them): a network of
    convolutions, global pooling and a classifier runs at any size; the parity check at both
    shapes confirms it. Intermediate shape annotations, fixed to the traced size, are dropped."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((2, "height"), (3, "width")):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name
    del proto.graph.value_info[:]


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
    # One thread, as the export's trace: on batches this small torch's other threads spin more than
    # they compute (NB201 here: 0.19 s of CPU against 1.5-3.8 s with two threads beside other jobs).
    with torch.no_grad(), one_torch_thread():
        for _ in range(batches):
            model(torch.randn(batch_size, *shape, generator=gen))
    model.eval()


def _check_writable(path: Path) -> None:
    """Refuse an output path that cannot take a file, with a one-line reason, before any work."""
    if not str(path) or str(path) == "." or path.is_dir():
        raise UsageError(f"cannot write the model to {str(path)!r}: it is a folder; give a file name, e.g. --out {path / 'model.onnx'}")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"cannot write {path}: folder {parent} does not exist; create it or pick another --out")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is a file, not a folder; pick another --out, e.g. --out model.onnx")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".hwnas-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}; pick a writable --out") from None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the model ordinary file permissions
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)  # no half-written temporary left beside the target
        raise UsageError(f"cannot write {path}: {exc.strerror}; pick a writable --out") from None
