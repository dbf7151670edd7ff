"""Contract tests for every registered cost source and device kind, and a new kind as a plug-in.

Every device kind × every built-in device file × every space either refuses the space in one
line or gives a source that keeps the interface's promises: its metrics are named with units,
a cheap source answers for any arch without building a network, its lower bound is no more
than what it gives any arch, and it says where its numbers come from. The same for the
device-independent sources (FLOPs and parameters, peak memory, model size). A toy kind,
registered from this file only, then runs a whole search from the command line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.cost.latency import BenchmarkTableLatency
from hwnas.cost.source import (
    COST_SOURCES,
    DEVICE_KINDS,
    Cost,
    CostSource,
    DeviceKind,
    KeySpec,
    LatencyRequest,
    Metric,
    cost_source,
    cost_source_names,
    device_kinds,
    latency_source,
)
from hwnas.device import get_device, list_devices
from hwnas.errors import UsageError
from hwnas.spaces import SPACES, get_space

SPACE_NAMES = SPACES.names()
#: Every built-in device file but the measured ones, whose sources time networks (tested below on one arch).
TABLE_DEVICES = [n for n in list_devices() if not get_device(n).measured]


def _check_source(source: CostSource, space: Any, archs: list[dict[str, Any]]) -> None:
    metrics = source.metrics()
    assert metrics and all(isinstance(m, Metric) and m.name and m.unit and m.label for m in metrics)
    assert len({m.name for m in metrics}) == len(metrics)
    assert isinstance(source.cheap, bool) and source.kind
    json.dumps(source.describe())
    assert all(isinstance(w, str) and "\n" not in w for w in source.warnings())
    got = [source.costs(a) for a in archs]
    for costs in got:
        assert set(costs) == {m.name for m in metrics}
        for c in costs.values():
            assert isinstance(c, Cost) and math.isfinite(c.value) and c.value >= 0 and c.source
    for m in metrics:
        bound = source.lower_bound(m.name)
        if bound is None:
            continue
        cost, arch = bound
        space.validate(arch)
        # A benchmark table's bound is exact; a probe is the space's smallest network.
        assert all(cost.value <= costs[m.name].value * (1 + 1e-9) for costs in got) or not source.cheap


@pytest.mark.parametrize("space_name", SPACE_NAMES)
@pytest.mark.parametrize("device_name", TABLE_DEVICES)
def test_table_devices_keep_the_contract(device_name: str, space_name: str) -> None:
    device, space = get_device(device_name), get_space(space_name)
    try:
        source = latency_source(device, space)
    except UsageError as exc:
        assert "\n" not in str(exc) and not device.covers(space.name)
        return
    assert device.covers(space.name) and source.cheap
    rng = np.random.default_rng(0)
    _check_source(source, space, [space.sample(rng) for _ in range(20)])
    # The exact minimum over real networks: no arch of the space whose output depends on its input is faster.
    bound = source.lower_bound("latency_ms")
    assert isinstance(source, BenchmarkTableLatency) and bound is not None
    space = source.space
    real = [float(source.values[i]) for i in range(len(source.values)) if not space.degenerate(space.from_index(i))]
    assert bound[0].value == min(real) == source.costs(bound[1])["latency_ms"].value and space.degenerate(bound[1]) is None


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_measured_device_keeps_the_contract_on_one_network(space_name: str) -> None:
    space = get_space(space_name)
    source = latency_source(get_device("cpu"), space, LatencyRequest(source="measure"))
    assert not source.cheap and source.kind == "measured"
    _check_source(source, space, [space.smallest()])


@pytest.mark.parametrize("space_name", SPACE_NAMES)
@pytest.mark.parametrize("name", cost_source_names())
def test_device_independent_sources_keep_the_contract(name: str, space_name: str) -> None:
    space = get_space(space_name)
    source = cost_source(name, space)
    assert source.cheap, f"{name} on {space_name} should have a closed form"
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(10)]
    _check_source(source, space, archs)
    # Computed once per network: a repeat is the same object, not a recount.
    assert source.costs(archs[0]) is source.costs(dict(archs[0]))


def test_every_kind_declares_its_keys_and_words() -> None:
    assert {"onnxruntime", "table"} <= set(device_kinds())
    for name in device_kinds():
        kind = DEVICE_KINDS.get(name)
        assert kind.name == name and all(isinstance(k, KeySpec) for k in kind.keys.values())
    for name in list_devices():
        d = get_device(name)
        kind = DEVICE_KINDS.get(d.kind)
        assert kind.summary(d) and kind.spaces_text(d)


def test_cheap_sources_import_no_torch() -> None:
    code = (
        "import sys\n"
        "from hwnas.cost.source import cost_source_names, cost_source, latency_source\n"
        "from hwnas.device import get_device\n"
        "from hwnas.spaces import get_space\n"
        "for s in ('nb201', 'mbconv'):\n"
        "    space = get_space(s)\n"
        "    for n in cost_source_names():\n"
        "        cost_source(n, space).costs(space.smallest())\n"
        "latency_source(get_device('pixel3'), get_space('nb201')).costs(get_space('nb201').smallest())\n"
        "assert 'torch' not in sys.modules and 'fvcore' not in sys.modules, 'torch or fvcore imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a new kind, registered from here only ----------------------------------------------
class ToyLatency(CostSource):
    """A made-up device: latency proportional to the network's multiply-adds."""

    kind = "toy model"
    cheap = True

    def __init__(self, device: Any, space: Any) -> None:
        self.device, self.space = device, space
        self.ms_per_gmac = float(device.settings["ms_per_gmac"])

    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("latency_ms", "ms", f"latency on {self.device.name}"),)

    def costs(self, arch: dict[str, Any], model: Any = None) -> dict[str, Cost]:
        counts = self.space.counts(arch)
        return {"latency_ms": Cost(counts.macs / 1e9 * self.ms_per_gmac, "toy model", {"gmac": counts.macs / 1e9})}

    def lower_bound(self, metric: str) -> tuple[Cost, dict[str, Any]]:
        arch = self.space.smallest()
        return self.costs(arch)["latency_ms"], arch


TOY = DeviceKind(
    name="toy",
    keys={"ms_per_gmac": KeySpec((int, float), 10.0, 0.001, 1e6, "ms_per_gmac = 10.0")},
    latency=lambda device, space, request: ToyLatency(device, space),
    summary=lambda device: f"toy ({device.settings['ms_per_gmac']:g} ms/GMAC)",
)


@pytest.fixture
def toy_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    device_kinds()  # the built-ins first, so the toy is one more entry
    DEVICE_KINDS.add(TOY.name, TOY)
    folder = tmp_path / "devices"
    folder.mkdir()
    (folder / "mytoy.toml").write_text('name = "mytoy"\nkind = "toy"\nms_per_gmac = 50.0\n')
    monkeypatch.setenv("HWNAS_DEVICES", str(folder))
    from hwnas import device as device_mod

    device_mod._scan.cache_clear()
    yield folder
    DEVICE_KINDS.remove(TOY.name)
    device_mod._scan.cache_clear()


def test_a_new_kind_searches_end_to_end(toy_kind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    assert "toy (50 ms/GMAC)" in capsys.readouterr().out
    out = tmp_path / "run"
    argv = ["search", "--device", "mytoy", "--latency", "3ms", "--trials", "15", "--strategy", "random", "--no-export", "--json"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latency_source"] == "toy model" and report["latency_ms"] <= 3.0
    space = get_space("nb201")
    assert report["latency_ms"] == pytest.approx(space.counts(space.from_string(report["arch"])).macs / 1e9 * 50.0)
    assert report["latency_model"]["source"] == "toy model"
    # The toy's numbers are cheap: samplers are given a budget predicate, and the probe is exact.
    assert report["trials"]["complete"] == 15


def test_a_new_kind_checks_its_own_keys(toy_kind: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (toy_kind / "badtoy.toml").write_text('name = "badtoy"\nkind = "toy"\nms_per_gmac = "fast"\n')
    (toy_kind / "typotoy.toml").write_text('name = "typotoy"\nkind = "toy"\nms_per_gmc = 5.0\n')
    from hwnas import device as device_mod

    device_mod._scan.cache_clear()
    for name, needle in (("badtoy", "ms_per_gmac = 'fast' has the wrong type"), ("typotoy", "did you mean 'ms_per_gmac'")):
        assert main(["search", "--device", name, "--trials", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_registries_refuse_duplicates_and_explain_unknown_names() -> None:
    device_kinds()
    with pytest.raises(ValueError, match="already registered"):
        DEVICE_KINDS.add("table", TOY)
    with pytest.raises(UsageError, match="valid: flops, memory, size"):
        COST_SOURCES.get("flop")
