"""``--data folder:DIR``: the user's own image files, one subfolder per class, decoded as batches stream."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwnas import image_folder
from hwnas.datasets import batches, evaluation_splits, load_data, split
from hwnas.errors import UsageError
from hwnas.image_folder import ImageFiles

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("cat", "dog", "eel")  # written in this order; labels are the sorted names


def pixels(label: int, k: int, size: int = 12, channels: int = 3) -> np.ndarray:
    """A class-coloured image with a per-image offset: (H, W, C) uint8 (or (H, W) for grey)."""
    rng = np.random.default_rng(100 * label + k)
    base = np.zeros((size, size, channels), dtype=np.int64)
    base[..., label % channels] = 160
    img = np.clip(base + rng.integers(0, 90, (size, size, channels)), 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def make_folder(root: Path, *, per_class: int = 6, val: int = 0, test: int = 0, channels: int = 3, size: int = 12) -> Path:
    """root/<class>/<k>.png (+ root/val/<class>/..., root/test/<class>/...)."""
    for label, name in enumerate(CLASSES):
        for k in range(per_class):
            write(root / name / f"{k:02d}.png", pixels(label, k, size, channels))
        for split_name, n in (("val", val), ("test", test)):
            for k in range(n):
                write(root / split_name / name / f"{k:02d}.png", pixels(label, 50 + k, size, channels))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data") / "pets", per_class=6, val=2, test=2)


# -- loading ----------------------------------------------------------------------------------
def test_classes_labels_splits_and_exact_pixels(folder: Path) -> None:
    ds = load_data(f"folder:{folder}")
    assert ds.labels == list(CLASSES) and ds.num_classes == 3
    assert ds.name == "pets" and ds.input_shape == (3, 12, 12) and len(ds) == 18
    assert np.bincount(ds.y).tolist() == [6, 6, 6]
    assert ds.valid is not None and ds.test is not None
    assert (len(ds.valid), len(ds.test)) == (6, 6) and ds.valid.labels == ds.test.labels == list(CLASSES)
    assert isinstance(ds.x, ImageFiles)  # no pixels held: the files are decoded batch by batch
    x, y = next(batches(ds, 18, shuffle=False))
    assert x.dtype.is_floating_point and tuple(x.shape) == (18, 3, 12, 12)
    for i in range(18):  # PNG is lossless: each image is the array written, / 255, under its class's label
        label, k = int(y[i]), i % 6
        want = pixels(label, k).transpose(2, 0, 1) / 255.0
        assert np.allclose(x[i].numpy(), want, atol=1e-6)
        assert Path(str(ds.x.paths[i])).parent.name == CLASSES[label]
    # The user's own val/ and test/ are the splits; nothing is carved out of the training images.
    train, valid, test = evaluation_splits(ds)
    assert (train, valid, test) == (ds, ds.valid, ds.test)


def test_digits_have_labels_too() -> None:
    ds = load_data("digits")
    assert ds.labels == [str(d) for d in range(10)]
    assert all(part.labels == ds.labels for part in evaluation_splits(ds))


def test_train_subfolder_layout_and_grey_images(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    make_folder(root / "train", per_class=5, channels=1, size=10)
    make_folder(root, per_class=0, test=2, channels=1, size=10)
    ds = load_data(f"folder:{root}")
    assert ds.name == "scans" and ds.labels == list(CLASSES) and ds.input_shape == (1, 10, 10)
    assert ds.valid is None and ds.test is not None and len(ds.test) == 6
    train, valid, test = evaluation_splits(ds)
    assert test is ds.test and (len(train), len(valid)) == (12, 3)  # 80/20 of the training images, by class
    assert isinstance(train.x, ImageFiles) and isinstance(valid.x, ImageFiles)  # parts stay undecoded


def test_without_splits_the_images_are_split_by_class(tmp_path: Path) -> None:
    ds = load_data(f"folder:{make_folder(tmp_path / 'd', per_class=5)}")
    assert ds.valid is None and ds.test is None
    parts = evaluation_splits(ds)
    assert [len(p) for p in parts] == [9, 3, 3]
    assert sorted(str(p) for part in parts for p in part.x.paths) == sorted(str(p) for p in ds.x.paths)
    assert all(part.labels == list(CLASSES) for part in parts)


def test_batches_stream_and_resize_on_decode(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_data(f"folder:{folder}")
    decoded: list[Path] = []
    real = image_folder.decode

    def counting(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
        decoded.append(path)
        return real(path, channels, size)

    monkeypatch.setattr(image_folder, "decode", counting)
    it = batches(ds, 4, shuffle=True, seed=0)
    assert decoded == []  # nothing is read before the first batch is asked for
    x, _ = next(it)
    assert len(decoded) == 4 and tuple(x.shape) == (4, 3, 12, 12)
    assert sorted(str(p) for p in decoded) == sorted(str(ds.x.paths[i]) for i in np.random.default_rng(0).permutation(18)[:4])
    small, _ = next(batches(ds, 5, shuffle=False, size=6))
    assert tuple(small.shape) == (5, 3, 6, 6)
    with Image.open(ds.x.paths[0]) as im:  # Pillow's antialiased bilinear, straight from the file
        want = np.asarray(im.convert("RGB").resize((6, 6), Image.Resampling.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.allclose(small[0].numpy(), want, atol=1e-6)
    seen = np.concatenate([b[1].numpy() for b in batches(ds, 7, shuffle=True, seed=3)])
    assert sorted(seen.tolist()) == sorted(ds.y.tolist())  # every image once, the last batch smaller


def test_mixed_sizes_take_the_most_common_size(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=3, size=12)
    write(root / "cat" / "big.png", pixels(0, 9, size=20))
    ds = load_data(f"folder:{root}")
    assert ds.input_shape == (3, 12, 12)
    x, _ = next(batches(ds, len(ds), shuffle=False))
    assert tuple(x.shape) == (10, 3, 12, 12)


def test_split_keeps_labels_and_files(folder: Path) -> None:
    ds = load_data(f"folder:{folder}")
    a, b = split(ds, (0.5, 0.5), seed=1)
    assert a.labels == b.labels == list(CLASSES)
    assert set(map(str, a.x.paths)).isdisjoint(map(str, b.x.paths)) and len(a) + len(b) == len(ds)


# -- one-line errors ------------------------------------------------------------------------------
def _load_error(spec: str) -> str:
    with pytest.raises(UsageError) as info:
        load_data(spec)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_folder_and_no_class_folders(tmp_path: Path) -> None:
    assert "does not exist" in _load_error(f"folder:{tmp_path / 'nope'}")
    flat = tmp_path / "flat"
    write(flat / "a.png", pixels(0, 0))
    text = _load_error(f"folder:{flat}")
    assert "no class subfolders" in text and "1 image(s) directly" in text
    assert "needs a path" in _load_error("folder:")


def test_single_class(tmp_path: Path) -> None:
    root = tmp_path / "one"
    write(root / "cat" / "a.png", pixels(0, 0))
    write(root / "val" / "cat" / "a.png", pixels(0, 1))
    text = _load_error(f"folder:{root}")
    assert "single class folder (cat/)" in text


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "fox").mkdir()
    (root / "fox" / "notes.txt").write_text("not an image")
    text = _load_error(f"folder:{root}")
    assert "class folder" in text and "fox" in text and "holds no images" in text


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "dog" / "broken.png").write_bytes(b"this is not a png at all")
    text = _load_error(f"folder:{root}")
    assert "cannot read image" in text and str(root / "dog" / "broken.png") in text


def test_truncated_image_names_the_file_when_its_batch_decodes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2, size=32)
    bad = root / "eel" / "01.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header survives; the pixel data is cut
    ds = load_data(f"folder:{root}")
    with pytest.raises(UsageError) as info:
        list(batches(ds, 2, shuffle=False))
    assert "cannot decode image" in str(info.value) and str(bad) in str(info.value) and "\n" not in str(info.value)


def test_mixed_channel_counts(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2)
    write(root / "dog" / "grey.png", pixels(1, 7, channels=1))
    text = _load_error(f"folder:{root}")
    assert "mixes channel counts" in text and "grey (1)" in text and "RGB (3)" in text and "grey.png" in text
    other = make_folder(tmp_path / "e", per_class=2)
    write(other / "val" / "dog" / "a.png", pixels(1, 7, channels=1))
    assert "holds grey images, the training images are RGB" in _load_error(f"folder:{other}")


def test_val_class_unknown_to_training(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2)
    write(root / "val" / "fox" / "a.png", pixels(0, 0))
    text = _load_error(f"folder:{root}")
    assert "fox" in text and "same class names" in text


def test_without_pillow_says_how_to_install(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    text = _load_error(f"folder:{folder}")
    assert "Pillow" in text and "hwnas[images]" in text


# -- end to end -------------------------------------------------------------------------------------
def test_search_trains_candidates_on_an_image_folder(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    out = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--device", "pixel3", "--latency", "1000ms", "--evaluator", "train", "--force"]
    argv += ["--data", f"folder:{folder}", "--epochs", "1", "--batch", "8", "--trials", "2", "--strategy", "random"]
    argv += ["--out", str(out), "--no-export", "--quiet", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trials"]["complete"] == 2
    # Candidates are judged on the folder's own val/ split (6 images), not on images carved out of training.
    assert report["accuracy_source"] == "train: 1 epochs SGD cosine lr 0.05 batch 8 on pets, validation split (6 images)"
    assert report["best"]["accuracy"] in {100.0 * k / 6 for k in range(7)}
