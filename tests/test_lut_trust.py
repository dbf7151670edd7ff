"""A latency table is never silently wrong (issue 14): ``hwnas profile`` sees measurement noise
(rounds that disagree, the reference network's drift, the calibration fit), measures again or
refuses the table, ``--force`` keeps it marked as failing, and the search refuses a failing table
(or uses it with ``--allow-failing-table``, loudly).

Most tests run on a scripted device: its latency is the ONNX model's size, slowed as a test says,
so the outcome is known. The last test profiles this machine under real, bursty competing load.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_lut import FAST_DEVICE

from hwnas.cli import main
from hwnas.cost.latency import LookupTableLatency, MeasuredLatency, latency_model_for
from hwnas.cost.lut import LatencyTable
from hwnas.cost.measure import Measurement
from hwnas.errors import UsageError
from hwnas.profile import MAX_ROUNDS, ROUNDS, UntrustedTableError, build_table, judge_table, measure_models
from hwnas.spaces import _nb201_graph as nb201_graph
from hwnas.spaces import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # exports: one torch thread is 4x faster on a busy 2-core machine

SHAPE = (3, 8, 8)


def graph_ms(model: bytes) -> float:
    """A made-up device's latency of an ONNX model: 0.02 ms a call and 0.05 ms per 1,000 weights
    (so a table fits it within a few per cent, and the check passes unless a test slows it)."""
    import onnx

    graph = onnx.load_model_from_string(model).graph
    return 0.02 + sum(int(np.prod(t.dims)) for t in graph.initializer) / 2e4


class ScriptedDevice:
    """Stands in for ``measure_onnx``: a model's latency is ``base(model)``, times what
    ``slow(model, k)`` says for its ``k``-th measurement (k = 0, 1, ...)."""

    def __init__(self, slow: Callable[[bytes, int], float], base: Callable[[bytes], float] = graph_ms) -> None:
        self.slow = slow
        self.base = base
        self.seen: Counter[bytes] = Counter()
        self._true: dict[bytes, float] = {}

    def true_ms(self, model: bytes) -> float:
        if model not in self._true:
            self._true[model] = self.base(model)
        return self._true[model]

    def __call__(
        self, model: bytes, input_shape: tuple[int, ...], *, provider: str, threads: int, batch: int, warmup: int, repeats: int
    ) -> Measurement:
        k = self.seen[model]
        self.seen[model] += 1
        ms = self.true_ms(model) * self.slow(model, k)
        return Measurement(ms, ms, 0.0, ms, repeats, warmup, threads, batch, provider)


def _half(model: bytes) -> bool:
    """A fixed half of all models, picked by their bytes."""
    return hashlib.sha256(model).digest()[0] % 2 == 1


def _scripted_machine(mp: pytest.MonkeyPatch, folder: Path) -> Callable[..., ScriptedDevice]:
    """Make the device ``fastcpu`` findable by name, replace nb201's 40 s cell-structure phase by
    constant features, and return what installs a :class:`ScriptedDevice` as ONNX Runtime."""
    from hwnas.benchdata import nb201_table as bench
    from hwnas.device import _scan

    (folder / "devices").mkdir(exist_ok=True)
    (folder / "devices" / "fastcpu.toml").write_text(FAST_DEVICE)
    mp.setenv("HWNAS_DEVICES", str(folder / "devices"))
    mp.setenv("HWNAS_TABLES", str(folder / "no_tables_here"))
    _scan.cache_clear()
    mp.setattr(nb201_graph, "all_cell_features", lambda provider, **kw: np.zeros((bench().n, 2 * len(nb201_graph.NODE_TYPES)), np.int16))

    def install(slow: Callable[[bytes, int], float] = lambda model, k: 1.0, **kw: Any) -> ScriptedDevice:
        import hwnas.cost.measure as measure

        device = ScriptedDevice(slow, **kw)
        mp.setattr(measure, "measure_onnx", device)
        return device

    return install


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., ScriptedDevice]]:
    from hwnas.device import _scan

    yield _scripted_machine(monkeypatch, tmp_path)
    _scan.cache_clear()


def _fast_device() -> Any:
    from hwnas.device import get_device

    return get_device("fastcpu")


# -- noise is seen, and measured again --------------------------------------------------
def test_rounds_that_disagree_are_measured_again_until_two_agree(scripted: Callable[..., ScriptedDevice]) -> None:
    # Model b is slowed differently in each of its first three rounds (a burst); the old rule, the
    # fastest of three rounds, would keep 1.3x its latency.
    a, b, ref = b"a" * 100_000, b"b" * 200_000, b"r" * 300_000
    device = scripted(lambda model, k: (1.3, 1.6, 1.9)[k] if model == b and k < 3 else 1.0, base=lambda model: len(model) / 1e5)
    stats = measure_models([(a, SHAPE), (b, SHAPE), (ref, SHAPE)], _fast_device(), always=[2], log=lambda s: None, what="t")
    sa, sb, sr = stats
    assert sa["rounds"] == ROUNDS and sa["settled"] and sa["median_ms"] == pytest.approx(device.true_ms(a))
    assert sb["rounds"] == 5 and sb["settled"] and sb["median_ms"] == pytest.approx(device.true_ms(b))
    assert sb["round_medians_ms"][:3] == pytest.approx([device.true_ms(b) * f for f in (1.3, 1.6, 1.9)], rel=1e-5)
    assert sr["rounds"] == 5  # the reference is measured in every extra round, to see the machine meanwhile


def test_a_model_that_never_settles_stops_at_the_round_limit_and_says_so(scripted: Callable[..., ScriptedDevice]) -> None:
    m = b"m" * 100_000
    scripted(lambda model, k: 1.0 + 0.1 * k, base=lambda model: 1.0)  # slower every time: no two rounds agree
    (s,) = measure_models([(m, SHAPE)], _fast_device(), log=lambda s: None, what="t")
    assert s["rounds"] == MAX_ROUNDS and not s["settled"] and s["round_spread_pct"] == pytest.approx(10.0 * (MAX_ROUNDS - 1))


def _judged(within: float, tau: float, *, check: bool, noise: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    figures = {"n": 40, "within_5pct": within, "within_10pct": within, "mape_pct": 5.0, "kendall_tau": tau}
    data = {
        "space": "nb201",
        "device": {"name": "cpu"},
        "calibration": {"fit": {**figures, "n": 100, "within_10pct": 1.0, "kendall_tau": 0.99} if check else figures},
        "check": figures if check else None,
    }
    quiet = {"measurements": 160, "unsettled": 0, "extra_rounds": 0, "agree_pct": 3.0, "max_rounds": 9, "reference_spread_pct": 1.0}
    table = LatencyTable(data=data, path="t.json")
    judge_table(table, noise or quiet, force=force)
    return table.data["verdict"]  # type: ignore[no-any-return]


def test_the_verdict_needs_95_percent_within_10_and_tau_090() -> None:
    assert _judged(0.95, 0.9, check=True)["passed"]
    busy = {"measurements": 160, "unsettled": 31, "extra_rounds": 120, "agree_pct": 3.0, "max_rounds": 9, "reference_spread_pct": 23.0}
    with pytest.raises(UntrustedTableError) as miss:
        _judged(0.875, 0.87, check=True, noise=busy)
    line = str(miss.value)
    assert "\n" not in line and "87.5 % of 40 held-out networks" in line and "Kendall tau 0.87" in line
    assert "31 of 160 measurements never settled" in line and "spread 23.0 %" in line
    assert "quiet the machine" in line and "--force" in line
    with pytest.raises(UntrustedTableError, match=r"Kendall tau 0\.85"):
        _judged(1.0, 0.85, check=True)
    with pytest.raises(UntrustedTableError, match="nan"):
        _judged(1.0, float("nan"), check=True)  # every checked network tied: nothing shows the ranking is right
    with pytest.raises(UntrustedTableError, match=r"calibration fit missed: 77\.0 % of 40 calibration networks.*no --check"):
        _judged(0.77, 0.95, check=False)
    unsteady = {**busy, "unsettled": 9, "measurements": 100}  # the in-sample fit can look perfect on a busy machine
    with pytest.raises(UntrustedTableError, match=r"no --check was run and 9 of 100 measurements never settled"):
        _judged(1.0, 0.99, check=False, noise=unsteady)
    assert _judged(1.0, 0.99, check=True, noise=unsteady)["passed"]  # a held-out check is the direct evidence
    assert _judged(1.0, 0.99, check=False, noise={**unsteady, "unsettled": 5})["passed"]
    with pytest.raises(UntrustedTableError, match="measurements were steady"):
        _judged(0.5, 0.95, check=True)  # a quiet machine and still a miss: the model, not the machine
    kept = _judged(0.875, 0.87, check=True, force=True)
    assert not kept["passed"] and kept["forced"] and "87.5 %" in kept["reason"] and kept["basis"] == "check"


# -- profile: adapt, refuse, or keep with --force -------------------------------------------
def test_a_burst_is_measured_out_and_the_table_passes(scripted: Callable[..., ScriptedDevice]) -> None:
    # Half of all models (blocks and networks alike) are hit by a burst in each of their first three rounds.
    slow = lambda model, k: (1.3, 1.6, 1.9)[k] if _half(model) and k < 3 else 1.0  # noqa: E731
    scripted(slow)
    table = build_table(get_space("nb201"), _fast_device(), calibrate=12, check=12, seed=3)
    verdict = table.data["verdict"]
    assert verdict["passed"] and table.check is not None and table.check["within_10pct"] >= 0.95
    assert verdict["noise"]["extra_rounds"] > 0 and verdict["noise"]["unsettled"] == 0
    assert any(e["rounds"] > ROUNDS for e in table.entries.values())
    # The same burst measured the old way (the fastest of three rounds, nothing more) misses the check.
    import hwnas.profile as profile

    scripted(slow)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(profile, "MAX_ROUNDS", ROUNDS)
        with pytest.raises(UntrustedTableError, match="never settled"):
            build_table(get_space("nb201"), _fast_device(), calibrate=12, check=12, seed=3)


def test_profile_refuses_a_table_whose_check_misses_and_force_keeps_it_marked(
    scripted: Callable[..., ScriptedDevice], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half of all models run 1.5x slower than their weights say, every time: the rounds agree, the model cannot fit.
    scripted(lambda model, k: 1.5 if _half(model) else 1.0)
    out = tmp_path / "t.json"
    argv = ["profile", "--device", "fastcpu", "--calibrate", "10", "--check", "8", "--out", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not written" in err and "held-out networks within +-10 %" in err and "--force" in err
    assert not out.exists()
    assert main([*argv, "--force"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING" in printed and "failing its check" in printed
    table = LatencyTable.load(out)
    assert table.failing and not table.data["verdict"]["passed"] and table.data["verdict"]["forced"]
    assert table.data["verdict"]["within_10pct"] == table.check["within_10pct"] < 0.95  # type: ignore[index]


def test_a_recheck_that_misses_leaves_the_table_as_it_was(
    scripted: Callable[..., ScriptedDevice], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = scripted()
    out = tmp_path / "t.json"
    base = ["profile", "--device", "fastcpu", "--calibrate", "12", "--out", str(out), "-q"]
    assert main([*base, "--check", "8"]) == 0
    before = out.read_bytes()
    assert json.loads(before)["verdict"]["passed"]
    device.slow = lambda model, k: 1.5 if _half(model) else 1.0  # the machine changed under the table
    assert main([*base, "--reuse", "--check", "8"]) == 2
    assert "not written" in capsys.readouterr().err and out.read_bytes() == before


# -- search: refuse a failing table, or use it loudly ------------------------------------------
@pytest.fixture(scope="module")
def failing_table_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A table that failed its check, kept with force (built once: about 10 s)."""
    from hwnas.device import _scan

    with pytest.MonkeyPatch.context() as mp:
        _scripted_machine(mp, tmp_path_factory.mktemp("build"))(lambda model, k: 1.5 if _half(model) else 1.0)
        table = build_table(get_space("nb201"), _fast_device(), calibrate=10, check=8, seed=0, force=True)
    _scan.cache_clear()
    return json.dumps(table.data)


@pytest.fixture
def failing_table(failing_table_json: str, scripted: Callable[..., ScriptedDevice], tmp_path: Path) -> Path:
    scripted()
    path = tmp_path / "tables" / "fastcpu-nb201.json"
    path.parent.mkdir()
    path.write_text(failing_table_json)
    return path


def test_search_refuses_a_failing_table_or_warns_loudly_with_the_override(
    failing_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "--device", "fastcpu", "--latency", "100ms", "--trials", "3", "--strategy", "random", "--no-export"]
    assert main([*argv, "--table", str(failing_table), "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(failing_table) in err and "failed its check" in err
    assert "% of 8 held-out networks within +-10 %" in err and "--allow-failing-table" in err and "hwnas profile" in err
    assert main([*argv, "--allow-failing-table", "--out", str(tmp_path / "r0")]) == 2
    assert "add --table" in capsys.readouterr().err
    out = tmp_path / "r2"
    assert main([*argv, "--table", str(failing_table), "--allow-failing-table", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: latency table" in captured.err and "FAILED its check" in captured.err
    report = json.loads(captured.out)
    assert report["latency_source"] == "lookup table" and report["latency_model"]["failing_table_used_with_override"]


def test_auto_passes_over_a_failing_table_and_measures_live(failing_table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_TABLES", str(failing_table.parent))
    space = get_space("nb201")
    notes: list[str] = []
    model = latency_model_for(_fast_device(), space, "auto", log=notes.append)
    assert isinstance(model, MeasuredLatency) and "failed its check" in notes[0] and "measuring live" in notes[0]
    with pytest.raises(UsageError, match="allow-failing-table"):
        latency_model_for(_fast_device(), space, "lut")
    accepted = LookupTableLatency(_fast_device(), space, LatencyTable.load(failing_table, accept_failing=True))
    assert "FAILED" in (accepted.quality_warning() or "")


def test_a_hand_edited_verdict_is_refused(failing_table: Path) -> None:
    data = json.loads(failing_table.read_text())
    data["verdict"] = {"passed": "no"}
    failing_table.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="verdict"):
        LatencyTable.load(failing_table)


# -- the real thing: this machine under bursty competing load ----------------------------------------
#: Each competing process streams through a 32 MB array for 0.2-1.0 s, then sleeps 0.2-1.0 s.
LOAD = """
import sys, time
import numpy as np
rng = np.random.default_rng(int(sys.argv[1]))
a = np.ones(4 * 2**20)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    stop = time.monotonic() + rng.uniform(0.2, 1.0)
    while time.monotonic() < stop:
        a += 1.0
    time.sleep(rng.uniform(0.2, 1.0))
"""
#: This machine's CPU as ``cpu`` measures it, with fewer repeats so that the test takes minutes.
LOADED_DEVICE = """
name = "cpu25"
kind = "onnxruntime"
provider = "CPUExecutionProvider"
threads = 1
warmup = 3
repeats = 25
"""


def real_structure_of_the_measured_cells(monkeypatch: pytest.MonkeyPatch, calibrate: int, check: int, seed: int) -> set[int]:
    """nb201's real cell-structure features, computed for the cells ``profile`` will measure only
    (all 15,625 take 40 s or more); returns their indices, to check that no other cell was used."""
    from hwnas.benchdata import nb201_table as bench
    from hwnas.profile import sample_archs

    computed: set[int] = set()

    def features(provider: str, **kw: Any) -> np.ndarray:
        space = get_space("nb201")
        rng = np.random.default_rng(seed)
        seen: set[str] = set()
        archs = [a for n in (calibrate, check) for a in sample_archs(space, n, rng, resolutions=None, exclude=seen)]
        out = np.zeros((bench().n, 2 * len(nb201_graph.NODE_TYPES)), np.int16)
        for a in [*archs, space.lut_codec().reference_arch()]:
            i = space.index(a)
            out[i] = nb201_graph.cell_features(bench().genotype(i), provider)
            computed.add(i)
        return out

    monkeypatch.setattr(nb201_graph, "all_cell_features", features)
    return computed


@pytest.mark.slow
def test_profile_under_bursty_load_reaches_the_bar_or_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four bursty CPU- and memory-bound processes beside ``profile --check 40``: either the table
    reaches 95 % within +-10 % and tau 0.9 on its held-out check, or it is refused; never a silent
    bad table (before issue 14 such tables were written at 50-90 % without a word)."""
    computed = real_structure_of_the_measured_cells(monkeypatch, 30, 40, 0)
    (tmp_path / "cpu25.toml").write_text(LOADED_DEVICE)
    out = tmp_path / "cpu25-nb201.json"
    loads = [subprocess.Popen([sys.executable, "-c", LOAD, str(seed), "900"]) for seed in range(4)]
    t0 = time.perf_counter()
    try:
        time.sleep(1.0)
        argv = ["profile", "--device", str(tmp_path / "cpu25.toml"), "--calibrate", "30", "--check", "40", "--out", str(out), "-q"]
        rc = main(argv)
    finally:
        for p in loads:
            p.kill()
        for p in loads:
            p.wait()
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    if rc == 0:
        table = LatencyTable.load(out)
        check = table.check
        assert check is not None and check["within_10pct"] >= 0.95 and check["kendall_tau"] >= 0.9 and table.data["verdict"]["passed"]
        space = get_space("nb201")
        used = [*check["networks"], *table.data["calibration"]["measured"]]
        assert {space.index(space.from_string(n["arch"])) for n in used} <= computed  # real structure features throughout
        print(f"under load: passed, {100 * check['within_10pct']:.1f} % within +-10 %, tau {check['kendall_tau']:.3f}, {seconds:.0f} s")
    else:
        assert rc == 2 and not out.exists(), err
        assert err.count("\n") == 1 and "not written" in err and "quiet the machine" in err and "--force" in err
        print(f"under load: refused in {seconds:.0f} s: {err.strip()}")
