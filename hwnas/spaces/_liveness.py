"""Peak activation memory from tensor lifetimes: the rule, on any operator list (stdlib only).

The model (see :mod:`hwnas.cost.memory` for the whole statement): batch 1, float32, no operator
workspace, no weights; each operator's output is live from its operator until its last consumer;
the input until its last consumer, the output to the end; no in-place reuse. The spaces describe
their networks as operator lists in closed form; :mod:`hwnas.cost.memory` applies the same rule to
the graph ONNX Runtime executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: Bytes per activation element (float32).
BYTES_PER_ELEMENT = 4


class Op(NamedTuple):
    """One operator of a schedule: reads ``inputs`` (tensor names), writes ``output``.

    ``kind`` is a free label for reports and tests (``"conv"``, ``"add"``, an ONNX op type).
    """

    name: str
    inputs: tuple[str, ...]
    output: str
    output_bytes: int
    kind: str = ""


def peak_activation_bytes(ops: Sequence[Op], input_name: str, input_bytes: int, *, outputs: Sequence[str] | None = None) -> tuple[int, str]:
    """Peak bytes of live activations over ``ops`` run in order, and the op where it occurs.

    Args:
        ops: the operators in execution order; each output name is written once.
        input_name: name of the network input tensor.
        input_bytes: its size in bytes.
        outputs: tensors kept to the end (the network outputs); default: the last op's output.

    Returns:
        ``(peak_bytes, name of the first op at which the peak is reached)``.

    Raises:
        ValueError: when ``ops`` is empty, an op reads a tensor no earlier op wrote, or a
            tensor is written twice.
    """
    if not ops:
        raise ValueError("ops is empty: a network has at least one operator")
    size = {input_name: input_bytes}
    last_use = {input_name: -1}
    for k, op in enumerate(ops):
        for t in op.inputs:
            if t not in size:
                raise ValueError(f"op {op.name!r} reads {t!r}, which neither the input nor an earlier op writes")
            last_use[t] = k
        if op.output in size:
            raise ValueError(f"op {op.name!r} writes {op.output!r}, which is already written")
        size[op.output] = op.output_bytes
        last_use[op.output] = k  # unread and not an output: live only while its op runs
    end = len(ops)
    for t in (ops[-1].output,) if outputs is None else outputs:
        if t not in size:
            raise ValueError(f"output {t!r} is not written by any op")
        last_use[t] = end
    freed_after: list[list[str]] = [[] for _ in range(end + 1)]
    for t, k in last_use.items():
        if k >= 0:
            freed_after[k].append(t)
    live = input_bytes if last_use[input_name] >= 0 else 0
    peak, at = -1, ops[0].name
    for k, op in enumerate(ops):
        live += op.output_bytes
        if live > peak:
            peak, at = live, op.name
        for t in freed_after[k]:
            live -= size[t]
    return peak, at
