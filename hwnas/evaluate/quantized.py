"""Accuracy at the search's precision: what an INT8 search sees is the quantized network's accuracy.

:class:`PrecisionEvaluator` wraps the run's evaluator when ``--precision`` is not fp32:

* An evaluator that trains (``train``, ``supernet``) scores the candidate as usual (its FP32
  accuracy); the network it scored is then exported, quantized with ONNX Runtime's static QDQ
  quantization calibrated on its own training images, and run by ONNX Runtime on the same
  validation split. The search sees that INT8 accuracy; the FP32 accuracy and the drop are
  recorded with the trial (``fp32_accuracy``, ``quantization_drop``).
* An evaluator that looks accuracies up (``table``) keeps them, and says they are the
  benchmark's FP32 accuracies (``accuracy_precision: fp32``), never an INT8 accuracy.

A candidate ONNX Runtime cannot quantize fails its trial with the reason; the search goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hwnas.evaluate import Accuracy, Evaluator
from hwnas.spaces import Arch

#: Validation images scored at INT8 at most (all of digits' split; a bound for large image folders).
MAX_VALID = 10_000


class ScoresNetworks(Protocol):
    """An evaluator that can hand over the network it just scored, with its data splits."""

    train: Any
    valid: Any

    def scored_network(self, arch: Arch) -> Any:
        """The network it scored for ``arch`` (``model``, ``data_shape``, optional ``input_size``), or None."""
        ...


@dataclass(frozen=True)
class ScoredNetwork:
    """The network an evaluator scored: its module, the (C, H, W) of its data, and the side its images were resized to (None: their own)."""

    model: Any
    data_shape: tuple[int, ...]
    input_size: int | None = None


def quantizes(evaluator: Any) -> bool:
    """Whether ``evaluator`` scores networks it trained (so their INT8 accuracy can be measured)."""
    return callable(getattr(evaluator, "scored_network", None)) and hasattr(evaluator, "train") and hasattr(evaluator, "valid")


def _images(ds: Any, n: int, *, seed: int | None, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` images and labels of ``ds`` as arrays (shuffled with ``seed`` when given), resized to ``size``."""
    from hwnas.datasets import batches

    x, y = next(batches(ds, min(n, len(ds)), shuffle=seed is not None, seed=seed, size=size))
    return x.numpy(), y.numpy()


class PrecisionEvaluator:
    """The run's evaluator at ``precision`` (see the module docstring)."""

    def __init__(self, inner: Evaluator, precision: str, *, seed: int = 0) -> None:
        self.inner = inner
        self.precision = precision
        self.seed = seed
        self.name = inner.name
        self.data = getattr(inner, "data", None)  # deployment metadata reads it
        self.measures = quantizes(inner)

    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        acc = self.inner.evaluate(arch, trial)
        if not self.measures:
            return Accuracy(
                acc.value,
                f"{acc.source} (FP32 accuracy from the benchmark table, not measured at {self.precision.upper()})",
                acc.extras | {"accuracy_precision": "fp32"},
            )
        return self._quantized(arch, acc)

    def _quantized(self, arch: Arch, acc: Accuracy) -> Accuracy:
        from hwnas.cost._onnx import to_onnx_bytes
        from hwnas.cost.quantize import data_calibration, onnx_accuracy, quantize_onnx

        inner: Any = self.inner
        net = inner.scored_network(arch)
        if net is None:  # nothing to quantize (never expected after evaluate): the FP32 figure, said so
            return Accuracy(acc.value, f"{acc.source} (FP32: the scored network was not kept)", acc.extras | {"accuracy_precision": "fp32"})
        size = getattr(net, "input_size", None)
        shape = tuple(int(n) for n in net.data_shape)
        if size is not None:
            shape = (shape[0], size, size)
        name = getattr(getattr(inner, "data", None), "name", "data")
        train_x, _ = _images(inner.train, 4 * 64, seed=self.seed, size=size)
        calibration = data_calibration(train_x, shape, name=name, seed=self.seed)
        fp32 = to_onnx_bytes(net.model.cpu().eval(), shape, exporter="torchscript")
        q = quantize_onnx(fp32, calibration, shape=shape)  # QuantizationFailed: the trial fails with the reason
        valid_x, valid_y = _images(inner.valid, MAX_VALID, seed=None, size=size)
        int8 = onnx_accuracy(q.data, valid_x, valid_y)
        source = (
            f"{acc.source}; then INT8 (ONNX Runtime static QDQ, calibrated on {calibration.source}), "
            f"scored with ONNX Runtime on the same validation split ({len(valid_y)} images)"
        )
        extras = acc.extras | {
            "accuracy_precision": self.precision,
            "fp32_accuracy": acc.value,
            "quantization_drop": round(acc.value - int8, 4),
            "quantize_seconds": round(q.seconds, 3),
        }
        return Accuracy(int8, source, extras)

    def build_trained(self, arch: Arch) -> Any:
        return self.inner.build_trained(arch)

    def test_accuracy(self, arch: Arch) -> tuple[float | None, str]:
        """The inner evaluator's held-out test accuracy (of the FP32 network it trained)."""
        from hwnas.evaluate import test_accuracy

        return test_accuracy(self.inner, arch)

    def describe(self) -> dict[str, Any]:
        d = dict(self.inner.describe())
        d["precision"] = self.precision
        if self.measures:
            d["accuracy_precision"] = self.precision
            d["signal"] = (
                f"{d.get('signal', 'accuracy')}, then measured after {self.precision.upper()} quantization (ONNX Runtime static QDQ, "
                "calibrated on training images) with ONNX Runtime; the FP32 accuracy and the drop are recorded per trial"
            )
        else:
            d["accuracy_precision"] = "fp32"
            d["signal"] = f"{d.get('signal', 'accuracy')}: the benchmark's FP32 accuracy, not an {self.precision.upper()} accuracy"
        return d


def export_inputs(evaluator: Any, *, seed: int = 0) -> tuple[Any, tuple[np.ndarray, str]] | None:
    """For an INT8 export of the network ``evaluator`` trained: (a calibration set of its training
    images, its validation images for the INT8-FP32 parity); None for an evaluator that trains nothing."""
    from hwnas.cost.quantize import data_calibration

    inner = getattr(evaluator, "inner", evaluator)
    if not quantizes(inner):
        return None
    name = getattr(getattr(inner, "data", None), "name", "data")
    train_x, _ = _images(inner.train, 4 * 64, seed=seed, size=None)
    valid_x, _ = _images(inner.valid, MAX_VALID, seed=None, size=None)
    calibration = data_calibration(train_x, tuple(train_x.shape[1:]), name=name, seed=seed)
    return calibration, (valid_x, f"{len(valid_x)} images of the {name} validation split")
