"""The export's imports on a second core while the trials run.

A short table-device search spends more time importing torch (about 2 s here, quiet) than in its
trial loop (about 1-2 s for 100 trials), and the export needs torch, onnx and ONNX Runtime only at
the end. Where the run can use two cores, :func:`start` spawns one child process as the run
begins; it imports them while the parent runs the trials, then waits for the one export job
(:func:`hwnas.export.export_verified` with the same arguments) and sends back its result.

The child is a fresh interpreter (no fork of a process holding Optuna's storage); a run that ends
without exporting, fails or is interrupted stops it, and a parent that dies closes its pipe, on
which the child ends. Whatever goes wrong with the child itself (it died, a result cannot be
sent) is not the user's problem: the export then runs in this process as it would without a worker. An error the export raises
(a :class:`~hwnas.errors.HwnasError`: an unwritable path, a failed check) is raised here as is.

Only runs whose trials measure nothing start it (a table device): beside a live measurement the
child's imports would load the core a measurement times on. ``HWNAS_EXPORT_WORKER=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from hwnas.errors import HwnasError

_LOG = logging.getLogger("hwnas.search")

#: Seconds between checks that the child is still alive while the export runs there.
_POLL_S = 0.2


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def wanted(*, export: bool, measures: bool, cpus: int | None = None) -> bool:
    """Whether a run should warm a worker: it exports, its trials measure nothing, and it has two cores."""
    if os.environ.get("HWNAS_EXPORT_WORKER", "1").strip() == "0":
        return False
    return export and not measures and (usable_cpus() if cpus is None else cpus) >= 2


class ExportWorker:
    """One child process holding torch, onnx and ONNX Runtime, for one export.

    A fresh ``python -c`` that imports this module (not a ``multiprocessing`` spawn, which re-runs
    the parent's main script: an unguarded user script calling ``Search(...).run()`` would start
    its search again in the child), talking over two pipes with ``multiprocessing.connection``'s
    pickled messages. It sees the parent's ``sys.path``.
    """

    def __init__(self) -> None:
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        code = "import sys; from hwnas.search.export_worker import _child; _child(int(sys.argv[1]), int(sys.argv[2]))"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            # Ctrl-C reaches the terminal's whole process group: the parent owns the interrupt (it
            # prints the one line and stops the child). The child starts with SIGINT ignored (kept
            # across its exec), so not even its start-up prints a traceback.
            with _sigint_ignored():
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", code, str(from_parent), str(to_parent)],
                    pass_fds=(from_parent, to_parent),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
        except BaseException:
            for fd in (to_child, from_child):
                os.close(fd)
            raise
        finally:
            os.close(from_parent)
            os.close(to_parent)
        self._send = Connection(to_child, readable=False)
        self._recv = Connection(from_child, writable=False)

    def export(self, **kwargs: Any) -> Any:
        """``export_verified(**kwargs)`` in the child; None where the child could not do it (the caller
        then exports in this process). Raises the export's own HwnasError."""
        try:
            self._send.send(kwargs)
            while not self._recv.poll(_POLL_S):
                if self._proc.poll() is not None:
                    _LOG.debug("export worker exited (code %s) before answering", self._proc.returncode)
                    return None
            status, value = self._recv.recv()
        except (OSError, EOFError, ValueError, TypeError, AttributeError, pickle.PicklingError) as exc:  # pipe gone, unpicklable
            _LOG.debug("export worker failed: %r", exc)
            return None
        finally:
            self.close()
        if status == "ok":
            return value
        if status == "error":
            raise value
        _LOG.debug("export worker crashed: %s", value)
        return None

    def close(self) -> None:
        """Stop the child (idempotent)."""
        for conn in (self._send, self._recv):
            try:
                conn.close()
            except OSError:
                pass
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can be set from the main thread only
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def start(*, export: bool, measures: bool) -> ExportWorker | None:
    """A worker for a run that :func:`wanted` one, else None (also where spawning fails)."""
    if not wanted(export=export, measures=measures):
        return None
    try:
        return ExportWorker()
    except OSError as exc:  # no processes left, no /dev/shm: export in this process
        _LOG.debug("no export worker: %r", exc)
        return None


def _child(read_fd: int, write_fd: int) -> None:
    """The child's entry point (``python -c``): serve one job over the two pipes."""
    _serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False))


def _serve(conn: Any, reply_conn: Any) -> None:
    """The child: import what the export needs, then run the one job sent, and answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as it was started (see ExportWorker)
    try:
        import onnx  # noqa: F401  (the export imports them at its first use: here, before the job)
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401

        from hwnas.export import export_verified

        kwargs = conn.recv()
    except (EOFError, OSError):
        return  # the run ended without an export

    try:
        reply: tuple[str, Any] = ("ok", export_verified(**kwargs))
    except HwnasError as exc:
        reply = ("error", exc)
    except BaseException as exc:  # any other failure: the parent exports in its own process
        reply = ("crash", f"{type(exc).__name__}: {exc}")
    try:
        reply_conn.send(reply)
    except (OSError, EOFError):
        return  # the parent is gone or stopped waiting
    except Exception as exc:  # an unpicklable result or error: say so, plainly
        reply_conn.send(("crash", f"cannot send the result: {type(exc).__name__}: {exc}"))
