"""The quota's domain: periods, a member's standing, the limits a job is checked against and the
refusals. Plain values with no project imports, so storage (which stores the figures) and the bot
(which decides and words the refusals) can both use them without an import cycle."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

PeriodKind = Literal["day", "week"]


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # e.g. "2026-11-30"; a different key is a fresh allowance
    resets_at: datetime  # UTC
    starts_at: datetime | None = None
    kind: PeriodKind = "day"


def period_for(kind: PeriodKind, reset_hour: int = 0, now: float | None = None) -> Period:
    """The quota period containing `now`: a UTC day, or a week starting on Monday, at `reset_hour` UTC."""
    if not 0 <= reset_hour <= 23:
        raise ValueError("reset_hour must be 0..23")
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    start = moment.replace(hour=reset_hour, minute=0, second=0, microsecond=0)
    if start > moment:
        start -= timedelta(days=1)
    if kind == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
        key = f"week:{start:%Y-%m-%dT%H}"
    else:
        end = start + timedelta(days=1)
        # Midnight days keep the plain date key, so existing ledgers stay valid.
        key = start.date().isoformat() if reset_hour == 0 else f"day:{start:%Y-%m-%dT%H}"
    return Period(key=key, resets_at=end, starts_at=start, kind=kind)


@dataclass(frozen=True, slots=True)
class Standing:
    limit: int | None  # None = unlimited
    used: int  # charges minus refunds in the period
    period: Period
    granted: int = 0  # one-off extra credits for this period

    @property
    def remaining(self) -> int | None:
        """Credits left (None = unlimited)."""
        if self.limit is None:
            return None
        return max(0, self.limit + self.granted - self.used)


@dataclass(frozen=True, slots=True)
class Limits:
    """Everything checked, atomically, before a job is charged."""

    allowance: int | None  # credits per period; None = unlimited
    period: Period
    max_concurrent: int | None = None  # unfinished jobs per member (awaiting approval included)
    cooldown: float = 0.0  # seconds between two requests of one member
    daily_budget: int | None = None  # credits the whole guild may spend per budget day
    budget_window: Period | None = None  # that day; a UTC day when not given


class LimitExceeded(Exception):
    """A limit refused the job. `frees_at` (epoch seconds) says when it frees up, if known."""

    def __init__(self, message: str, frees_at: float | None) -> None:
        super().__init__(message)
        self.frees_at = frees_at


class QuotaExceeded(LimitExceeded):
    def __init__(self, standing: Standing, cost: int, held: int = 0) -> None:
        super().__init__(
            f"quota exceeded: {standing.used}/{standing.limit} used, job costs {cost}",
            standing.period.resets_at.timestamp(),
        )
        self.standing = standing
        self.cost = cost
        self.held = held  # credits of this member's jobs still awaiting approval


class TooManyJobs(LimitExceeded):
    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} unfinished jobs, limit {limit}", None)
        self.active = active
        self.limit = limit


class CoolingDown(LimitExceeded):
    def __init__(self, frees_at: float) -> None:
        super().__init__(f"cooling down until {frees_at:.0f}", frees_at)


class BudgetExhausted(LimitExceeded):
    def __init__(self, spent: int, budget: int, cost: int, window: Period) -> None:
        super().__init__(
            f"guild budget: {spent}/{budget} spent, job costs {cost}", window.resets_at.timestamp()
        )
        self.spent = spent
        self.budget = budget
        self.cost = cost
        self.window = window


class AlreadyStarted(Exception):
    """A job from the same origin (the same click, the same opened form) is already under way."""

    def __init__(self, job_id: int | None) -> None:
        super().__init__(f"already started as job {job_id}")
        self.job_id = job_id
