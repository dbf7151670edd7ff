"""Model checks run before any session is made (PROTOCOL.md, "Model checks").

The bytes are parsed with ``onnx`` where it is installed, otherwise with protobuf (a dependency
of onnxruntime) against a minimal schema holding just the fields of onnx.proto read here. Either
way the same structural walk follows: IR version, opset imports, node domains (subgraphs of
If/Loop/Scan too), no model-local functions, no external data. No path in a model is ever opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

IR_VERSIONS = range(3, 12)
OPSET_VERSIONS = range(1, 24)
DEFAULT_DOMAINS = ("", "ai.onnx")
ALLOWED_OPSET_DOMAINS = (*DEFAULT_DOMAINS, "ai.onnx.ml")
#: TensorProto.DataLocation.EXTERNAL
EXTERNAL = 1
#: Guards the subgraph walk against a crafted, deeply nested model.
MAX_DEPTH = 64


class ModelRejected(ValueError):
    """The model failed a check; the message is one line saying which."""


# (message, [(field, number, type, label, message type)]); type 9 string, 3 int64, 5 int32, 11 message;
# label 1 optional, 3 repeated. Numbers are onnx.proto's (tests cross-check them with onnx's descriptors).
_SCHEMA: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    ("StringStringEntryProto", [("key", 1, 9, 1, ""), ("value", 2, 9, 1, "")]),
    ("TensorProto", [("external_data", 13, 11, 3, "StringStringEntryProto"), ("data_location", 14, 5, 1, "")]),
    ("SparseTensorProto", [("values", 1, 11, 1, "TensorProto"), ("indices", 2, 11, 1, "TensorProto")]),
    (
        "AttributeProto",
        [
            ("t", 5, 11, 1, "TensorProto"),
            ("g", 6, 11, 1, "GraphProto"),
            ("tensors", 10, 11, 3, "TensorProto"),
            ("graphs", 11, 11, 3, "GraphProto"),
            ("sparse_tensor", 22, 11, 1, "SparseTensorProto"),
            ("sparse_tensors", 23, 11, 3, "SparseTensorProto"),
        ],
    ),
    ("NodeProto", [("op_type", 4, 9, 1, ""), ("attribute", 5, 11, 3, "AttributeProto"), ("domain", 7, 9, 1, "")]),
    (
        "GraphProto",
        [("node", 1, 11, 3, "NodeProto"), ("initializer", 5, 11, 3, "TensorProto"), ("sparse_initializer", 15, 11, 3, "SparseTensorProto")],
    ),
    ("OperatorSetIdProto", [("domain", 1, 9, 1, ""), ("version", 2, 3, 1, "")]),
    ("FunctionProto", []),
    (
        "ModelProto",
        [
            ("ir_version", 1, 3, 1, ""),
            ("graph", 7, 11, 1, "GraphProto"),
            ("opset_import", 8, 11, 3, "OperatorSetIdProto"),
            ("functions", 25, 11, 3, "FunctionProto"),
        ],
    ),
]
_PACKAGE = "hwnas_agent_minimal_onnx"


def _minimal_model_class() -> Any:
    """The ModelProto class of the minimal schema, built once with descriptor_pb2 + message_factory."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    for name, fields in _SCHEMA:
        msg = file.message_type.add(name=name)
        for field_name, number, ftype, label, type_name in fields:
            f = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ModelProto"))


_MinimalModel: Any = None


def parse_model(data: bytes, *, use_onnx: bool | None = None) -> Any:
    """Parse ``data`` as a ModelProto (onnx's where importable, else the minimal schema).

    Raises:
        ModelRejected: "not an ONNX model (...)" when the bytes do not parse.
    """
    global _MinimalModel
    onnx = _import_onnx() if use_onnx is not False else None
    if use_onnx and onnx is None:
        raise RuntimeError("onnx is not importable")
    try:
        if onnx is not None:
            return onnx.load_from_string(data)
        if _MinimalModel is None:
            _MinimalModel = _minimal_model_class()
        return _MinimalModel.FromString(data)
    except Exception as e:  # protobuf's DecodeError, or onnx's wrapping of it
        raise ModelRejected(f"not an ONNX model (protobuf: {_one_line(e)})") from None


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        return None
    return onnx


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def _tensors(graph: Any) -> Iterator[tuple[str, Any]]:
    for t in graph.initializer:
        yield "initializer", t
    for s in graph.sparse_initializer:
        yield "sparse initializer", s.values
        yield "sparse initializer", s.indices


def _attr_tensors(attr: Any) -> Iterator[Any]:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
    for s in [*sparse, *attr.sparse_tensors]:
        yield s.values
        yield s.indices


def _check_tensor(tensor: Any, where: str) -> None:
    if tensor.data_location == EXTERNAL or len(tensor.external_data) > 0:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
        raise ModelRejected(f"{where} uses external data (location {location[:100]!r}); the agent accepts self-contained models only")


def _check_graph(graph: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ModelRejected(f"subgraphs nested deeper than {MAX_DEPTH}")
    for kind, tensor in _tensors(graph):
        _check_tensor(tensor, f"an {kind}" if kind[0] in "aeiou" else f"a {kind}")
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS and node.domain != "ai.onnx.ml":
            raise ModelRejected(
                f"node {node.op_type!r} is in domain {node.domain[:100]!r}; only the ONNX domains are accepted (no custom ops)"
            )
        for attr in node.attribute:
            for tensor in _attr_tensors(attr):
                _check_tensor(tensor, f"an attribute tensor of node {node.op_type!r}")
            subgraphs = [attr.g] if attr.HasField("g") else []
            for g in [*subgraphs, *attr.graphs]:
                _check_graph(g, depth + 1)


def check_model(data: bytes, *, use_onnx: bool | None = None) -> None:
    """Refuse a model the agent will not run.

    Args:
        data: the model's bytes.
        use_onnx: None: use onnx where importable; False: the minimal protobuf schema (tests).

    Raises:
        ModelRejected: with a one-line reason.
    """
    model = parse_model(data, use_onnx=use_onnx)
    if model.ir_version not in IR_VERSIONS:
        raise ModelRejected(f"IR version {model.ir_version} is outside {IR_VERSIONS.start}..{IR_VERSIONS.stop - 1}")
    if len(model.functions) > 0:
        raise ModelRejected(f"the model defines {len(model.functions)} model-local function(s); not accepted")
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_OPSET_DOMAINS:
            raise ModelRejected(f"opset import of domain {opset.domain[:100]!r}; accepted: '', 'ai.onnx', 'ai.onnx.ml'")
        if opset.version not in OPSET_VERSIONS:
            raise ModelRejected(
                f"opset {opset.domain or 'ai.onnx'} version {opset.version} is outside {OPSET_VERSIONS.start}..{OPSET_VERSIONS.stop - 1}"
            )
    if not model.HasField("graph"):
        raise ModelRejected("the model has no graph")
    _check_graph(model.graph, 0)
    onnx = _import_onnx() if use_onnx is not False else None
    if onnx is not None:
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as e:  # onnx.checker.ValidationError and friends
            raise ModelRejected(f"onnx.checker: {_one_line(e)}") from None
