"""hwnas.datasets: the shipped digits, CIFAR binary and npz loaders, stratified split, batches.

CIFAR files are tiny synthetic ones in the binary layout (a few records each); the
digits test reads the real shipped file.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnas import datasets
from hwnas.datasets import DATA_SPECS_HELP, Dataset, batches, load_data, split
from hwnas.errors import UsageError

DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# --------------------------------------------------------------------------- helpers
def cifar_records(rng: np.random.Generator, labels: list[list[int]]) -> bytes:
    """Records of label bytes (one list per record) + 3072 random pixel bytes."""
    out = bytearray()
    for lab in labels:
        out += bytes(lab) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
    return bytes(out)


def pixel(record: bytes, n_label_bytes: int, c: int, i: int, j: int) -> int:
    return record[n_label_bytes + c * 1024 + i * 32 + j]


def write_cifar10(folder: Path, per_file: int = 3, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {}
    for k, name in enumerate([*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]):
        blobs[name] = cifar_records(rng, [[(k * per_file + r) % 10] for r in range(per_file)])
        (folder / name).write_bytes(blobs[name])
    return blobs


def write_cifar100(folder: Path, n_train: int = 4, n_test: int = 2, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {
        # coarse label (byte 0) deliberately differs from the fine label (byte 1)
        "train.bin": cifar_records(rng, [[r % 20, 99 - r] for r in range(n_train)]),
        "test.bin": cifar_records(rng, [[19, r] for r in range(n_test)]),
    }
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    return blobs


def save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return f"npz:{path}"


def toy(n_per_class: list[int], name: str = "toy") -> Dataset:
    """A dataset whose image i holds the value i / N everywhere, so samples can be traced."""
    y = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(n_per_class)])
    y = np.random.default_rng(1).permutation(y)
    n = len(y)
    x = np.broadcast_to((np.arange(n, dtype=np.float32) / max(n, 1))[:, None, None, None], (n, 1, 2, 2)).copy()
    return Dataset(name=name, x=x, y=y, num_classes=len(n_per_class), source="test")


def ids_of(ds: Dataset, n: int) -> np.ndarray:
    return np.rint(ds.x[:, 0, 0, 0] * n).astype(np.int64)


# --------------------------------------------------------------------------- digits
def test_digits_shipped_file() -> None:
    ds = load_data("digits")
    assert ds.name == "digits" and len(ds) == 1797 and ds.num_classes == 10 and ds.test is None
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.input_shape == (1, 8, 8)
    assert 0.0 == ds.x.min() and ds.x.max() == 1.0
    assert np.bincount(ds.y).tolist() == DIGITS_CLASS_COUNTS
    # First row of the UCI/scikit-learn CSV: a 0 whose top row reads 0,0,5,13,9,1,0,0 (of 16).
    assert ds.y[0] == 0
    np.testing.assert_array_equal(ds.x[0, 0, 0] * 16, [0, 0, 5, 13, 9, 1, 0, 0])
    assert "Alpaydin" in ds.source and "CC BY 4.0" in ds.source


def test_digits_checksum_listed() -> None:
    sums = (datasets.DATA_DIR / "SHA256SUMS").read_text().splitlines()
    digest = hashlib.sha256((datasets.DATA_DIR / "digits.npz").read_bytes()).hexdigest()
    assert f"{digest}  digits.npz" in sums


def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("digits.npz", "SHA256SUMS"):
        shutil.copyfile(datasets.DATA_DIR / name, tmp_path / name)
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    return tmp_path


def test_digits_copy_loads_then_corruption_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shipped_copy(tmp_path, monkeypatch)
    assert len(load_data("digits")) == 1797
    blob = bytearray((folder / "digits.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / "digits.npz").write_bytes(bytes(blob))
    with pytest.raises(UsageError, match="fails its checksum"):
        load_data("digits")


# --------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("nested", [False, True], ids=["dir", "parent-dir"])
def test_cifar10_binary(tmp_path: Path, nested: bool) -> None:
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    blobs = write_cifar10(folder)
    ds = load_data(f"cifar10:{tmp_path}")
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x.shape == (15, 3, 32, 32) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.y.tolist() == [r % 10 for r in range(15)]  # batches 1..5 in order
    assert ds.test is not None and ds.test.name == "cifar10/test" and len(ds.test) == 3
    assert ds.test.y.tolist() == [5, 6, 7] and ds.test.input_shape == (3, 32, 32)
    # Record 1 of data_batch_2 is sample 4; planes are R, G, B, each 32x32 row-major.
    rec = blobs["data_batch_2.bin"][3073:6146]
    for c, i, j in [(0, 0, 0), (0, 2, 5), (1, 2, 5), (2, 31, 30), (2, 0, 31)]:
        assert ds.x[4, c, i, j] == np.float32(pixel(rec, 1, c, i, j) / 255)
    test_rec = blobs["test_batch.bin"][2 * 3073 :]
    assert ds.test.x[2, 1, 17, 9] == np.float32(pixel(test_rec, 1, 1, 17, 9) / 255)
    assert str(folder) in ds.source


def test_cifar10_channel_order_rgb(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_file=1)
    planes = np.zeros((3, 32, 32), dtype=np.uint8)
    planes[0, 3, 4], planes[1, 3, 4], planes[2, 3, 4] = 255, 51, 0  # orange pixel at row 3, col 4
    (tmp_path / "data_batch_1.bin").write_bytes(bytes([7]) + planes.tobytes())
    ds = load_data(f"cifar10:{tmp_path}")
    assert ds.y[0] == 7
    np.testing.assert_allclose(ds.x[0, :, 3, 4], [1.0, 0.2, 0.0], rtol=1e-6)
    assert ds.x[0].sum() == pytest.approx(1.2)


def test_cifar100_binary_uses_fine_label(tmp_path: Path) -> None:
    blobs = write_cifar100(tmp_path / "cifar-100-binary")
    ds = load_data(f"cifar100:{tmp_path}")
    assert ds.name == "cifar100" and ds.num_classes == 100
    assert ds.y.tolist() == [99, 98, 97, 96]
    assert ds.test is not None and ds.test.y.tolist() == [0, 1] and ds.test.num_classes == 100
    rec = blobs["train.bin"][3074 * 2 : 3074 * 3]
    for c, i, j in [(0, 0, 0), (1, 10, 20), (2, 31, 31)]:
        assert ds.x[2, c, i, j] == np.float32(pixel(rec, 2, c, i, j) / 255)


# --------------------------------------------------------------------------- npz
@pytest.mark.parametrize(
    ("shape", "want_chw"),
    [((5, 6, 7), (1, 6, 7)), ((5, 6, 7, 1), (1, 6, 7)), ((5, 6, 7, 2), (2, 6, 7)), ((5, 6, 7, 3), (3, 6, 7)), ((5, 6, 7, 4), (4, 6, 7))],
    ids=["grey-3d", "grey-4d", "grey-alpha", "rgb", "rgba"],
)
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "float64"])
def test_npz_layouts(tmp_path: Path, shape: tuple[int, ...], want_chw: tuple[int, int, int], dtype: str) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, shape, dtype=np.uint8)
    x = raw if dtype == "uint8" else (raw / 255).astype(dtype)
    y = np.array([0, 1, 2, 1, 0], dtype=np.int32)
    ds = load_data(save_npz(tmp_path / "imgs.npz", x=x, y=y))
    assert ds.name == "imgs" and ds.num_classes == 3 and ds.test is None
    assert ds.x.shape == (5, *want_chw) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.y.tolist() == [0, 1, 2, 1, 0]
    chw = raw[..., None] if raw.ndim == 3 else raw  # channels-last view of the expected pixels
    for n, i, j, c in [(0, 0, 0, 0), (3, 5, 6, want_chw[0] - 1), (4, 2, 3, 0)]:
        assert ds.x[n, c, i, j] == pytest.approx(chw[n, i, j, c] / 255, abs=1e-3 if dtype == "float16" else 1e-6)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0


@pytest.mark.parametrize("ydtype", ["uint8", "int16", "uint32", "int64"])
def test_npz_label_dtypes_and_test_split(tmp_path: Path, ydtype: str) -> None:
    x = np.zeros((4, 3, 3), dtype=np.uint8)
    spec = save_npz(
        tmp_path / "d.npz",
        x=x,
        y=np.array([0, 1, 0, 1], dtype=ydtype),
        x_test=np.full((2, 3, 3), 255, dtype=np.uint8),
        y_test=np.array([2, 0], dtype=ydtype),
        extra=np.arange(3),
    )
    ds = load_data(spec)
    assert ds.num_classes == 3 and ds.y.tolist() == [0, 1, 0, 1]
    assert ds.test is not None and ds.test.name == "d/test" and ds.test.num_classes == 3
    assert ds.test.y.tolist() == [2, 0] and ds.test.x.shape == (2, 1, 3, 3) and (ds.test.x == 1.0).all()


# --------------------------------------------------------------------------- split
@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.2, 0.2), (0.9, 0.1), (1.0,), (0.25, 0.25, 0.25, 0.25)])
def test_split_stratified_disjoint_covering(fractions: tuple[float, ...]) -> None:
    counts = [50, 31, 7, 12, 3 + len(fractions)]
    ds = toy(counts)
    n = len(ds)
    parts = split(ds, fractions, seed=3)
    assert len(parts) == len(fractions)
    seen = np.concatenate([ids_of(p, n) for p in parts])
    assert sorted(seen.tolist()) == list(range(n))  # disjoint and covering
    for k, (part, f) in enumerate(zip(parts, fractions, strict=True)):
        assert part.name == f"toy[{k}]" and part.num_classes == ds.num_classes and part.source == ds.source
        assert abs(len(part) - f * n) <= 1
        per_class = np.bincount(part.y, minlength=len(counts))
        for c, total in enumerate(counts):
            assert np.floor(f * total) <= per_class[c] <= np.ceil(f * total)
        ids = ids_of(part, n)
        np.testing.assert_array_equal(part.y, ds.y[ids])  # labels travel with their images
        assert (np.diff(ids) > 0).all()  # original order kept within a part


def test_split_deterministic_by_seed() -> None:
    ds = toy([40, 40, 40])
    a = [ids_of(p, len(ds)) for p in split(ds, (0.5, 0.5), seed=7)]
    b = [ids_of(p, len(ds)) for p in split(ds, (0.5, 0.5), seed=7)]
    c = [ids_of(p, len(ds)) for p in split(ds, (0.5, 0.5), seed=8)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_split_keeps_test_and_digits_parts() -> None:
    ds = load_data("digits")
    train, val = split(ds, (0.8, 0.2), seed=0)
    assert (len(train), len(val)) == (1438, 359) and train.name == "digits[0]" and val.name == "digits[1]"
    assert train.input_shape == (1, 8, 8)
    ds_test = toy([3, 3])
    with_test = Dataset("t", ds_test.x, ds_test.y, 2, "s", test=ds_test)
    assert all(p.test is ds_test for p in split(with_test, (0.5, 0.5), seed=0))


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    weights=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    seed=st.integers(0, 2**31),
)
def test_split_properties(counts: list[int], weights: list[int], seed: int) -> None:
    fractions = [w / sum(weights) for w in weights]
    ds = toy(counts)
    try:
        parts = split(ds, fractions, seed)
    except UsageError as exc:
        assert "empty" in str(exc)
        return
    seen = np.concatenate([ids_of(p, len(ds)) for p in parts])
    assert sorted(seen.tolist()) == list(range(len(ds)))
    for part, f in zip(parts, fractions, strict=True):
        assert abs(len(part) - f * len(ds)) <= 1 + 1e-9
        per_class = np.bincount(part.y, minlength=len(counts))
        assert all(np.floor(f * t - 1e-9) <= k <= np.ceil(f * t + 1e-9) for k, t in zip(per_class, counts, strict=True))


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize(("shuffle", "batch_size"), [(False, 7), (True, 7), (True, 1), (False, 100), (True, 32)])
def test_batches_cover_every_sample_once(shuffle: bool, batch_size: int) -> None:
    ds = toy([20, 12, 1])
    out = list(batches(ds, batch_size, shuffle=shuffle, seed=5))
    sizes = [len(yb) for _, yb in out]
    assert sizes == [batch_size] * (len(ds) // batch_size) + ([len(ds) % batch_size] if len(ds) % batch_size else [])
    for xb, yb in out:
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64 and xb.shape[1:] == (1, 2, 2)
    ids = np.concatenate([np.rint(xb[:, 0, 0, 0].numpy() * len(ds)).astype(np.int64) for xb, _ in out])
    assert sorted(ids.tolist()) == list(range(len(ds)))
    np.testing.assert_array_equal(np.concatenate([yb.numpy() for _, yb in out]), ds.y[ids])
    if not shuffle:
        assert ids.tolist() == list(range(len(ds)))
    else:
        assert ids.tolist() != list(range(len(ds)))
        again = np.concatenate([yb.numpy() for _, yb in batches(ds, batch_size, shuffle=True, seed=5)])
        np.testing.assert_array_equal(again, ds.y[ids])


def test_batches_do_not_alias_dataset() -> None:
    ds = toy([4, 4])
    xb, _ = next(batches(ds, 4, shuffle=False))
    xb += 1
    assert ds.x.max() < 1


# --------------------------------------------------------------------------- bad inputs
Setup = Callable[[Path, pytest.MonkeyPatch], object]


def _npz(**arrays: np.ndarray) -> Setup:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> str:
        return save_npz(tmp / "bad.npz", **arrays)

    return make


def _cifar10(edit: Callable[[Path], object]) -> Setup:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> str:
        write_cifar10(tmp, per_file=2)
        edit(tmp)
        return f"cifar10:{tmp}"

    return make


def _cifar100(edit: Callable[[Path], object]) -> Setup:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> str:
        write_cifar100(tmp)
        edit(tmp)
        return f"cifar100:{tmp}"

    return make


def _digits(edit: Callable[[Path], object]) -> Setup:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> str:
        edit(shipped_copy(tmp, mp))
        return "digits"

    return make


def _const(spec: object) -> Setup:
    return lambda tmp, mp: spec


def _write(name: str, blob: bytes) -> Callable[[Path], object]:
    return lambda d: (d / name).write_bytes(blob)


def _empty_folder(d: Path) -> None:
    for f in d.iterdir():
        f.unlink()


U8 = np.zeros((4, 5, 5), dtype=np.uint8)
Y4 = np.array([0, 1, 1, 0])
REC3072 = bytes(3072)

BAD_SPECS: list[tuple[str, Setup, str]] = [
    ("unknown-kind", _const("mnist"), "unknown dataset kind 'mnist'"),
    ("did-you-mean", _const("cifar:/data"), "did you mean 'cifar10'"),
    ("bare-npz-path", _const("/data/x.npz"), "did you mean 'npz:/data/x.npz'"),
    ("empty-spec", _const(""), "unknown dataset kind ''"),
    ("not-a-string", _const(None), "must be a string, got NoneType"),
    ("digits-with-path", _const("digits:/x"), "takes no path"),
    ("npz-no-path", _const("npz:"), "needs a path after 'npz:'"),
    ("cifar10-no-path", _const("cifar10: "), "needs a path after 'cifar10:'"),
    ("npz-missing", lambda t, m: f"npz:{t}/nope.npz", "nope.npz' does not exist"),
    ("npz-is-dir", lambda t, m: f"npz:{t}", "is not a file"),
    ("cifar10-missing-dir", lambda t, m: f"cifar10:{t}/nope", "nope' does not exist"),
    ("cifar10-dir-is-file", lambda t, m: (t / "f").write_text("x") and f"cifar10:{t}/f", "is not a folder"),
    ("cifar10-missing-file", _cifar10(lambda d: (d / "test_batch.bin").unlink()), "lacks test_batch.bin"),
    ("cifar10-empty-folder", _cifar10(_empty_folder), "lacks data_batch_1.bin"),
    ("cifar10-record-size", _cifar10(_write("data_batch_3.bin", bytes(2 * 3074))), "6,148 bytes, not a whole number of 3073-byte"),
    ("cifar10-empty-file", _cifar10(_write("data_batch_1.bin", b"")), "has 0 bytes"),
    ("cifar10-label-range", _cifar10(_write("test_batch.bin", bytes([10]) + REC3072)), "label 10, outside 0..9"),
    ("cifar100-record-size", _cifar100(_write("train.bin", bytes([1]) + REC3072)), "not a whole number of 3074-byte"),
    ("cifar100-fine-range", _cifar100(_write("test.bin", bytes([3, 100]) + REC3072)), "label 100, outside 0..99"),
    ("npz-not-zip", lambda t, m: (t / "t.npz").write_text("hello") and f"npz:{t}/t.npz", "is not an .npz archive"),
    ("npz-pickled-object", _npz(x=np.array([{"a": 1}], dtype=object), y=np.array([0])), "cannot read"),
    ("npz-missing-y", _npz(x=U8), "lacks array(s) y (has: x)"),
    ("npz-missing-both", _npz(images=U8), "lacks array(s) x, y (has: images)"),
    ("npz-x-test-only", _npz(x=U8, y=Y4, x_test=U8), "only one of x_test and y_test"),
    ("x-2d", _npz(x=np.zeros((4, 25), np.uint8), y=Y4), "x has 2 axes"),
    ("x-5d", _npz(x=np.zeros((4, 2, 2, 2, 1), np.uint8), y=Y4), "x has 5 axes"),
    ("x-channels-first", _npz(x=np.zeros((4, 3, 8, 8), np.uint8), y=Y4), "channels-first?"),
    ("x-5-channels", _npz(x=np.zeros((4, 8, 8, 5), np.uint8), y=Y4), "last axis 5 is not 1..4 channels"),
    ("x-int64", _npz(x=U8.astype(np.int64), y=Y4), "x has dtype int64"),
    ("x-bool", _npz(x=U8.astype(bool), y=Y4), "x has dtype bool"),
    ("x-float-above-1", _npz(x=np.full((4, 5, 5), 255.0), y=Y4), "must be within [0, 1], got values 255..255"),
    ("x-float-negative", _npz(x=np.full((4, 5, 5), -0.5, np.float32), y=Y4), "got values -0.5..-0.5"),
    ("x-float-nan", _npz(x=np.full((4, 5, 5), np.nan), y=Y4), "holds 100 NaN or infinite value(s)"),
    ("x-empty", _npz(x=np.zeros((0, 5, 5), np.uint8), y=np.zeros(0, np.int64)), "x is empty"),
    ("x-zero-width", _npz(x=np.zeros((4, 5, 0), np.uint8), y=Y4), "x is empty"),
    ("y-float", _npz(x=U8, y=Y4.astype(float)), "y has dtype float64, not integer"),
    ("y-2d", _npz(x=U8, y=Y4[:, None]), "y has shape (4, 1), not 1-D"),
    ("y-length", _npz(x=U8, y=np.array([0, 1, 0])), "3 labels but there are 4 images"),
    ("y-negative", _npz(x=U8, y=np.array([0, -1, 1, 0])), "negative label -1"),
    ("y-one-based", _npz(x=U8, y=Y4 + 1), "never occur: 0 (1-based labels? subtract 1)"),
    ("y-test-negative", _npz(x=U8, y=Y4, x_test=U8, y_test=-Y4), "y_test holds negative label -1"),
    ("x-test-shape", _npz(x=U8, y=Y4, x_test=np.zeros((2, 6, 5), np.uint8), y_test=np.array([0, 1])), "x_test images are (1, 6, 5)"),
    ("digits-corrupt", _digits(lambda d: (d / "digits.npz").write_bytes(b"PK\x03\x04")), "fails its checksum"),
    ("digits-missing", _digits(lambda d: (d / "digits.npz").unlink()), "is missing or unreadable"),
    ("digits-unlisted", _digits(lambda d: (d / "SHA256SUMS").write_text("")), "is not listed in"),
]


@pytest.mark.parametrize(("setup", "expected"), [pytest.param(s, e, id=i) for i, s, e in BAD_SPECS])
def test_bad_specs_give_one_line_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Setup, expected: str) -> None:
    spec = setup(tmp_path, monkeypatch)
    with pytest.raises(UsageError) as info:
        load_data(spec)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg
    assert expected in msg, msg
    assert any(hint in msg for hint in ("e.g.", "accepted:", "write just 'digits'", "tools/convert_digits.py")), msg


BAD_CALLS: list[tuple[str, Callable[[Dataset], object], str]] = [
    ("fractions-sum", lambda ds: split(ds, (0.5, 0.6), 0), "sum to 1.1, not 1"),
    ("fractions-empty", lambda ds: split(ds, (), 0), "non-empty sequence"),
    ("fractions-str", lambda ds: split(ds, "0.5", 0), "non-empty sequence"),  # type: ignore[arg-type]
    ("fraction-negative", lambda ds: split(ds, (0.5, -0.5, 1.0), 0), "fraction -0.5 must be a number > 0"),
    ("fraction-nan", lambda ds: split(ds, (float("nan"), 1.0), 0), "fraction nan"),
    ("fraction-bool", lambda ds: split(ds, (True,), 0), "fraction True"),
    ("seed-str", lambda ds: split(ds, (0.5, 0.5), "1"), "seed must be an int"),  # type: ignore[arg-type]
    ("part-empty", lambda ds: split(toy([1, 1]), (0.4, 0.3, 0.3), 0), "leaves part 2 empty"),
    ("batch-zero", lambda ds: batches(ds, 0, shuffle=False), "batch_size must be an int >= 1"),
    ("batch-float", lambda ds: batches(ds, 2.0, shuffle=False), "got 2.0"),  # type: ignore[arg-type]
    ("batch-bool", lambda ds: batches(ds, True, shuffle=False), "got True"),
    ("shuffle-no-seed", lambda ds: batches(ds, 4, shuffle=True), "needs an int seed"),
]


@pytest.mark.parametrize(("call", "expected"), [pytest.param(c, e, id=i) for i, c, e in BAD_CALLS])
def test_bad_split_and_batch_arguments(call: Callable[[Dataset], object], expected: str) -> None:
    with pytest.raises(UsageError) as info:
        call(toy([5, 5]))  # batches() must raise when called, before the first next()
    msg = str(info.value)
    assert "\n" not in msg and expected in msg, msg


def test_dataset_checks_its_arrays() -> None:
    x = np.zeros((2, 1, 2, 2), np.float32)
    with pytest.raises(UsageError, match="float32 array"):
        Dataset("d", x.astype(np.float64), np.zeros(2, np.int64), 2, "s")
    with pytest.raises(UsageError, match="int64 array of shape"):
        Dataset("d", x, np.zeros(3, np.int64), 2, "s")
    with pytest.raises(UsageError, match=r"labels span 0\.\.2, outside 0\.\.1"):
        Dataset("d", x, np.array([0, 2]), 2, "s")


def test_help_lists_every_kind() -> None:
    assert "\n" not in DATA_SPECS_HELP
    for kind in ("digits", "cifar10:", "cifar100:", "npz:"):
        assert kind in DATA_SPECS_HELP
