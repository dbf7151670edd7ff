"""Property-based tests (hypothesis) of what users type and hand in: the quantity parsers, the
command-line parser, device files and the latency-table loader.

Whatever the input, each raises nothing but :class:`~hwnas.errors.UsageError` (prediction from
an accepted table: nothing but :class:`~hwnas.errors.HwnasError`), and every valid value is
read back exactly. Runs are derandomised (the same examples every run) and have no deadline, so
a loaded machine cannot make them flaky.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.cli import MAX_COUNT, MAX_INT, _int, _join_negative_values, _positive_int, build_parser
from hwnas.errors import HwnasError, UsageError
from hwnas.units import MIN_LATENCY_MS, format_ms, parse_count_m, parse_latency_ms


def fast(n: int) -> Any:
    return settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


MICRO, MU = "\u00b5", "\u03bc"
UNIT_MS = {"us": Decimal("0.001"), MICRO + "s": Decimal("0.001"), MU + "s": Decimal("0.001"), "ms": Decimal(1), "s": Decimal(1000)}
SUFFIX_M = {"k": Decimal("0.001"), "K": Decimal("0.001"), "M": Decimal(1), "m": Decimal(1), "G": Decimal(1000)}
#: Text near the valid forms: signs, exponents, units, separators, spaces, look-alike digits.
NEAR_NUMBERS = st.from_regex(
    r"\s?[+-]?[0-9\uff10-\uff19\u0660]{0,4}([.,][0-9]{0,3})?([eE][+-]?[0-9]{1,3})?\s?(us|µs|ms|s|MS|m|K|M|G|,|nan|inf)?", fullmatch=True
)
TEXT = st.text(max_size=30) | NEAR_NUMBERS


def decimal_text(digits: str, fraction: str) -> str:
    return digits + ("." + fraction if fraction else "")


NUMBER_PARTS = st.tuples(st.from_regex(r"[0-9]{1,9}", fullmatch=True), st.from_regex(r"[0-9]{0,6}", fullmatch=True))


# ------------------------------------------------------------------ latency
@fast(400)
@given(text=TEXT)
def test_latency_parser_raises_only_usage_error(text: str) -> None:
    try:
        value = parse_latency_ms(text)
    except UsageError as exc:
        assert repr(text) in str(exc) and "20ms" in str(exc) and "\n" not in str(exc)
        return
    assert math.isfinite(value) and value >= MIN_LATENCY_MS
    assert abs(parse_latency_ms(format_ms(value)) - value) <= 1e-12 + 1e-12 * value  # what run folders print reads back


@fast(300)
@given(parts=NUMBER_PARTS, unit=st.sampled_from(sorted(UNIT_MS)), pad=st.sampled_from(["", " ", "\t", "\n"]))
def test_latency_round_trip(parts: tuple[str, str], unit: str, pad: str) -> None:
    text = pad + decimal_text(*parts) + unit + pad
    exact = Decimal(decimal_text(*parts)) * UNIT_MS[unit]
    if exact * Decimal("1.000001") < Decimal(str(MIN_LATENCY_MS)):
        with pytest.raises(UsageError):
            parse_latency_ms(text)
        return
    assert parse_latency_ms(text) == pytest.approx(float(exact), rel=1e-12)


# ------------------------------------------------------------------ counts
@fast(300)
@given(text=TEXT)
def test_count_parser_raises_only_usage_error(text: str) -> None:
    try:
        value = parse_count_m(text, "FLOPs budget")
    except UsageError as exc:
        assert repr(text) in str(exc) and "300M" in str(exc) and "\n" not in str(exc)
        return
    assert math.isfinite(value) and value > 0


@fast(200)
@given(parts=NUMBER_PARTS, suffix=st.sampled_from(sorted(SUFFIX_M)))
def test_count_round_trip(parts: tuple[str, str], suffix: str) -> None:
    exact = Decimal(decimal_text(*parts)) * SUFFIX_M[suffix]
    text = decimal_text(*parts) + suffix
    if exact == 0:
        with pytest.raises(UsageError):
            parse_count_m(text)
        return
    assert parse_count_m(text) == pytest.approx(float(exact), rel=1e-12)


@fast(300)
@given(text=TEXT)
def test_whole_number_parsers_raise_only_usage_error(text: str) -> None:
    for parse, low, high in ((_positive_int, 1, MAX_COUNT), (_int, 0, MAX_INT)):
        try:
            value = parse(text)
        except UsageError as exc:
            assert repr(text) in str(exc) and "e.g." in str(exc) and "\n" not in str(exc)
            continue
        assert isinstance(value, int) and low <= value <= high


@fast(200)
@given(value=st.integers(min_value=-(2**40), max_value=2**40))
def test_whole_number_parsers_round_trip(value: int) -> None:
    for parse, low, high in ((_positive_int, 1, MAX_COUNT), (_int, 0, MAX_INT)):
        if low <= value <= high:
            assert parse(str(value)) == value and parse(f" {value} ") == value
        else:
            with pytest.raises(UsageError):
                parse(str(value))


# ------------------------------------------------------------------ the command line
FLAGS = ["--latency", "--flops", "--params", "--trials", "--seed", "--space", "--device", "--dataset", "--latency-source", "--epochs"]
FLAGS += ["--out", "--strategy", "--table", "--darts-order", "--latency-weight", "-q", "--json", "--no-export", "search", "export"]
#: Tokens that print help or the version and exit 0 (argparse also takes their prefixes).
_EXITING = ("--help", "--version")


def _harmless(token: str) -> bool:
    return token != "-h" and not any(len(token) >= 3 and name.startswith(token) for name in _EXITING)


@fast(300)
@given(argv=st.lists(st.sampled_from(FLAGS) | st.text(max_size=12).filter(_harmless), max_size=8))
def test_command_line_parser_raises_only_usage_error(argv: list[str]) -> None:
    parser = build_parser()
    try:
        parser.parse_args(_join_negative_values(["search", *argv]))
    except UsageError as exc:
        assert "\n" not in str(exc)


# ------------------------------------------------------------------ device files
DEVICE_KEYS = ["name", "kind", "description", "provider", "threads", "batch", "warmup", "repeats", "latency", "thread", "x"]
TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.text(max_size=12)
    | st.sampled_from(["onnxruntime", "table", "cpu"]),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)


def _toml(data: dict[str, Any]) -> str:
    # JSON spells str, int, bool and arrays of them as TOML does.
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())


@fast(300)
@given(data=st.dictionaries(st.sampled_from(DEVICE_KEYS), TOML_VALUES, max_size=8), text=st.text(max_size=60), raw=st.booleans())
def test_device_loader_raises_only_usage_error(data: dict[str, Any], text: str, raw: bool, tmp_path_factory: Any) -> None:
    from hwnas.cost.source import device_kinds
    from hwnas.device import MAX_BATCH, load_device_file

    path = tmp_path_factory.mktemp("dev") / "d.toml"
    path.write_text(text if raw else _toml(data), encoding="utf-8")
    try:
        dev = load_device_file(path)
    except UsageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert dev.kind in device_kinds() and 1 <= dev.batch <= MAX_BATCH and dev.name == data.get("name", dev.name)
    if dev.kind == "onnxruntime":
        assert 1 <= dev.threads <= 1024 and 1 <= dev.repeats and 0 <= dev.warmup


# ------------------------------------------------------------------ latency tables
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
ODD_VALUES = st.sampled_from([None, True, 0, -1, 1e308, float("nan"), float("inf"), "", "x", [], {}, [[]], {"a": 1}, 10**30]) | JSON


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Valid tables of this machine: a small mbconv one and an nb201 one (made up numbers, real metadata)."""
    from hwnas.benchdata import NB201_N
    from hwnas.cost.lut import SCHEMA, SCHEMA_VERSION, fingerprint, runtime_versions
    from hwnas.cost.lut_blocks import all_blocks
    from hwnas.cost.lut_features import feature_names
    from hwnas.spaces import _nb201_graph as nb201_graph
    from hwnas.spaces import get_space

    common = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "device": {
            "name": "cpu",
            "kind": "onnxruntime",
            "provider": "CPUExecutionProvider",
            "fingerprint": fingerprint("CPUExecutionProvider"),
        },
        "runtime": runtime_versions(),
        "measurement": {"threads": 1, "batch": 1, "dtype": "float32", "warmup": 20, "repeats": 100},
        "check": {"n": 4, "within_5pct": 0.5, "within_10pct": 1.0, "mape_pct": 5.0, "kendall_tau": 0.9, "when": "now"},
        "reference": {"arch": "x", "median_ms": 1.0},
    }
    mb_space, nb_space = get_space("mbconv"), get_space("nb201")
    mb_names = feature_names(mb_space)
    mbconv = common | {
        "space": "mbconv",
        "space_options": {"resolutions": [128]},
        "entries": {k: {"median_ms": 0.01} for k in all_blocks(mb_space, [128])},
        "calibration": {"feature_names": mb_names, "coef": [1.0] * len(mb_names), "intercept": 0.1, "measured": []},
    }
    structure = nb201_graph.feature_names()
    nb_names = feature_names(nb_space, structure)
    nb201 = common | {
        "space": "nb201",
        "entries": {k: {"median_ms": 0.01} for k in all_blocks(nb_space)},
        "calibration": {"feature_names": nb_names, "coef": [1.0] * len(nb_names), "intercept": 0.1},
        "structure": {"names": structure, "features": [[1] * len(structure)] * NB201_N},
    }
    return {"mbconv": mbconv, "nb201": nb201}


def _paths(data: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    """Every key path into ``data`` (lists: their first two items), for mutation."""
    out = [prefix] if prefix else []
    if depth >= 5:
        return out
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k), depth + 1)
    elif isinstance(data, list):
        for i, v in enumerate(data[:2]):
            out += _paths(v, (*prefix, i), depth + 1)
    return out


def _mutated(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    """``data`` with the item at ``path`` replaced or deleted; only the containers on the path are copied."""
    head, *rest = path
    copy = dict(data) if isinstance(data, dict) else list(data)
    if rest:
        copy[head] = _mutated(data[head], tuple(rest), value, delete)
    elif delete:
        del copy[head]
    else:
        copy[head] = value
    return copy


def _use(table: Any) -> None:
    """What a search does with an accepted table: compare it with this machine, warn, describe, predict."""
    import numpy as np

    from hwnas.cost.latency import LookupTableLatency
    from hwnas.device import get_device
    from hwnas.spaces import get_space

    space = get_space(table.space)
    model = LookupTableLatency(get_device("cpu"), space, table, allow_foreign=True)
    model.quality_warning()
    json.dumps(model.describe())
    rng = np.random.default_rng(0)
    for arch in (space.smallest(), space.sample(rng)):
        try:
            model.latency(arch)
        except HwnasError as exc:
            assert "\n" not in str(exc)


@pytest.mark.parametrize("space", ["mbconv", "nb201"])
def test_the_valid_tables_load_and_predict(space: str, tables: dict[str, Any], tmp_path: Path) -> None:
    from hwnas.cost.lut import LatencyTable
    from hwnas.spaces import get_space

    path = tmp_path / "t.json"
    path.write_text(json.dumps(tables[space]))
    table = LatencyTable.load(path)
    _use(table)
    assert table.predict_ms(get_space(space), get_space(space).smallest()) > 0.1


def _mutation_round(space: str, tables: dict[str, Any], data: Any, delete: bool, value: Any, folder: Path) -> None:
    from hwnas.cost.lut import LatencyTable

    base = tables[space]
    path = data.draw(st.sampled_from(_paths(base)), label="path")
    file = folder / "t.json"
    file.write_text(json.dumps(_mutated(base, path, value, delete)))
    try:
        table = LatencyTable.load(file)
    except UsageError as exc:
        assert str(file) in str(exc) and "\n" not in str(exc) and "hwnas profile" in str(exc)
        return
    _use(table)


@fast(200)
@given(data=st.data(), delete=st.booleans(), value=ODD_VALUES)
def test_table_loader_on_mutated_mbconv_tables(tables: dict[str, Any], data: Any, delete: bool, value: Any, tmp_path_factory: Any) -> None:
    _mutation_round("mbconv", tables, data, delete, value, tmp_path_factory.mktemp("t"))


@fast(40)  # 2 MB a table: fewer examples
@given(data=st.data(), delete=st.booleans(), value=ODD_VALUES)
def test_table_loader_on_mutated_nb201_tables(tables: dict[str, Any], data: Any, delete: bool, value: Any, tmp_path_factory: Any) -> None:
    _mutation_round("nb201", tables, data, delete, value, tmp_path_factory.mktemp("t"))


@fast(200)
@given(value=JSON)
def test_table_loader_on_random_json(value: Any, tmp_path_factory: Any) -> None:
    from hwnas.cost.lut import LatencyTable

    file = tmp_path_factory.mktemp("t") / "t.json"
    file.write_text(json.dumps(value))
    with pytest.raises(UsageError, match="hwnas profile"):
        LatencyTable.load(file)


@fast(200)
@given(blob=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=10**6))
def test_table_loader_on_random_bytes_and_truncations(blob: bytes, cut: int, tables: dict[str, Any], tmp_path_factory: Any) -> None:
    from hwnas.cost.lut import LatencyTable

    folder = tmp_path_factory.mktemp("t")
    text = json.dumps(tables["mbconv"])
    for name, content in (("bytes.json", blob), ("cut.json", text[: cut % len(text)].encode())):
        (folder / name).write_bytes(content)
        with pytest.raises(UsageError, match="hwnas profile"):
            LatencyTable.load(folder / name)
