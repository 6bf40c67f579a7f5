"""When to poll a job next: a pure function of its age, its state and how long comparable jobs took.

Each poll costs a call; each second between a job finishing and the next poll is a second the
requester waits. For a job of age t, the interval that best trades the two (least expected lag for
the expected calls) grows with the square root of S(t)/f(t) -- the chance the job is still running,
over the chance it finishes right now. So polls are sparse where few jobs finish and dense where
many do, and get denser towards the end of the spread, where the few jobs still running are the
only ones that pay for the calls. S and f come from the recent durations, smoothed with a Gaussian
kernel as wide as the gap to each sample's second-nearest neighbour (a handful of samples says
where jobs finish, not exactly when; and two kinds of job, a minute and five, stay two peaks).
Past the end of the spread history says nothing more: the interval grows back to the schedule
without history.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

POLL_MIN_SAMPLES = 5  # finished jobs needed before their spread decides the poll schedule
DENSE_MIN_INTERVAL = 0.5  # the densest polling, around the likely finish
# The interval is this times sqrt(S/f) seconds (the optimum for a call worth LAG_SCALE**2 / 2 s of lag)...
LAG_SCALE = 0.45
# ... or more for a wide spread, so a job finishing at its end is polled at most this often within it
# (a spread of minutes is not worth a poll every few seconds, and calls stay below the baseline's).
DENSE_CALLS = 48
QUIET_CAP = 60.0  # before p10 a running job is looked at again after this, its age, or p10/4 (the most)
TAIL_MASS = 0.02  # past the age that only this share of comparable jobs outlived, history ends
PAST_TAIL_RAMP = 0.5  # past that end each poll waits longer by half the time since the end
EXTRA_CALLS = 1  # a job is never polled more than this many times more than without history ...
# ... and one that started without history (cold: its peers' history arrives mid-way) not even that.
MIN_BANDWIDTH = 0.5  # seconds: identical samples still describe a spread, not an instant
NEIGHBOUR = 2  # each sample's kernel reaches its NEIGHBOUR-th nearest other sample
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class History:
    """The spread of recent durations (submit -> finished) of comparable jobs."""

    samples: tuple[float, ...]  # sorted
    bandwidths: tuple[float, ...]  # of the Gaussian kernel around each sample
    p10: float
    p90: float
    end: float  # the age only TAIL_MASS of the smoothed distribution outlives
    scale: float  # the interval is `scale * sqrt(S/f)` between p10 and `end`

    @classmethod
    def of(cls, durations: Sequence[float]) -> History | None:
        """None while there are too few samples to say where a job is likely to finish."""
        if len(durations) < POLL_MIN_SAMPLES:
            return None
        return _history(tuple(sorted(durations)))

    def survival(self, age: float) -> float:
        """The share of comparable jobs still running at `age` (smoothed)."""
        pairs = zip(self.samples, self.bandwidths, strict=True)
        return sum(math.erfc((age - x) / (h * _SQRT2)) for x, h in pairs) / (2 * len(self.samples))

    def remaining_scale(self, age: float) -> float:
        """S/f at `age` in seconds: the inverse of the rate at which still-running jobs finish."""
        still = finishing = 0.0
        for x, h in zip(self.samples, self.bandwidths, strict=True):
            z = (age - x) / h
            still += math.erfc(z / _SQRT2) / 2
            finishing += math.exp(-z * z / 2) / (_SQRT2PI * h)
        return math.inf if finishing <= 0.0 else still / finishing


@functools.lru_cache(maxsize=256)
def _history(samples: tuple[float, ...]) -> History:
    # Cached: every poll step asks, and the samples change only when a comparable job finishes.
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    n = len(samples)
    bandwidths = []
    for i, x in enumerate(samples):  # sorted: the nearest neighbours are among the next few
        gaps = sorted(abs(x - samples[j]) for j in range(max(0, i - NEIGHBOUR), min(n, i + NEIGHBOUR + 1)))
        bandwidths.append(max(MIN_BANDWIDTH, gaps[NEIGHBOUR]))  # gaps[0] is the sample itself
    partial = History(samples, tuple(bandwidths), deciles[0], deciles[-1], samples[-1], LAG_SCALE)
    low, high = samples[0], samples[-1] + 8 * max(bandwidths)
    for _ in range(40):  # bisect for the end: survival falls with age
        mid = (low + high) / 2
        low, high = (mid, high) if partial.survival(mid) > TAIL_MASS else (low, mid)
    end = max(high, deciles[-1])
    # A job finishing at the end is polled about `dense` times within the spread at LAG_SCALE;
    # the interval scales with 1 / scale, so a wider scale brings that down to DENSE_CALLS.
    steps, width = 64, (end - deciles[0]) / 64
    dense = sum(
        width
        / max(
            DENSE_MIN_INTERVAL, LAG_SCALE * math.sqrt(partial.remaining_scale(deciles[0] + (i + 0.5) * width))
        )
        for i in range(steps)
    )
    scale = LAG_SCALE * max(1.0, dense / DENSE_CALLS)
    return History(samples, partial.bandwidths, deciles[0], deciles[-1], end, scale)


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """When to look at a job next: a pure function of its age, its state and recent history."""

    first_delay: float
    max_interval: float
    backoff_ratio: float
    status_interval: float  # queue-position edits are shown no faster than this

    def baseline(self, age: float) -> float:
        """Without history: often while a job is young, backing off towards the cap."""
        return min(self.max_interval, max(self.first_delay, age * self.backoff_ratio))

    def baseline_calls(self, age: float) -> float:
        """About how many polls the baseline has made by `age` (from the first, at `first_delay`)."""
        age = max(0.0, age)
        if self.first_delay >= self.max_interval:
            return age / self.max_interval
        steady = self.first_delay / self.backoff_ratio  # from here each interval is age * ratio ...
        capped = max(steady, self.max_interval / self.backoff_ratio)  # ... and from here the cap
        calls = min(age, steady) / self.first_delay
        if age > steady:
            calls += math.log(min(age, capped) / steady) / math.log1p(self.backoff_ratio)
        if age > capped:
            calls += (age - capped) / self.max_interval
        return calls

    def baseline_age(self, calls: float) -> float:
        """The age by which the baseline has made `calls` polls: the inverse of `baseline_calls`."""
        if calls <= 0:
            return 0.0
        if self.first_delay >= self.max_interval:
            return calls * self.max_interval
        steady = self.first_delay / self.backoff_ratio
        capped = max(steady, self.max_interval / self.backoff_ratio)
        at_steady = steady / self.first_delay
        if calls <= at_steady:
            return calls * self.first_delay
        at_capped = at_steady + math.log(capped / steady) / math.log1p(self.backoff_ratio)
        if calls <= at_capped:
            return steady * math.exp((calls - at_steady) * math.log1p(self.backoff_ratio))
        return capped + (calls - at_capped) * self.max_interval

    def delay(
        self,
        age: float,
        history: History | None,
        *,
        queued: bool,
        polls: int | None = None,
        extra: int = EXTRA_CALLS,
    ) -> float:
        """Quiet until the p10 of history, then spaced by sqrt(S/f) (see the module), then back to
        the baseline past the end of history, so a job that runs far longer than its peers is polled
        as without history. From p10 on never less often than without history (before it, the quiet
        cap is deliberately sparser); and with `polls` (the job's polls so far), never more than
        `extra` polls more than without history by its age, whatever the history (a server's first
        jobs may be planned on the bot-wide history of other work). A job that started without
        history has been polled as without it, so its peers' history arriving mid-way may only
        spend what that schedule would have: the poller passes `extra=0` for it."""
        baseline = self.baseline(age)
        if history is None:
            return baseline
        planned = self._planned(age, history, baseline, queued=queued)
        if polls is None:
            return planned
        # The next poll is the job's (polls + 1)-th: never before the baseline made its
        # (polls + 1 - extra)-th. (Asking "is it ahead now?" would let a job exactly on the baseline's
        # grid -- a cold one -- through with one more poll each time history arrives.)
        return max(planned, self.baseline_age(polls + 1 - extra) - age)

    def _planned(self, age: float, history: History, baseline: float, *, queued: bool) -> float:
        if age < history.p10:
            # A queued job keeps showing its position at a bounded rate; a running one stays quiet,
            # but is still looked at now and then: a failure is seen at the latest when the job is
            # twice as old as it was (or a minute, or p10/4 later), not only at p10.
            quiet = max(QUIET_CAP, age, history.p10 / 4)
            cap = max(baseline, self.status_interval) if queued else quiet
            return min(history.p10 - age, cap)
        if queued:
            # Still queued where comparable jobs finish: it cannot finish before it runs, so it is
            # looked at as without history (which notices the start), not densely.
            return baseline
        if age < history.end:
            return min(baseline, self._dense(history, age))
        # Past the end, back off quickly from dense to the baseline (a few calls), never beyond it.
        return min(baseline, self._dense(history, history.end) + (age - history.end) * PAST_TAIL_RAMP)

    @staticmethod
    def _dense(history: History, age: float) -> float:
        return max(DENSE_MIN_INTERVAL, history.scale * math.sqrt(history.remaining_scale(age)))


def finish_time(remote: str | None, seen_unfinished: float | None, submitted: float, now: float) -> float:
    """When RunComfy finished a job that a poll at `now` found finished: RunComfy's own `finished_at`,
    kept between the last poll that saw the job unfinished (or its submit) and now, whatever
    RunComfy's clock says; without it, halfway between that poll and now. The recent durations this
    module plans with are made of these: the moment the bot noticed would add the bot's own polling
    lag to every sample, and the dense polls would drift later with each generation of jobs."""
    low = max(seen_unfinished or submitted, submitted)
    when = _timestamp(remote)
    if when is not None:
        return min(max(when, low), now)
    return now if seen_unfinished is None else (min(low, now) + now) / 2


def _timestamp(text: str | None) -> float | None:
    """A remote ISO-8601 time as a Unix timestamp (UTC if it names no zone); None if it is not one."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
