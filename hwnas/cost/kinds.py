"""The built-in device kinds: ``onnxruntime`` (measured live, or a lookup table built here) and
``table`` (a shipped benchmark table). Each says the keys its device files hold and picks the
latency source for a device, a space and the user's ``--latency-source``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hwnas.cost.source import CostSource, DeviceKind, KeySpec, LatencyRequest
from hwnas.errors import UsageError
from hwnas.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from hwnas.device import Device
    from hwnas.spaces import SearchSpace

# -- onnxruntime --------------------------------------------------------------------
ORT_KEYS = {
    "provider": KeySpec(str, example='provider = "CPUExecutionProvider"'),
    "threads": KeySpec(int, 1, 1, 1024, "threads = 1"),
    "warmup": KeySpec(int, 20, 0, 100_000, "warmup = 20"),
    "repeats": KeySpec(int, 100, 1, 1_000_000, "repeats = 100"),
}


def table_shape_note(space: SearchSpace) -> str | None:
    """Why tables of the registered space (``hwnas profile --space``, the shipped benchmark tables)
    do not time ``space``'s networks (None where they do): ``space`` was built for the user's data
    (:meth:`~hwnas.spaces.SearchSpace.for_data`) and its networks take another input shape."""
    from hwnas.spaces import get_space

    own = get_space(space.name)
    if getattr(space, "dataset", None) != getattr(own, "dataset", None) and hasattr(own, "with_dataset"):
        own = own.with_dataset(space.dataset)  # type: ignore[attr-defined]
    arch = space.smallest()
    return space.shape_note(arch, own.input_shape(arch))


def table_or_live(device: Device, space: SearchSpace, request: LatencyRequest, live: Callable[[], CostSource]) -> CostSource:
    """The latency source of a device that measures: ``auto``, this device's lookup table when one
    was built through it, still matches it and did not fail its check, else ``live()``; ``lut`` and
    ``measure`` force one; ``table`` is refused. Shared by every kind that measures (onnxruntime
    here, remote agents).

    ``auto`` passes over a table that failed its check (kept by ``hwnas profile --force``) with a
    note, as it passes over one from another machine: live measurement is slower but right, and
    ``auto`` promises the best source that is right. ``lut`` refuses such a table (see
    :class:`~hwnas.cost.latency.LookupTableLatency`) unless the user accepted it by name."""
    from hwnas.cost.latency import LookupTableLatency
    from hwnas.cost.lut import LatencyTable, find_table, legacy_table, shown, table_name, tables_dir

    say = request.log or (lambda s: None)
    source = request.source
    if source == "table":
        raise UsageError(f"device {device.name!r} has no benchmark table; use --latency-source lut, measure or auto")
    if source == "measure":
        say(f"latency on {device.name}: measuring every candidate live (--latency-source measure)")
        return live()
    at_fp32 = device.precision == "fp32"  # fp32 tables keep their name, <device>-<space>.json
    path = request.table or (find_table(device.name, space.name) if at_fp32 else find_table(device.name, space.name, device.precision))
    if path is None:
        name = table_name(device.name, space.name, device.precision)
        folder = shown(tables_dir())
        at = "" if device.precision == "fp32" else f" --precision {device.precision}"
        build = f"'hwnas profile --device {device.name} --space {space.name}{at}'"
        # Tables an older hwnas wrote into ./latency_tables are not read by themselves (one folder
        # for every working directory), but one found there is named, with the move that uses it.
        old = legacy_table(device.name, space.name, device.precision)
        moved = f" ({old} is where an older hwnas wrote it: move it into {folder}, or pass --table {old})" if old else ""
        if source == "lut":
            raise UsageError(
                f"no {device.precision} latency table for {device.name}/{space.name} (looked for {name} in {folder}){moved}; "
                f"build it with {build}, or name one with --table FILE"
            )
        say(f"no lookup table for {device.name}/{space.name} in {folder}{moved}: measuring every candidate live; build one with {build}")
        return live()
    table = request.loaded if request.loaded is not None else LatencyTable.load(path)
    wrong = table.precision_mismatch(device.precision, device.name, space.name)
    if wrong and request.table:
        raise UsageError(wrong)  # a table the user named is used or refused, never passed over
    shape = table_shape_note(space)
    if shape and not request.force_shape:
        if source == "lut" or request.table:
            raise UsageError(
                f"latency table {path} was built for the {space.name} space's own networks, but {shape}; measure live with "
                "--latency-source measure (or drop --latency-source and --table), or pass --force to use the table anyway"
            )
        say(f"note: not using latency table {path} (built for the {space.name} space's own networks; {shape}); measuring live instead")
        return live()
    why = table.mismatches_for(device)
    if source == "auto" and why:
        say(f"note: not using latency table {path} ({why[0]}); measuring live instead")
        return live()
    if source == "auto" and table.failing and not table.accept_failing:
        say(
            f"note: not using latency table {path}: it failed its check when it was built ({table.failing}); measuring live "
            f"instead (slower); rebuild it on a quiet machine with "
            f"'hwnas profile --device {device.name} --space {space.name} --check 40'"
        )
        return live()
    got = LookupTableLatency(device, space, table, allow_foreign=request.allow_foreign)
    say(f"latency on {device.name}: lookup table {path} (built {table.data.get('created') or 'at an unrecorded time'})")
    return got


def _ort_latency(device: Device, space: SearchSpace, request: LatencyRequest) -> CostSource:
    from hwnas.cost.latency import MeasuredLatency

    return table_or_live(device, space, request, lambda: MeasuredLatency(device, space))


def _ort_measure(device: Device, onnx_bytes: bytes, shape: tuple[int, ...]) -> Any:
    from hwnas.cost.measure import measure_onnx

    return measure_onnx(onnx_bytes, shape, **device.measurement_settings())


def _ort_preflight(device: Device) -> None:
    from hwnas.cost.measure import check_provider

    check_provider(device.provider)


def _ort_summary(device: Device) -> str:
    return f"measured ({device.provider.replace('ExecutionProvider', '')})"


def provider_precisions(device: Device) -> tuple[str, ...]:
    """What the device's ONNX Runtime provider runs (the CPU provider: fp32 and int8)."""
    from hwnas.cost.quantize import supported_precisions

    return supported_precisions(device.provider)


ONNXRUNTIME = DeviceKind(
    name="onnxruntime",
    keys=ORT_KEYS,
    latency=_ort_latency,
    measure=_ort_measure,
    preflight=_ort_preflight,
    precisions=provider_precisions,
    measured=True,
    summary=_ort_summary,
    spaces_text=lambda device: "any (measured)",
)

# -- table --------------------------------------------------------------------------
#: Spaces with shipped benchmark latency tables (a table device can only cover these).
BENCHMARK_SPACES = ("nb201",)
LATENCY_KEYS = ("table", "estimated", "source")
_LATENCY_EXAMPLE = '[latency.nb201] table = "pixel3"'


def _parse_tables(settings: dict[str, Any], path: Any) -> dict[str, Any]:
    """``[latency.<space>]`` tables -> ``settings["tables"]``: {space: TableRef}."""
    from hwnas.device import TableRef, get_key, refuse_unknown_keys

    latency = settings.pop("latency")
    if not latency:
        raise UsageError(f'device file {path}: [latency] names no space; add e.g. [latency.nb201] with table = "pixel3"')
    tables = {}
    for space, ref in latency.items():
        if not isinstance(ref, dict):
            raise UsageError(f"device file {path}: [latency.{space}] must be a table with a 'table' key, e.g. {_LATENCY_EXAMPLE}")
        if space not in BENCHMARK_SPACES:
            raise UsageError(
                f"device file {path}: [latency.{space}]: benchmark latency tables exist for {', '.join(BENCHMARK_SPACES)} only"
                f'{did_you_mean(space, list(BENCHMARK_SPACES))}; measure other spaces with kind = "onnxruntime"'
            )
        where = f"latency.{space}."
        refuse_unknown_keys(ref, LATENCY_KEYS, path, where)
        tables[space] = TableRef(
            table=get_key(ref, "table", str, path, where=where, example='table = "pixel3"'),
            estimated=get_key(ref, "estimated", bool, path, default=False, where=where, example="estimated = false"),
            source=get_key(ref, "source", str, path, default="", where=where, example='source = "where the numbers come from"'),
        )
    return {**settings, "tables": tables}


#: The input (C, H, W) of the networks the shipped benchmark tables were measured on (NB201: CIFAR-10's).
BENCHMARK_INPUT_SHAPES = {"nb201": (3, 32, 32)}


def _table_latency(device: Device, space: SearchSpace, request: LatencyRequest) -> CostSource:
    from hwnas.cost.latency import BenchmarkTableLatency

    if request.source not in ("auto", "table"):
        raise UsageError(
            f"device {device.name!r} cannot be measured here; its latency comes from its benchmark table (--latency-source table or auto)"
        )
    measured_on = BENCHMARK_INPUT_SHAPES.get(space.name)
    note = space.shape_note(space.smallest(), measured_on) if measured_on else None
    source = BenchmarkTableLatency(device, space)
    if note and not request.force_shape:
        shown = "x".join(map(str, measured_on or ()))
        # Raised by the resolver once the run's other settings are checked (their errors come first).
        source.shape_refusal = UsageError(
            f"device {device.name!r} has latencies of {space.name} networks taking {shown} input only, but {note.split(', the table')[0]}; "
            f"time them on a live device (--device cpu), an agent's device file, or a table you build with 'hwnas profile', "
            f"or pass --force to use the {shown} figures anyway"
        )
    if note:
        source.shape_warning = (
            f"WARNING: --force: device {device.name!r}'s latencies are for {space.name} networks taking "
            f"{'x'.join(map(str, measured_on or ()))} input, but {note.split(', the table')[0]}: every latency of this run is another "
            "network's; time the real ones on a live device before deploying"
        )
    return source


def _table_summary(device: Device) -> str:
    return "table (estimated)" if any(t.estimated for t in device.tables.values()) else "table (measured)"


TABLE = DeviceKind(
    name="table",
    keys={"latency": KeySpec(dict, example=_LATENCY_EXAMPLE)},
    latency=_table_latency,
    parse=_parse_tables,
    covers=lambda device, space: space in device.tables,
    summary=_table_summary,
    spaces_text=lambda device: ", ".join(sorted(device.tables)),
)


def register(registry: Registry[DeviceKind]) -> None:
    registry.add(ONNXRUNTIME.name, ONNXRUNTIME)
    registry.add(TABLE.name, TABLE)
