"""Optuna storages from the URLs hwnas accepts, and which worker process runs each trial.

A journal file is the default (``study.journal`` in the run folder; several processes on one
machine may share it), named by its bare path: the form that the ``optuna`` CLI and
optuna-dashboard open too (they refuse ``journal:PATH``, which earlier hwnas versions recorded
and hwnas still reads). Any URL with ``://`` is an Optuna RDB storage: ``sqlite:///...``,
``postgresql://...``, ``mysql+pymysql://...``; several machines share a PostgreSQL or MySQL one.

A worker killed in the middle of a trial leaves the trial RUNNING. Every trial records its
worker (machine, pid, process start time), so a trial whose worker ran on this machine and is
gone is failed at once by the next hwnas process that looks (a rerun, or another worker). RDB
storages also get Optuna's heartbeat: a trial whose worker has been silent for ``GRACE_S`` is
failed whichever machine it ran on. A trial of a live worker is never failed. Each failed trial
says why in its ``failed_because`` user attribute; its work is redone (the budget counts
completed and pruned trials only).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from hwnas import _optuna, trials
from hwnas.errors import UsageError

if TYPE_CHECKING:
    import optuna

#: How earlier hwnas versions named a journal file (their config.json files say so): still read.
JOURNAL_PREFIX = "journal:"
#: The name a new journal file given by its bare path must end with (a word without "://" is
#: more likely a mistyped URL than a journal to create).
JOURNAL_SUFFIX = ".journal"
#: The first bytes of an SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: RDB storages: seconds between a running trial's heartbeats, and the silence after which it is failed.
HEARTBEAT_S = 10
GRACE_S = 60
#: Seconds to wait for a database server before giving up (an unreachable host must not hang the CLI).
CONNECT_TIMEOUT_S = 5
#: Trial system attribute: the worker that runs the trial (see :func:`this_worker`); why a trial failed.
WORKER_ATTR = trials.WORKER
FAILED_BECAUSE = trials.FAILED_BECAUSE


def open_storage(url: str) -> Any:
    """The Optuna storage for ``url`` (RDB storages with heartbeat and a connect timeout).

    Raises:
        UsageError: when the URL cannot be opened, with an example of one that can.
    """
    path = journal_path(url)
    if path is not None:
        return _open_journal(url, path)
    import optuna

    target = url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() in ("postgresql", "mysql"):
            connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
        if parsed.drivername == "postgresql":
            # SQLAlchemy's default driver changed (psycopg2 in 2.0, psycopg 3 in 2.1): use whichever is installed.
            target = parsed.set(drivername=f"postgresql+{_postgres_driver()}").render_as_string(hide_password=False)
        # Workers that start together race to create Optuna's tables; the losers retry once the
        # winner has made them (PostgreSQL: "duplicate key value violates unique constraint
        # pg_type_typname_nsp_index", seen with 4 workers started together on an empty database).
        # A connection failure is not retried: it fails within the connect timeout.
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval, grace_period
                    rdb = optuna.storages.RDBStorage(
                        target,
                        engine_kwargs={"connect_args": connect_args} if connect_args else None,
                        heartbeat_interval=HEARTBEAT_S,
                        grace_period=GRACE_S,
                    )
                return optuna.storages.get_storage(rdb)
            except Exception as exc:
                if attempt == 4 or not _is_schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, ImportError):
            hint = "install its driver: pip install 'hwnas[postgres]' for PostgreSQL (psycopg), pymysql for mysql+pymysql://"
        elif _is_bad_url(exc):
            hint = "not a storage URL hwnas knows; e.g. --storage sqlite:///runs/study.db or postgresql://user:password@host/db"
        elif "://" in url and not url.startswith("sqlite"):
            hint = "check the URL, the credentials and that the server runs and is reachable"
        else:
            hint = "e.g. --storage sqlite:///runs/study.db or postgresql://user:password@host/db"
        raise UsageError(f"cannot open storage {display_url(url)!r}: {first}; {hint}") from None
    raise AssertionError("unreachable")


def journal_path(url: str) -> str | None:
    """The journal file that ``url`` names (a bare path, or ``journal:PATH``); None for a URL."""
    if url.startswith(JOURNAL_PREFIX):
        return url[len(JOURNAL_PREFIX) :]
    return None if not url or "://" in url else url


def default_storage(out: str | os.PathLike[str]) -> str:
    """The storage of a run folder ``out`` when none is given: its journal file, as a bare path."""
    return os.path.join(os.fspath(out), "study.journal")


def _open_journal(url: str, path: str) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    given = f"cannot open storage {url!r}"
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                raise UsageError(f"{given}: it is an SQLite database, not a journal file; give it as sqlite:///{path}")
    elif not url.startswith(JOURNAL_PREFIX) and not path.endswith(JOURNAL_SUFFIX):
        raise UsageError(
            f"{given}: no such file, and no storage URL; e.g. --storage runs/study{JOURNAL_SUFFIX} (a journal file, "
            "made if missing), sqlite:///runs/study.db or postgresql://user:password@host/db"
        )
    try:
        return JournalStorage(JournalFileBackend(path))
    except OSError as exc:
        raise UsageError(f"{given}: {exc.strerror or exc}; check that its folder exists and is writable") from None


def _postgres_driver() -> str:
    import importlib.util

    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return module
    return "psycopg"  # not installed: the error names it, the hint says how to install it


def _is_bad_url(exc: Exception) -> bool:
    try:
        from sqlalchemy.exc import ArgumentError
    except ImportError:
        return False
    return isinstance(exc, (ArgumentError, ValueError))


def _is_schema_race(exc: Exception) -> bool:
    """Another worker created the same table, type or version row a moment earlier."""
    try:
        from sqlalchemy.exc import IntegrityError, ProgrammingError
    except ImportError:
        return False
    return isinstance(exc, (IntegrityError, ProgrammingError))


def display_url(url: str) -> str:
    """``url`` with any password masked, for logs, ``config.json`` and ``report.json``; a journal
    file as its bare path (what the ``optuna`` CLI and optuna-dashboard open)."""
    path = journal_path(url)
    if path is not None:
        return path
    if "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://***"


# -- which worker runs a trial ------------------------------------------------------------------
@cache
def _machine() -> str:
    """This machine (and PID namespace): where a pid names the same process as here."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot; Linux), None if unknown or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # a zombie has ended: only its exit status remains
        return None
    return fields[19]


def this_worker() -> dict[str, Any]:
    """This process as a trial's worker record."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "machine": _machine(), "pid": pid, "started": _started(pid)}


def worker_gone(record: Any) -> bool:
    """True when ``record`` names a process of this machine that has ended (a reused pid is
    told apart by its start time); False when it lives, ran on another machine, or is unknown."""
    if not isinstance(record, dict) or record.get("machine") != _machine():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        started = _started(pid)
        return started is None or (record.get("started") is not None and started != record["started"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def describe_worker(record: Any) -> str:
    if not isinstance(record, dict):
        return "an unknown worker"
    return f"pid {record.get('pid')} on {record.get('host')}"


def has_heartbeat(storage: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def fail_stale_trials(study: optuna.Study, *, log: Callable[[str], None] = lambda s: None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, each with its reason; return their numbers.

    Gone: a process of this machine that has ended, or (storages with a heartbeat) a worker
    silent for longer than the grace period. A trial of a live worker is left alone, and so is a
    trial run elsewhere on a storage without heartbeat (no one here can tell).
    """
    import optuna

    storage: Any = _optuna.storage_of(study)
    silent: set[int] = set()
    if has_heartbeat(storage):
        # The storage's own list (BaseHeartbeat's interface): Optuna's fail_stale_trials would
        # fail these too, but cannot say why; hwnas records the reason first.
        silent = set(_optuna.stale_trial_ids(study))
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = t.system_attrs.get(WORKER_ATTR)
        if worker_gone(record):
            reason = f"its worker ({describe_worker(record)}) ended while running it (killed or crashed); its work is redone"
        elif _optuna.trial_id(t) in silent:
            grace = getattr(getattr(storage, "_backend", storage), "grace_period", GRACE_S)
            reason = f"no heartbeat from its worker ({describe_worker(record)}) for over {grace} s; its work is redone"
        elif record is None and _age_s(t) > GRACE_S:
            # hwnas records the worker as a trial starts: a trial without one for this long lost its
            # process in that first moment (or was made by another program), and would block the budget.
            reason = f"no worker recorded on it {GRACE_S} s after it started (its process stopped at once); its work is redone"
        else:
            continue
        try:
            storage.set_trial_user_attr(_optuna.trial_id(t), FAILED_BECAUSE, reason)
            if storage.set_trial_state_values(_optuna.trial_id(t), optuna.trial.TrialState.FAIL):
                failed.append(t.number)
                log(f"trial {t.number}: failed: {reason}")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    return failed


def _age_s(trial: optuna.trial.FrozenTrial) -> float:
    from datetime import datetime

    start = trial.datetime_start
    return 0.0 if start is None else (datetime.now(start.tzinfo) - start).total_seconds()


def trial_is_judged(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a RUNNING trial will end or be failed without anyone here acting: its worker is a
    live process of this machine, or the storage has a heartbeat (a silent worker is failed), or
    it is a moment old and has no worker yet (its worker records itself at once, else
    :func:`fail_stale_trials` fails it after ``GRACE_S``)."""
    record = trial.system_attrs.get(WORKER_ATTR)
    if record is None and _age_s(trial) <= GRACE_S:
        return True
    return has_heartbeat(_optuna.storage_of(study)) or (isinstance(record, dict) and record.get("machine") == _machine())
