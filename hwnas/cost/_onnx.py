"""Torch -> ONNX conversion and ONNX Runtime sessions, shared by measurement and export."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hwnas_agent.timing import INPUT_NAME
from hwnas_agent.timing import make_session as _agent_session

from hwnas.errors import UsageError

if TYPE_CHECKING:
    import onnxruntime
    import torch

#: Pinned opset of every model hwnas writes (both exporters support it).
OPSET = 18
OUTPUT_NAME = "logits"
EXPORTERS = ("dynamo", "torchscript")


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' deprecation warnings and torchvision-missing log lines."""
    names = ["torch.onnx._internal.exporter._registration", "torch.onnx"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the body with one intra-op torch thread, then restore the count the caller had.

    An export traces the network once at batch 1, which one thread does as fast as several; with
    more, torch's OpenMP threads spin for work while a measurement (an agent, ONNX Runtime) holds
    a core, and an NB201 export here cost 1.5 s of CPU instead of 0.25 s. (The count is torch's
    process-wide setting: meant for the thread that runs the trials, as the search does.)
    """
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_onnx_bytes(model: torch.nn.Module, input_shape: tuple[int, ...], *, exporter: str = "dynamo", opset: int = OPSET) -> bytes:
    """Export ``model`` (put in eval mode) to a self-contained ONNX model with a dynamic batch axis.

    Args:
        model: the network; its forward takes one (N, C, H, W) tensor.
        input_shape: (C, H, W) of one input.
        exporter: ``"dynamo"`` (torch's default, needs onnxscript; 4-14 s of CPU for an NB201
            network) or ``"torchscript"`` (the legacy tracer, about 15x faster, used for
            candidates whose latency is measured during a search and for the verified export).
        opset: the ONNX opset, pinned.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    model.eval()
    x = torch.randn(1, *input_shape)
    with _quiet_export(), torch.no_grad(), one_torch_thread():
        if exporter == "dynamo":
            program = torch.onnx.export(
                model,
                (x,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,
                verbose=False,
            )
            assert program is not None
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        # torch's type hints omit file objects, which the TorchScript exporter accepts.
        torch.onnx.export(
            model,
            (x,),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        return buf.getvalue()


def make_session(model: bytes | str, *, provider: str, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session with full graph optimisation, sequential execution, ``threads`` intra-op threads.

    Raises:
        UsageError: when the execution provider is not installed.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        hint = " (install onnxruntime-gpu instead of onnxruntime)" if provider == "CUDAExecutionProvider" else ""
        raise UsageError(
            f"ONNX Runtime execution provider {provider!r} is not installed{hint}; "
            f"available here: {', '.join(available)}; e.g. use --device cpu"
        )
    # The session options live in hwnas_agent.timing so local and remote timings are the same code.
    return _agent_session(model, provider=provider, threads=threads)
