"""Graph-structure features of NAS-Bench-201 cells as ONNX Runtime optimises them.

Why: NB201 latency on ORT's CPU provider is not additive over ops. Its NCHWc layout
transformer fuses convs with their following Adds and Relus, and ops it cannot keep in the
blocked layout (the ``none`` Mul, Adds and pools between non-conv branches) get
ReorderInput/ReorderOutput nodes around them, so an edge's cost depends on its neighbours.
A linear model over op counts misses that (about 80-85 % of networks within +-10 %); adding
the node counts of the *optimised* graph reaches the noise floor.

How: the optimised graph of the whole network is 15 copies of the cell's, so we build a tiny
proxy (a stem conv and 1 or 2 cells, 16 channels, 8x8 pixels) directly with ``onnx.helper``,
let ORT optimise it (about 3 ms), and count node types. ``2 cells - 1 cell`` is the marginal
cost of one cell including its border with the next; ``1 cell`` carries the first border.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from hwnas.benchdata import NB201_OPS

#: Node types counted; others found are ignored (they vary little between cells).
NODE_TYPES = ("Add", "AveragePool", "Conv", "Mul", "Relu", "ReorderInput", "ReorderOutput", "Sum", "FusedConv")
_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def proxy_model(ops: Sequence[str], n_cells: int, *, channels: int = 16, size: int = 8) -> bytes:
    """ONNX bytes of ``stem conv -> n_cells cells -> relu -> global pool`` in the exporter's op vocabulary."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(arr: np.ndarray) -> str:
        name = fresh("k")
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(x: str, c_in: int, k: int) -> str:
        y = fresh("conv")
        w = const(rng.standard_normal((channels, c_in, k, k)) * 0.1)
        b = const(np.zeros(channels))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], pads=[k // 2] * 4))
        return y

    def op(x: str, name: str) -> str:
        if name == "skip_connect":
            return x
        y = fresh("op")
        if name == "none":
            nodes.append(helper.make_node("Mul", [x, const(np.array(0.0))], [y]))
        elif name == "avg_pool_3x3":
            nodes.append(helper.make_node("AveragePool", [x], [y], kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=0))
        else:  # ReLU-Conv(-BN folded)
            nodes.append(helper.make_node("Relu", [x], [y]))
            y = conv(y, channels, 1 if name == "nor_conv_1x1" else 3)
        return y

    x = conv("input", 3, 3)
    for _ in range(n_cells):
        node_out = [x]
        for target in (1, 2, 3):
            total = None
            for k, (t, src) in enumerate(_EDGES):
                if t != target:
                    continue
                y = op(node_out[src], ops[k])
                if total is None:
                    total = y
                else:
                    s = fresh("add")
                    nodes.append(helper.make_node("Add", [total, y], [s]))
                    total = s
            node_out.append(total)  # type: ignore[arg-type]
        x = node_out[3]
    r = fresh("relu")
    nodes.append(helper.make_node("Relu", [x], [r]))
    nodes.append(helper.make_node("GlobalAveragePool", [r], ["output"]))
    graph = helper.make_graph(
        nodes,
        "nb201_proxy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def optimised_node_counts(model: bytes, provider: str = "CPUExecutionProvider") -> Counter[str]:
    """Node-type counts of ``model`` after ORT's full graph optimisation for ``provider``."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        opts.optimized_model_filepath = path
        ort.InferenceSession(model, sess_options=opts, providers=[provider])
        graph = onnx.load(path).graph
    finally:
        os.unlink(path)
    return Counter(n.op_type for n in graph.node)


def cell_features(ops: Sequence[str], provider: str = "CPUExecutionProvider") -> list[int]:
    """``[one-cell counts..., marginal next-cell counts...]`` over :data:`NODE_TYPES`."""
    one = optimised_node_counts(proxy_model(ops, 1), provider)
    two = optimised_node_counts(proxy_model(ops, 2), provider)
    return [one.get(t, 0) for t in NODE_TYPES] + [two.get(t, 0) - one.get(t, 0) for t in NODE_TYPES]


def feature_names() -> list[str]:
    return [f"cell1.{t}" for t in NODE_TYPES] + [f"cell+.{t}" for t in NODE_TYPES]


def _features_of_index(args: tuple[int, str]) -> list[int]:
    from hwnas.benchdata import nb201_table

    index, provider = args
    return cell_features(nb201_table().genotype(index), provider)


def all_cell_features(provider: str = "CPUExecutionProvider", *, workers: int | None = None, progress=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Features of all 15,625 cells in index order, (15625, 2 * len(NODE_TYPES)) int16.

    Runs on all cores (graph optimisation is not timed, so parallelism costs no accuracy).
    """
    from hwnas.benchdata import nb201_table

    n = nb201_table().n
    workers = workers or os.cpu_count() or 1
    out = np.zeros((n, 2 * len(NODE_TYPES)), dtype=np.int16)
    jobs = [(i, provider) for i in range(n)]
    if workers == 1:
        results = map(_features_of_index, jobs)
        for i, row in enumerate(results):
            out[i] = row
            if progress and i % 250 == 0:
                progress(i, n)
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, row in enumerate(pool.map(_features_of_index, jobs, chunksize=256)):
            out[i] = row
            if progress and i % 250 == 0:
                progress(i, n)
    return out


def op_counts(ops: Sequence[str]) -> list[int]:
    return [sum(o == name for o in ops) for name in NB201_OPS]
