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


def _torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    torch_cuda = [item for item in items if item.get_closest_marker("torch_cuda") is not None]
    if torch_cuda and not _torch_sees_cuda():  # torch is imported only where such a test is collected
        for item in torch_cuda:
            item.add_marker(pytest.mark.skip(reason="torch sees no CUDA GPU on this machine"))
    if _has_cuda_provider():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU / onnxruntime CUDA provider on this machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _tables_out_of_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own empty lookup-table folder (``$HWNAS_TABLES``, which child processes
    inherit): no test reads the tables of the user who runs it, nor writes into their home."""
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path_factory.mktemp("tables")))


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


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 100-image slice of digits (10 per class; 60 train / 20 valid / 20 test images of 8x8) as
    an ``npz:`` data spec: training evaluators run on it in about a second an epoch."""
    import numpy as np

    from hwnas.datasets import load_data

    ds = load_data("digits")
    idx = np.concatenate([np.flatnonzero(ds.y == c)[:10] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=ds.x[idx, 0], y=ds.y[idx])
    return f"npz:{path}"
