"""User-facing errors: the CLI prints them as one line and exits with their code."""

from __future__ import annotations


class HwnasError(Exception):
    """An error the user can fix; its message says what was wrong and how to fix it."""

    exit_code = 2


class UsageError(HwnasError):
    """Bad input: an unknown name, a malformed value, an unusable path."""

    exit_code = 2


class InfeasibleError(HwnasError):
    """The budget cannot be met by anything the space can build (or anything seen)."""

    exit_code = 3


class TrialsFailedError(HwnasError):
    """Every trial of a round failed (e.g. no agent of a remote device answers): the search stops
    instead of failing trial after trial; completed trials are kept and a rerun resumes."""

    exit_code = 4
