"""``parse_latency_ms``: the ``--latency`` type function (units required, errors show an example)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnas.errors import UsageError
from hwnas.units import format_ms, parse_latency_ms

MICRO = "\u00b5"  # MICRO SIGN, as typed on most keyboards
#: unit -> milliseconds per unit, as exact decimals (independent of the module's float table)
UNIT_MS = {"us": Decimal("0.001"), MICRO + "s": Decimal("0.001"), "ms": Decimal(1), "s": Decimal(1000)}


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("20ms", 20.0),
        ("500us", 0.5),
        ("0.02s", 20.0),
        ("1.5ms", 1.5),
        ("250" + MICRO + "s", 0.25),
        (".5ms", 0.5),
        ("3s", 3000.0),
        ("  20ms\n", 20.0),  # surrounding whitespace from shells and config files is harmless
    ],
)
def test_accepted(text: str, expected_ms: float) -> None:
    assert parse_latency_ms(text) == pytest.approx(expected_ms, rel=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "20",
        "20 ms",
        "-5ms",
        "0ms",
        "0.0s",
        "fast",
        "20ms,30ms",
        "",
        "1e3us",
        "ms",
        "20MS",
        "20msec",
        "20m",
        "+20ms",
        "20.ms",
        "inf ms",
        "nanms",
    ],
)
def test_rejected_with_value_and_example(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_latency_ms(text)
    message = str(info.value)
    assert repr(text) in message  # names the raw value, quoted, so '' and ' ' are visible
    assert "20ms" in message  # and shows a value that works
    assert "\n" not in message  # the CLI prints errors as one line


@pytest.mark.parametrize(("text", "hint"), [("20", "unit is required"), ("20 ms", "no space"), ("-5ms", "positive"), ("0ms", "positive")])
def test_rejection_explains_the_common_mistakes(text: str, hint: str) -> None:
    with pytest.raises(UsageError, match=hint):
        parse_latency_ms(text)


@pytest.mark.parametrize("value", [None, 20, 20.0, b"20ms"])
def test_non_string_is_a_usage_error(value: object) -> None:
    with pytest.raises(UsageError):
        parse_latency_ms(value)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    number=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e9"), places=6, allow_nan=False, allow_infinity=False),
    unit=st.sampled_from(sorted(UNIT_MS)),
)
def test_format_then_parse_round_trip(number: Decimal, unit: str) -> None:
    text = f"{number:f}{unit}"  # plain positional notation, e.g. '0.000120us'
    expected = float(number * UNIT_MS[unit])
    assert parse_latency_ms(text) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=500, deadline=None)
@given(text=st.text() | st.from_regex(r"\s*-?\d*(\.\d*)?\s*(us|µs|ms|s|e\d|)\s*", fullmatch=True))
def test_arbitrary_text_raises_only_usage_error(text: str) -> None:
    try:
        value = parse_latency_ms(text)
    except UsageError:
        return
    assert value > 0


@pytest.mark.parametrize("value_ms", [20.0, 0.5, 1.5, 0.001, 12345.6, 99999.9])
def test_format_ms_is_read_back(value_ms: float) -> None:
    # run folders and messages name budgets with format_ms; a user may paste them back
    assert parse_latency_ms(format_ms(value_ms)) == pytest.approx(value_ms, rel=1e-12)


def test_overflowing_number_is_refused() -> None:
    text = "9" * 400 + "ms"
    try:
        value = parse_latency_ms(text)
    except UsageError:
        return
    assert math.isfinite(value)


@pytest.mark.parametrize(("text", "millions"), [("300M", 300.0), ("5M", 5.0), ("1.2G", 1200.0), ("800K", 0.8), ("2.5m", 2.5)])
def test_parse_count(text: str, millions: float) -> None:
    from hwnas.units import parse_count_m

    assert parse_count_m(text) == pytest.approx(millions)


@pytest.mark.parametrize("text", ["", "M", "-5M", "0M", "5 M", "5T", "lots", "1e3M", "10", "2500000"])
def test_parse_count_rejects(text: str) -> None:
    from hwnas.units import parse_count_m

    with pytest.raises(UsageError, match="300M"):
        parse_count_m(text, "FLOPs budget")


def test_a_count_without_unit_says_the_unit_is_required() -> None:
    from hwnas.units import parse_count_m

    with pytest.raises(UsageError, match=r"'10' \(a unit is required: 10M is 10 million, 10K 10 thousand, 10G 10 billion\)"):
        parse_count_m("10", "FLOPs budget")
