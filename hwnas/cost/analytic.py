"""Device-independent cost sources: FLOPs and parameters, peak activation memory, model size.

Each is computed in closed form by the space where the space knows how (``space.counts(arch)``,
``space.peak_memory_bytes(arch)``: microseconds, no network built), which makes it *cheap*.
A space without a closed form falls back to counting the built network: fvcore's trace for
FLOPs (the reference the closed forms are tested against), the exported ONNX graph for memory
and size; those fallbacks are not cheap.

* ``flops``: ``flops_m``, conv + linear multiply-accumulates in millions (the field's "FLOPs":
  MobileNetV2 = 300 M), and ``params_m``, parameters in millions.
* ``memory``: ``memory_bytes``, peak activation memory: the bytes of activations live at once
  during inference, from the tensor lifetimes of the network's operator graph (batch 1,
  float32, no operator workspace, weights not counted). The budget that decides microcontroller
  deployment (MCUNet / TinyNAS).
* ``size``: ``size_bytes``, the bytes of the weights of the deployed network (the initializers
  of its ONNX model, BatchNorm folded into the convolutions): float32 at fp32; at int8 the
  weights of the quantized model, as :mod:`hwnas.cost.quantize` stores them (int8 weights with a
  float32 scale and an int8 zero point per output channel, int32 biases with their scales and
  zero points). The INT8 closed form equals the quantized model's weight initializers and
  leaves out the activations' scales and zero points (5 bytes per quantized activation tensor;
  which tensors ONNX Runtime's quantizer picks depends on its optimised graph), under 1 % of the
  model's initializers (tests/test_summary_truth.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hwnas.cost.source import Cost, CostSource, Metric, ModelGetter, SourceFactory
from hwnas.registry import Registry

if TYPE_CHECKING:
    from hwnas.spaces import Arch, SearchSpace

CLOSED_FORM = "closed form"
#: Cached per-architecture results per source (identical inputs are computed once).
CACHE_LIMIT = 100_000


class _Cached(CostSource):
    """A source whose numbers depend on the arch alone: computed once per canonical arch."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._cache: dict[str, dict[str, Cost]] = {}

    def costs(self, arch: Arch, model: ModelGetter | None = None) -> dict[str, Cost]:
        key = self.space.key(arch)
        got = self._cache.get(key)
        if got is None:
            got = self._compute(arch, model)
            if len(self._cache) < CACHE_LIMIT:
                self._cache[key] = got
        return got

    def _compute(self, arch: Arch, model: ModelGetter | None) -> dict[str, Cost]:
        raise NotImplementedError

    def _built(self, arch: Arch, model: ModelGetter | None) -> Any:
        return model() if model is not None else self.space.build(arch)

    def lower_bound(self, metric: str) -> tuple[Cost, Arch] | None:
        arch = self.space.smallest()
        return self.costs(arch)[metric], arch

    def describe(self) -> dict[str, Any]:
        return {"source": self.kind, "how": CLOSED_FORM if self.cheap else self._fallback}

    _fallback = ""


class ComputeCostSource(_Cached):
    """``flops_m`` and ``params_m``: closed form where the space has one, else fvcore's count."""

    kind = "flops"
    _fallback = "fvcore (jit trace of the built network)"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.cheap = space.counts(space.smallest()) is not None

    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("flops_m", "M", "FLOPs (multiply-adds)"), Metric("params_m", "M", "parameters"))

    def _compute(self, arch: Arch, model: ModelGetter | None) -> dict[str, Cost]:
        counts = self.space.counts(arch)
        if counts is not None:
            return {"flops_m": Cost(counts.flops_m, CLOSED_FORM), "params_m": Cost(counts.params_m, CLOSED_FORM)}
        from hwnas.cost.flops import compute_cost

        cc = compute_cost(self._built(arch, model), self.space.input_shape(arch))
        return {"flops_m": Cost(cc.flops_m, cc.source), "params_m": Cost(cc.params_m, cc.source)}


class PeakMemorySource(_Cached):
    """``memory_bytes``: peak activation memory from the operator graph's tensor lifetimes."""

    kind = "memory"
    _fallback = "tensor lifetimes of the exported ONNX graph"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.cheap = space.peak_memory_bytes(space.smallest()) is not None

    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("memory_bytes", "bytes", "peak activation memory"),)

    def _compute(self, arch: Arch, model: ModelGetter | None) -> dict[str, Cost]:
        peak = self.space.peak_memory_bytes(arch)
        if peak is not None:
            return {"memory_bytes": Cost(float(peak), CLOSED_FORM)}
        from hwnas.cost._onnx import to_onnx_bytes
        from hwnas.cost.memory import onnx_peak_activation_bytes

        data = to_onnx_bytes(self._built(arch, model), self.space.input_shape(arch), exporter="torchscript")
        return {"memory_bytes": Cost(float(onnx_peak_activation_bytes(data)), self._fallback)}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"models": "batch 1, float32, activations live at once; no operator workspace, no weights"}


class ModelSizeSource(_Cached):
    """``size_bytes``: bytes of the deployed weights (BatchNorm folded): float32 at fp32, the
    quantized model's at int8."""

    kind = "size"
    _fallback = "initializers of the exported ONNX model"

    def __init__(self, space: SearchSpace, *, precision: str = "fp32") -> None:
        super().__init__(space)
        if precision not in ("fp32", "int8"):
            from hwnas.errors import UsageError

            raise UsageError(f"model size is defined at precision fp32 or int8, not {precision!r}")
        self.precision = precision
        self.cheap = space.counts(space.smallest()) is not None

    def at_precision(self, precision: str) -> CostSource:
        # fp16 and bf16 (the torch kind) keep the float32 figure: no exported model of theirs to count yet.
        want = "int8" if precision == "int8" else "fp32"
        return self if want == self.precision else ModelSizeSource(self.space, precision=want)

    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("size_bytes", "bytes", "model size"),)

    def _compute(self, arch: Arch, model: ModelGetter | None) -> dict[str, Cost]:
        counts = self.space.counts(arch)
        int8 = self.precision == "int8"
        if counts is not None:
            return {"size_bytes": Cost(float(counts.int8_weight_bytes if int8 else counts.weight_bytes), CLOSED_FORM)}
        import onnx

        from hwnas.cost._onnx import to_onnx_bytes

        shape = tuple(self.space.input_shape(arch))
        data = to_onnx_bytes(self._built(arch, model), shape, exporter="torchscript")
        if int8:  # the quantized model itself: what is deployed
            from hwnas.cost.quantize import quantize_onnx, synthetic_calibration

            data = quantize_onnx(data, synthetic_calibration(shape), shape=shape).data
        proto = onnx.load_from_string(data)
        size = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
        return {"size_bytes": Cost(float(size), self._fallback)}

    def describe(self) -> dict[str, Any]:
        if self.precision == "int8":
            what = (
                "weights of the deployed network quantized to INT8 (ONNX Runtime static QDQ): int8 weights with float32 scales and "
                "int8 zero points per output channel, int32 biases with their scales and zero points, BatchNorm folded"
            )
            if self.cheap:
                what += "; activation scales and zero points (5 bytes per quantized activation tensor) not counted"
            return super().describe() | {"models": what, "precision": "int8"}
        return super().describe() | {"models": "float32 weights of the deployed network, BatchNorm folded"}


def register(registry: Registry[SourceFactory]) -> None:
    registry.add("flops", ComputeCostSource)
    registry.add("memory", PeakMemorySource)
    registry.add("size", ModelSizeSource)
