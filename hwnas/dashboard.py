"""``hwnas dashboard RUN``: optuna-dashboard on the study of a run folder (extra ``hwnas[dashboard]``).

The run's storage is opened as ``hwnas report`` opens it (a run folder moved or made from another
working directory still finds its journal), and optuna-dashboard's WSGI app is served on a
threaded wsgiref server, bound before anything is printed so that a port in use is one line.
"""

from __future__ import annotations

from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hwnas import _optuna
from hwnas.errors import UsageError

INSTALL = "pip install 'hwnas[dashboard]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection does not hold up Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request would bury the address
        pass


def dashboard_server(run: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> tuple[WSGIServer, str]:
    """A bound (not yet serving) optuna-dashboard server on the study of ``run``, and the study's page.

    Raises:
        UsageError: optuna-dashboard is not installed, ``run`` is no run folder, or the address is taken.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError(f"hwnas dashboard needs optuna-dashboard, which is not installed: {INSTALL}") from None
    if not run.is_dir():
        raise UsageError(f"RUN {run} is not a folder; give a run folder written by 'hwnas search'")
    from hwnas.report import open_run_study

    _, study = open_run_study(run)
    app = optuna_dashboard.wsgi(_optuna.storage_of(study))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port (or --host)") from None
    return server, f"http://{host}:{server.server_port}/dashboard/studies/{_optuna.study_id(study)}"
