"""The run folder: checked before any work, its files written whole or not at all.

It holds ``config.json`` (the resolved settings), ``study.journal`` (the default storage),
``report.json``, ``front.csv`` and ``best.onnx``. Rerunning the same command in it resumes;
other settings, or a folder made by an older hwnas, are refused, never mixed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import UsageError
from hwnas.search.config import IDENTITY_DEFAULTS, IDENTITY_VERSION

#: The key of config.json that says which identity version the run was made with.
VERSION_KEY = "identity_version"
#: How the run folder's lock files begin (see :func:`folder_lock`); one exists only while it is held.
LOCK_PREFIX = ".lock-"


def older_hwnas(where: str, fix: str) -> UsageError:
    return UsageError(
        f"{where} was made by an older hwnas, whose study identity lacks the objective and the memory and size budgets; "
        f"its trials cannot be mixed with this version's: {fix}"
    )


def check_identity(old: dict[str, Any], ident: dict[str, Any], *, where: str, fix: str) -> None:
    """Refuse to resume a run whose settings differ from ``ident`` (naming the first difference)."""
    if old.get("version") != IDENTITY_VERSION:
        raise older_hwnas(where, fix)
    old = {**IDENTITY_DEFAULTS, **old}  # a key added later: the run was made at its default
    diff = [k for k in ident if old.get(k) != ident[k]]
    if diff:
        k = diff[0]
        raise UsageError(f"{where} holds a run with {k}={old.get(k)!r}, not {ident[k]!r}; rerun with the same settings to resume, or {fix}")


def check(out: Path, ident: dict[str, Any]) -> bool:
    """Check, reading only, that ``out`` is new, empty, or a run of the same settings.

    Returns:
        True when ``out`` already holds a run of these settings (its ``config.json``), False when
        the run is new there. Nothing is created: a refused start leaves no folder behind.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; pick a new folder, e.g. --out runs/exp1")
    if not out.is_dir():
        return False
    cfg = out / "config.json"
    # Another worker sharing the folder may be a moment into its start: its files don't make the
    # folder foreign, and neither does the config.json it wrote after this worker's first look.
    starting = (".write-test", "study.journal", "config.json", LOCK_PREFIX)
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(starting)]
    if foreign and not cfg.exists():
        raise UsageError(f"--out {out} is not empty and holds no hwnas run (it holds {foreign[0]}); pick a new or empty folder")
    if not cfg.exists():
        return False
    try:
        old = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"{cfg} is unreadable; pick a new --out folder") from None
    if not isinstance(old, dict):
        raise UsageError(f"{cfg} is not an hwnas run configuration (not a JSON object); pick a new --out folder")
    old_ident = {**old, "version": old.get(VERSION_KEY)}
    check_identity(old_ident, ident, where=str(out), fix="pick another --out (or delete the folder to start again)")
    return True


def create(out: Path) -> bool:
    """Make ``out`` (and its parents) and check that it is writable; call after every check passed.

    Returns:
        True when this call made the folder (:func:`remove_if_empty` undoes it on a later refusal).
    """
    made = not out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # per process: several workers may share the folder
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out}: {exc.strerror}; pick a writable folder") from None
    return made


def remove_if_empty(out: Path) -> None:
    """Remove ``out`` if it holds nothing (a start refused after :func:`create` made it)."""
    try:
        out.rmdir()  # refuses a folder with anything in it: another worker's files are never lost
    except OSError:
        pass


def prepare(out: Path, ident: dict[str, Any]) -> None:
    """:func:`check`, then :func:`create`: ``out`` is new, empty or a run of the same settings, and writable."""
    check(out, ident)
    create(out)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: workers sharing the run folder may write and read it at once."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    tmp.replace(path)


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def folder_lock(folder: Path, name: str) -> Iterator[None]:
    """An exclusive lock, named ``name``, among the processes of this machine that share the run
    folder ``folder`` (none where fcntl is missing); no file is left behind.

    The lock is ``flock`` on ``folder/.lock-<name>``, which the holder unlinks before it unlocks.
    Unlinking a locked file is safe only with the check this does: a process that was waiting on
    the old file gets its lock on an inode no longer at that path, sees so (``fstat`` against
    ``stat``), and starts again on the path's new file. So at any moment at most one process holds
    the lock on the file at that path, and a search that ends leaves no lock file in its folder.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = folder / f"{LOCK_PREFIX}{name}"
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            f.close()
            raise
        if same:
            break
        f.close()  # the holder before us removed this file: lock the one now at the path
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding it (see above)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
