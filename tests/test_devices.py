"""Device files: the built-ins, checks on user files, lookup, and benchmark-table latencies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hwnas import device as device_mod
from hwnas.benchdata import latency_devices, nb201_latency
from hwnas.cost.latency import BenchmarkTableLatency, MeasuredLatency, latency_model_for
from hwnas.device import builtin_devices_dir, get_device, list_devices, load_device_file
from hwnas.errors import UsageError
from hwnas.spaces import get_space

TABLE_DEVICES = [
    "1080ti_1", "1080ti_256", "1080ti_32", "2080ti_1", "2080ti_256", "2080ti_32", "essential_ph_1",
    "eyeriss", "fpga", "gold_6226", "gold_6240", "pixel2", "pixel3", "raspi4", "samsung_a50",
    "samsung_s7", "silver_4114", "silver_4210r", "titan_rtx_1", "titan_rtx_256", "titan_rtx_32",
    "titanx_1", "titanx_256", "titanx_32", "titanxp_1", "titanxp_256", "titanxp_32",
]  # fmt: skip
BUILTIN_FILES = sorted(builtin_devices_dir().glob("*.toml"))

ORT_FILE = 'name = "{name}"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\n'


@pytest.fixture(autouse=True)
def _fresh_scan(monkeypatch: pytest.MonkeyPatch):
    """No user device folder from the environment, and no scan cached across tests."""
    monkeypatch.delenv("HWNAS_DEVICES", raising=False)
    device_mod._scan.cache_clear()
    yield
    device_mod._scan.cache_clear()


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / f"{name}.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ built-in devices
def test_list_devices() -> None:
    names = list_devices()
    assert names == sorted(names)
    assert set(names) == {"cpu", "cuda", "cuda_torch", *TABLE_DEVICES}
    assert len(TABLE_DEVICES) == 27


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=[p.name for p in BUILTIN_FILES])
def test_builtin_file_loads(path: Path) -> None:
    dev = load_device_file(path)
    assert dev.name == path.stem
    assert get_device(path.stem) == dev
    assert dev.batch >= 1 and dev.description
    if dev.kind == "table":
        assert set(dev.tables) == {"nb201"}
        ref = dev.tables["nb201"]
        assert ref.table in latency_devices()
        assert ref.source  # every shipped number says where it comes from
        assert dev.covers("nb201") and not dev.covers("mbconv")
    else:
        # ONNX Runtime's providers, or PyTorch itself (cuda_torch: what --device cuda measures with without onnxruntime-gpu)
        assert (dev.kind, dev.provider.endswith("ExecutionProvider")) in {("onnxruntime", True), ("torch", False)}
        assert dev.threads >= 1 and dev.repeats >= 1 and dev.warmup >= 0
        assert dev.covers("nb201") and dev.covers("mbconv")


def test_table_devices_cover_every_latency_array() -> None:
    tables = {get_device(name).tables["nb201"].table for name in TABLE_DEVICES}
    assert tables == set(latency_devices())


def test_estimated_flags() -> None:
    estimated = {name for name in TABLE_DEVICES if get_device(name).tables["nb201"].estimated}
    assert estimated == {"eyeriss", "fpga"}


def test_builtin_measured_devices() -> None:
    assert get_device("cpu").provider == "CPUExecutionProvider"
    assert get_device("cuda").provider == "CUDAExecutionProvider"


# ------------------------------------------------------------------ malformed user files
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name = "bad"\nkind = onnxruntime\n', "not valid TOML"),
        ('kind = "onnxruntime"\nprovider = "CPUExecutionProvider"\n', "lacks key 'name'"),
        ('name = "bad"\nprovider = "CPUExecutionProvider"\n', "lacks key 'kind'"),
        ('name = "bad"\nkind = "onnxruntime"\n', "lacks key 'provider'"),
        ('name = "bad"\nkind = "table"\n', "lacks key 'latency'"),
        ('name = "bad"\nkind = "tensorrt"\n', "kind = 'tensorrt' is not one of"),
        (ORT_FILE.format(name="bad") + "threads = 0\n", "threads = 0 must be >= 1"),
        (ORT_FILE.format(name="bad") + "repeats = 0\n", "repeats = 0 must be >= 1"),
        (ORT_FILE.format(name="bad") + "warmup = -1\n", "warmup = -1 must be >= 0"),
        (ORT_FILE.format(name="bad") + "batch = -4\n", "batch = -4 must be >= 1"),
        (ORT_FILE.format(name="bad") + 'threads = "4"\n', "wrong type"),
        (ORT_FILE.format(name="bad") + "threads = true\n", "wrong type"),
        ('name = 3\nkind = "onnxruntime"\n', "wrong type"),
        ('name = "bad"\nkind = "table"\nlatency = 5\n', "wrong type"),
        ('name = "bad"\nkind = "table"\n[latency]\nnb201 = "pixel3"\n', "must be a table"),
        ('name = "bad"\nkind = "table"\n[latency.nb201]\nestimated = true\n', "lacks key 'table'"),
    ],
    ids=[
        "toml", "no-name", "no-kind", "no-provider", "no-latency", "kind", "threads0", "repeats0", "warmup-1",
        "batch-4", "threads-str", "threads-bool", "name-int", "latency-int", "latency-ref-str", "no-table",
    ],
)  # fmt: skip
def test_malformed_file_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, "bad", text)
    for load in (lambda: load_device_file(path), lambda: get_device(str(path))):
        with pytest.raises(UsageError, match=match) as info:
            load()
        assert str(path) in str(info.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(UsageError, match="cannot read device file") as info:
        get_device(str(path))
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_usage_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "latin1", 'name = "latin1"\ndescription = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(UsageError) as info:
        load_device_file(path)
    assert str(path) in str(info.value)


def test_valid_user_file_by_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine", ORT_FILE.format(name="mine") + "threads = 4\nbatch = 8\n")
    dev = get_device(str(path))
    assert (dev.name, dev.kind, dev.provider, dev.threads, dev.batch) == ("mine", "onnxruntime", "CPUExecutionProvider", 4, 8)
    assert (dev.warmup, dev.repeats, dev.description) == (20, 100, "mine")  # documented defaults
    assert dev.path == str(path)


# ------------------------------------------------------------------ lookup by name
def test_hwnas_devices_adds_user_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _write(first, "lab_board", ORT_FILE.format(name="lab_board") + "threads = 2\n")
    _write(second, "other_board", ORT_FILE.format(name="other_board"))
    _write(first, "cpu", ORT_FILE.format(name="cpu") + "threads = 3\n")  # a user file overrides the built-in
    assert "lab_board" not in list_devices()
    monkeypatch.setenv("HWNAS_DEVICES", f"{first}{os.pathsep}{second}")
    device_mod._scan.cache_clear()
    names = list_devices()
    assert {"lab_board", "other_board", "pixel3"} <= set(names)
    assert get_device("lab_board").threads == 2
    assert get_device("other_board").name == "other_board"
    assert get_device("cpu").threads == 3


def test_user_file_name_must_match_its_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "board", ORT_FILE.format(name="something_else"))
    monkeypatch.setenv("HWNAS_DEVICES", str(tmp_path))
    device_mod._scan.cache_clear()
    with pytest.raises(UsageError, match="must match the file name 'board'"):
        get_device("board")


def test_unknown_device_suggests() -> None:
    with pytest.raises(UsageError) as info:
        get_device("pixel33")
    message = str(info.value)
    assert "unknown device 'pixel33'" in message and "did you mean 'pixel3'?" in message
    with pytest.raises(UsageError) as info:
        get_device("qqqqqqqq")
    assert "did you mean" not in str(info.value) and "hwnas devices" in str(info.value)


# ------------------------------------------------------------------ benchmark-table latency
@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def test_table_latency_is_the_table_value(nb201) -> None:
    model = latency_model_for(get_device("pixel3"), nb201)
    assert isinstance(model, BenchmarkTableLatency)
    values = nb201_latency("pixel3")
    for index in (0, 1, 6111, 9930, 15624):
        lat = model.latency(nb201.from_index(index))
        assert lat.ms == float(values[index])
        assert lat.source == "table"
        assert lat.details["index"] == index and lat.details["table"] == "pixel3"
    # two devices really differ: the lookup uses the device's own array
    other = latency_model_for(get_device("raspi4"), nb201).latency(nb201.from_index(6111))
    assert other.ms == float(nb201_latency("raspi4")[6111]) != float(values[6111])


@pytest.mark.parametrize("name", ["eyeriss", "fpga"])
def test_estimated_table_source(nb201, name: str) -> None:
    model = latency_model_for(get_device(name), nb201)
    lat = model.latency(nb201.from_index(123))
    assert lat.source == "table (estimated)"
    assert lat.ms == float(nb201_latency(name)[123])
    assert model.describe()["estimated"] is True


@pytest.mark.parametrize("name", ["pixel3", "eyeriss", "raspi4"])
def test_lower_bound_is_the_table_minimum(nb201, name: str) -> None:
    lat, arch = latency_model_for(get_device(name), nb201).lower_bound_latency()
    values = nb201_latency(name)
    # The least over networks whose output depends on the input (constant networks are faster).
    real = [i for i in np.argsort(values, kind="stable") if not nb201.degenerate(nb201.from_index(int(i)))]
    assert lat.ms == float(values[real[0]]) >= float(values.min())
    assert float(values[nb201.index(arch)]) == lat.ms and nb201.degenerate(arch) is None


def test_table_device_refuses_other_spaces(nb201) -> None:
    with pytest.raises(UsageError, match="nb201") as info:
        latency_model_for(get_device("pixel3"), get_space("mbconv"))
    assert "'mbconv'" in str(info.value) and "pixel3" in str(info.value)


def test_measured_device_gives_measured_model(nb201) -> None:
    assert isinstance(latency_model_for(get_device("cpu"), nb201), MeasuredLatency)
    assert isinstance(latency_model_for(get_device("cpu"), get_space("mbconv")), MeasuredLatency)


def test_table_values_are_positive_and_finite() -> None:
    for name in latency_devices():
        values = nb201_latency(name)
        assert np.all(np.isfinite(values)) and values.min() > 0
