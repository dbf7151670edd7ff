"""Progress lines: the search's ETA, DARTS's phases after its epochs, profile's cell-structure phase."""

from __future__ import annotations

import pytest

from hwnas.search.progress import WINDOW, Heartbeat, TrialClock, clock_text, eta_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_eta_follows_the_recent_rate_not_the_start_up() -> None:
    # 30 s of start-up before the first trial, then 0.5 s a trial: 100 trials in all.
    clock = FakeClock()
    trials = TrialClock(clock=clock)
    clock.now = 30.0
    trials.tick(1)
    assert trials.eta(99) is None  # one trial done: nothing known yet of a trial's own time
    for done in range(2, 12):
        clock.now += 0.5
        trials.tick(done)
    # The old estimate, elapsed / ran * left = 35 / 11 * 89, said 4:43 for a 44.5 s rest.
    assert trials.eta(100 - 11) == pytest.approx(0.5 * 89)


def test_eta_shrugs_off_a_one_off_slow_trial() -> None:
    clock = FakeClock()
    trials = TrialClock(clock=clock)
    trials.tick(0)
    for done in range(1, 30):
        clock.now += 20.0 if done == 15 else 1.0  # a reference re-measurement in trial 15
        trials.tick(done)
    assert trials.eta(10) == pytest.approx(10.0)


def test_eta_follows_a_sampler_that_slows() -> None:
    per_trial = [0.1] * 200 + [2.0] * WINDOW
    assert eta_seconds(per_trial, 50) == pytest.approx(100.0)


def test_eta_shares_an_interval_among_trials_other_workers_added() -> None:
    clock = FakeClock()
    trials = TrialClock(clock=clock)
    trials.tick(5)
    clock.now = 4.0
    trials.tick(9)  # four trials counted in 4 s: 1 s each
    assert trials.eta(3) == pytest.approx(3.0)
    trials.tick(9)  # a line without a new trial (a reused one of this worker) adds no time
    assert trials.per_trial_s == [1.0] * 4


def test_eta_edges() -> None:
    assert eta_seconds([], 10) is None
    assert eta_seconds([], 0) == 0.0
    assert eta_seconds([3.0, 1.0, 2.0], 2) == pytest.approx(4.0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="left"):
            eta_seconds([1.0], bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        eta_seconds([1.0], 1, window=0)


def test_heartbeat_speaks_at_most_once_per_interval_with_a_linear_eta() -> None:
    clock, said = FakeClock(), []
    beat = Heartbeat(said.append, "  cell graph structure", total=15_625, unit="cells", every_s=10.0, clock=clock)
    for i in range(0, 15_625, 250):  # 250 cells every 1.6 s
        clock.now = i / 250 * 1.6
        beat(i)
    # 99 s in all, counts every 1.6 s: a line at the first count 10 s after the last (every 11.2 s).
    assert len(said) == beat.lines == 8
    assert [line.split("(")[1].split(",")[0] for line in said[:3]] == ["0:11", "0:22", "0:34"]
    first = said[0]
    assert first.startswith("  cell graph structure: 1,750/15,625 cells (0:11, eta ")
    # eta of the first line: 11.2 s for 1,750 cells -> 13,875 left at the same rate = 88.8 s.
    assert first.endswith("eta 1:29)")


def test_heartbeat_without_a_total_counts_and_gives_no_eta() -> None:
    clock, said = FakeClock(), []
    beat = Heartbeat(said.append, "selection: derived networks timed", clock=clock)
    beat(1)
    clock.now = 12.0
    beat(40)
    assert said == ["selection: derived networks timed: 40 (0:12)"]


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 59.4, 61, 3600, 3725)] == ["0:00", "0:59", "1:01", "1:00:00", "1:02:05"]


def test_profiles_cell_structure_phase_says_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 24 item 12: 'hwnas profile' was silent for the 100 s of this phase.
    import numpy as np

    from hwnas.search import progress
    from hwnas.spaces import _nb201_graph as nb201_graph
    from hwnas.spaces import get_space

    class Eager(progress.Heartbeat):  # every count it is told, without waiting 10 s
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **{**kwargs, "every_s": 0.0})

    def features(provider: str, *, progress=None, **kw):  # type: ignore[no-untyped-def]
        for i in range(0, 15_625, 5_000):
            progress(i, 15_625)
        return np.zeros((15_625, 2 * len(nb201_graph.NODE_TYPES)), np.int16)

    monkeypatch.setattr(progress, "Heartbeat", Eager)
    monkeypatch.setattr(nb201_graph, "all_cell_features", features)
    said: list[str] = []
    get_space("nb201").lut_codec().measure_structure("CPUExecutionProvider", said.append)
    counts = [line for line in said if "/15,625 cells (" in line]
    assert [c.split(": ")[1].split(" ")[0] for c in counts] == ["0/15,625", "5,000/15,625", "10,000/15,625", "15,000/15,625"]
    assert said[-1].startswith("  cell graph structure of 15,625 cells: done in")
