"""Closed-form compute, parameter and weight-size counts of a network, layer by layer (stdlib only).

The numbers match what hwnas measures on a built network: ``macs`` is fvcore's conv + linear
count (:func:`hwnas.cost.flops.compute_cost` before the division by 1e6), ``params`` is
``sum(p.numel() for p in model.parameters())``, and ``weight_bytes`` is the total size of the
initializers of the ONNX model the TorchScript exporter writes in eval mode, where every
BatchNorm that follows a conv is folded into that conv (its weight rescaled, a bias of
``c_out`` added) and a BatchNorm after anything else keeps its four vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes of one float32 weight.
FLOAT32_BYTES = 4
#: Vectors a BatchNorm2d exports when nothing folds it: scale, bias, running mean and variance.
_BN_EXPORTED_VECTORS = 4


@dataclass(frozen=True)
class Counts:
    """Compute and size of one network for one input of batch 1.

    Attributes:
        macs: conv + linear multiply-accumulates (the field's "FLOPs": MobileNetV2 = 300 M).
        params: trainable parameters (BatchNorm scale and shift included, running statistics not).
        weight_bytes: bytes of the float32 weights of the deployed network (BatchNorm folded).
    """

    macs: int
    params: int
    weight_bytes: int

    @property
    def flops_m(self) -> float:
        """Multiply-accumulates in millions."""
        return self.macs / 1e6

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6


class Tally:
    """Accumulates the layers of a network in forward order; :meth:`counts` gives the total.

    A mutable accumulator of plain ints rather than a sum of :class:`Counts`: a network has
    dozens of layers and a search calls this for every candidate.
    """

    __slots__ = ("macs", "params", "weights")

    def __init__(self) -> None:
        self.macs = 0
        self.params = 0
        self.weights = 0  # float32 values of the deployed network

    def conv_bn(self, c_in: int, c_out: int, kernel: int, out_pixels: int, *, groups: int = 1, repeat: int = 1) -> None:
        """A bias-free Conv2d followed by a BatchNorm2d, which export folds into the conv.

        Args:
            c_in: input channels.
            c_out: output channels.
            kernel: square kernel size.
            out_pixels: height x width of the conv's output.
            groups: conv groups (``c_in`` for a depthwise conv).
            repeat: number of identical such layers (0 adds nothing).
        """
        kernel_weights = c_out * (c_in // groups) * kernel * kernel
        self.macs += repeat * kernel_weights * out_pixels
        self.params += repeat * (kernel_weights + 2 * c_out)  # BatchNorm scale and shift
        self.weights += repeat * (kernel_weights + c_out)  # folded: rescaled kernel plus a bias

    def conv(self, c_in: int, c_out: int, kernel: int, out_pixels: int) -> None:
        """A bias-free Conv2d with no BatchNorm after it (nothing to fold)."""
        kernel_weights = c_out * c_in * kernel * kernel
        self.macs += kernel_weights * out_pixels
        self.params += kernel_weights
        self.weights += kernel_weights

    def batch_norm(self, channels: int) -> None:
        """A BatchNorm2d that follows no conv, so it stays a BatchNormalization node on export."""
        self.params += 2 * channels
        self.weights += _BN_EXPORTED_VECTORS * channels

    def linear(self, in_features: int, out_features: int) -> None:
        """A Linear layer with bias on a flat (1, in_features) input."""
        self.macs += in_features * out_features
        self.params += in_features * out_features + out_features
        self.weights += in_features * out_features + out_features

    def counts(self) -> Counts:
        return Counts(macs=self.macs, params=self.params, weight_bytes=FLOAT32_BYTES * self.weights)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv or pool along one axis (no dilation, floor rounding)."""
    return (size + 2 * padding - kernel) // stride + 1
