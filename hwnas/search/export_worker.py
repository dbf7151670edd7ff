"""The export's imports on a second core while the trials run.

A short table-device search spends more time importing torch (about 2 s here, quiet) than in its
trial loop (about 1-2 s for 100 trials), and the export needs torch, onnx and ONNX Runtime only at
the end. Where the run can use two cores, :func:`start` spawns one child process as the run
begins; it imports them while the parent runs the trials, then waits for the one export job
(:func:`hwnas.export.export_verified` with the same arguments) and sends back its result.

The child is a plain ``multiprocessing`` spawn (no fork of a process holding Optuna's storage)
and daemonic: a run that ends without exporting, fails or is interrupted takes it down. Whatever
goes wrong with the child itself (it died, a result cannot be sent) is not the user's problem:
the export then runs in this process as it would without a worker. An error the export raises
(a :class:`~hwnas.errors.HwnasError`: an unwritable path, a failed check) is raised here as is.

Only runs whose trials measure nothing start it (a table device): beside a live measurement the
child's imports would load the core a measurement times on. ``HWNAS_EXPORT_WORKER=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
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
    """One spawned child holding torch, onnx and ONNX Runtime, for one export."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), name="hwnas-export", daemon=True)
        # Ctrl-C reaches the terminal's whole process group: the parent owns the interrupt (it prints
        # the one line and stops the child). The child is started with SIGINT ignored (inherited
        # across its exec), so not even its start-up, before _serve runs, prints a traceback.
        with _sigint_ignored():
            self._proc.start()
        child.close()

    def export(self, **kwargs: Any) -> Any:
        """``export_verified(**kwargs)`` in the child; None where the child could not do it (the caller
        then exports in this process). Raises the export's own HwnasError."""
        try:
            self._conn.send(kwargs)
            while not self._conn.poll(_POLL_S):
                if not self._proc.is_alive():
                    _LOG.debug("export worker exited (code %s) before answering", self._proc.exitcode)
                    return None
            status, value = self._conn.recv()
        except (OSError, EOFError, ValueError, TypeError, AttributeError) as exc:  # pipe gone, or unpicklable
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
        try:
            self._conn.close()
        except OSError:
            pass
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=5)

    @property
    def pid(self) -> int | None:
        return self._proc.pid


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


def _serve(conn: Any) -> None:
    """The child: import what the export needs, then run the one job sent, and answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as it was started (see ExportWorker)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401

        import hwnas.export  # noqa: F401

        kwargs = conn.recv()
    except (EOFError, OSError):
        return  # the run ended without an export
    from hwnas.export import export_verified

    try:
        reply: tuple[str, Any] = ("ok", export_verified(**kwargs))
    except HwnasError as exc:
        reply = ("error", exc)
    except BaseException as exc:  # any other failure: the parent exports in its own process
        reply = ("crash", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(reply)
    except (OSError, EOFError):
        return  # the parent is gone or stopped waiting
    except Exception as exc:  # an unpicklable result or error: say so, plainly
        conn.send(("crash", f"cannot send the result: {type(exc).__name__}: {exc}"))
