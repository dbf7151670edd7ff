"""Issue 25: the network that is deployed is the one searched, built for the user's data, trained
on it, timed as it runs and checked on images it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hwnas.cli import main
from hwnas.errors import UsageError
from hwnas.evaluate import EvalContext, make_evaluator
from hwnas.final import FinalSettings, augment, data_warnings, train_final
from hwnas.preprocess import KEY, load_images, read
from hwnas.search import Search, SearchConfig
from hwnas.spaces import get_space


def _digits_npz(tmp_path: Path, n: int = 200) -> str:
    from hwnas.datasets import load_data

    ds = load_data("digits")
    x = np.round(ds.x[:n, 0] * 255).astype(np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, x=x, y=ds.y[:n])
    return f"npz:{path}"


def test_the_space_is_built_for_the_data_shape() -> None:
    space = get_space("nb201").for_data(in_channels=1, num_classes=3, image_size=(8, 8))
    arch = space.smallest()
    assert space.input_shape(arch) == (1, 8, 8)
    out = space.build(arch)(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 3)
    # mbconv searches its resolution: the images are resized to it, so its input stays the arch's
    mb = get_space("mbconv").for_data(in_channels=1, num_classes=3, image_size=(8, 8))
    assert mb.input_shape(mb.smallest())[0] == 1 and mb.input_shape(mb.smallest())[1] == mb.smallest()["resolution"]


def test_a_table_device_refuses_networks_of_another_shape(tmp_path: Path) -> None:
    config = SearchConfig(device="pixel3", latency_ms=5.0, evaluator="train", data="digits", trials=1, out=str(tmp_path / "r"))
    with pytest.raises(UsageError) as exc:
        Search(config, log=lambda s: None)
    text = str(exc.value)
    assert "3x32x32" in text and "1x8x8" in text and "--force" in text and "hwnas profile" in text
    assert not (tmp_path / "r").exists()
    lines: list[str] = []
    forced = Search(
        SearchConfig(device="pixel3", latency_ms=5.0, evaluator="train", data="digits", trials=1, out=str(tmp_path / "f"), force=True),
        log=lines.append,
    )
    assert any("WARNING: --force" in line for line in lines)
    assert forced.space.input_shape(forced.space.smallest()) == (1, 8, 8)


def test_the_train_evaluator_keeps_and_exports_its_weights_and_reports_test_accuracy(tmp_path: Path) -> None:
    data = _digits_npz(tmp_path)
    space = get_space("nb201")
    out = tmp_path / "run"
    out.mkdir()
    ev = make_evaluator("train", space, context=EvalContext(data=data, out_dir=out), epochs=1, batch=32)
    arch = space.from_index(6111)
    acc = ev.evaluate(arch)
    trained = ev.build_trained(arch)
    assert trained is not None and trained.input_shape == (1, 8, 8)
    assert list((out / "weights").glob("*.pt")), "the candidate's weights are kept in the run folder"
    # A fresh evaluator (e.g. a resumed run) reads the same weights back: the same outputs.
    again = make_evaluator("train", space, context=EvalContext(data=data, out_dir=out), epochs=1, batch=32)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(trained.model(x), again.build_trained(arch).model(x))
    value, source = ev.test_accuracy(arch)
    assert value is not None and 0 <= value <= 100 and "held-out test split" in source
    assert acc.value >= 0


def test_search_with_the_train_evaluator_exports_the_trained_network(tmp_path: Path) -> None:
    data = _digits_npz(tmp_path)
    out = tmp_path / "run"
    config = SearchConfig(device="cpu", latency_ms=50.0, evaluator="train", data=data, trials=2, out=str(out), epochs=1, batch=32, seed=0)
    report = Search(config, log=lambda s: None).run()
    assert report["test_accuracy"] is not None and "held-out test split" in report["test_accuracy_source"]
    assert "trained 1 epochs" in report["export"]["weights"]
    model = onnx.load(str(out / "best.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [1, 8, 8]
    props = {p.key: p.value for p in model.metadata_props}
    pre = json.loads(props[KEY])
    assert pre["input_shape"] == [1, 8, 8] and pre["labels"] == [str(i) for i in range(10)]
    assert pre["scale"] == pytest.approx(1 / 255)  # the npz holds 8-bit images


def test_darts_reports_its_accuracy_on_the_data_not_a_table(tmp_path: Path) -> None:
    config = SearchConfig(
        strategy="darts",
        device="pixel3",
        latency_ms=50.0,
        data="digits",
        out=str(tmp_path / "d"),
        epochs=1,
        batch=64,
        force=True,
        selection="alpha",  # the selection is not what this test is about (tests/test_darts.py covers perturbation)
    )
    search = Search(config, log=lambda s: None)
    assert search.plan.evaluator is None  # the derived network is scored on --data, not looked up in NAS-Bench-201
    report = search.run()
    assert "table" not in str(report["accuracy_source"]) and "digits" in str(report["accuracy_source"])
    assert report["test_accuracy"] is not None


def test_final_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    from hwnas.datasets import batches, load_data, split
    from hwnas.training import evaluate_classifier

    ds = load_data("digits")
    train, valid, _ = split(ds, (0.2, 0.1, 0.7), seed=0)  # 359 training images: the resume is the point, not the accuracy
    space = get_space("nb201").for_data(in_channels=1, num_classes=10, image_size=(8, 8))
    arch = space.from_string("|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|")
    s = FinalSettings(epochs=3, batch=128, seed=1)
    steps = -(-len(train) // s.batch)

    def run(epochs: int, checkpoint: Path) -> torch.nn.Module:
        torch.manual_seed(0)
        model = space.build(arch)
        settings = FinalSettings(**{**s.__dict__, "epochs": 3})
        fed = (lambda e: batches(train, s.batch, shuffle=True, seed=e)) if epochs == 3 else _stop_after(train, s.batch, epochs)
        try:
            train_final(
                model,
                fed,
                steps,
                lambda m: evaluate_classifier(m, batches(valid, 256, shuffle=False)),
                settings,
                checkpoint=checkpoint,
                identity={"arch": "x"},
                log=lambda _: None,
            )
        except _Killed:
            pass
        return model

    whole = run(3, tmp_path / "a.pt")
    run(1, tmp_path / "b.pt")  # "killed" in epoch 2, after the checkpoint of epoch 1
    resumed = run(3, tmp_path / "b.pt")
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


class _Killed(Exception):
    pass


def _stop_after(train, batch, epochs):  # type: ignore[no-untyped-def]
    from hwnas.datasets import batches

    def fed(e):  # type: ignore[no-untyped-def]
        if e >= epochs:
            raise _Killed
        return batches(train, batch, shuffle=True, seed=e)

    return fed


def test_a_checkpoint_of_another_training_is_refused(tmp_path: Path) -> None:
    from hwnas.final import _load

    torch.save({"identity": {"arch": "other"}}, tmp_path / "c.pt")
    with pytest.raises(UsageError, match="another training"):
        _load(tmp_path / "c.pt", {"arch": "this"})


def test_augment_shifts_within_an_eighth_and_keeps_the_shape() -> None:
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = augment(x, torch.Generator().manual_seed(0), flip=False)
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1)
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 16, where % 16
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2 and (rows != 8).any()


def test_small_data_is_warned_about_before_training() -> None:
    lines = data_warnings(400, 10, FinalSettings(epochs=5, batch=64))
    assert any("40 a class" in line or "400 training images" in line for line in lines)
    assert any("optimizer steps" in line for line in lines)
    assert data_warnings(50_000, 10, FinalSettings()) == []


def test_predict_uses_nothing_but_the_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from hwnas.export import export_verified
    from hwnas.preprocess import preprocessing

    space = get_space("nb201").for_data(in_channels=1, num_classes=2, image_size=(8, 8))
    arch = space.smallest()
    pre = preprocessing((1, 8, 8), scale=1 / 255, labels=["cat", "dog"])
    export_verified(space, arch, tmp_path / "m.onnx", metadata={"preprocessing": json.dumps(pre)})
    img = tmp_path / "a.png"
    Image.fromarray(np.full((20, 12, 3), 200, np.uint8)).save(img)  # colour and another size: converted and resized
    got = load_images([img], read(tmp_path / "m.onnx"))
    assert got.shape == (1, 1, 8, 8) and np.allclose(got, 200 / 255, atol=1e-3)
    assert main(["predict", str(tmp_path / "m.onnx"), str(img), "--top", "2"]) == 0
    line = capsys.readouterr().out
    assert "cat" in line and "dog" in line
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "missing.png")]) == 2


def test_hwnas_train_exports_a_trained_int8_and_baked_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``hwnas train RUN`` end to end: trained, verified, re-measured FP32 and INT8 files that take
    raw pixels (``--bake-preprocessing``) and score in bare ONNX Runtime what the report says."""
    import onnxruntime as ort
    from PIL import Image

    from hwnas.datasets import evaluation_splits, load_data
    from hwnas.evaluate.train import SPLIT_SEED

    data = _digits_npz(tmp_path, n=300)
    run = tmp_path / "run"
    argv = ["search", "--device", "cpu", "--latency", "50ms", "--evaluator", "train", "--data", data, "--trials", "2"]
    assert main([*argv, "--epochs", "1", "--batch", "32", "--out", str(run), "--no-export"]) == 0
    capsys.readouterr()
    assert main(["train", str(run), "--epochs", "3", "--precision", "int8", "--bake-preprocessing", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    final = run / "final"
    for name in ("best.onnx", "best-int8.onnx", "report.json", "checkpoint.pt"):
        assert (final / name).is_file(), name
    assert report["preprocessing"]["baked"] is True and report["latency_ms"] > 0 and report["int8"]["latency_ms"] > 0
    assert len(report["curve"]) == 3 and report["test_accuracy"] is not None
    # The baked files take raw 8-bit pixel values: scored on the raw test images they give the report's figures.
    _, _, test = evaluation_splits(load_data(data), SPLIT_SEED)
    raw = np.asarray(test.x, np.float32) * 255.0
    for name, key in (("best.onnx", report["onnx_test_accuracy"]), ("best-int8.onnx", report["int8"]["test_accuracy"])):
        session = ort.InferenceSession(str(final / name), providers=["CPUExecutionProvider"])
        pred = session.run(None, {session.get_inputs()[0].name: raw})[0].argmax(1)
        assert 100.0 * float(np.mean(pred == test.y)) == pytest.approx(key, abs=1e-6), name
        assert read(final / name)["baked"] is True
    # hwnas predict feeds a baked model the pixels as they are (no scaling twice).
    img = tmp_path / "one.png"
    Image.fromarray(np.round(raw[0, 0]).astype(np.uint8)).save(img)
    assert np.allclose(load_images([img], read(final / "best.onnx")), raw[:1], atol=0.5)
    assert main(["predict", str(final / "best.onnx"), str(img)]) == 0
