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
#: What ONNX Runtime's static QDQ quantization (:mod:`hwnas.cost.quantize`: int8 weights per
#: output channel) stores per output channel of a conv or linear layer besides its int8 weights:
#: a float32 scale and an int8 zero point of the weights, and where the layer has a bias (a
#: folded BatchNorm's, a linear layer's) the bias as int32 with a float32 scale and an int32
#: zero point of its own. Read off the initializers of quantized nb201 and mbconv exports.
INT8_BYTES_PER_CHANNEL = 4 + 1
INT8_BIAS_BYTES_PER_CHANNEL = 4 + 4 + 4
#: A BatchNorm that follows no conv, quantized: its scale as int8 with one float32 scale and
#: one int8 zero point, its shift as int32 with a one-element float32 scale and an int32 zero
#: point, and its running mean and variance left in float32: 13 bytes a channel plus 13.
_INT8_BN_BYTES_PER_CHANNEL = 1 + 4 + 4 + 4
_INT8_BN_BYTES = 4 + 1 + 4 + 4


@dataclass(frozen=True)
class Counts:
    """Compute and size of one network for one input of batch 1.

    Attributes:
        macs: conv + linear multiply-accumulates (the field's "FLOPs": MobileNetV2 = 300 M).
        params: trainable parameters (BatchNorm scale and shift included, running statistics not).
        weight_bytes: bytes of the float32 weights of the deployed network (BatchNorm folded).
        int8_weight_bytes: bytes of the weights of the same network quantized to INT8 (see
            :data:`INT8_BYTES_PER_CHANNEL`): the initializers of its QDQ model less the activation
            scales and zero points.
    """

    macs: int
    params: int
    weight_bytes: int
    int8_weight_bytes: int = 0

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

    __slots__ = ("int8", "macs", "params", "weights")

    def __init__(self) -> None:
        self.macs = 0
        self.params = 0
        self.weights = 0  # float32 values of the deployed network
        self.int8 = 0  # bytes of its weights once quantized to INT8

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
        self.int8 += repeat * (kernel_weights + c_out * (INT8_BYTES_PER_CHANNEL + INT8_BIAS_BYTES_PER_CHANNEL))

    def conv(self, c_in: int, c_out: int, kernel: int, out_pixels: int) -> None:
        """A bias-free Conv2d with no BatchNorm after it (nothing to fold)."""
        kernel_weights = c_out * c_in * kernel * kernel
        self.macs += kernel_weights * out_pixels
        self.params += kernel_weights
        self.weights += kernel_weights
        self.int8 += kernel_weights + c_out * INT8_BYTES_PER_CHANNEL  # no bias to quantize

    def batch_norm(self, channels: int) -> None:
        """A BatchNorm2d that follows no conv, so it stays a BatchNormalization node on export."""
        self.params += 2 * channels
        self.weights += _BN_EXPORTED_VECTORS * channels
        self.int8 += _INT8_BN_BYTES_PER_CHANNEL * channels + _INT8_BN_BYTES

    def linear(self, in_features: int, out_features: int) -> None:
        """A Linear layer with bias on a flat (1, in_features) input."""
        self.macs += in_features * out_features
        self.params += in_features * out_features + out_features
        self.weights += in_features * out_features + out_features
        self.int8 += in_features * out_features + out_features * (INT8_BYTES_PER_CHANNEL + INT8_BIAS_BYTES_PER_CHANNEL)

    def counts(self) -> Counts:
        return Counts(macs=self.macs, params=self.params, weight_bytes=FLOAT32_BYTES * self.weights, int8_weight_bytes=self.int8)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv or pool along one axis (no dilation, floor rounding)."""
    return (size + 2 * padding - kernel) // stride + 1
