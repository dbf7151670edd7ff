"""Peak activation memory of a network from tensor lifetimes (the MCUNet / TinyNAS budget).

Model: batch 1, float32 (4 bytes per element); no operator workspace (im2col buffers and the
like are not counted) and no weights. The network is a sequence of operators in execution
order; an operator is a fused conv+BN(+activation) where ONNX Runtime fuses them, or a
pooling, an add, a linear (and the other elementwise ops a network really runs: NB201's
standalone ReLUs, the ``x * 0`` of its ``none`` edges, its head BatchNorm). Each operator's
output tensor is live from the moment the operator runs until its last consumer has run. The
network input is live until its last consumer; the output (logits) counts at the end. Peak =
max over operators of the bytes of every tensor live while that operator runs: its inputs,
its output, and every tensor still held for a later consumer (a residual's skip tensor, a DAG
node still needed by later edges). No in-place reuse is assumed. Views (Flatten) and the
identity add no tensor; an op the exported graph computes once counts once.

:func:`peak_activation_bytes` applies the rule to any operator list; the search spaces
describe their networks as such lists in closed form (``hwnas.spaces._*_memory``).
:func:`onnx_peak_activation_bytes` applies the same rule, independently, to the graph that
ONNX Runtime actually executes.
"""

from __future__ import annotations

import os
import tempfile

from hwnas.spaces._liveness import BYTES_PER_ELEMENT, Op, peak_activation_bytes

__all__ = ["BYTES_PER_ELEMENT", "Op", "onnx_ops", "onnx_peak_activation_bytes", "ort_profiled_peak_bytes", "peak_activation_bytes"]

#: ONNX ops whose output is a view of their input (ORT aliases the buffer, torch returns a
#: view), so they add no tensor; Dropout is the identity at inference.
_VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


def onnx_ops(onnx_bytes: bytes, *, provider: str = "CPUExecutionProvider") -> tuple[list[Op], str, int, tuple[str, ...]]:
    """The operators ONNX Runtime executes for ``onnx_bytes``, in its execution order, batch 1.

    ORT optimises the graph at ``ORT_ENABLE_EXTENDED`` (constant folding, common-subexpression
    elimination, Conv+BN/Mul folding, Conv+activation fusion into ``FusedConv``). The
    ``ORT_ENABLE_ALL`` graph is not used: its NCHWc layout pass replaces convs with
    ``com.microsoft.nchwc`` ops on channel-blocked (padded) tensors plus Reorder copies, which
    ONNX shape inference cannot type. The optimised graph's stored node order is the order
    ORT's sequential executor runs (checked against ORT's profiler). Shapes come from
    ``onnx.shape_inference.infer_shapes`` with every symbolic input/output dim set to 1;
    ``FusedConv`` is typed as the ``Conv`` it wraps. Initializers and constants (weights) and
    view ops (:data:`_VIEW_OPS`) add no tensor.

    Returns:
        ``(ops, input name, input bytes, output names)`` for :func:`peak_activation_bytes`.

    Raises:
        ValueError: when the model has more than one non-weight input.
        RuntimeError: when shape inference leaves an activation without a static shape.
    """
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="hwnas-mem-") as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "optimised.onnx")
        ort.InferenceSession(onnx_bytes, sess_options=opts, providers=[provider])
        model = onnx.load(opts.optimized_model_filepath)
    graph = model.graph

    weights = {init.name for init in graph.initializer}
    weights.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    inputs = [v for v in graph.input if v.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"expected one activation input, the model has {[v.name for v in inputs]}")
    for value in [*graph.input, *graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1  # the symbolic batch axis
    del graph.value_info[:]
    typed = onnx.ModelProto()
    typed.CopyFrom(model)
    for node in typed.graph.node:
        if node.op_type == "FusedConv":  # com.microsoft: Conv + activation (+ optional sum input)
            node.domain, node.op_type = "", "Conv"
            del node.input[3:]
            kept = [a for a in node.attribute if not a.name.startswith("activation")]
            del node.attribute[:]
            node.attribute.extend(kept)
    typed = onnx.shape_inference.infer_shapes(typed, strict_mode=True)
    shapes = {v.name: v.type.tensor_type.shape for v in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]}

    def nbytes(name: str, producer: str) -> int:
        shape = shapes.get(name)
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim] if shape is not None else [-1]
        if min(dims, default=1) < 1:
            raise RuntimeError(f"shape inference left {name!r} ({producer}) without a static shape")
        n = BYTES_PER_ELEMENT
        for d in dims:
            n *= d
        return n

    alias: dict[str, str] = {}
    ops: list[Op] = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        reads = tuple(dict.fromkeys(alias.get(i, i) for i in node.input if i and i not in weights))
        if node.op_type in _VIEW_OPS and len(reads) == 1:
            alias[node.output[0]] = reads[0]
            continue
        if len(node.output) != 1:
            raise RuntimeError(f"{node.op_type} {node.name!r} has {len(node.output)} outputs; only single-output ops are modelled")
        out = node.output[0]
        ops.append(Op(node.name or out, reads, out, nbytes(out, f"output of {node.op_type} {node.name!r}"), node.op_type))
    outputs = tuple(alias.get(v.name, v.name) for v in graph.output)
    return ops, inputs[0].name, nbytes(inputs[0].name, "the graph input"), outputs


def onnx_peak_activation_bytes(onnx_bytes: bytes) -> int:
    """Peak activation bytes of an ONNX model as ONNX Runtime (CPU) optimises and schedules it.

    An independent check of the closed forms: the same liveness rule over the real graph
    (see :func:`onnx_ops` for how the graph and its shapes are obtained).
    """
    ops, input_name, input_bytes, outputs = onnx_ops(onnx_bytes)
    return peak_activation_bytes(ops, input_name, input_bytes, outputs=outputs)[0]


def ort_profiled_peak_bytes(onnx_bytes: bytes, *, mem_reuse: bool = False, provider: str = "CPUExecutionProvider") -> int:
    """ONNX Runtime's own measured activation peak, from its profiler's per-kernel arena stats.

    ORT (1.32 here) reports with each kernel event of a profile the bytes requested from its
    CPU arena and still in use when the kernel has finished, before the kernel's dead inputs
    are released (``mem_bytes_requested_in_use``). That minus what was in use before the first
    kernel (weights and caches, not activations), plus the graph input while a later kernel
    still reads it (it lives in the caller's buffer, not the arena), maximised over kernels, is
    the activation peak of one batch-1 run as ORT allocated it, on the same
    ``ORT_ENABLE_EXTENDED`` graph as :func:`onnx_ops`. Python exposes no other planner or
    arena figure (the memory pattern's size is not reported).

    Args:
        onnx_bytes: the model.
        mem_reuse: ORT's default ``True`` lets its allocation planner hand a freed buffer to a
            later tensor, a larger buffer to a smaller tensor included, which then holds the
            whole buffer; ``False`` gives every tensor its own allocation, which is this
            module's model (no in-place reuse).
        provider: the execution provider whose graph and arena are measured.

    Raises:
        RuntimeError: when this ONNX Runtime's profile has no arena stats.
    """
    import json

    import numpy as np
    import onnxruntime as ort

    ops, input_name, input_bytes, _ = onnx_ops(onnx_bytes, provider=provider)
    last_read = max(k for k, op in enumerate(ops) if input_name in op.inputs)
    position = {op.name: k for k, op in enumerate(ops)}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.enable_mem_reuse = mem_reuse
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="hwnas-mem-") as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=[provider])
        meta = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        session.run(None, {meta.name: np.zeros(shape, dtype=np.float32)})
        with open(session.end_profiling()) as f:
            events = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    if not events or "mem_bytes_requested_in_use" not in events[0].get("args", {}):
        raise RuntimeError(f"ONNX Runtime {ort.__version__} profiles carry no arena stats (mem_bytes_requested_in_use)")
    first = events[0]["args"]
    before = int(first["mem_bytes_requested_in_use"]) - int(first["mem_requested_in_use_delta"])
    peak = 0
    for e in events:
        in_use = int(e["args"]["mem_bytes_requested_in_use"]) - before
        k = position.get(e["name"][: -len("_kernel_time")], last_read + 1)  # view ops: never the input's reader here
        peak = max(peak, in_use + (input_bytes if k <= last_read else 0))
    return peak
