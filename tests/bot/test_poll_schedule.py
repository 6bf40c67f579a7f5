"""The poll schedule (bot.engine._poller.PollSchedule): quiet early, dense where history says jobs
finish, never worse than the schedule without history. Pure functions, driven by a simulated clock."""

from __future__ import annotations

import random

import pytest

from bot.engine._poller import DENSE_MIN_INTERVAL, History, PollSchedule

# The production defaults (POLL_FIRST_DELAY, POLL_MAX_INTERVAL, POLL_BACKOFF_RATIO, STATUS_EDIT_INTERVAL).
SCHEDULE = PollSchedule(first_delay=4.0, max_interval=15.0, backoff_ratio=1 / 15, status_interval=10.0)


def simulate(
    finish: float, history: History | None, *, queued_until: float = 0.0, first: float = 4.0
) -> tuple[int, float]:
    """Poll a job finishing at `finish` s (queued until `queued_until`) from its first poll at `first`:
    (calls until the poll that sees it finished, how late that poll was)."""
    t, calls = first, 0
    while True:
        calls += 1
        if t >= finish:
            return calls, t - finish
        t += SCHEDULE.delay(t, history, queued=t < queued_until)


def spread(low: float, high: float, history: History | None) -> tuple[float, float]:
    """Jobs finishing evenly across low..high: (mean calls, median lag)."""
    runs = [simulate(low + (high - low) * i / 20, history) for i in range(21)]
    lags = sorted(lag for _, lag in runs)
    return sum(calls for calls, _ in runs) / len(runs), lags[len(lags) // 2]


def tight() -> History:
    rng = random.Random(1)
    history = History.of([rng.uniform(55, 65) for _ in range(50)])
    assert history is not None
    return history


def test_no_history_is_todays_schedule() -> None:
    assert History.of([60.0, 61.0, 59.0, 62.0]) is None  # too few samples to say anything
    for age in (0.0, 10.0, 60.0, 120.0, 299.0, 3000.0):
        for queued in (True, False):
            assert SCHEDULE.delay(age, None, queued=queued) == SCHEDULE.baseline(age)
    assert SCHEDULE.baseline(1.0) == 4.0 and SCHEDULE.baseline(90.0) == 6.0 and SCHEDULE.baseline(900) == 15.0
    # Today's cost, for comparison with the tests below: a 60 s job takes 15 calls.
    assert simulate(60.0, None)[0] == 15


def test_tight_history_is_quiet_early_and_dense_around_the_finish() -> None:
    history = tight()
    assert 55 <= history.p10 < history.p90 <= 65
    # A running job is left alone until p10, then looked at densely.
    assert SCHEDULE.delay(4.0, history, queued=False) == pytest.approx(history.p10 - 4.0)
    dense = SCHEDULE.delay(history.p10 + 1, history, queued=False)
    assert DENSE_MIN_INTERVAL <= dense <= 1.5
    calls, lag = spread(55, 65, history)
    assert calls <= 8 and lag <= 1.0
    assert max(simulate(f, history)[0] for f in (55.0, 60.0, 65.0)) <= 14  # today: 15
    # Without history the same jobs cost about twice the calls.
    assert all(simulate(f, None)[0] >= 14 for f in (55.5, 60.0, 64.5))


def test_queued_job_still_shows_its_position_at_a_bounded_rate() -> None:
    history = tight()
    delays = [SCHEDULE.delay(age, history, queued=True) for age in (4.0, 14.0, 24.0, 34.0, 44.0)]
    assert all(d == 10.0 for d in delays)  # every STATUS_EDIT_INTERVAL, not faster, not silent
    assert SCHEDULE.delay(50.0, history, queued=True) == pytest.approx(history.p10 - 50.0)


def test_wide_history_spreads_its_polls_over_the_window() -> None:
    rng = random.Random(2)
    history = History.of([rng.uniform(60, 600) for _ in range(50)])
    assert history is not None and history.p90 - history.p10 > 300
    # Dense is relative to the spread: never denser than ~10 calls across p10..p90, never sparser
    # than today's schedule for the job's age.
    for age in (history.p10, (history.p10 + history.p90) / 2, history.p90 - 1):
        delay = SCHEDULE.delay(age, history, queued=False)
        assert delay <= SCHEDULE.baseline(age)
    # Before p10 a running job is still looked at now and then (a failure must not wait for p10).
    assert SCHEDULE.delay(4.0, history, queued=False) <= 60.0
    for finish in (history.p10 + 1, (history.p10 + history.p90) / 2, history.p90 - 1):
        calls, lag = simulate(finish, history)
        assert lag <= SCHEDULE.baseline(finish) and calls <= simulate(finish, None)[0]
    # A job that beats p10 is seen within the quiet cap.
    assert simulate(history.p10 - 20, history)[1] <= 60.0


def test_five_minute_jobs() -> None:
    rng = random.Random(3)
    history = History.of([rng.uniform(285, 315) for _ in range(50)])
    calls, lag = spread(285, 315, history)
    assert calls <= 12 and lag <= 1.5
    assert simulate(300.0, None)[0] > 30  # today


def test_job_far_past_p90_is_polled_as_today() -> None:
    history = tight()
    for age in (history.p90, history.p90 + 5, 90.0, 300.0, 1000.0):
        for queued in (True, False):
            assert SCHEDULE.delay(age, history, queued=queued) <= SCHEDULE.baseline(age)
    # Just past p90 it backs off from dense; soon after it is exactly today's schedule.
    assert SCHEDULE.delay(history.p90, history, queued=False) < 1.5
    for age in (history.p90 + 2 * SCHEDULE.max_interval, 300.0, 1000.0):
        assert SCHEDULE.delay(age, history, queued=False) == SCHEDULE.baseline(age)
    # An outlier finishing at 10 minutes is seen no later than today's schedule would have seen it,
    # at a cost of a few more calls than without history at most.
    calls, lag = simulate(600.0, history)
    assert lag <= SCHEDULE.baseline(600.0)
    assert calls <= simulate(600.0, None)[0] + 5
