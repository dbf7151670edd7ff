"""Shared fixtures: device parametrisation (CPU always, CUDA where present) and tiny runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
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


#: The supernet evaluator's settings the tests share (one epoch on ``tiny_data``).
SUPERNET_OPTIONS = {"epochs": 1, "batch": 30}


@pytest.fixture(scope="session")
def trained_supernet(tiny_data: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """mbconv's OFA supernet trained once on ``tiny_data`` with :data:`SUPERNET_OPTIONS` (about a
    minute here: the sandwich trains the largest subnet at 224 px): the run folder holding its
    checkpoint, and the training's log lines. A test copies the checkpoint into its own run folder
    (:func:`with_trained_supernet`); the evaluator there loads it instead of training again."""
    from hwnas.evaluate import EvalContext, make_evaluator
    from hwnas.spaces import get_space

    folder = tmp_path_factory.mktemp("supernet-run")
    lines: list[str] = []
    ev = make_evaluator(
        "supernet", get_space("mbconv"), context=EvalContext(data=tiny_data, out_dir=folder, log=lines.append), **SUPERNET_OPTIONS
    )
    ev.supernet()
    return folder, lines


def with_trained_supernet(trained: tuple[Path, list[str]], run: Path) -> Path:
    """``run`` (created) holding a copy of the shared supernet's checkpoint."""
    import shutil

    from hwnas.evaluate.supernet import CHECKPOINT_NAME

    run.mkdir(parents=True, exist_ok=True)
    shutil.copy2(trained[0] / CHECKPOINT_NAME, run / CHECKPOINT_NAME)
    return run
