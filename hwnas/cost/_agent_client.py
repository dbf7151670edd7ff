"""A client of hwnas agents (agent/PROTOCOL.md): one agent (:class:`AgentClient`) and the agents
of one device (:class:`Farm`), used by the ``remote`` device kind (:mod:`hwnas.cost.remote`).

Standard library only: ``http.client`` on this side as ``http.server`` on the agent's, so both
ends keep framing, keep-alive and headers to a maintained implementation.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from hwnas.errors import UsageError

#: The agent protocol this client speaks (agent/PROTOCOL.md).
PROTOCOL = 1
#: Seconds a down agent is left alone before it is tried again (a restarted agent is picked up).
COOL_DOWN_S = 5.0


class AgentUnavailable(Exception):
    """An agent did not answer (connection refused, reset or timed out, or a proxy's 502-504)."""


# -- one agent ----------------------------------------------------------------------
class AgentClient:
    """One agent, spoken to with the standard library's ``http.client`` (a connection per request).

    Args:
        url: ``http://host:port`` or ``https://host[:port]`` (a path prefix is kept).
        token: the bearer token.
        token_file: where the token came from (named in messages).
        connect_timeout_s: seconds to open the connection (and the TLS handshake).
        timeout_s: seconds any later read or write may stall (a measurement's answer included).
    """

    def __init__(self, url: str, *, token: str, token_file: str, connect_timeout_s: float = 5.0, timeout_s: float = 300.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"agent URL {url!r} must be http://host:port or https://host[:port]")
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.token_file = token_file
        self.connect_timeout_s = float(connect_timeout_s)
        self.timeout_s = float(timeout_s)
        #: The agent's last health answer (None until one came).
        self.last_health: dict[str, Any] | None = None

    def health(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /v1/health``: the agent's protocol, version and fingerprint."""
        answer = self._request("GET", "/v1/health", timeout_s=timeout_s)
        if answer.get("protocol") != PROTOCOL:
            raise UsageError(
                f"agent {self.url} speaks protocol {answer.get('protocol')!r} and this hwnas speaks protocol {PROTOCOL}; "
                "install the same hwnas version on both sides"
            )
        self.last_health = answer
        return answer

    def measure(self, onnx_bytes: bytes, settings: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/measure``: the agent's answer (``measurement``, ``node_providers``, ``fingerprint``, ...)."""
        answer = self._request(
            "POST",
            "/v1/measure",
            body=onnx_bytes,
            headers={"Content-Type": "application/octet-stream", "X-Hwnas-Settings": json.dumps(settings, separators=(",", ":"))},
        )
        if not isinstance(answer.get("measurement"), dict) or "median_ms" not in answer["measurement"]:
            raise UsageError(f"agent {self.url} answered a measurement without 'measurement.median_ms'; is it an hwnas agent?")
        return answer

    # -- the wire -----------------------------------------------------------------
    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        conn = self._connection(self.connect_timeout_s)
        step = "connect"
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.timeout_s if timeout_s is None else timeout_s)
            step = "answer"
            try:
                conn.request(
                    method,
                    self.prefix + path,
                    body=body,
                    headers={"Authorization": f"Bearer {self.token}", "X-Hwnas-Protocol": str(PROTOCOL), **(headers or {})},
                )
            except OSError as exc:
                # An agent refuses a request (413, 401) before reading its body and closes: its
                # answer may be waiting even though the body could not be sent.
                status, data = self._early_answer(conn, exc)
            else:
                response = conn.getresponse()
                status, data = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnavailable(f"agent {self.url} is unreachable ({_why(exc, step, self)})") from None
        finally:
            conn.close()
        if status == 200:
            try:
                answer = json.loads(data)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise UsageError(f"agent {self.url} answered {path} with something other than a JSON object; is it an hwnas agent?")
            return answer
        error = _error_text(data)
        if status == 401:
            raise UsageError(f"agent {self.url} refused the token in {self.token_file}; copy the agent's token file there")
        if status == 426:
            raise UsageError(f"agent {self.url} refused protocol {PROTOCOL} of this hwnas: {error}")
        if status in (502, 503, 504):
            raise AgentUnavailable(f"agent {self.url} is unavailable (HTTP {status}: {error})")
        if 400 <= status < 500:
            raise UsageError(f"agent {self.url} refused {method} {path} (HTTP {status}): {error}")
        from hwnas.evaluate import EvaluationFailed

        raise EvaluationFailed(f"agent {self.url} failed (HTTP {status}): {error}")

    @staticmethod
    def _early_answer(conn: http.client.HTTPConnection, sending: OSError) -> tuple[int, bytes]:
        """The answer an agent sent before it closed a request whose body was still being sent;
        raises the sending error when there is none."""
        try:
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            raise sending from None


def _error_text(data: bytes) -> str:
    """The agent's one-line ``error``, or the start of whatever came instead."""
    try:
        answer = json.loads(data)
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            return answer["error"].splitlines()[0] if answer["error"] else "(empty error)"
    except ValueError:
        pass
    text = data[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(no message)"


def _why(exc: BaseException, step: str, client: AgentClient) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        limit = client.connect_timeout_s if step == "connect" else client.timeout_s
        return f"no {'connection' if step == 'connect' else 'answer'} within {limit:g} s"
    if isinstance(exc, socket.gaierror):
        return f"unknown host {client.host!r}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "it closed the connection without answering"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"


# -- the device's agents ------------------------------------------------------------
class Farm:
    """The agents of one device: each measurement goes to an idle agent, one at a time per agent.

    Thread-safe. An agent that does not answer is marked down and the measurement moves on to
    another; a down agent is tried again after ``cool_down_s``. Between processes (several
    search workers) the agent's own lock serialises measurements, so workers share a farm.
    """

    def __init__(
        self, device: str, clients: list[AgentClient], *, cool_down_s: float = COOL_DOWN_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not clients:
            raise ValueError("a farm needs at least one agent")
        self.device = device
        self.clients = clients
        self.cool_down_s = cool_down_s
        self.clock = clock
        self._cond = threading.Condition()
        self._busy: set[int] = set()
        # Workers of one search start at different agents (each process has its own farm).
        self._next = os.getpid() % len(clients)
        #: Whether the device's preflight passed (its agents answered, token and protocol accepted).
        self.checked = False
        #: Agent index -> (clock time it was marked down, why).
        self._down: dict[int, tuple[float, str]] = {}

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    def down(self) -> dict[str, str]:
        """The agents marked down now (still in their cool-down), with why."""
        now = self.clock()
        with self._cond:
            return {self.clients[i].url: why for i, (t, why) in self._down.items() if now - t < self.cool_down_s}

    def _usable(self, i: int, now: float) -> bool:
        mark = self._down.get(i)
        return mark is None or now - mark[0] >= self.cool_down_s

    def _not_busy_elsewhere(self, tried: set[int], errors: list[str]) -> int | None:
        """Across processes: the first agent, in turn, whose health says it is not measuring for
        another search worker now (each worker has its own farm; without this look, two workers
        land on the same agent half the time and wait on its lock while another agent idles).
        None with a single agent, or when every candidate is busy or silent."""
        n = len(self.clients)
        if n < 2:
            return None
        with self._cond:
            now = self.clock()
            order = sorted(range(n), key=lambda j: (j - self._next) % n)
            order = [i for i in order if i not in tried and i not in self._busy and self._usable(i, now)]
        for i in order:
            try:
                health = self.clients[i].health(timeout_s=self.clients[i].connect_timeout_s)
            except AgentUnavailable as exc:
                tried.add(i)
                errors.append(str(exc))
                with self._cond:
                    self._down[i] = (self.clock(), str(exc))  # as a failed measurement would
                continue
            if not health.get("busy"):
                return i
        return None

    def _take(self, tried: set[int], prefer: int | None = None) -> int | None:
        """Under the lock: an idle usable agent not yet tried (``prefer`` when it still is),
        waiting while the only candidates are busy; None when none is left."""
        while True:
            now = self.clock()
            candidates = [i for i in range(len(self.clients)) if i not in tried and self._usable(i, now)]
            if not candidates:
                return None
            idle = [i for i in candidates if i not in self._busy]
            if prefer in idle:
                assert prefer is not None
                self._next = (prefer + 1) % len(self.clients)
                self._busy.add(prefer)
                return prefer
            if idle:
                # In turn from the one after the last taken, so a farm's agents share the work (an
                # agent whose cool-down is over included: a restarted agent is picked up again).
                i = min(idle, key=lambda j: (j - self._next) % len(self.clients))
                self._next = (i + 1) % len(self.clients)
                self._busy.add(i)
                return i
            self._cond.wait()

    def measure(self, onnx_bytes: bytes, settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Measure on the first idle agent; returns the agent's answer and its URL.

        Raises:
            EvaluationFailed: no agent answered (all down, or each one tried failed).
            UsageError: an agent refused the request (token, protocol, settings, model).
        """
        from hwnas.evaluate import EvaluationFailed

        tried: set[int] = set()
        errors: list[str] = []
        while True:
            prefer = self._not_busy_elsewhere(tried, errors)
            with self._cond:
                i = self._take(tried, prefer)
                if i is None:
                    now = self.clock()
                    for j, (t, why) in sorted(self._down.items()):
                        if j not in tried and now - t < self.cool_down_s:
                            errors.append(f"{why}, down since {now - t:.1f} s")
                    raise EvaluationFailed(f"no agent of device {self.device} answered: {'; '.join(errors) or 'none listed'}")
            client = self.clients[i]
            try:
                answer = client.measure(onnx_bytes, settings)
            except AgentUnavailable as exc:
                tried.add(i)
                errors.append(str(exc))
                with self._cond:
                    self._down[i] = (self.clock(), str(exc))
                continue
            else:
                with self._cond:
                    self._down.pop(i, None)
                return answer, client.url
            finally:
                with self._cond:
                    self._busy.discard(i)
                    self._cond.notify_all()

    def measure_each(self, onnx_bytes: bytes, settings: dict[str, Any]) -> dict[str, dict[str, Any] | str]:
        """The model measured on every agent (in parallel: each is its own device), each agent
        taken once this process's measurement on it is over: URL -> the agent's answer, or why it
        gave none (an agent in its cool-down is not asked)."""

        def on(i: int) -> dict[str, Any] | str:
            with self._cond:
                if not self._usable(i, self.clock()):
                    return f"agent {self.clients[i].url} is down ({self._down[i][1]})"
                while i in self._busy:
                    self._cond.wait()
                self._busy.add(i)
            try:
                answer = self.clients[i].measure(onnx_bytes, settings)
            except AgentUnavailable as exc:
                with self._cond:
                    self._down[i] = (self.clock(), str(exc))
                return str(exc)
            finally:
                with self._cond:
                    self._busy.discard(i)
                    self._cond.notify_all()
            with self._cond:
                self._down.pop(i, None)
            return answer

        with ThreadPoolExecutor(max_workers=min(16, len(self.clients))) as pool:
            answers = list(pool.map(on, range(len(self.clients))))
        return dict(zip(self.urls, answers, strict=True))

    def health(self, *, timeout_s: float | None = None) -> dict[str, dict[str, Any] | str]:
        """Every agent's health answer (asked in parallel), or why it gave none: URL -> answer | error."""

        def ask(client: AgentClient) -> dict[str, Any] | str:
            try:
                return client.health(timeout_s=timeout_s)
            except AgentUnavailable as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=min(16, len(self.clients))) as pool:
            answers = list(pool.map(ask, self.clients))  # a UsageError (token, protocol) propagates
        return dict(zip(self.urls, answers, strict=True))

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        """The fingerprints of the agents that answered a health request so far."""
        return {c.url: dict(c.last_health.get("fingerprint") or {}) for c in self.clients if c.last_health}


__all__ = ["COOL_DOWN_S", "PROTOCOL", "AgentClient", "AgentUnavailable", "Farm"]
