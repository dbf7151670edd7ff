"""The ``remote`` device kind: latency measured by hwnas agents over the network (agent/PROTOCOL.md).

A device file names one agent or a farm of identical devices::

    name = "mypi"
    kind = "remote"
    urls = ["http://pi1:8765", "http://pi2:8765"]
    token_file = "~/.hwnas/mypi.token"

The candidate is exported here and its ONNX bytes are timed on the device by an agent; the
network's time is never part of a latency. The client (:mod:`hwnas.cost._agent_client`) sends
one request at a time to each agent from this process, takes the next idle agent, and moves on
to another when an agent does not answer; a down agent is tried again after ``COOL_DOWN_S``.
When no agent answers, the trial fails with :class:`~hwnas.evaluate.EvaluationFailed` and the
search redoes it. A relative ``token_file`` is relative to the device file's folder.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hwnas.cost import kinds
from hwnas.cost._agent_client import COOL_DOWN_S, PROTOCOL, AgentClient, AgentUnavailable, Farm
from hwnas.cost.latency import Latency, MeasuredLatency
from hwnas.cost.source import CostSource, DeviceKind, KeySpec, LatencyRequest
from hwnas.errors import UsageError

if TYPE_CHECKING:
    import torch

    from hwnas.cost.measure import Measurement
    from hwnas.device import Device
    from hwnas.registry import Registry
    from hwnas.spaces import Arch, SearchSpace

#: The most agents one device file may list.
MAX_AGENTS = 256
#: What a remote latency's source reads in trials and reports.
SOURCE = "measured (remote)"
#: Fingerprint keys that must agree across the agents of one farm.
FARM_KEYS = ("cpu", "machine", "onnxruntime")
_TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))" > {path}'


# -- the device's settings ----------------------------------------------------------
REMOTE_KEYS = {
    "urls": KeySpec(list, example='urls = ["http://pi1:8765", "http://pi2:8765"]'),
    "token_file": KeySpec(str, example='token_file = "~/.hwnas/mypi.token"'),
    "provider": KeySpec(str, "CPUExecutionProvider", example='provider = "CPUExecutionProvider"'),
    "threads": KeySpec(int, 1, 1, 1024, "threads = 1"),
    "warmup": KeySpec(int, 20, 0, 100_000, "warmup = 20"),
    "repeats": KeySpec(int, 100, 1, 1_000_000, "repeats = 100"),
    "timeout_s": KeySpec((int, float), 300, 1, 86_400, "timeout_s = 300"),
    "connect_timeout_s": KeySpec((int, float), 5, 0.1, 600, "connect_timeout_s = 5"),
}


def _parse(settings: dict[str, Any], path: Any) -> dict[str, Any]:
    """Check ``urls`` element by element; expand ``~`` in ``token_file`` (a relative one is
    relative to the device file's folder)."""
    urls = settings["urls"]
    example = REMOTE_KEYS["urls"].example
    if not urls:
        raise UsageError(f"device file {path}: urls is empty; list the agents, e.g. {example}")
    if len(urls) > MAX_AGENTS:
        raise UsageError(f"device file {path}: urls lists {len(urls)} agents; at most {MAX_AGENTS}")
    clean = []
    for url in urls:
        if not isinstance(url, str):
            raise UsageError(f"device file {path}: urls holds {url!r}, not a string; e.g. {example}")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 -- raises on a bad port
        except ValueError:
            raise UsageError(f"device file {path}: urls holds {url!r}, whose port is not a number in 0..65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise UsageError(
                f"device file {path}: urls holds {url!r}; each must be http://host:port or https://host[:port], e.g. {example}"
            )
        url = url.rstrip("/")
        if url in clean:
            raise UsageError(f"device file {path}: urls lists {url!r} twice; a farm lists each agent once")
        clean.append(url)
    token_file = settings["token_file"].strip()
    if not token_file:
        raise UsageError(f"device file {path}: token_file is empty; e.g. {REMOTE_KEYS['token_file'].example}")
    token_path = Path(os.path.expanduser(token_file))
    if not token_path.is_absolute() and path:
        token_path = Path(path).parent / token_path
    return {**settings, "urls": clean, "token_file": str(token_path)}


def read_token(device: Device) -> str:
    """The device's token (UsageError naming the file and how to make one when missing or empty)."""
    path = device.settings["token_file"]
    make = f"make one with '{_TOKEN_HINT.format(path=path)}' and start the agents with --token-file {path}"
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"token file {path} of device {device.name} does not exist; {make}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read token file {path} of device {device.name} ({exc}); {make}") from None
    if not token:
        raise UsageError(f"token file {path} of device {device.name} is empty; {make}")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"token file {path} of device {device.name} must hold one line without spaces; {make}")
    return token


_farms: dict[tuple[Any, ...], Farm] = {}
_farms_lock = threading.Lock()


def farm_of(device: Device) -> Farm:
    """The farm of ``device``, one per process (shared by every source of the device)."""
    s = device.settings
    key = (device.name, tuple(s["urls"]), s["token_file"], float(s["connect_timeout_s"]), float(s["timeout_s"]))
    with _farms_lock:
        farm = _farms.get(key)
        if farm is None:
            token = read_token(device)
            clients = [
                AgentClient(u, token=token, token_file=s["token_file"], connect_timeout_s=s["connect_timeout_s"], timeout_s=s["timeout_s"])
                for u in s["urls"]
            ]
            farm = _farms[key] = Farm(device.name, clients)
        return farm


def measure_settings(device: Device, shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``X-Hwnas-Settings`` of a measurement of an input of shape (C, H, W) on ``device``."""
    return {
        "input_shape": [int(n) for n in shape],
        "batch": device.batch,
        "warmup": device.warmup,
        "repeats": device.repeats,
        "threads": device.threads,
        "provider": device.provider,
        "seed": 0,
        "node_providers": True,
    }


# -- the latency source -------------------------------------------------------------
class RemoteLatency(MeasuredLatency):
    """Export the candidate to ONNX here and have an agent of the device time it there (the
    same measurement as :class:`MeasuredLatency`, taken on the device)."""

    kind = "remote"

    def __init__(self, device: Device, space: SearchSpace, farm: Farm | None = None) -> None:
        super().__init__(device, space)
        self.farm = farm if farm is not None else farm_of(device)

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        from hwnas.cost.quantize import device_bytes

        if model is None:
            model = self.space.build(arch)
        shape = tuple(self.space.input_shape(arch))
        onnx_bytes = device_bytes(self.device, model, shape)  # at int8: quantized here, the INT8 bytes sent
        answer, url = self.farm.measure(onnx_bytes, measure_settings(self.device, shape))
        m = answer["measurement"]
        details = {
            "p90_ms": m.get("p90_ms"),
            "iqr_ms": m.get("iqr_ms"),
            "repeats": m.get("repeats"),
            "threads": m.get("threads"),
            "batch": m.get("batch"),
            "agent": url,
            "queued_ms": answer.get("queued_ms"),
            "node_providers": answer.get("node_providers"),
        }
        return Latency(ms=float(m["median_ms"]), source=SOURCE, details=details)

    def _fingerprints(self) -> dict[str, dict[str, Any]]:
        if not self.farm.fingerprints():
            try:
                self.farm.health()
            except UsageError:
                pass
        return self.farm.fingerprints()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"urls": self.farm.urls, "fingerprints": self._fingerprints()}

    def warnings(self) -> list[str]:
        return farm_warnings(self.device, self._fingerprints())


def farm_warnings(device: Device, fingerprints: dict[str, dict[str, Any]]) -> list[str]:
    """One line when the agents of one farm report different hardware or runtimes."""
    if len(fingerprints) < 2:
        return []
    (first_url, first), *rest = fingerprints.items()
    for url, fp in rest:
        differ = [k for k in FARM_KEYS if fp.get(k) != first.get(k)]
        if differ:
            k = differ[0]
            return [
                f"warning: the agents of device {device.name} are not identical devices: {k} {first.get(k)!r} at {first_url} "
                f"!= {fp.get(k)!r} at {url}; a farm must be identical devices (split it into one device file each)"
            ]
    return []


# -- the kind -------------------------------------------------------------------------
def _latency(device: Device, space: SearchSpace, request: LatencyRequest) -> CostSource:
    """``auto``: this device's lookup table when one was built through it, else live remote
    measurement; ``lut`` and ``measure`` force one; ``table`` is refused."""
    from hwnas.cost.kinds import table_or_live

    if request.source != "table":
        _preflight_once(device)  # the table's check asks the agents too; one line before any work
    return table_or_live(device, space, request, lambda: RemoteLatency(device, space))


def _measure(device: Device, onnx_bytes: bytes, shape: tuple[int, ...]) -> Measurement:
    from hwnas.cost.measure import Measurement

    answer, _ = farm_of(device).measure(onnx_bytes, measure_settings(device, tuple(shape)))
    m = answer["measurement"]
    return Measurement(
        median_ms=float(m["median_ms"]),
        p90_ms=float(m["p90_ms"]),
        iqr_ms=float(m["iqr_ms"]),
        min_ms=float(m["min_ms"]),
        repeats=int(m["repeats"]),
        warmup=int(m["warmup"]),
        threads=int(m["threads"]),
        batch=int(m["batch"]),
        provider=str(m["provider"]),
        source=SOURCE,
    )


def _measure_each(device: Device, onnx_bytes: bytes, shape: tuple[int, ...]) -> dict[str, dict[str, Any] | str]:
    """The model timed on every agent of the farm, with each agent's clock and temperature."""
    answers = farm_of(device).measure_each(onnx_bytes, measure_settings(device, tuple(shape)) | {"node_providers": False})
    out: dict[str, dict[str, Any] | str] = {}
    for url, answer in answers.items():
        if isinstance(answer, str):
            out[url] = answer
            continue
        m, fp = answer["measurement"], answer.get("fingerprint") or {}
        out[url] = {
            "median_ms": float(m["median_ms"]),
            "p90_ms": m.get("p90_ms"),
            "iqr_ms": m.get("iqr_ms"),
            "cpu_mhz": fp.get("cpu_mhz"),
            "temperature_c": fp.get("temperature_c"),
            "load_1m": fp.get("load_1m"),
        }
    return out


#: Fingerprint keys ``hwnas devices`` shows for each agent.
STATUS_KEYS = ("hostname", "cpu", "machine", "isa", "os", "onnxruntime", "providers", "cpu_mhz", "temperature_c", "load_1m")


def _status(device: Device, timeout_s: float) -> list[dict[str, Any]]:
    """Each agent's live health for ``hwnas devices``: up or why not, its hardware and runtime,
    its clock and temperature now, whether it is measuring, and how many measurements it took."""
    try:
        answers = farm_of(device).health(timeout_s=timeout_s)
    except UsageError as exc:  # a token the agent refuses, another protocol: shown, not raised
        return [{"agent": url, "up": False, "why": str(exc)} for url in device.settings["urls"]]
    rows: list[dict[str, Any]] = []
    for url, answer in answers.items():
        if isinstance(answer, str):
            rows.append({"agent": url, "up": False, "why": answer.replace(f"agent {url} is ", "", 1)})
            continue
        fp = answer.get("fingerprint") or {}
        rows.append(
            {
                "agent": url,
                "up": True,
                "busy": bool(answer.get("busy")),
                "measurements": answer.get("measurements"),
                "agent_version": answer.get("agent_version"),
                **{k: fp.get(k) for k in STATUS_KEYS},
            }
        )
    return rows


def _preflight(device: Device) -> None:
    """Read the token and ask every agent's health within the connect timeout: one line when an
    agent is unreachable, refuses the token or speaks another protocol."""
    farm = farm_of(device)
    answers = farm.health(timeout_s=float(device.settings["connect_timeout_s"]))
    for url, answer in answers.items():
        if isinstance(answer, str):
            raise UsageError(
                f"{answer.replace(f'agent {url}', f'agent {url} of device {device.name}', 1)}; start it with "
                f"'hwnas-agent --token-file {device.settings['token_file']} --port {urlsplit(url).port or 8765}' "
                f"on that machine or fix urls in {device.path}"
            )
    farm.checked = True


def _preflight_once(device: Device) -> None:
    """:func:`_preflight` unless it passed already for this device's farm in this process."""
    farm = farm_of(device)
    if not farm.checked:
        _preflight(device)


def _first_health(device: Device) -> dict[str, Any]:
    farm = farm_of(device)
    for client in farm.clients:
        if client.last_health:
            return client.last_health
    answers = farm.health(timeout_s=float(device.settings["connect_timeout_s"]))
    for answer in answers.values():
        if isinstance(answer, dict):
            return answer
    raise UsageError(f"no agent of device {device.name} answered: {'; '.join(str(a) for a in answers.values())}")


def _fingerprint(device: Device) -> dict[str, Any]:
    """The first healthy agent's hardware, in the shape of :func:`hwnas.cost.lut.fingerprint`."""
    fp = _first_health(device).get("fingerprint") or {}
    return {
        "machine": fp.get("machine"),
        "cpu": fp.get("cpu"),
        "cores": fp.get("cores"),
        "isa": sorted(fp.get("isa") or []),
        "gpu": None,
    }


def _runtime(device: Device) -> dict[str, str]:
    from importlib.metadata import version

    fp = _first_health(device).get("fingerprint") or {}
    return {"onnxruntime": str(fp.get("onnxruntime")), "torch": version("torch").split("+")[0]}


REMOTE = DeviceKind(
    name="remote",
    keys=REMOTE_KEYS,
    latency=_latency,
    parse=_parse,
    measure=_measure,
    fingerprint=_fingerprint,
    runtime=_runtime,
    preflight=_preflight_once,
    measure_each=_measure_each,
    status=_status,
    precisions=lambda device: kinds.provider_precisions(device),  # quantized here, the INT8 bytes sent
    measured=True,
    summary=lambda device: f"measured (remote, {len(device.settings['urls'])} agent{'s' * (len(device.settings['urls']) > 1)})",
    spaces_text=lambda device: "any (measured remotely)",
)


def register(registry: Registry[DeviceKind]) -> None:
    registry.add(REMOTE.name, REMOTE)


__all__ = ["COOL_DOWN_S", "PROTOCOL", "REMOTE", "AgentClient", "AgentUnavailable", "Farm", "RemoteLatency", "farm_of", "register"]
