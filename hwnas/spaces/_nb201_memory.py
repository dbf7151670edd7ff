"""The NAS-Bench-201 network as an operator list for peak activation memory (no torch).

The list follows :mod:`hwnas.spaces._nb201_model`'s forward pass op for op, as the exported
graph runs it in ONNX Runtime:

- Every edge runs, ``none`` included: it is ``x * 0``, a zeros tensor of the node's size.
  ``skip_connect`` returns its input tensor itself and allocates nothing.
- A node is the running sum of its incoming edges in source order, ``((e0 + e1) + e2)``: one
  Add per extra edge, each a new tensor.
- An op computed twice on the same tensor is computed once (the exporter and ORT eliminate
  common subexpressions): the ReLU in front of a node's conv edges, the ``x * 0`` of two
  ``none`` edges, two 3x3 pools, equal sums.
- A conv (BN folded) whose only consumer is a ReLU runs fused with it; one whose only
  consumer is ``x * 0`` has the zero folded into its weights (ORT's Conv+Mul fusion).

See :mod:`hwnas.cost.memory` for what is counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.benchdata import NB201_EDGES
from hwnas.spaces._liveness import BYTES_PER_ELEMENT, Op, peak_activation_bytes

if TYPE_CHECKING:
    from hwnas.spaces._base import Arch
    from hwnas.spaces.nb201 import NB201Space

#: (target node, source node) of each edge, in the arch-string order (as the model's ``Cell.EDGES``).
_CELL_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_INPUT = "input"


class _Builder:
    """Appends ops in forward order, reusing the tensor of an identical earlier op."""

    def __init__(self, channels: int, size: int) -> None:
        self.ops: list[Op] = []
        self.shape: dict[str, tuple[int, int]] = {_INPUT: (channels, size)}  # (channels, height = width)
        self._memo: dict[tuple[object, ...], str] = {}

    def op(self, name: str, kind: str, inputs: tuple[str, ...], channels: int, size: int, *, shared: bool = True) -> str:
        key = (kind, *inputs)
        if shared and key in self._memo:
            return self._memo[key]
        self.ops.append(Op(name, inputs, name, channels * size * size * BYTES_PER_ELEMENT, kind))
        self.shape[name] = (channels, size)
        if shared:
            self._memo[key] = name
        return name

    def conv(self, name: str, x: str, c_out: int, kernel: int, stride: int) -> str:
        size = (self.shape[x][1] + 2 * (kernel // 2) - kernel) // stride + 1
        return self.op(name, "conv", (x,), c_out, size, shared=False)  # own weights: never shared

    def same(self, name: str, kind: str, *inputs: str) -> str:
        """An op whose output has the shape of its first input (ReLU, ``x * 0``, 3x3 pool, add, BN)."""
        return self.op(name, kind, inputs, *self.shape[inputs[0]])


def _cell(b: _Builder, ops: list[str], x: str, prefix: str, channels: int) -> str:
    nodes = [x]
    for target in (1, 2, 3):
        total = None
        for k, (t, source) in enumerate(_CELL_EDGES):
            if t != target:
                continue
            name, src = f"{prefix}/e{t}<-{source}", nodes[source]
            if ops[k] == "skip_connect":
                y = src
            elif ops[k] == "none":
                y = b.same(f"{name}/zero", "zero", src)
            elif ops[k] == "avg_pool_3x3":
                y = b.same(f"{name}/pool", "avgpool3", src)
            else:
                kernel = 1 if ops[k] == "nor_conv_1x1" else 3
                y = b.conv(f"{name}/conv", b.same(f"{name}/relu", "relu", src), channels, kernel, 1)
            total = y if total is None else b.same(f"{prefix}/n{t}+{source}", "add", total, y)
        nodes.append(total)  # type: ignore[arg-type]
    return nodes[3]


def _reduction(b: _Builder, x: str, prefix: str, c_out: int) -> str:
    # Python evaluates ``downsample(x) + conv_b(conv_a(x))`` left to right.
    c_in, size = b.shape[x]
    pooled = b.op(f"{prefix}/pool", "avgpool2", (x,), c_in, (size - 2) // 2 + 1)
    short = b.conv(f"{prefix}/shortcut", pooled, c_out, 1, 1)
    a = b.conv(f"{prefix}/conv_a", b.same(f"{prefix}/relu_a", "relu", x), c_out, 3, 2)
    main = b.conv(f"{prefix}/conv_b", b.same(f"{prefix}/relu_b", "relu", a), c_out, 3, 1)
    return b.same(f"{prefix}/add", "add", short, main)


def _fuse(ops: list[Op]) -> list[Op]:
    """Fold each ReLU or ``x * 0`` into the conv whose only consumer it is (ORT's fusions)."""
    readers: dict[str, int] = {}
    for op in ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    producer = {op.output: i for i, op in enumerate(ops)}
    out: list[Op | None] = list(ops)
    for i, op in enumerate(ops):
        if op.kind not in ("relu", "zero"):
            continue
        j = producer.get(op.inputs[0])
        if j is not None and ops[j].kind == "conv" and readers[op.inputs[0]] == 1:
            # The fused op runs where its last part ran, as in the exported graph's order.
            conv = ops[j]
            out[i] = Op(conv.name, conv.inputs, op.output, op.output_bytes, "conv")
            out[j] = None
    return [op for op in out if op is not None]


def nb201_ops(space: NB201Space, arch: Arch) -> list[Op]:
    """The operators the NB201 network of ``space`` (channels, cells, dataset) runs for ``arch``, in order.

    The input tensor is named ``"input"``; the last op writes the logits.
    """
    return _network_ops(space, arch, space.cells_per_stage)


def nb201_peak_bytes(space: NB201Space, arch: Arch) -> int:
    """Peak activation bytes (batch 1, float32) of the NB201 network of ``space`` for ``arch``."""
    # Only a cell's input outlives the cell, and every cell of a stage but the very first
    # (whose input is the stem's, possibly fused, conv) reads an Add output of the same size,
    # so cells 3, 4, ... of a stage repeat cell 2's live bytes op for op: two cells per stage
    # give the same peak at well under half the cost.
    c_in, size, _ = space.input_shape(arch)
    ops = _network_ops(space, arch, min(space.cells_per_stage, 2))
    return peak_activation_bytes(ops, _INPUT, c_in * size * size * BYTES_PER_ELEMENT)[0]


def _network_ops(space: NB201Space, arch: Arch, cells_per_stage: int) -> list[Op]:
    ops = [space.validate(arch)[e] for e in NB201_EDGES]
    (c_in, size, _), c = space.input_shape(arch), space.channels
    b = _Builder(c_in, size)
    x = b.conv("stem", _INPUT, c, 3, 1)
    n = 0
    for stage, width in enumerate((c, 2 * c, 4 * c)):
        if stage > 0:
            x = _reduction(b, x, f"reduce{stage}", width)
        for _ in range(cells_per_stage):
            x = _cell(b, ops, x, f"cell{n}", width)
            n += 1
    x = b.same("head/relu", "relu", b.same("head/bn", "bn", x))
    x = b.op("head/gap", "gap", (x,), b.shape[x][0], 1)
    b.op("head/linear", "linear", (x,), space.num_classes, 1)
    return _fuse(b.ops)
