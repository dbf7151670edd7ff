"""Shared fixtures: device parametrisation (CPU always, CUDA where present) and tiny runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _has_cuda_provider() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda_provider():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU / onnxruntime CUDA provider on this machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def ort_device(request: pytest.FixtureRequest) -> str:
    """Name of a live-measured device: cpu everywhere, cuda where a GPU and provider exist."""
    return str(request.param)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny forwards: one intra-op thread is as fast and avoids OpenMP spin-waits on a busy 2-core
    runner (files opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
