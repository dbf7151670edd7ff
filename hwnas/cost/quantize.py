"""Precision of what a device times: ONNX Runtime static QDQ quantization of exported models.

``fp32`` models are timed as exported. ``int8`` models are quantized first with ONNX Runtime's
own tool (``onnxruntime.quantization.quantize_static``, QDQ format, unsigned 8-bit activations,
signed 8-bit weights per output channel: the combination ORT's CPU kernels run fastest and the
ORT documentation recommends for x86 and ARM CPUs), calibrated by min/max on a calibration set:

* images of the evaluator's training split where the network was trained on them, or
* a seeded synthetic set (uniform [0, 1), like the [0, 1] images ``hwnas.datasets`` gives) where
  there are none: a table evaluator's untrained networks, and every latency measurement (the
  calibration sets scales and zero points, not which kernels run, so the latency does not depend
  on it).

:class:`Calibration` says which in its ``source``. ``fp16`` is refused on the CPU provider with
one line; which precisions a device takes is its kind's answer (:attr:`DeviceKind.precisions`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import UsageError
from hwnas.evaluate import EvaluationFailed

if TYPE_CHECKING:
    import torch

    from hwnas.device import Device

#: Every precision hwnas knows; what a device supports is narrower (see :func:`supported_precisions`).
PRECISIONS = ("fp32", "int8", "fp16", "bf16")  # bf16: the torch kind (hwnas.cost.torch_runtime)
DEFAULT_PRECISION = "fp32"
#: What each ONNX Runtime execution provider runs here; fp16 waits for the CUDA issue.
PROVIDER_PRECISIONS: dict[str, tuple[str, ...]] = {"CPUExecutionProvider": ("fp32", "int8")}
#: A calibration set smaller than this gives min/max ranges from too few activations to trust.
MIN_CALIBRATION = 16
#: Samples of a synthetic calibration set (latency measurements, untrained networks).
SYNTHETIC_CALIBRATION = 16
#: Training images calibrating a trained network.
DATA_CALIBRATION = 64
METHOD = (
    "onnxruntime static QDQ (quantize_static), activations uint8 per tensor, weights int8 per channel, MinMax calibration; "
    "tensors zero on the whole calibration set keep scale 2^-16"
)
#: The scale of an activation that is zero on every calibration input (see :func:`_zero_tensors`).
ZERO_TENSOR_SCALE = 2.0**-16
#: ISA flags with 8-bit dot products (VNNI): without them x86 kernels multiply uint8 by int8 into int16
#: pairs that saturate, so weights keep 7 bits (``reduce_range``), as ONNX Runtime's documentation advises.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


class QuantizationFailed(EvaluationFailed):
    """ONNX Runtime could not quantize this candidate: its trial fails with the reason, the search goes on."""


def supported_precisions(provider: str) -> tuple[str, ...]:
    """The precisions ``provider`` runs here (fp32 for a provider hwnas has not checked)."""
    return PROVIDER_PRECISIONS.get(provider, ("fp32",))


def check_precision(precision: str, supported: tuple[str, ...], *, device: str, provider: str = "") -> str:
    """``precision`` when it is known and ``supported``, else a one-line UsageError naming what is."""
    if precision not in PRECISIONS:
        from hwnas.registry import did_you_mean

        raise UsageError(f"unknown precision {precision!r}{did_you_mean(precision, list(PRECISIONS))}; valid: {', '.join(PRECISIONS)}")
    if precision not in supported:
        on = f"the {provider} provider of device {device!r}" if provider else f"device {device!r}"
        later = " (fp16 comes with the CUDA provider)" if precision == "fp16" else ""
        raise UsageError(f"--precision {precision} is not supported by {on}; it supports {', '.join(supported)}{later}")
    return precision


# -- calibration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """Inputs that calibrate a quantization: ``samples`` (N, C, H, W) float32, and where they come from."""

    samples: np.ndarray
    source: str
    synthetic: bool

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self.samples), "shape": list(self.samples.shape[1:]), "source": self.source, "synthetic": self.synthetic}


def synthetic_calibration(shape: tuple[int, ...], *, n: int = SYNTHETIC_CALIBRATION, seed: int = 0) -> Calibration:
    """``n`` seeded uniform [0, 1) inputs of shape (C, H, W)."""
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
    return Calibration(x, f"synthetic: {n} seeded uniform [0, 1) inputs of {'x'.join(map(str, shape))} (seed {seed})", synthetic=True)


def check_calibration(samples: np.ndarray, shape: tuple[int, ...], *, what: str = "calibration set") -> np.ndarray:
    """``samples`` as float32 (N, C, H, W) when they fit ``shape`` and number at least :data:`MIN_CALIBRATION`.

    Raises:
        UsageError: naming the size or shape needed.
    """
    x = np.asarray(samples)
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != tuple(shape):
        raise UsageError(
            f"the {what} holds inputs of shape {'x'.join(map(str, x.shape[1:])) or 'none'}, but the network takes "
            f"{'x'.join(map(str, shape))}; give at least {MIN_CALIBRATION} inputs of shape {'x'.join(map(str, shape))}"
        )
    if len(x) < MIN_CALIBRATION:
        raise UsageError(
            f"the {what} holds {len(x)} input(s); quantization needs at least {MIN_CALIBRATION} for its activation ranges "
            f"(of shape {'x'.join(map(str, shape))})"
        )
    if not np.all(np.isfinite(x)):
        raise UsageError(f"the {what} holds NaN or infinite values; give finite inputs")
    return x.astype(np.float32, copy=False)


def data_calibration(images: np.ndarray, shape: tuple[int, ...], *, name: str, n: int = DATA_CALIBRATION, seed: int = 0) -> Calibration:
    """Up to ``n`` of ``images`` (training images in [0, 1]), drawn with ``seed``, as a calibration set."""
    x = check_calibration(images, shape, what=f"{name} calibration set")
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return Calibration(x[idx], f"{len(idx)} images of the {name} training split (seed {seed})", synthetic=False)


class _Reader:
    """ORT's CalibrationDataReader over the samples, one at a time (batch 1, as the device runs them)."""

    def __init__(self, input_name: str, samples: np.ndarray) -> None:
        self._items = iter([{input_name: samples[i : i + 1]} for i in range(len(samples))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # part of ORT's reader interface; one pass is all MinMax needs
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizer logs per-tensor notes through the root logger and warns; the result says what matters."""
    import onnxruntime

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    onnxruntime.set_default_logger_severity(3)  # the pre-processing session's notes on unused initializers
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


@dataclass(frozen=True)
class Quantized:
    """An INT8 model (ONNX bytes) and how it was made."""

    data: bytes
    calibration: Calibration
    seconds: float
    reduce_range: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "weight_bits": 7 if self.reduce_range else 8,
            "calibration": self.calibration.describe(),
            "seconds": round(self.seconds, 3),
        }


def needs_reduce_range(fingerprint: dict[str, Any]) -> bool:
    """Whether weights must keep 7 bits on the machine of ``fingerprint`` (an x86 CPU without VNNI).

    Measured here (AVX2, no VNNI): a small CNN trained on digits lost 16 points of validation
    accuracy with 8-bit per-channel weights once ORT fused the QDQ nodes into its uint8 x int8
    kernels, and 0.6 points with 7-bit weights; without the fusion (ORT_DISABLE_ALL) both kept it.
    """
    machine = str(fingerprint.get("machine", "")).lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "x86")
    return x86 and not set(fingerprint.get("isa") or ()) & set(VNNI_FLAGS)


def _this_machine_reduce_range() -> bool:
    from hwnas.cost.lut import fingerprint

    return needs_reduce_range(fingerprint("CPUExecutionProvider"))


def quantize_onnx(
    model: bytes, calibration: Calibration, *, shape: tuple[int, ...] | None = None, reduce_range: bool | None = None
) -> Quantized:
    """Quantize ONNX ``model`` bytes to INT8 (static QDQ) with ``calibration``.

    Args:
        model: a float32 model with one input (hwnas's exports).
        calibration: its inputs; checked against ``shape`` when given.
        shape: (C, H, W) the model is fed.
        reduce_range: 7-bit weights (see :func:`needs_reduce_range`); None: as this machine needs.

    Raises:
        UsageError: a calibration set too small or of the wrong shape (the size and shape needed).
        QuantizationFailed: ONNX Runtime failed on the model (the reason, in one line).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples = calibration.samples if shape is None else check_calibration(calibration.samples, shape)
    if reduce_range is None:
        reduce_range = _this_machine_reduce_range()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp, _quiet():
        src, pre, dst = (os.path.join(tmp, f) for f in ("model.onnx", "pre.onnx", "int8.onnx"))
        try:
            with open(src, "wb") as f:
                f.write(model)
            import onnx

            input_name = onnx.load_from_string(model).graph.input[0].name
            # ORT's pre-processing: shape inference and the graph optimisations (BatchNorm folded
            # into the convolution before it), so each quantized node is one the kernels fuse.
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            zero = _zero_tensors(pre, _Reader(input_name, samples), os.path.join(tmp, "augmented.onnx"))
            overrides = {t: [{"scale": np.array(ZERO_TENSOR_SCALE, np.float32), "zero_point": np.array(0, np.uint8)}] for t in zero}
            quantize_static(
                pre,
                dst,
                _Reader(input_name, samples),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"TensorQuantOverrides": overrides} if overrides else {},
            )
            with open(dst, "rb") as g:
                data = _drop_unused_opsets(g.read())
        except UsageError:
            raise
        except Exception as exc:  # ORT and onnx raise many types; any of them means this model did not quantize
            why = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise QuantizationFailed(f"INT8 quantization failed: {type(exc).__name__}: {why}") from None
    return Quantized(data, calibration, time.perf_counter() - t0, reduce_range)


def _zero_tensors(model_path: str, reader: _Reader, augmented_path: str) -> list[str]:
    """The activations of the model at ``model_path`` that are exactly zero on every input of ``reader``.

    NAS-Bench-201's ``none`` edge is ``x * 0``; the convolutions behind one read zeros, so their
    output is their bias alone (BatchNorm folded in). MinMax gives such a tensor the range [0, 0],
    and ONNX Runtime then takes scale 1. The bias of the layer reading it is quantized to int32 at
    input scale x weight scale (about 0.3 here), which rounds a bias below half of that to 0: the
    constant the FP32 network adds is lost. Measured on a digits network of ``benchmarks/own_images.py``
    (17 cells, 30 zero tensors): held-out test accuracy 92.2 % at INT8 against 99.2 % at FP32, and
    98.9 % with these tensors at scale 2^-16 (zero stays exactly zero at any scale; ONNX Runtime
    widens a weight scale where the bias would not fit int32).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(model_path, augmented_model_path=augmented_path, calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(reader)  # type: ignore[arg-type]
    zero = []
    for name, value in calibrator.compute_data().data.items():
        low, high = value.range_value
        if float(np.max(np.abs(high))) == 0.0 and float(np.max(np.abs(low))) == 0.0:
            zero.append(name)
    return sorted(zero)


def _drop_unused_opsets(data: bytes) -> bytes:
    """The model without the opset imports no node uses. ORT's pre-processing saves its graph
    with every domain ORT knows (``ai.onnx.training``, ``com.microsoft.nchwc``, ...); a runtime or
    an agent that accepts only the standard domains would refuse the model for a domain it never
    calls."""
    import onnx

    m = onnx.load_from_string(data)
    used = {n.domain for n in m.graph.node} | {""}
    for f in m.functions:
        used |= {n.domain for n in f.node}
    keep = [o for o in m.opset_import if o.domain in used or o.domain == "ai.onnx"]
    if len(keep) == len(m.opset_import):
        return data
    del m.opset_import[:]
    m.opset_import.extend(keep)
    return m.SerializeToString()


# -- what a device times --------------------------------------------------------------------
def device_bytes(device: Device, model: torch.nn.Module | bytes, shape: tuple[int, ...]) -> bytes:
    """The ONNX bytes ``device`` times for ``model`` at input ``shape`` (C, H, W): the export
    (fast TorchScript exporter) at fp32, quantized with a synthetic calibration set at int8."""
    if isinstance(model, bytes):
        data = model
    else:
        from hwnas.cost._onnx import to_onnx_bytes

        data = to_onnx_bytes(model, shape, exporter="torchscript")
    if device.precision == "int8":
        key = (device.name, device.kind, device.path)
        if key not in _REDUCE_RANGE:  # asked once per device (a remote device's fingerprint is an agent's answer)
            from hwnas.cost.source import device_kind

            _REDUCE_RANGE[key] = needs_reduce_range(device_kind(device.kind).fingerprint(device))  # the device's CPU, not this one's
        return quantize_onnx(data, synthetic_calibration(shape), shape=shape, reduce_range=_REDUCE_RANGE[key]).data
    return data


_REDUCE_RANGE: dict[tuple[str, str, str], bool] = {}


def describe_precision(precision: str) -> dict[str, Any]:
    """The precision section of a latency source's or table's provenance."""
    if precision == "int8":
        return {"precision": "int8", "quantization": METHOD, "calibration": f"synthetic, {SYNTHETIC_CALIBRATION} seeded inputs (seed 0)"}
    return {"precision": precision}


# -- comparing an INT8 model with its FP32 source ---------------------------------------------
def parity(fp32: bytes, int8: bytes, inputs: np.ndarray, *, source: str) -> dict[str, Any]:
    """INT8 against FP32 outputs on ``inputs`` (N, C, H, W): top-1 agreement and the logits' max
    and mean absolute difference, run on the CPU provider one input batch at a time."""
    from hwnas.cost._onnx import make_session

    a = make_session(fp32, provider="CPUExecutionProvider", threads=1)
    b = make_session(int8, provider="CPUExecutionProvider", threads=1)
    name_a, name_b = a.get_inputs()[0].name, b.get_inputs()[0].name
    x = np.asarray(inputs, dtype=np.float32)
    out_a = np.concatenate([a.run(None, {name_a: x[i : i + 64]})[0] for i in range(0, len(x), 64)])
    out_b = np.concatenate([b.run(None, {name_b: x[i : i + 64]})[0] for i in range(0, len(x), 64)])
    diff = np.abs(out_a - out_b)
    return {
        "inputs": len(x),
        "inputs_source": source,
        "top1_agreement": float(np.mean(out_a.argmax(1) == out_b.argmax(1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "fp32_logit_scale": float(np.abs(out_a).mean()),
    }


def onnx_accuracy(model: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (%) of ONNX ``model`` on ``images`` (N, C, H, W) with ``labels``, on the CPU provider."""
    from hwnas.cost._onnx import make_session

    session = make_session(model, provider="CPUExecutionProvider", threads=1)
    name = session.get_inputs()[0].name
    x = np.asarray(images, dtype=np.float32)
    pred = np.concatenate([session.run(None, {name: x[i : i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])
    return 100.0 * float(np.mean(pred == np.asarray(labels))) if len(x) else 0.0


__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "Calibration",
    "QuantizationFailed",
    "Quantized",
    "check_calibration",
    "check_precision",
    "data_calibration",
    "device_bytes",
    "onnx_accuracy",
    "parity",
    "quantize_onnx",
    "supported_precisions",
    "synthetic_calibration",
]
