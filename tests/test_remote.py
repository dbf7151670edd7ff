"""The ``remote`` device kind against real agents (subprocesses on 127.0.0.1, see tests/agents.py).

A search measures every trial on the agents; an unreachable agent, a wrong token and another
protocol end in one line within seconds; a farm survives one agent killed mid-search (no trial
lost, none counted twice, no network evaluated twice) and picks a restarted agent up again. The
farm's scheduling (one request per agent, waiting for the first free, cool-down) is tested with
fake agents and a fake clock.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from agents import TOKEN, AgentProc, agent_command, start_agents

from hwnas import trials as T
from hwnas.cli import main
from hwnas.cost import _agent_client, remote
from hwnas.cost.remote import AgentClient, AgentUnavailable, Farm, RemoteLatency, farm_warnings
from hwnas.cost.source import Cost, Metric, device_kind
from hwnas.device import get_device, load_device_file
from hwnas.errors import UsageError
from hwnas.evaluate import EvaluationFailed
from hwnas.spaces import get_space
from hwnas.storage import open_storage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).resolve().parent
#: A mid-sized NB201 cell: fast to measure, slow enough for a stable median.
ARCH_TEXT = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_1x1~2|"


def write_device(folder: Path, urls: list[str], token_file: Path | str, *, name: str = "mypi", repeats: int = 30, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    head = f'name = "{name}"\nkind = "remote"\nurls = {json.dumps(urls)}\ntoken_file = "{token_file}"\n'
    path.write_text(f"{head}warmup = 5\nrepeats = {repeats}\n{extra}")
    return path


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProc]]:
    """Two agents shared by the tests that leave them running."""
    started = start_agents(2, tmp_path_factory.mktemp("agents"))
    yield started
    for a in started:
        a.stop()


@pytest.fixture
def devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A device folder on $HWNAS_DEVICES, a clean device scan and no farms from other tests."""
    from hwnas import device as device_mod

    folder = tmp_path / "devices"
    folder.mkdir()
    monkeypatch.setenv("HWNAS_DEVICES", str(folder))
    monkeypatch.chdir(tmp_path)
    device_mod._scan.cache_clear()
    remote._farms.clear()
    yield folder
    device_mod._scan.cache_clear()
    remote._farms.clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(storage: str) -> tuple[list[T.TrialRecord], list[optuna.trial.FrozenTrial]]:
    from hwnas.search.results import records

    study = optuna.load_study(study_name="hwnas", storage=open_storage(storage))
    return records(study), list(study.get_trials(deepcopy=False))  # records: complete and reused (PRUNED) trials


def _agent_of(record: T.TrialRecord) -> str:
    return str(record.attrs[T.COST_DETAILS]["latency_ms"]["agent"])


def _onnx(arch_text: str = ARCH_TEXT) -> tuple[bytes, tuple[int, ...]]:
    from hwnas.cost._onnx import to_onnx_bytes

    space = get_space("nb201")
    arch = space.from_string(arch_text)
    shape = tuple(space.input_shape(arch))
    return to_onnx_bytes(space.build(arch), shape, exporter="torchscript"), shape


# -- the device file ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("urls = []", "urls is empty"),
        ('urls = "http://pi:8765"', "urls = 'http://pi:8765' has the wrong type; expected list"),
        ("urls = [8765]", "urls holds 8765, not a string"),
        ('urls = ["ftp://pi:8765"]', "each must be http://host:port or https://host[:port]"),
        ('urls = ["http://pi:99999"]', "port is not a number"),
        ('urls = ["http://pi:8765", "http://pi:8765/"]', "lists 'http://pi:8765' twice"),
    ],
)
def test_bad_urls_are_refused_in_one_line(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "mypi.toml"
    path.write_text(f'name = "mypi"\nkind = "remote"\ntoken_file = "t"\n{line}\n')
    with pytest.raises(UsageError) as info:
        load_device_file(path)
    assert needle in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)


def test_device_file_defaults_and_token_path(tmp_path: Path) -> None:
    path = write_device(tmp_path, ["https://pi1", "http://pi2:8765/"], "mypi.token", extra="timeout_s = 60.5\n")
    device = load_device_file(path)
    assert device.settings["urls"] == ["https://pi1", "http://pi2:8765"]
    assert device.settings["token_file"] == str(tmp_path / "mypi.token")  # relative to the device file
    assert (device.provider, device.threads, device.settings["timeout_s"], device.settings["connect_timeout_s"]) == (
        "CPUExecutionProvider",
        1,
        60.5,
        5,
    )
    home = load_device_file(write_device(tmp_path, ["http://pi1:1"], "~/x.token", name="home"))
    assert home.settings["token_file"] == os.path.expanduser("~/x.token")
    with pytest.raises(UsageError, match=r"connect_timeout_s = 0 must be >= 0\.1"):
        load_device_file(write_device(tmp_path, ["http://pi1:1"], "t", name="zero", extra="connect_timeout_s = 0\n"))


@pytest.mark.parametrize("content", [None, "", "two words\n"])
def test_a_missing_or_empty_token_file_says_how_to_make_one(devices: Path, capsys: pytest.CaptureFixture[str], content: str | None) -> None:
    token = devices.parent / "mypi.token"
    if content is not None:
        token.write_text(content)
    write_device(devices, ["http://127.0.0.1:1"], token)
    assert main(["search", "--device", "mypi", "--latency", "50ms", "--trials", "2", "--no-export"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(token) in err and "secrets.token_urlsafe(32)" in err


# -- one line within seconds --------------------------------------------------------
def test_an_unreachable_agent_is_one_line_within_seconds(
    agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    write_device(devices, [agents[0].url, dead], agents[0].token_file)
    t0 = time.monotonic()
    assert main(["search", "--device", "mypi", "--latency", "50ms", "--trials", "2", "--no-export"]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"agent {dead} of device mypi is unreachable (connection refused)" in err
    assert "hwnas-agent --token-file" in err and str(devices / "mypi.toml") in err


def test_a_wrong_token_names_the_token_file(agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = devices.parent / "wrong.token"
    token.write_text("not-the-token\n")
    write_device(devices, [a.url for a in agents], token)
    assert main(["search", "--device", "mypi", "--latency", "50ms", "--trials", "2", "--no-export"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"refused the token in {token}" in err


def test_another_protocol_names_both_versions(
    agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_agent_client, "PROTOCOL", 2)  # the constant the client sends and checks
    write_device(devices, [a.url for a in agents], agents[0].token_file)
    assert main(["search", "--device", "mypi", "--latency", "50ms", "--trials", "2", "--no-export"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused protocol 2" in err and "this agent speaks 1" in err


def test_refusals_are_one_line_usage_errors(agents: list[AgentProc], tmp_path: Path) -> None:
    (small,) = start_agents(1, tmp_path, extra_args=("--max-request-mb", "1"))
    try:
        onnx_bytes, shape = _onnx()
        client = AgentClient(agents[0].url, token=TOKEN, token_file="T", connect_timeout_s=2, timeout_s=60)
        with pytest.raises(UsageError, match=r"refused POST /v1/measure \(HTTP 400\): .*colour") as info:
            client.measure(onnx_bytes, {"input_shape": list(shape), "colour": "blue"})
        assert "\n" not in str(info.value)
        # Refused before the body is read, the agent closes while 20 MiB are still being sent: its answer is read anyway.
        tight = AgentClient(small.url, token=TOKEN, token_file="T", connect_timeout_s=2, timeout_s=60)
        with pytest.raises(UsageError, match=r"HTTP 413.*--max-request-mb"):
            tight.measure(b"x" * (20 * 2**20), {"input_shape": list(shape)})
    finally:
        small.stop()


# -- a search on the farm -----------------------------------------------------------
@pytest.mark.slow
def test_search_measures_every_trial_on_the_agents(agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = [a.url for a in agents]
    write_device(devices, urls, agents[0].token_file)
    argv = ["search", "--device", "mypi", "--latency", "50ms", "--trials", "6", "--strategy", "random", "--no-export", "--json"]
    before = sum(int(a.health()["measurements"]) for a in agents)
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    records, _ = _records(report["storage"])
    assert len(records) == 6
    for r in records:
        assert r.source("latency_ms") == "measured (remote)"
        assert _agent_of(r) in urls and r.attrs[T.COST_DETAILS]["latency_ms"]["repeats"] == 30
    assert {_agent_of(r) for r in records} == set(urls)  # the farm shares the work
    (cost,) = [c for c in report["costs"] if c.get("source") == "remote"]
    assert cost["urls"] == urls and set(cost["fingerprints"]) == set(urls)
    # The reference network on each agent (separate devices drift separately), at the start and the end.
    units = report["reference"]["units"]
    assert set(units) == set(urls) and all([p["trials_done"] for p in u["series"]] == [0, 6] for u in units.values())
    assert all(p["load_1m"] is not None for u in units.values() for p in u["series"])
    # The front re-measured through the farm, predicted (the search's measurement) against re-measured.
    rc = report["recheck"]
    assert rc["done"] and rc["n"] == len(report["front"]) and all(m["measured_source"] == "measured (remote)" for m in rc["members"])
    measured = sum(not r.reused for r in records)
    # The probe, the trials, the reference twice on each agent, the front: nothing else, nothing twice.
    assert sum(int(a.health()["measurements"]) for a in agents) - before == 1 + measured + 2 * 2 + rc["n"]


def test_an_int8_search_quantizes_here_and_sends_the_int8_model_to_the_agents(
    agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent needs only onnxruntime: hwnas quantizes each candidate and sends the QDQ model."""
    import onnx

    write_device(devices, [a.url for a in agents], agents[0].token_file)
    sent: list[set[str]] = []
    real = AgentClient.measure

    def spy(self: AgentClient, onnx_bytes: bytes, settings: dict[str, Any]) -> dict[str, Any]:
        sent.append({n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node})
        return real(self, onnx_bytes, settings)

    monkeypatch.setattr(AgentClient, "measure", spy)
    argv = ["search", "--device", "mypi", "--latency", "50ms", "--trials", "3", "--strategy", "random", "--precision", "int8"]
    assert main([*argv, "--no-export", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["latency_model"]["precision"] == "int8"
    records, _ = _records(report["storage"])
    measured = [r for r in records if not r.reused]
    assert measured and all(r.source("latency_ms") == "measured (remote)" for r in measured)
    quantized = [ops for ops in sent if {"QuantizeLinear", "DequantizeLinear"} <= ops]
    assert len(quantized) >= len(measured), sent  # every candidate reached an agent as an INT8 (QDQ) model


def test_hwnas_devices_shows_each_agents_live_state(agents: list[AgentProc], devices: Path, capsys: pytest.CaptureFixture[str]) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    write_device(devices, [agents[0].url, down], agents[0].token_file)
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    (up_line,) = [line for line in out.splitlines() if line.strip().startswith(agents[0].url)]
    (down_line,) = [line for line in out.splitlines() if line.strip().startswith(down)]
    fp = agents[0].health()["fingerprint"]
    assert "up, idle" in up_line and fp["cpu"] in up_line and f"onnxruntime {fp['onnxruntime']}" in up_line and "load " in up_line
    assert "down: unreachable (connection refused)" in down_line
    assert main(["devices", "--json"]) == 0
    (mypi,) = [d for d in json.loads(capsys.readouterr().out) if d["name"] == "mypi"]
    assert [a["up"] for a in mypi["agents"]] == [True, False] and mypi["agents"][0]["hostname"] == fp["hostname"]


@pytest.mark.slow
def test_remote_latency_keeps_the_contract_and_agrees_with_local(agents: list[AgentProc], devices: Path) -> None:
    from hwnas.cost.measure import measure_onnx

    write_device(devices, [a.url for a in agents], agents[0].token_file)
    device, space = get_device("mypi"), get_space("nb201")
    kind = device_kind("remote")
    kind.preflight(device)
    source = RemoteLatency(device, space)
    (metric,) = source.metrics()
    assert isinstance(metric, Metric) and (metric.name, metric.unit) == ("latency_ms", "ms")
    assert not source.cheap and source.kind == "remote"
    described = json.loads(json.dumps(source.describe()))
    assert described["urls"] == [a.url for a in agents] and described["repeats"] == 30
    assert all(fp["cpu"] and fp["onnxruntime"] for fp in described["fingerprints"].values())
    assert source.warnings() == []  # two agents on one machine are identical devices
    arch = space.from_string(ARCH_TEXT)
    costs = source.costs(arch, lambda: space.build(arch))
    assert set(costs) == {"latency_ms"}
    cost = costs["latency_ms"]
    assert isinstance(cost, Cost) and cost.value > 0 and cost.source == "measured (remote)"
    assert cost.details["agent"] in described["urls"] and cost.details["node_providers"] == {
        "CPUExecutionProvider": cost.details["node_providers"]["CPUExecutionProvider"]
    }
    bound, smallest = source.lower_bound("latency_ms")  # type: ignore[misc]
    space.validate(smallest)
    assert bound.value <= cost.value
    # The kind's measure (hwnas profile, the export's re-measurement) and the same model timed here.
    onnx_bytes, shape = _onnx()
    there = kind.measure(device, onnx_bytes, shape)  # type: ignore[misc]
    here = measure_onnx(onnx_bytes, shape, **device.measurement_settings())
    assert 0.5 < there.median_ms / here.median_ms < 2, (there, here)
    assert 0.5 < cost.value / here.median_ms < 2, (cost, here)
    fp, rt = kind.fingerprint(device), kind.runtime(device)
    assert set(fp) == {"machine", "cpu", "cores", "isa", "gpu"} and fp["gpu"] is None
    assert rt["onnxruntime"] == described["fingerprints"][agents[0].url]["onnxruntime"] and rt["torch"]


# -- faults -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_search_survives_an_agent_killed_mid_search(tmp_path: Path) -> None:
    farm_agents = start_agents(2, tmp_path)
    try:
        folder = tmp_path / "devices"
        # More repeats: the search must still be running when the second trial is done.
        write_device(folder, [a.url for a in farm_agents], farm_agents[0].token_file, repeats=150)
        out = tmp_path / "run"
        env = {**os.environ, "HWNAS_DEVICES": str(folder), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "hwnas", "search", "--device", "mypi", "--latency", "50ms", "--trials", "12"]
        search = subprocess.Popen(
            [*cmd, "--strategy", "random", "--no-export", "--out", str(out)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        storage = f"journal:{out / 'study.journal'}"
        killed: AgentProc | None = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and search.poll() is None:
            time.sleep(0.05)
            if not (out / "study.journal").exists():
                continue
            try:
                records, _ = _records(storage)
            except (KeyError, ValueError):  # the study is still being created
                continue
            if len(records) >= 2:
                last = max(records, key=lambda r: r.number)
                killed = next(a for a in farm_agents if a.url == _agent_of(last))
                killed.proc.kill()
                killed.proc.wait()
                kill_time = datetime.now()
        assert killed is not None, "the search ended before its second trial was seen"
        _, err = search.communicate(timeout=120)
        assert search.returncode == 0, err
        survivor = next(a for a in farm_agents if a is not killed).url
        records, every = _records(storage)
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # PRUNED: a reused network
        assert len(records) == 12 and all(t.state in done for t in every), [t.state for t in every]
        by_number = {r.number: r for r in records}
        fresh = [r for r in records if not r.reused]
        assert len({r.arch for r in fresh}) == len(fresh)  # no network evaluated twice
        for r in records:
            if r.reused:
                assert r.values == by_number[r.attrs[T.REUSED_FROM]].values
        after = [r for r in fresh if _started(every, r.number) > kill_time]
        assert after and all(_agent_of(r) == survivor for r in after)
    finally:
        for a in farm_agents:
            a.stop()


def _started(trials: list[optuna.trial.FrozenTrial], number: int) -> datetime:
    (t,) = [t for t in trials if t.number == number]
    assert t.datetime_start is not None
    return t.datetime_start


@pytest.mark.slow
def test_the_farm_fails_over_and_picks_a_restarted_agent_up_again(tmp_path: Path) -> None:
    a, b = start_agents(2, tmp_path)
    restarted: subprocess.Popen[str] | None = None
    try:
        clients = [AgentClient(x.url, token=TOKEN, token_file=str(x.token_file), connect_timeout_s=2, timeout_s=60) for x in (a, b)]
        farm = Farm("mypi", clients, cool_down_s=1.0)
        onnx_bytes, shape = _onnx()
        settings = {"input_shape": list(shape), "batch": 1, "warmup": 1, "repeats": 5, "threads": 1, "provider": "CPUExecutionProvider"}
        assert {farm.measure(onnx_bytes, settings)[1] for _ in range(2)} == {a.url, b.url}
        a.proc.kill()
        a.proc.wait()
        assert [farm.measure(onnx_bytes, settings)[1] for _ in range(3)] == [b.url] * 3
        assert list(farm.down()) == [a.url] and "connection refused" in farm.down()[a.url]
        solo = Farm("solo", [clients[0]], cool_down_s=1.0)
        with pytest.raises(
            EvaluationFailed, match=rf"no agent of device solo answered: agent {a.url} is unreachable \(connection refused\)"
        ):
            solo.measure(onnx_bytes, settings)
        restarted = subprocess.Popen(
            agent_command("--token-file", str(a.token_file), "--host", "127.0.0.1", "--port", str(a.port)),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert restarted.stdout is not None and restarted.stdout.readline().startswith(f"hwnas-agent listening on {a.url}")
        with pytest.raises(EvaluationFailed, match="down since"):  # still cooling down: not asked
            solo.measure(onnx_bytes, settings)
        time.sleep(1.1)
        assert solo.measure(onnx_bytes, settings)[1] == a.url and solo.down() == {}
        assert a.url in {farm.measure(onnx_bytes, settings)[1] for _ in range(2)} and farm.down() == {}
    finally:
        if restarted is not None:
            restarted.terminate()
            restarted.communicate(timeout=15)
        for x in (a, b):
            x.stop()


# -- the farm's scheduling, with fake agents ------------------------------------------
class FakeAgent:
    """Counts concurrent requests; ``fail`` makes it unavailable."""

    connect_timeout_s = 1.0

    def __init__(self, url: str, *, fail: bool = False, seconds: float = 0.02) -> None:
        self.url, self.fail, self.seconds = url, fail, seconds
        self.active = self.most = self.calls = 0
        self.lock = threading.Lock()

    def health(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Busy while this process measures on it (other processes' requests are not modelled);
        a failing agent's health request counts as a call, as a measurement would."""
        if self.fail:
            with self.lock:
                self.calls += 1
            raise AgentUnavailable(f"agent {self.url} is unreachable (connection refused)")
        return {"busy": self.active > 0}

    def measure(self, onnx_bytes: bytes, settings: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        if self.fail:
            raise AgentUnavailable(f"agent {self.url} is unreachable (connection refused)")
        return {"measurement": {"median_ms": 1.0}}


def test_one_request_per_agent_and_waiting_for_the_first_free() -> None:
    fakes = [FakeAgent("http://a:1"), FakeAgent("http://b:1")]
    farm = Farm("mypi", fakes, cool_down_s=5)  # type: ignore[arg-type]
    with ThreadPoolExecutor(6) as pool:
        urls = list(pool.map(lambda _: farm.measure(b"", {})[1], range(24)))
    assert all(f.most == 1 for f in fakes) and sum(f.calls for f in fakes) == 24
    assert set(urls) == {"http://a:1", "http://b:1"}


def test_a_down_agent_rests_for_the_cool_down_then_is_tried_again() -> None:
    now = [100.0]
    bad, good = FakeAgent("http://bad:1", fail=True, seconds=0), FakeAgent("http://good:1", seconds=0)
    farm = Farm("mypi", [bad, good], cool_down_s=5, clock=lambda: now[0])  # type: ignore[list-item]
    assert [farm.measure(b"", {})[1] for _ in range(4)] == ["http://good:1"] * 4
    assert bad.calls == 1 and list(farm.down()) == ["http://bad:1"]
    now[0] += 5
    assert [farm.measure(b"", {})[1] for _ in range(2)] == ["http://good:1"] * 2
    assert bad.calls == 2  # tried once more after its cool-down, and marked down again
    good.fail = True
    with pytest.raises(EvaluationFailed, match=r"no agent of device mypi answered: agent http://good:1 is unreachable") as info:
        farm.measure(b"", {})
    assert "http://bad:1" in str(info.value) and "down since" in str(info.value)


def test_a_farm_of_different_devices_is_warned_about(tmp_path: Path) -> None:
    device = load_device_file(write_device(tmp_path, ["http://a:1", "http://b:1"], "t"))
    same = {"cpu": "Cortex-A72", "machine": "aarch64", "onnxruntime": "1.20.0"}
    assert farm_warnings(device, {"http://a:1": same, "http://b:1": dict(same)}) == []
    (line,) = farm_warnings(device, {"http://a:1": same, "http://b:1": {**same, "cpu": "Cortex-A76"}})
    assert "not identical" in line and "'Cortex-A72' at http://a:1 != 'Cortex-A76' at http://b:1" in line and "\n" not in line


@pytest.mark.slow
def test_profile_through_two_agents_then_search_with_the_table(
    agents: list[AgentProc], devices: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table is built through the farm and keyed to the agents; a search predicts with it and
    re-measures its front through the farm (lookup table against re-measured)."""
    import numpy as np

    from hwnas.benchdata import nb201_table as bench
    from hwnas.cost.lut import LatencyTable
    from hwnas.profile import build_table
    from hwnas.spaces import _nb201_graph as nb201_graph

    # The real cell-structure features take ~40 s (they are tested in test_lut); stand-ins here.
    fake = np.stack([nb201_graph.op_counts(bench().genotype(i)) * 2 for i in range(bench().n)]).astype(np.int16)
    fake = np.pad(fake, ((0, 0), (0, 2 * len(nb201_graph.NODE_TYPES) - fake.shape[1])))
    monkeypatch.setattr(nb201_graph, "all_cell_features", lambda provider, **kw: fake)
    write_device(devices, [a.url for a in agents], agents[0].token_file, repeats=10)
    device = get_device("mypi")
    before = [int(a.health()["measurements"]) for a in agents]
    table = build_table(get_space("nb201"), device, calibrate=8, check=4, seed=1, force=True)  # a 4-network check may miss
    assert all(int(a.health()["measurements"]) > b for a, b in zip(agents, before, strict=True))  # both agents measured
    fp = agents[0].health()["fingerprint"]
    assert table.data["device"]["fingerprint"]["cpu"] == fp["cpu"] and table.data["runtime"]["onnxruntime"] == fp["onnxruntime"]
    path = tmp_path / "mypi-nb201.json"
    table.save(path)
    assert LatencyTable.load(path).mismatches_for(device) == []
    argv = ["search", "--device", "mypi", "--latency", "50ms", "--trials", "8", "--strategy", "random", "--no-export"]
    argv += ["--allow-failing-table"]  # the table is used whatever its 4-network check says; test_lut_trust tests the verdict
    assert main([*argv, "--latency-source", "lut", "--table", str(path), "--json", "--out", str(tmp_path / "run")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latency_source"] == "lookup table"
    rc = report["recheck"]
    assert rc["done"] and rc["n"] == len(report["front"]) and {m["predicted_source"] for m in rc["members"]} == {"lookup table"}
    assert all(m["measured_source"] == "measured (remote)" for m in rc["members"])
