"""Optuna storages from the URLs hwnas accepts: ``journal:PATH`` (the default, a journal file)
or any URL Optuna understands (``sqlite:///...``, ``postgresql://...``)."""

from __future__ import annotations

from typing import Any

from hwnas.errors import UsageError

JOURNAL_PREFIX = "journal:"


def open_storage(url: str) -> Any:
    """The Optuna storage for ``url``.

    Raises:
        UsageError: when the URL cannot be opened, with an example of one that can.
    """
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len(JOURNAL_PREFIX) :]))
    import optuna

    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:
        raise UsageError(f"cannot open storage {url!r}: {str(exc).splitlines()[0]}; e.g. --storage sqlite:///runs/study.db") from None
