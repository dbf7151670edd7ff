"""The time left of a search, from its recent per-trial time.

The elapsed time over the trials run would count the one-off work before and around the first
trial (the reference measurement, the budget probe, the first trial's warm-up) as if every
trial paid it: a loop of 58 s was once announced at 6:59. The estimate here is the median of
the last :data:`WINDOW` per-trial times, with the interval that holds the start-up left out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

#: How many recent per-trial times the estimate looks at: enough that a one-off slow trial (a
#: reference re-measurement) moves the median little, few enough to follow a sampler that slows.
WINDOW = 20


def eta_seconds(per_trial_s: Sequence[float], left: int, *, window: int = WINDOW) -> float | None:
    """Seconds to run ``left`` more trials at the median of the last ``window`` per-trial times.

    Args:
        per_trial_s: seconds each trial of this run took, oldest first, without the start-up.
        left: trials still to run.
        window: how many of the most recent times the median is taken over (at least 1).

    Returns:
        The estimate, 0.0 when nothing is left, or None before any per-trial time is known.
    """
    if isinstance(left, bool) or not isinstance(left, int) or left < 0:
        raise ValueError(f"left must be a whole number >= 0, got {left!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number >= 1, got {window!r}")
    if left == 0:
        return 0.0
    recent = list(per_trial_s)[-window:]
    if not recent:
        return None
    return statistics.median(recent) * left


class TrialClock:
    """Per-trial times of one run, from the moments its progress lines are printed.

    The first tick ends the interval that holds the start-up, which is not a trial's time; each
    later tick adds the time since the previous one, shared among the trials done since (several
    when other workers add trials to the same study).
    """

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self.per_trial_s: list[float] = []

    def tick(self, done: int) -> None:
        """Note that ``done`` trials of the study are counted now."""
        now = self._clock()
        if self._last is not None and done > self._last[1]:
            t, before = self._last
            self.per_trial_s.extend([(now - t) / (done - before)] * min(done - before, WINDOW))
            del self.per_trial_s[:-WINDOW]
        if self._last is None or done > self._last[1]:
            self._last = (now, done)

    def eta(self, left: int) -> float | None:
        """Seconds to run ``left`` more trials (None until a per-trial time is known)."""
        return eta_seconds(self.per_trial_s, max(0, left))


def clock_text(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Heartbeat:
    """Progress lines of one long step, at most one every ``every_s`` seconds.

    Call it with the count done so far; it says ``<what>: <done>[/<total>] (<elapsed>[, eta <left>])``
    when ``every_s`` have passed since its start or its last line. The estimate is linear in the
    count, which suits steps of like items (cells, networks); without ``total`` there is none.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        what: str,
        *,
        total: int | None = None,
        unit: str = "",
        every_s: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._say, self.what, self.total, self.unit, self.every_s, self._clock = say, what, total, unit, every_s, clock
        self.t0 = self._last = clock()
        self.lines = 0

    def __call__(self, done: int) -> None:
        now = self._clock()
        if now - self._last < self.every_s:
            return
        self._last = now
        self.lines += 1
        elapsed = now - self.t0
        count = f"{done:,}" if self.total is None else f"{done:,}/{self.total:,}"
        eta = ""
        if self.total is not None and 0 < done <= self.total:
            eta = f", eta {clock_text(elapsed * (self.total - done) / done)}"
        self._say(f"{self.what}: {count}{' ' + self.unit if self.unit else ''} ({clock_text(elapsed)}{eta})")
