"""The agent's HTTP server (PROTOCOL.md): health, measure, and a refusal for everything else.

Standard library only (``http.server``), so the agent installs wherever onnxruntime does.
"""

from __future__ import annotations

import hmac
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hwnas_agent import PROTOCOL, __version__
from hwnas_agent.checks import ModelRejected, check_model
from hwnas_agent.fingerprint import fingerprint

#: Held during session creation and timing: measurements never overlap on one device.
MEASURE_LOCK = threading.Lock()
_count_lock = threading.Lock()
_state = {"measurements": 0}

#: Settings keys -> (type, low, high); input_shape is checked apart.
_INT_SETTINGS = {"batch": (1, 4096), "warmup": (0, 100_000), "repeats": (1, 1_000_000), "threads": (1, 1024), "seed": (0, 2**32 - 1)}
_SETTINGS_KEYS = {*_INT_SETTINGS, "input_shape", "provider", "node_providers"}
MAX_DIM = 4096


class Refusal(Exception):
    """An HTTP error with a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Config:
    """What the command line set."""

    token: bytes
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    max_request_bytes: int = 256 * 2**20
    request_timeout_s: float = 30.0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_settings(header: str | None, config: Config, available: list[str]) -> dict[str, Any]:
    """Validate the ``X-Hwnas-Settings`` JSON and fill the defaults.

    Raises:
        Refusal: 400 naming the key, the value and the allowed range.
    """
    if header is None:
        raise Refusal(400, "missing X-Hwnas-Settings header (a JSON object with at least input_shape)")
    try:
        raw = json.loads(header)
    except ValueError as e:
        raise Refusal(400, f"X-Hwnas-Settings is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise Refusal(400, f"X-Hwnas-Settings must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SETTINGS_KEYS)
    if unknown:
        raise Refusal(400, f"unknown settings key(s) {unknown}; known: {sorted(_SETTINGS_KEYS)}")
    settings: dict[str, Any] = {
        "batch": 1, "warmup": 20, "repeats": 100, "threads": config.threads, "seed": 0,
        "provider": config.provider, "node_providers": True,
    }  # fmt: skip
    settings.update(raw)
    for key, (low, high) in _INT_SETTINGS.items():
        value = settings[key]
        if not _is_int(value) or not low <= value <= high:
            raise Refusal(400, f"setting {key} must be an integer in {low}..{high}, got {value!r}")
    shape = settings.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(d) and 1 <= d <= MAX_DIM for d in shape):
        raise Refusal(400, f"setting input_shape must be 3 positive integers each <= {MAX_DIM} (C, H, W), got {shape!r}")
    if not isinstance(settings["node_providers"], bool):
        raise Refusal(400, f"setting node_providers must be true or false, got {settings['node_providers']!r}")
    if settings["provider"] not in available:
        raise Refusal(400, f"provider {settings['provider']!r} is not available here; available: {', '.join(available)}")
    return settings


def run_measurement(model: bytes, settings: dict[str, Any]) -> dict[str, Any]:
    """Check the model, then measure it under the lock; the response body of ``/v1/measure``."""
    from hwnas_agent import timing

    try:
        check_model(model)
    except ModelRejected as e:
        raise Refusal(400, str(e)) from None
    shape = tuple(settings["input_shape"])
    common = {"provider": settings["provider"], "threads": settings["threads"], "batch": settings["batch"], "seed": settings["seed"]}
    t_wait = time.perf_counter()
    with MEASURE_LOCK:
        started = time.perf_counter()
        try:
            session = timing.make_session(model, provider=settings["provider"], threads=settings["threads"])
            session_ms = (time.perf_counter() - started) * 1e3
            feed = timing.make_feed(session, shape, batch=settings["batch"], seed=settings["seed"])
            times = timing.time_session(session, feed, warmup=settings["warmup"], repeats=settings["repeats"])
            del session
            nodes = timing.node_providers(model, shape, **common) if settings["node_providers"] else None
        except Exception as e:  # ONNX Runtime's errors: a graph it cannot load, an input of the wrong shape
            raise Refusal(400, f"onnxruntime: {_one_line(e)}") from None
        finished = time.perf_counter()
    with _count_lock:
        _state["measurements"] += 1
    measurement = {**timing.stats_ms(times), "repeats": settings["repeats"], "warmup": settings["warmup"], **common}
    del measurement["seed"]
    return {
        "protocol": PROTOCOL,
        "measurement": measurement,
        "node_providers": nodes,
        "fingerprint": fingerprint(),
        "queued_ms": (started - t_wait) * 1e3,
        "session_ms": session_ms,
        "started": started,
        "finished": finished,
    }


def _one_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:500]


class Handler(BaseHTTPRequestHandler):
    """One connection; ``config`` and ``timeout`` are set on a subclass by :func:`make_server`."""

    config: Config
    server_version = f"hwnas-agent/{__version__}"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {self.client_address[0]} {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per refusal (send_error_json) is enough; successes are not logged

    def _send_json(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long, an unsupported method), as JSON."""
        self.log_message("refused %d: %s", code, message or "")
        try:
            self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]}, close=True)
        except OSError:
            self.close_connection = True

    def _refuse(self, r: Refusal) -> None:
        self.log_message("refused %d %s %s: %s", r.status, self.command, self.path, r)
        # The body may be unread; closing is the one safe way to end the exchange.
        self._send_json(r.status, {"error": str(r)}, close=True)

    def _authorise(self) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "missing token: send Authorization: Bearer <token>")
        if not hmac.compare_digest(token.strip().encode(), self.config.token):
            raise Refusal(401, "wrong token")
        version = self.headers.get("X-Hwnas-Protocol")
        if version != str(PROTOCOL):
            raise Refusal(426, f"protocol version mismatch: this agent speaks {PROTOCOL}, the request sent {version!r} (X-Hwnas-Protocol)")

    def _handle(self, route: Any) -> None:
        try:
            self._authorise()
            route()
        except Refusal as r:
            self._refuse(r)
        except (TimeoutError, ConnectionError):
            raise  # handle_one_request drops the connection
        except Exception as e:  # a bug: answer and keep serving
            self.log_message("error %s %s: %r", self.command, self.path, e)
            self._send_json(500, {"error": f"internal error: {_one_line(e)}"}, close=True)

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _get(self) -> None:
        if self.path != "/v1/health":
            raise Refusal(404, f"unknown path {self.path[:100]!r}; GET /v1/health or POST /v1/measure")
        body = {
            "protocol": PROTOCOL,
            "agent_version": __version__,
            "fingerprint": fingerprint(),
            "busy": MEASURE_LOCK.locked(),
            "measurements": _state["measurements"],
        }
        self._send_json(200, body)

    def _post(self) -> None:
        if self.path != "/v1/measure":
            raise Refusal(404, f"unknown path {self.path[:100]!r}; GET /v1/health or POST /v1/measure")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise Refusal(411, "Content-Length is required")
        try:
            length = int(length_header)
        except ValueError:
            raise Refusal(400, f"Content-Length is not an integer: {length_header[:50]!r}") from None
        if length < 0:
            raise Refusal(400, f"Content-Length is negative: {length}")
        if length > self.config.max_request_bytes:
            raise Refusal(
                413, f"body of {length} bytes is over the agent's limit of {self.config.max_request_bytes} bytes (--max-request-mb)"
            )
        import onnxruntime as ort

        settings = parse_settings(self.headers.get("X-Hwnas-Settings"), self.config, ort.get_available_providers())
        model = self.rfile.read(length)
        if len(model) != length:
            raise Refusal(400, f"body ended after {len(model)} of {length} bytes")
        self._send_json(200, run_measurement(model, settings))


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(config: Config, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound server (port 0: any free port) whose handler refuses after ``config.request_timeout_s`` of silence."""
    handler = type("ConfiguredHandler", (Handler,), {"config": config, "timeout": config.request_timeout_s})
    cls = _Server6 if ":" in host else _Server
    return cls((host, port), handler)


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = str(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
