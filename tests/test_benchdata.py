"""The shipped NAS-Bench-201 / HELP tables: real values, safe loading, string parsing.

These tests read only hwnas/data (never the upstream files): the expected values
below are the published ones (NAS-Bench-201 paper, HW-NAS-Bench README, HELP README).
"""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas import benchdata
from hwnas.benchdata import (
    NB201_EDGES,
    NB201_OPS,
    NB201Table,
    genotype_to_string,
    latency_devices,
    nb201_latency,
    nb201_table,
    string_to_genotype,
)
from hwnas.errors import HwnasError, UsageError

ARCH_6111 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ARCH_13714 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
ARCH_9930 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"

HELP_DEVICES = [
    "1080ti_1",
    "1080ti_256",
    "1080ti_32",
    "2080ti_1",
    "2080ti_256",
    "2080ti_32",
    "essential_ph_1",
    "eyeriss",
    "fpga",
    "gold_6226",
    "gold_6240",
    "pixel2",
    "pixel3",
    "raspi4",
    "samsung_a50",
    "samsung_s7",
    "silver_4114",
    "silver_4210r",
    "titan_rtx_1",
    "titan_rtx_256",
    "titan_rtx_32",
    "titanx_1",
    "titanx_256",
    "titanx_32",
    "titanxp_1",
    "titanxp_256",
    "titanxp_32",
]


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return nb201_table()


# ------------------------------------------------------------------ accuracy table
def test_size_and_dtypes(table: NB201Table) -> None:
    assert table.n == len(table) == 15625
    assert table.genotypes.shape == (15625, 6) and table.genotypes.dtype == np.uint8
    assert table.genotypes.max() == len(NB201_OPS) - 1
    assert table.iso_class.shape == (15625,) and table.iso_class.dtype == np.int32
    for name in table.METRICS:
        arr = table.metric(name)
        assert arr.shape == (15625,) and arr.dtype == np.float64
        assert np.all(np.isfinite(arr)) and 0 < arr.min() and arr.max() < 100
        assert not arr.flags.writeable  # cached data cannot be changed by callers


def test_every_genotype_once(table: NB201Table) -> None:
    codes = table.genotypes.astype(np.int64) @ (5 ** np.arange(5, -1, -1))
    assert np.array_equal(np.sort(codes), np.arange(5**6))


def test_isomorphism_classes(table: NB201Table) -> None:
    iso = table.iso_class
    assert len(np.unique(iso)) == 6466
    # numbered in order of first appearance
    _, first = np.unique(iso, return_index=True)
    assert np.array_equal(iso[np.sort(first)], np.arange(6466))
    # Cells whose output node is not reachable from the input through non-"none"
    # edges output zeros: exactly the 341 chance-level (10 %) cells. The all-"none"
    # cell's class holds only such cells.
    g = table.genotypes != 0  # edge carries an op
    r1 = g[:, 0]
    r2 = g[:, 1] | (r1 & g[:, 2])
    r3 = g[:, 3] | (r1 & g[:, 4]) | (r2 & g[:, 5])
    assert int(np.sum(~r3)) == 341
    assert np.all(table.metric("cifar10/test")[~r3] == 10.0)
    dead = iso == iso[table.index(genotype_to_string(["none"] * 6))]
    assert np.all(~r3[dead]) and int(dead.sum()) == 225


def test_best_cifar10_test(table: NB201Table) -> None:
    acc = table.metric("cifar10/test")
    best = int(np.argmax(acc))
    assert round(float(acc[best]), 2) == 94.37  # NAS-Bench-201 paper, "optimal"
    assert best == 6111 and table.arch_string(best) == ARCH_6111
    # Two cells tie exactly for the best CIFAR-10 test accuracy; the
    # ...|nor_conv_3x3~2| cell (9930) is the CIFAR-100 optimum, not the CIFAR-10 one.
    assert set(np.flatnonzero(acc == acc.max())) == {6111, 13714}
    assert table.arch_string(13714) == ARCH_13714
    assert table.index(ARCH_9930) == 9930 and acc[9930] < acc[6111]


def test_published_optima(table: NB201Table) -> None:
    # NAS-Bench-201 (Dong & Yang, ICLR 2020) "optimal" row
    assert round(float(table.metric("cifar10-valid/valid").max()), 2) == 91.61
    assert int(np.argmax(table.metric("cifar10-valid/valid"))) == 6111
    assert round(float(table.metric("cifar100/test").max()), 2) == 73.51
    assert int(np.argmax(table.metric("cifar100/test"))) == 9930
    assert round(float(table.metric("imagenet16-120/test").max()), 2) == 47.31
    assert int(np.argmax(table.metric("imagenet16-120/test"))) == 857
    c10 = table.metric("cifar10/test")
    assert round(float(c10.mean()), 2) == 87.06
    assert int(np.sum(c10 <= 10.01)) == 341  # chance-level cells


def test_arch_6111(table: NB201Table) -> None:
    assert table.arch_string(6111) == ARCH_6111
    assert table.index(ARCH_6111) == 6111
    assert table.metric("cifar10-valid/valid")[6111] == pytest.approx(91.6067, abs=1e-4)
    assert table.metric("cifar10/test")[6111] == pytest.approx(94.3733, abs=1e-4)
    assert table.genotype(6111) == string_to_genotype(ARCH_6111)


def test_round_trip_every_index(table: NB201Table) -> None:
    start = time.perf_counter()
    for i in range(table.n):
        s = table.arch_string(i)
        ops = string_to_genotype(s)
        assert genotype_to_string(ops) == s
        assert [NB201_OPS.index(op) for op in ops] == table.genotypes[i].tolist()
        assert table.index(s) == i
    assert time.perf_counter() - start < 1.0


def test_index_accepts_numpy_ints_and_rejects_bad_indices(table: NB201Table) -> None:
    assert table.arch_string(np.int64(6111)) == ARCH_6111
    for bad in (-1, 15625, 1.0, "3", True):
        with pytest.raises(UsageError):
            table.arch_string(bad)  # type: ignore[arg-type]


def test_unknown_metric_lists_valid(table: NB201Table) -> None:
    with pytest.raises(UsageError) as err:
        table.metric("cifar10/valid")
    msg = str(err.value)
    assert "\n" not in msg
    for name in table.METRICS:
        assert name in msg
    assert table.METRICS == (
        "cifar10-valid/valid",
        "cifar10-valid/test",
        "cifar10/test",
        "cifar100/test",
        "imagenet16-120/test",
    )


def test_table_is_cached() -> None:
    assert nb201_table() is nb201_table()


# ------------------------------------------------------------------ strings
def test_constants() -> None:
    assert NB201_OPS == (
        "none",
        "skip_connect",
        "nor_conv_1x1",
        "nor_conv_3x3",
        "avg_pool_3x3",
    )
    assert NB201_EDGES == ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")


def test_genotype_to_string_official_form() -> None:
    ops = (
        "nor_conv_3x3",
        "nor_conv_3x3",
        "nor_conv_3x3",
        "skip_connect",
        "nor_conv_3x3",
        "nor_conv_1x1",
    )
    assert genotype_to_string(ops) == ARCH_6111
    assert genotype_to_string(list(ops)) == ARCH_6111
    assert string_to_genotype(ARCH_6111) == ops
    assert string_to_genotype("  " + ARCH_6111 + "\n") == ops


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nonsense",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",  # 2 nodes
        ARCH_6111 + "+|none~0|",  # 4 nodes
        ARCH_6111.replace("nor_conv_1x1~2", "conv_1x1~2"),  # unknown op
        ARCH_6111.replace("nor_conv_1x1~2", "nor_conv_1x1~1"),  # wrong input index
        ARCH_6111.replace("skip_connect~0|", ""),  # node 3 has 2 edges
        ARCH_6111.replace("|+|nor_conv_3x3~0|", "|nor_conv_3x3~0|+|"),  # edges moved
        ARCH_6111.replace("~", "-"),  # no input marker
        ARCH_6111[1:],  # missing leading '|'
        ARCH_6111.upper(),
    ],
)
def test_malformed_strings(bad: str, table: NB201Table) -> None:
    with pytest.raises(UsageError) as err:
        string_to_genotype(bad)
    msg = str(err.value)
    assert "\n" not in msg and "e.g. '|" in msg  # one line, with a valid example
    with pytest.raises(UsageError):
        table.index(bad)


def test_malformed_types(table: NB201Table) -> None:
    with pytest.raises(UsageError):
        string_to_genotype(None)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        table.index(["none"] * 6)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        genotype_to_string(["none"] * 5)
    with pytest.raises(UsageError) as err:
        genotype_to_string(["none"] * 5 + ["nor_conv_3x33"])
    assert "nor_conv_3x3" in str(err.value)
    with pytest.raises(UsageError):
        genotype_to_string(ARCH_6111)


# ------------------------------------------------------------------ latencies
def test_devices() -> None:
    devices = latency_devices()
    assert devices == sorted(HELP_DEVICES) and len(devices) == 27
    for dev in devices:
        lat = nb201_latency(dev)
        assert lat.shape == (15625,) and lat.dtype == np.float64
        assert np.all(np.isfinite(lat)) and lat.min() > 0


def test_hw_nas_bench_arch0_exact() -> None:
    # HW-NAS-Bench README, NAS-Bench-201 arch 0, cifar10 (digit for digit)
    assert nb201_latency("raspi4")[0] == 10.481976820010459
    assert nb201_latency("pixel3")[0] == 3.6058499999999998
    assert nb201_latency("eyeriss")[0] == 3.645620000000001
    assert nb201_latency("fpga")[0] == 2.57296


def test_whole_millisecond_devices() -> None:
    for dev in ("pixel2", "samsung_a50", "samsung_s7", "essential_ph_1"):
        lat = nb201_latency(dev)
        assert np.array_equal(lat, np.round(lat))
    assert not np.array_equal(nb201_latency("pixel3"), np.round(nb201_latency("pixel3")))


def test_unknown_device_lists_valid() -> None:
    with pytest.raises(UsageError) as err:
        nb201_latency("pixel4")
    msg = str(err.value)
    assert "\n" not in msg and "pixel3" in msg and "titan_rtx_256" in msg


# HELP README / paper Table 4: architectures found by MetaD2A + HELP, published as
# (latency ms, CIFAR-100 test accuracy %). Arch strings copied from HELP's
# data/nasbench201/architecture_config/<device>/*.txt. (For pixel2 the file names say
# 14.0/18.0 ms; the data and the HELP README table say 13.0/19.0 ms.)
HELP_PAIRS = [
    (
        "titan_rtx_256",
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|none~2|",
        17.8,
        69.7,
    ),
    (
        "titan_rtx_256",
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
        18.9,
        71.5,
    ),
    (
        "titan_rtx_256",
        "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        24.2,
        71.8,
    ),
    (
        "gold_6226",
        "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
        8.0,
        67.3,
    ),
    (
        "gold_6226",
        "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|",
        10.7,
        70.2,
    ),
    (
        "gold_6226",
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        14.3,
        72.1,
    ),
    (
        "pixel2",
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|none~2|",
        13.0,
        69.7,
    ),
    (
        "pixel2",
        "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        19.0,
        71.8,
    ),
    (
        "pixel2",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        25.0,
        73.2,
    ),
    (
        "eyeriss",
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
        3.9,
        71.5,
    ),
    (
        "eyeriss",
        "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        5.1,
        71.8,
    ),
    (
        "eyeriss",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        9.1,
        73.5,
    ),
    (
        "fpga",
        "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|",
        3.8,
        70.2,
    ),
    (
        "fpga",
        "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        4.7,
        71.8,
    ),
    (
        "fpga",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        7.4,
        73.5,
    ),
]


@pytest.mark.parametrize(("device", "arch", "latency_ms", "accuracy"), HELP_PAIRS)
def test_help_published_pairs(device: str, arch: str, latency_ms: float, accuracy: float, table: NB201Table) -> None:
    i = table.index(arch)
    assert round(float(nb201_latency(device)[i]), 1) == latency_ms
    assert round(float(table.metric("cifar100/test")[i]), 1) == accuracy


# ------------------------------------------------------------------ safe loading
def _copy_data(tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(benchdata.DATA_DIR, dst)
    return dst


def _flip_byte(path: Path, offset: int | None = None) -> None:
    blob = bytearray(path.read_bytes())
    k = len(blob) // 2 if offset is None else offset
    blob[k] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_intact_copy_loads(tmp_path: Path) -> None:
    data = _copy_data(tmp_path)
    t = NB201Table(data_dir=data)
    assert t.arch_string(6111) == ARCH_6111
    assert latency_devices(data_dir=data) == latency_devices()
    assert nb201_latency("fpga", data_dir=data)[0] == 2.57296


@pytest.mark.parametrize("verify", [True, False])
def test_corrupted_accuracy_file(tmp_path: Path, verify: bool) -> None:
    data = _copy_data(tmp_path)
    _flip_byte(data / "nb201.npz")
    with pytest.raises(HwnasError) as err:
        NB201Table(data_dir=data, verify=verify)
    msg = str(err.value)
    assert "nb201.npz" in msg and "\n" not in msg
    assert "convert_benchmarks.py" in msg and "reinstall" in msg
    if verify:
        assert "corrupted" in msg


def test_corrupted_latency_file(tmp_path: Path) -> None:
    data = _copy_data(tmp_path)
    _flip_byte(data / "nb201_latency.npz")
    with pytest.raises(HwnasError, match=r"nb201_latency\.npz"):
        nb201_latency("pixel3", data_dir=data)
    with pytest.raises(HwnasError, match=r"nb201_latency\.npz"):
        latency_devices(data_dir=data)


def test_missing_files(tmp_path: Path) -> None:
    data = _copy_data(tmp_path)
    (data / "nb201.npz").unlink()
    with pytest.raises(HwnasError, match=r"nb201\.npz.*missing"):
        NB201Table(data_dir=data)
    (data / "SHA256SUMS").unlink()
    with pytest.raises(HwnasError, match="SHA256SUMS"):
        nb201_latency("pixel3", data_dir=data)


def test_checksums_file_matches_package() -> None:
    import hashlib

    sums = {}
    for line in (benchdata.DATA_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
    assert set(sums) == {"nb201.npz", "nb201_latency.npz", "digits.npz"}
    for name, digest in sums.items():
        assert hashlib.sha256((benchdata.DATA_DIR / name).read_bytes()).hexdigest() == digest


def test_npz_hold_plain_arrays_only() -> None:
    for name in ("nb201.npz", "nb201_latency.npz"):
        path = benchdata.DATA_DIR / name
        with zipfile.ZipFile(path) as zf:
            assert all(n.endswith(".npy") for n in zf.namelist())
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                assert npz[key].dtype != object and npz[key].dtype.kind in "uif"


def test_loader_never_allows_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real_load = np.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)  # the module calls np.load
    data = _copy_data(tmp_path)
    NB201Table(data_dir=data)
    nb201_latency("pixel3", data_dir=data)
    assert calls == [False, False]


def test_data_is_compact_and_fast() -> None:
    total = sum((benchdata.DATA_DIR / n).stat().st_size for n in ("nb201.npz", "nb201_latency.npz"))
    assert total < 3_000_000
    start = time.perf_counter()
    NB201Table()
    benchdata._load_latencies(None)
    assert time.perf_counter() - start < 0.3
