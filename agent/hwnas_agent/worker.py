"""The measurement child: model checks, ONNX Runtime sessions and timing, in a process of their own.

The agent process never parses a model nor loads ONNX Runtime's session code. It hands each
measurement to one long-lived child (:class:`Worker`) over a pipe, and the child runs under OS
limits set before it imports ONNX Runtime:

* address space (``RLIMIT_AS``): a model that allocates past it fails in the child;
* CPU seconds (``RLIMIT_CPU``, raised before each request by that request's share);
* file size (``RLIMIT_FSIZE``): the profiling trace cannot fill the disk;
* threads: the settings allow at most the device's CPU count (checked by the server).

The parent adds a wall-clock deadline per measurement. A child that breaches a limit, crashes
(an ONNX Runtime segfault) or overruns its deadline is killed; its request gets a one-line error
(413, 422 or 408 with the reason), its per-request folder is removed and a fresh child is started
for the next request. One request is lost, never the agent.

Wire format, both ways: a 4-byte big-endian length and a JSON header; a request's header says
how many model bytes follow it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

_LEN = struct.Struct(">I")
#: The largest JSON header either side sends (a measurement's answer is a few KB).
MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one measurement may use (the agent's flags set them; PROTOCOL.md lists the defaults)."""

    memory_bytes: int = 1536 * 2**20
    cpu_seconds: int = 120
    wall_seconds: float = 60.0
    file_bytes: int = 32 * 2**20
    node_providers: bool = True


class Failed(Exception):
    """A measurement the child could not give: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- the child's side ----------------------------------------------------------------------------
def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_message(stream: IO[bytes]) -> dict[str, Any]:
    (n,) = _LEN.unpack(_read_exact(stream, _LEN.size))
    if n > MAX_HEADER:
        raise EOFError
    return json.loads(_read_exact(stream, n))


def _write_message(stream: IO[bytes], message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def _set_limits(memory: int, files: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing


def _cpu_budget(seconds: int) -> None:
    """Let the child spend ``seconds`` more CPU seconds (then SIGXCPU, then SIGKILL)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (used + seconds, used + seconds + 5))


def _one_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:500]


def _measure(header: dict[str, Any], model: bytes) -> dict[str, Any]:
    from hwnas_agent import timing
    from hwnas_agent.checks import ModelRejected, check_model

    s = header["settings"]
    try:
        check_model(model)
    except ModelRejected as e:
        return {"ok": False, "status": 400, "error": str(e)}
    except MemoryError:
        return {"ok": False, "status": 413, "error": "the model's check needed more memory than the agent allows (--max-memory-mb)"}
    shape = tuple(s["input_shape"])
    common = {"provider": s["provider"], "threads": s["threads"], "batch": s["batch"], "seed": s["seed"]}
    try:
        started = time.perf_counter()
        session = timing.make_session(model, provider=s["provider"], threads=s["threads"])
        session_ms = (time.perf_counter() - started) * 1e3
        feed = timing.make_feed(session, shape, batch=s["batch"], seed=s["seed"])
        times = timing.time_session(session, feed, warmup=s["warmup"], repeats=s["repeats"])
        del session
        nodes = None
        if s["node_providers"] and header.get("profile_dir"):
            nodes = timing.node_providers(model, shape, **common, folder=header["profile_dir"])
        finished = time.perf_counter()
    except MemoryError:
        return {"ok": False, "status": 413, "error": "the model needed more memory than the agent allows (--max-memory-mb)"}
    except Exception as e:  # ONNX Runtime's errors: a graph it cannot load, an input of the wrong shape
        text = _one_line(e)
        if "bad_alloc" in text or "Failed to allocate" in text or "std::bad_alloc" in text:
            return {"ok": False, "status": 413, "error": f"the model needed more memory than the agent allows (--max-memory-mb): {text}"}
        return {"ok": False, "status": 400, "error": f"onnxruntime: {text}"}
    return {
        "ok": True,
        "stats": timing.stats_ms(times),
        "nodes": nodes,
        "session_ms": session_ms,
        "run_seconds": finished - started,
    }


def child_main() -> int:
    """The child's loop: limits first, then one answer per request until its pipe closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers goes down the pipe
    start = _read_message(stdin)
    _set_limits(int(start["memory_bytes"]), int(start["file_bytes"]))
    import onnxruntime  # noqa: F401  (loaded once, under the limits, before the first request)

    _write_message(stdout, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            header = _read_message(stdin)
            model = _read_exact(stdin, int(header["model_bytes"]))
        except EOFError:
            return 0
        _cpu_budget(int(header["cpu_seconds"]))
        try:
            answer = _measure(header, model)
        except MemoryError:
            answer = {"ok": False, "status": 413, "error": "the model needed more memory than the agent allows (--max-memory-mb)"}
        del model
        _write_message(stdout, answer)


# -- the parent's side ---------------------------------------------------------------------------
class Worker:
    """One measurement child at a time, started ahead of need and replaced when it fails.

    Callers serialise :meth:`measure` (the server's measurement lock); :meth:`close` stops it.
    """

    def __init__(self, limits: Limits, work_dir: str) -> None:
        self.limits = limits
        self.work_dir = work_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.replaced = 0

    # the child's life
    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwnas_agent.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.work_dir,
            start_new_session=True,  # a Ctrl-C at the agent's terminal reaches the agent, which stops the child
        )
        assert proc.stdin is not None and proc.stdout is not None
        _write_message(proc.stdin, {"memory_bytes": self.limits.memory_bytes, "file_bytes": self.limits.file_bytes})
        ready = self._answer(proc, 60.0)
        if ready is None or not ready.get("ready"):
            self._kill(proc)
            raise Failed(500, "the measurement process did not start (see the agent's log)")
        return proc

    def warm(self) -> None:
        """Start the child now, so the first request does not wait for ONNX Runtime's import."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._kill(self._proc)
                self._proc = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @staticmethod
    def _answer(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
        """The child's next message, or None when it died or ``timeout`` passed first."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        need = _LEN.size
        length = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, max(need - len(buf), 1 << 16) if length is None else need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if length is None and len(buf) >= _LEN.size:
                (length,) = _LEN.unpack(buf[: _LEN.size])
                if length > MAX_HEADER:
                    return None
                buf = buf[_LEN.size :]
                need = length
            if length is not None and len(buf) >= need:
                return json.loads(buf[:need])

    # one measurement
    def measure(self, model: bytes, settings: dict[str, Any]) -> dict[str, Any]:
        """The child's answer for ``model`` (``ok`` True with ``stats``, ``nodes``, ``session_ms``).

        Raises:
            Failed: the model was refused, or the child breached a limit, crashed or overran.
        """
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            folder = tempfile.mkdtemp(prefix="request-", dir=self.work_dir)
            try:
                header = {
                    "settings": settings,
                    "model_bytes": len(model),
                    "cpu_seconds": self.limits.cpu_seconds,
                    "profile_dir": folder if self.limits.node_providers else None,
                }
                data = json.dumps(header).encode()
                assert proc.stdin is not None
                try:
                    proc.stdin.write(_LEN.pack(len(data)) + data)
                    proc.stdin.write(model)
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    answer = None
                else:
                    answer = self._answer(proc, self.limits.wall_seconds)
                if answer is None:
                    raise self._failure(proc)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        if not answer.get("ok"):
            raise Failed(int(answer.get("status", 400)), str(answer.get("error", "measurement failed")))
        return answer

    def _failure(self, proc: subprocess.Popen[bytes]) -> Failed:
        """Kill and forget the child of a request that got no answer; what to tell the client."""
        running = proc.poll() is None
        self._kill(proc)
        self._proc = None
        self.replaced += 1
        code = proc.returncode
        if running:
            return Failed(408, f"the measurement ran past the agent's limit of {self.limits.wall_seconds:g} s (--max-measure-seconds)")
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            return Failed(408, f"the measurement used more than the agent's {self.limits.cpu_seconds} CPU seconds (--max-measure-seconds)")
        if code == -signal.SIGSEGV or code == -signal.SIGABRT:
            return Failed(422, f"onnxruntime crashed on this model (signal {-code}); the agent replaced its measurement process")
        return Failed(
            413, f"the measurement process ended (exit {code}): the model likely needed more than --max-memory-mb; it was replaced"
        )


def clean_stale(root: str) -> None:
    """Remove work folders of agents that no longer run (killed before they could clean up)."""
    try:
        entries = os.listdir(root)
    except OSError:
        return
    for name in entries:
        if not name.startswith("hwnas-agent-"):
            continue
        path = os.path.join(root, name)
        try:
            with open(os.path.join(path, "pid"), encoding="ascii") as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def make_work_dir() -> str:
    """A fresh work folder for this agent (its pid inside), after removing dead agents' ones."""
    root = tempfile.gettempdir()
    clean_stale(root)
    path = tempfile.mkdtemp(prefix="hwnas-agent-", dir=root)
    with open(os.path.join(path, "pid"), "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    return path


if __name__ == "__main__":
    sys.exit(child_main())
