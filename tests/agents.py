"""Real ``hwnas-agent`` subprocesses on 127.0.0.1 for tests (each on a free port)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TOKEN = "test-token-0123456789abcdef"


@dataclass
class AgentProc:
    """One running agent: its URL, process and token file."""

    url: str
    proc: subprocess.Popen[str]
    token_file: Path
    token: str
    stderr_file: Path

    @property
    def host(self) -> str:
        return str(urllib.parse.urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return int(urllib.parse.urlsplit(self.url).port or 0)

    def request(
        self, method: str, path: str, body: bytes | None = None, *, headers: dict[str, str | None] | None = None, timeout: float = 60.0
    ) -> tuple[int, dict[str, Any]]:
        """One request with the agent's token and protocol header (``headers`` override them); (status, JSON body)."""
        given: dict[str, str | None] = {"Authorization": f"Bearer {self.token}", "X-Hwnas-Protocol": "1", **(headers or {})}
        sent = {k: v for k, v in given.items() if v is not None}  # None: leave that header out
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        status, body = self.request("GET", "/v1/health")
        assert status == 200, body
        return body

    def measure(self, model: bytes, settings: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        headers: dict[str, str | None] = {"X-Hwnas-Settings": json.dumps(settings), "Content-Type": "application/octet-stream"}
        headers.update(kw.pop("headers", {}))
        return self.request("POST", "/v1/measure", model, headers=headers, **kw)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, wait; (exit code, everything the agent wrote on stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        return int(self.proc.returncode), self.stderr()

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hwnas_agent", *args]


def start_agents(n: int, tmp_path: Path, *, token: str = TOKEN, extra_args: Sequence[str] = ()) -> list[AgentProc]:
    """Start ``n`` agents on 127.0.0.1 (port 0), each reading the bound URL from its first stdout line."""
    started: list[tuple[subprocess.Popen[str], Path, Path]] = []
    agents: list[AgentProc] = []
    try:
        for _ in range(n):  # start them all, then read their URLs: the imports overlap
            token_file = tmp_path / f"agent-token-{len(list(tmp_path.glob('agent-token-*')))}"
            token_file.write_text(token + "\n")
            stderr_file = token_file.with_name(token_file.name.replace("token", "stderr"))
            with open(stderr_file, "w") as err_out:  # a file, not a pipe: a chatty agent never blocks
                proc = subprocess.Popen(
                    agent_command("--token-file", str(token_file), "--host", "127.0.0.1", "--port", "0", *extra_args),
                    stdout=subprocess.PIPE,
                    stderr=err_out,
                    text=True,
                )
            started.append((proc, token_file, stderr_file))
        for proc, token_file, stderr_file in started:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the agent prints it and flushes before serving
            if not line.startswith("hwnas-agent listening on http://"):
                raise RuntimeError(f"agent did not start: stdout {line!r}, stderr {stderr_file.read_text()!r}")
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            agents.append(AgentProc(url=url, proc=proc, token_file=token_file, token=token, stderr_file=stderr_file))
    except BaseException:
        for proc, _, _ in started:
            proc.kill()
            proc.communicate()
        raise
    return agents


@pytest.fixture
def two_agents(tmp_path: Path) -> Iterator[list[AgentProc]]:
    """Two agents on 127.0.0.1, stopped after the test."""
    agents = start_agents(2, tmp_path)
    yield agents
    for a in agents:
        a.stop()
