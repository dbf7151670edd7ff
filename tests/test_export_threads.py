"""Exports and builds of measured candidates run on one torch thread, and leave the count as it was."""

from __future__ import annotations

import torch

from hwnas.cost._onnx import one_torch_thread, to_onnx_bytes
from hwnas.spaces import get_space


def test_one_torch_thread_sets_one_and_restores() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread():
            assert torch.get_num_threads() == 1
            with one_torch_thread():  # nested: still one, and the outer one restores
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_measured_candidates_build_and_export_leave_the_count(monkeypatch) -> None:
    from hwnas.cost import latency as L
    from hwnas.device import get_device

    seen: list[int] = []
    monkeypatch.setattr(
        L.MeasuredLatency, "latency", lambda self, arch, model=None: seen.append(torch.get_num_threads()) or L.Latency(1.0, "measured")
    )
    space = get_space("nb201")
    source = L.MeasuredLatency(get_device("cpu"), space)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        source.costs(space.smallest(), lambda: space.build(space.smallest()))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_export_runs_on_one_thread(monkeypatch) -> None:
    space = get_space("nb201")
    model = space.build(space.smallest())
    counts: list[int] = []
    real = torch.onnx.export

    def spy(*args, **kwargs):
        counts.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert to_onnx_bytes(model, (3, 32, 32), exporter="torchscript")
        assert counts == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
