"""The device agent (agent/, protocol in agent/PROTOCOL.md), run as real subprocesses on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from agents import AgentProc, agent_command, start_agents, two_agents  # noqa: F401  (two_agents: a fixture)
from hwnas_agent import checks
from onnx import TensorProto, external_data_helper, helper

SETTINGS = {"input_shape": [3, 32, 32], "warmup": 5, "repeats": 30}
TINY_SETTINGS = {"input_shape": [3, 4, 4], "warmup": 1, "repeats": 3}


# ---------------------------------------------------------------- models


@pytest.fixture(scope="module")
def nb201_bytes() -> bytes:
    import torch

    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.spaces import get_space

    space = get_space("nb201")
    arch = space.sample(np.random.default_rng(0))
    torch.manual_seed(0)
    return to_onnx_bytes(space.build(arch), (3, 32, 32), exporter="torchscript")


def _model(nodes: list[onnx.NodeProto], *, initializers: tuple[onnx.TensorProto, ...] = (), **kw: Any) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
        initializer=list(initializers),
    )
    kw.setdefault("opset_imports", [helper.make_opsetid("", 18)])
    return helper.make_model(graph, ir_version=9, **kw)


def tiny_model() -> bytes:
    return _model([helper.make_node("Relu", ["input"], ["out"])]).SerializeToString()


def external_data_model() -> bytes:
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 4, 4], np.zeros(48, dtype=np.float32).tobytes(), raw=True)
    external_data_helper.set_external_data(w, location="../../etc/passwd", offset=0, length=192)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    return _model([helper.make_node("Add", ["input", "w"], ["out"])], initializers=(w,)).SerializeToString()


def custom_domain_model() -> bytes:
    return _model([helper.make_node("Evil", ["input"], ["out"], domain="com.evil")]).SerializeToString()


def custom_opset_model() -> bytes:
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.evil", 1)]
    return _model([helper.make_node("Evil", ["input"], ["out"], domain="com.evil")], opset_imports=opsets).SerializeToString()


def subgraph_custom_domain_model() -> bytes:
    def branch(domain: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Evil" if domain else "Identity", ["input"], ["y"], domain=domain)],
            "b",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        )

    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=branch("com.evil"), else_branch=branch(""))
    return _model([node], initializers=(cond,)).SerializeToString()


def local_function_model() -> bytes:
    fn = helper.make_function("local", "MyRelu", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [helper.make_opsetid("", 18)])
    opsets = [helper.make_opsetid("", 18)]
    return _model(
        [helper.make_node("MyRelu", ["input"], ["out"], domain="local")], functions=[fn], opset_imports=opsets
    ).SerializeToString()


HOSTILE_MODELS = {
    "external data": (external_data_model, "external data"),
    "custom domain node": (custom_domain_model, "com.evil"),
    "custom opset import": (custom_opset_model, "com.evil"),
    "custom domain in an If branch": (subgraph_custom_domain_model, "com.evil"),
    "model-local function": (local_function_model, "model-local function"),
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    (a,) = start_agents(1, tmp_path_factory.mktemp("agent"))
    yield a
    a.stop()


@pytest.fixture(scope="module")
def strict_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An agent with a 1 MiB body limit and a 2 s request timeout."""
    (a,) = start_agents(1, tmp_path_factory.mktemp("strict"), extra_args=("--max-request-mb", "1", "--request-timeout", "2"))
    yield a
    code, err = a.stop()
    assert code == 0 and "Traceback" not in err, err


def _assert_refused(result: tuple[int, dict[str, Any]], status: int, *needles: str) -> None:
    got, body = result
    assert got == status, body
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for needle in needles:
        assert needle in body["error"], body


# ---------------------------------------------------------------- measuring


def test_health(agent: AgentProc) -> None:
    body = agent.health()
    assert body["protocol"] == 1 and body["agent_version"] == "0.1.0" and body["busy"] is False
    fp = body["fingerprint"]
    for key in ("machine", "cpu", "isa", "os", "python", "onnxruntime", "providers", "cpu_mhz", "temperature_c", "hostname"):
        assert key in fp
    assert "CPUExecutionProvider" in fp["providers"]


@pytest.mark.slow
def test_measurement_matches_local(agent: AgentProc, nb201_bytes: bytes) -> None:
    from hwnas.cost.measure import measure_onnx

    status, body = agent.measure(nb201_bytes, SETTINGS)
    assert status == 200, body
    m = body["measurement"]
    assert set(m) == {"median_ms", "p90_ms", "iqr_ms", "min_ms", "repeats", "warmup", "threads", "batch", "provider"}
    assert (m["repeats"], m["warmup"], m["threads"], m["batch"], m["provider"]) == (30, 5, 1, 1, "CPUExecutionProvider")
    assert 0 < m["min_ms"] <= m["median_ms"] <= m["p90_ms"]
    local = measure_onnx(nb201_bytes, (3, 32, 32), warmup=5, repeats=30)
    assert 0.5 < m["median_ms"] / local.median_ms < 2.0, (m, local)
    # node_providers: every node of the optimised graph ran on the CPU provider
    assert set(body["node_providers"]) == {"CPUExecutionProvider"} and body["node_providers"]["CPUExecutionProvider"] > 10
    assert body["queued_ms"] >= 0 and body["session_ms"] > 0 and body["finished"] > body["started"]
    assert agent.health()["measurements"] >= 1


def test_node_providers_off_and_defaults(agent: AgentProc) -> None:
    status, body = agent.measure(tiny_model(), {"input_shape": [3, 4, 4], "node_providers": False})
    assert status == 200, body
    assert body["node_providers"] is None
    assert (body["measurement"]["warmup"], body["measurement"]["repeats"]) == (20, 100)


def test_concurrent_measurements_are_serialised(agent: AgentProc, nb201_bytes: bytes) -> None:
    results: list[tuple[int, dict[str, Any]]] = []
    settings = {**SETTINGS, "warmup": 0, "repeats": 200, "node_providers": False}

    def go() -> None:
        results.append(agent.measure(nb201_bytes, settings))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [s for s, _ in results] == [200, 200], results
    first, second = sorted((b for _, b in results), key=lambda b: b["started"])
    assert first["finished"] <= second["started"]  # the timed windows never overlap
    # ...although the second arrived while the first was running: it waited on the lock.
    assert second["started"] - second["queued_ms"] / 1e3 < first["finished"]
    assert second["queued_ms"] > 10


def test_two_agents_fixture(request: pytest.FixtureRequest) -> None:
    pair: list[AgentProc] = request.getfixturevalue("two_agents")
    assert len({a.url for a in pair}) == 2
    for a in pair:
        assert a.health()["protocol"] == 1
    code, err = pair[0].stop()
    assert code == 0 and "Traceback" not in err, err
    assert pair[1].health()["protocol"] == 1


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", sorted(HOSTILE_MODELS))
def test_hostile_model_refused(strict_agent: AgentProc, name: str) -> None:
    make, needle = HOSTILE_MODELS[name]
    _assert_refused(strict_agent.measure(make(), TINY_SETTINGS), 400, needle)
    assert strict_agent.health()["protocol"] == 1


def test_truncated_model_refused(strict_agent: AgentProc, nb201_bytes: bytes) -> None:
    _assert_refused(strict_agent.measure(nb201_bytes[: len(nb201_bytes) // 2], SETTINGS), 400, "not an ONNX model (protobuf:")
    assert strict_agent.health()["protocol"] == 1


def test_external_data_path_never_opened(strict_agent: AgentProc) -> None:
    # The refusal names the location; the agent never reads it (PROTOCOL.md), so no file content leaks.
    status, body = strict_agent.measure(external_data_model(), TINY_SETTINGS)
    assert status == 400 and "root:" not in body["error"]


@pytest.mark.parametrize(
    ("headers", "status", "needles"),
    [
        ({"Authorization": "Bearer wrong"}, 401, ("wrong token",)),
        ({"Authorization": None}, 401, ("missing token",)),
        ({"Authorization": "Basic abc"}, 401, ("missing token",)),
        ({"X-Hwnas-Protocol": "2"}, 426, ("1", "'2'")),
        ({"X-Hwnas-Protocol": None}, 426, ("1", "None")),
    ],
)
def test_auth_and_protocol_refused(strict_agent: AgentProc, headers: dict[str, Any], status: int, needles: tuple[str, ...]) -> None:
    _assert_refused(strict_agent.request("GET", "/v1/health", headers=headers), status, *needles)
    _assert_refused(strict_agent.measure(tiny_model(), TINY_SETTINGS, headers=headers), status, *needles)
    assert strict_agent.health()["protocol"] == 1


def test_failed_token_is_logged(strict_agent: AgentProc) -> None:
    strict_agent.request("GET", "/v1/health", headers={"Authorization": "Bearer nope-logged"})
    time.sleep(0.2)
    lines = [ln for ln in strict_agent.stderr().splitlines() if "wrong token" in ln]
    assert lines and "127.0.0.1" in lines[-1]


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ("{not json", ("not JSON",)),
        ("[1, 2]", ("JSON object",)),
        ({"input_shape": [3, 4, 4], "colour": "red"}, ("unknown", "colour")),
        ({"input_shape": [3, 4, 4], "batch": 0}, ("batch", "1..4096")),
        ({"input_shape": [3, 4, 4], "batch": True}, ("batch",)),
        ({"input_shape": [3, 4, 4], "repeats": 10**7}, ("repeats",)),
        ({"input_shape": [3, 4, 4], "warmup": -1}, ("warmup",)),
        ({"input_shape": [3, 4, 4], "threads": 2000}, ("threads",)),
        ({"input_shape": [3, 4, 4], "threads": "2"}, ("threads",)),
        ({"input_shape": [3, 4]}, ("input_shape",)),
        ({"input_shape": [3, 4, 5000]}, ("input_shape",)),
        ({"input_shape": [3, 0, 4]}, ("input_shape",)),
        ({}, ("input_shape",)),
        ({"input_shape": [3, 4, 4], "provider": "NoSuchExecutionProvider"}, ("NoSuchExecutionProvider", "CPUExecutionProvider")),
        ({"input_shape": [3, 4, 4], "node_providers": 1}, ("node_providers",)),
        (None, ("X-Hwnas-Settings",)),
    ],
)
def test_bad_settings_refused(strict_agent: AgentProc, settings: Any, needles: tuple[str, ...]) -> None:
    value = settings if isinstance(settings, str) or settings is None else json.dumps(settings)
    result = strict_agent.request("POST", "/v1/measure", tiny_model(), headers={"X-Hwnas-Settings": value})
    _assert_refused(result, 400, *needles)
    assert strict_agent.health()["protocol"] == 1


def test_runtime_error_refused(strict_agent: AgentProc) -> None:
    # The tiny model's input is fixed at (1, 3, 4, 4): ONNX Runtime refuses (1, 3, 5, 5).
    _assert_refused(strict_agent.measure(tiny_model(), {**TINY_SETTINGS, "input_shape": [3, 5, 5]}), 400, "onnxruntime:")
    status, _ = strict_agent.measure(tiny_model(), TINY_SETTINGS)
    assert status == 200


def test_oversized_body_refused_before_reading(strict_agent: AgentProc) -> None:
    conn = http.client.HTTPConnection(strict_agent.host, strict_agent.port, timeout=10)
    conn.putrequest("POST", "/v1/measure")
    for k, v in {"Authorization": f"Bearer {strict_agent.token}", "X-Hwnas-Protocol": "1", "Content-Length": str(2 * 2**20)}.items():
        conn.putheader(k, v)
    conn.putheader("X-Hwnas-Settings", json.dumps(TINY_SETTINGS))
    conn.endheaders()  # no body sent: the refusal comes from Content-Length alone
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 413 and "limit" in body["error"], body
    assert strict_agent.health()["protocol"] == 1


def test_unknown_path_and_missing_length(strict_agent: AgentProc) -> None:
    _assert_refused(strict_agent.request("GET", "/etc/passwd"), 404, "unknown path")
    _assert_refused(strict_agent.request("POST", "/v1/health", b"x"), 404, "unknown path")
    with socket.create_connection((strict_agent.host, strict_agent.port), timeout=10) as s:
        s.sendall(
            f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {strict_agent.token}\r\nX-Hwnas-Protocol: 1\r\n\r\n".encode()
        )
        assert b" 411 " in s.recv(4096).split(b"\r\n", 1)[0]
    # http.server answers an unparseable request line HTTP/0.9-style: the body alone, no status line.
    for raw, status in ((b"PUT /v1/measure HTTP/1.1\r\nHost: x\r\n\r\n", b" 501 "), (b"GARBAGE\r\n\r\n", b"")):
        with socket.create_connection((strict_agent.host, strict_agent.port), timeout=10) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(4096):  # the agent closes after a refusal
                answer += chunk
            head, _, body = answer.rpartition(b"\r\n\r\n")
            assert status in head.split(b"\r\n", 1)[0] and "error" in json.loads(body), answer
    assert strict_agent.health()["protocol"] == 1


def test_half_sent_request_dropped(strict_agent: AgentProc) -> None:
    head = (
        "POST /v1/measure HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {strict_agent.token}\r\nX-Hwnas-Protocol: 1\r\n"
        f"X-Hwnas-Settings: {json.dumps(TINY_SETTINGS)}\r\nContent-Length: 1000\r\n\r\n"
    )
    t0 = time.monotonic()
    with socket.create_connection((strict_agent.host, strict_agent.port), timeout=15) as s:
        s.sendall(head.encode() + b"0123456789")
        assert s.recv(4096) == b""  # the agent closed the connection
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 10, elapsed
    assert strict_agent.health()["protocol"] == 1


# ---------------------------------------------------------------- checks in process (both parsers)


@pytest.mark.parametrize("use_onnx", [None, False])
@pytest.mark.parametrize("name", sorted(HOSTILE_MODELS))
def test_checks_both_parsers(name: str, use_onnx: bool | None) -> None:
    make, needle = HOSTILE_MODELS[name]
    with pytest.raises(checks.ModelRejected, match=needle):
        checks.check_model(make(), use_onnx=use_onnx)
    checks.check_model(tiny_model(), use_onnx=use_onnx)
    with pytest.raises(checks.ModelRejected, match=r"not an ONNX model \(protobuf:"):
        checks.check_model(tiny_model()[:-7], use_onnx=use_onnx)


def test_checks_without_onnx_importable(monkeypatch: pytest.MonkeyPatch, nb201_bytes: bytes) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    assert checks._import_onnx() is None
    checks.check_model(nb201_bytes)
    with pytest.raises(checks.ModelRejected, match="external data"):
        checks.check_model(external_data_model())
    with pytest.raises(checks.ModelRejected, match="IR version"):
        checks.check_model(_model([helper.make_node("Relu", ["input"], ["out"])]).SerializeToString().replace(b"\x08\x09", b"\x08\x63", 1))


def test_minimal_schema_field_numbers_match_onnx() -> None:
    for message, fields in checks._SCHEMA:
        descriptor = getattr(onnx, message).DESCRIPTOR
        for name, number, _, label, type_name in fields:
            real = descriptor.fields_by_name[name]
            repeated = real.is_repeated if hasattr(real, "is_repeated") else real.label == real.LABEL_REPEATED
            assert (real.number, repeated) == (number, label == 3), (message, name)
            assert (real.message_type.name if real.message_type else "") == type_name, (message, name)


# ---------------------------------------------------------------- process-level


def test_agent_imports_no_heavy_packages() -> None:
    code = (
        "import sys, hwnas_agent.server, hwnas_agent.cli, hwnas_agent.timing, hwnas_agent.checks; "
        "assert not {'torch','optuna','hwnas'} & set(m.split('.')[0] for m in sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--token-file", "/nonexistent/token"], "cannot read --token-file"),
        (["--token-file", "EMPTY"], "is empty"),
        (["--token-file", "TOKEN", "--port", "99999"], "--port"),
        (["--token-file", "TOKEN", "--threads", "0"], "--threads"),
        (["--token-file", "TOKEN", "--provider", "NoSuchExecutionProvider"], "not available"),
        (["--port", "0"], "--token-file"),
        (["--token-file", "TOKEN", "--bogus"], "--bogus"),
    ],
)
def test_bad_cli_input(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "EMPTY").write_text(" \n")
    (tmp_path / "TOKEN").write_text("t\n")
    args = [str(tmp_path / a) if a in ("EMPTY", "TOKEN") else a for a in args]
    proc = subprocess.run(agent_command(*args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1 and needle in proc.stderr, proc.stderr


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    (a,) = start_agents(1, tmp_path)
    assert a.health()["protocol"] == 1
    code, err = a.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_installs_in_a_clean_venv(tmp_path: Path) -> None:
    """``pip install ./agent`` into a venv without hwnas, torch or onnx, then serve one health request.

    Needs the package index (onnxruntime and numpy are downloaded); skipped where it is unreachable.
    """
    import shutil
    import venv

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "agent-src"  # a copy: pip's in-tree build leaves build/ and egg-info behind
    shutil.copytree(root / "agent", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=True, clear=True)
    bindir = env / ("Scripts" if sys.platform == "win32" else "bin")
    python = str(bindir / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    deps = subprocess.run([*pip, "onnxruntime>=1.18", "numpy>=1.26"], capture_output=True, text=True, timeout=600)
    if deps.returncode != 0:
        if any(s in deps.stderr for s in ("Could not find a version", "NewConnectionError", "Temporary failure", "Network is unreachable")):
            pytest.skip(f"package index unreachable: {deps.stderr.strip().splitlines()[-1]}")
        pytest.fail(deps.stderr)
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=300)
    check = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('hwnas', 'torch', 'onnx', 'optuna')))"
    # cwd: tmp_path, so the checkout's own packages are not on the path
    subprocess.run([python, "-c", check], check=True, cwd=tmp_path)
    help_text = subprocess.run([str(bindir / "hwnas-agent"), "--help"], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "--token-file" in help_text
    token_file = tmp_path / "token"
    token_file.write_text("clean-venv-token\n")
    proc = subprocess.Popen(
        [str(bindir / "hwnas-agent"), "--token-file", str(token_file), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("hwnas-agent listening on http://127.0.0.1:"), line
        a = AgentProc(url=line.split()[3], proc=proc, token_file=token_file, token="clean-venv-token", stderr_file=tmp_path / "unused")
        assert a.health()["protocol"] == 1
        status, body = a.measure(tiny_model(), TINY_SETTINGS)  # checks with the protobuf parser: no onnx here
        assert status == 200, body
        _assert_refused(a.measure(external_data_model(), TINY_SETTINGS), 400, "external data")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err, err
