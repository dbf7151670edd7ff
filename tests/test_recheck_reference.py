"""The final front re-measured on the device, and the reference network that watches for drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from hwnas.cli import main
from hwnas.search import Search, SearchConfig
from hwnas.search import recheck as R
from hwnas.search import reference as ref


def _config(tmp: Path, **kw: Any) -> SearchConfig:
    base: dict[str, Any] = dict(space="nb201", device="cpu", latency_ms=50.0, trials=12, strategy="random", seed=0, out=str(tmp / "run"))
    base.update(kw)
    return SearchConfig(**base)


def _study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def _check(study: optuna.Study, done: int, ms: dict[str, float], **extra: Any) -> None:
    on = {unit: {"median_ms": v, **extra} for unit, v in ms.items()}
    study.set_user_attr(f"{ref.PREFIX}{done:07d}", {"trials_done": done, "arch": "A", "every": 10, "on": on})


# -- the reference network ------------------------------------------------------------
def test_a_steady_device_is_reported_as_such() -> None:
    study = _study()
    for done, v in ((0, 2.00), (10, 2.06), (20, 1.95), (25, 2.02)):
        _check(study, done, {"local": v})
    s = ref.summary(study, "cpu")
    assert s is not None and not s["drifted"] and s["every_trials"] == 10
    u = s["units"]["local"]
    assert (u["checks"], u["first_ms"], u["last_ms"], u["min_ms"], u["max_ms"]) == (4, 2.0, 2.02, 1.95, 2.06)
    assert u["max_move_pct"] == 3.0 and u["max_move_at_trial"] == 10
    assert s["message"].startswith("no drift") and "within 3.0 %" in s["message"] and "1.95-2.06 ms" in s["message"]


def test_a_throttling_agent_is_named_with_its_clock_and_temperature() -> None:
    study = _study()
    _check(study, 0, {"http://a:1": 2.0, "http://b:1": 2.0}, cpu_mhz=1800, temperature_c=50)
    _check(study, 10, {"http://a:1": 2.1, "http://b:1": 2.9}, cpu_mhz=1200, temperature_c=82)
    _check(study, 20, {"http://a:1": 2.0, "http://b:1": 2.1}, cpu_mhz=1800, temperature_c=60)
    s = ref.summary(study, "mypi")
    assert s is not None and s["drifted"]
    assert s["units"]["http://b:1"]["max_move_pct"] == 45.0 and s["units"]["http://a:1"]["max_move_pct"] == 5.0
    msg = s["message"]
    assert msg.startswith("warning: mypi drifted") and "agent http://b:1" in msg and "+45 %" in msg and "at trial 10" in msg
    assert "1200 MHz, 82 °C at trial 10" in msg and "1800 MHz, 50 °C at the start" in msg


def test_no_checks_no_section_and_a_failed_unit_is_left_out() -> None:
    study = _study()
    assert ref.summary(study, "pixel3") is None
    study.set_user_attr(f"{ref.PREFIX}0000000", {"trials_done": 0, "on": {"http://a:1": "agent http://a:1 is unreachable"}})
    s = ref.summary(study, "mypi")
    assert s is not None and s["units"] == {} and "could not be measured" in s["message"]


def test_the_monitor_checks_at_the_start_every_k_trials_and_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hwnas.cost.source as source

    search = Search(_config(tmp_path, trials=100))
    monitor = search.monitor
    assert monitor.active and monitor.every == 25  # about CHECKS checks over the budget
    times = iter([2.0, 2.04, 3.0, 2.1, 2.0])
    calls: list[bytes] = []

    def fake(device: Any, onnx_bytes: bytes, shape: tuple[int, ...]) -> dict[str, Any]:
        calls.append(onnx_bytes)
        return {"local": {"median_ms": next(times)}}

    monkeypatch.setattr(source, "measure_each", fake)
    lines: list[str] = []
    monitor.log = lines.append
    study = _study()
    for done in (0, 3, 24, 25, 31):  # checkpoints 0 and 25
        monitor.checkpoint(study, done)
    monitor.checkpoint(study, 50)  # +50 %: a warning at once
    monitor.checkpoint(study, 63, final=True)
    monitor.checkpoint(study, 63, final=True)  # once
    assert [c["trials_done"] for c in ref.checks(study)] == [0, 25, 50, 63]
    assert len(calls) == 4 and len(set(calls)) == 1  # exported once, measured at each checkpoint
    assert len(lines) == 1 and "+50 %" in lines[0] and lines[0].startswith("warning: the reference network now takes 3 ms on cpu")
    # Another worker (or a resumed run) finds the checkpoints taken.
    other = Search(_config(tmp_path, trials=100)).monitor
    other.checkpoint(study, 25)
    other.checkpoint(study, 75)  # claimed before measuring: a worker reaching it meanwhile skips it
    assert len(calls) == 5
    claimed = {"trials_done": 100, "by": "elsewhere", "on": {}, "claimed": True}
    study.set_user_attr(f"{ref.PREFIX}{100:07d}", claimed)
    other.checkpoint(study, 100)
    assert len(calls) == 5


def test_the_reference_is_the_tables_reference_network() -> None:
    from hwnas.spaces import get_space

    nb201 = get_space("nb201")
    assert ref.reference_arch(nb201) == nb201.lut_codec().reference_arch()


def test_a_table_device_makes_no_checks(tmp_path: Path) -> None:
    search = Search(_config(tmp_path, device="pixel3", latency_ms=5.0, trials=6))
    assert not search.monitor.active
    report = search.run()
    assert report["reference"] is None
    assert report["recheck"]["done"] is False and "table device" in report["recheck"]["why"]


# -- the front re-measured ------------------------------------------------------------
@pytest.mark.slow
def test_a_live_search_rechecks_its_front_and_watches_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--device", "cpu", "--latency", "50ms", "--trials", "12", "--strategy", "random", "--out", str(tmp_path / "r")]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rc = report["recheck"]
    front = {m["trial"] for m in report["front"]}
    assert rc["done"] and rc["n"] == len(front) == len(rc["members"]) and {m["trial"] for m in rc["members"]} == front
    for m in rc["members"]:
        assert m["measured_ms"] > 0 and m["predicted_source"] == "measured" and m["meets_budget"] is True
        assert m["error_pct"] == pytest.approx(100 * (m["predicted_ms"] - m["measured_ms"]) / m["measured_ms"], abs=0.01)
    assert report["best"]["remeasured_latency_ms"] > 0 and report["best"]["meets_budget_when_remeasured"] is True
    s = report["reference"]
    assert [p["trials_done"] for p in s["units"]["local"]["series"]] == [0, 12]
    # A rerun of the finished search measures nothing again and reports the same.
    assert main([*argv, "--json", "--no-export"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["recheck"] == rc and again["reference"] == s


def test_a_best_that_misses_the_budget_on_recheck_gives_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup table (here: the search's own numbers) that under-predicts the most accurate network:
    re-measured over the budget, the best is the most accurate one the device confirms."""
    search = Search(_config(tmp_path, device="pixel3", latency_ms=5.0, trials=30, strategy="random"))
    report = search.run()
    study = search._study()
    top = report["best"]["trial"]
    front = [m["trial"] for m in report["front"]]
    assert len(front) >= 2, front
    # Pretend pixel3 could be measured: the top network takes 2x its table latency, the others 1.01x.
    import hwnas.cost.source as source
    from hwnas.cost.measure import Measurement

    kind = source.device_kind("table")
    fake_kind = source.DeviceKind(
        name="table", keys=kind.keys, latency=kind.latency, parse=kind.parse, covers=kind.covers, measure=lambda *a: None
    )
    monkeypatch.setattr(source, "device_kind", lambda name: fake_kind)

    def measure(plan: Any, r: Any) -> dict[str, Any]:
        factor = 2.0 if r.number == top else 1.01
        m = Measurement(r.cost("latency_ms") * factor, 0, 0, 0, 1, 0, 1, 1, "CPUExecutionProvider")
        return {"median_ms": m.median_ms, "p90_ms": m.p90_ms, "iqr_ms": m.iqr_ms, "source": "measured"}

    monkeypatch.setattr(R, "_measure", measure)
    from hwnas.search import results

    lines: list[str] = []
    again = results.report(search.plan, study, log=lines.append)
    rc = again["recheck"]
    assert rc["done"] and rc["best_changed_from"] == top and rc["best"] != top
    members = {m["trial"]: m for m in rc["members"]}
    want = max((m for t, m in members.items() if m["measured_ms"] <= 5.0), key=lambda m: m["accuracy"])
    assert rc["best"] == want["trial"] and again["best"]["trial"] == want["trial"] and again["best"]["chosen_over"] == top
    assert again["arch"] == want["arch"] and again["best"]["meets_budget_when_remeasured"] is True
    assert rc["over_budget_when_measured"] == [top] or members[top]["measured_ms"] > 5.0
    assert f"the most accurate, trial {top}" in rc["message"] and lines and "re-measuring" in lines[0]
