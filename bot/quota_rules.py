"""The quota's domain: periods, a member's standing, the limits a job is checked against and the
refusals. Plain values with no project imports, so storage (which stores the figures) and the bot
(which decides and words the refusals) can both use them without an import cycle."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

PeriodKind = Literal["day", "week"]

# The quota scope (the ledger's guild key) of user-installed /animate jobs outside servers that added
# the bot -- DMs, group DMs, other servers: one allowance per user shared by all of them, separate
# from every server's. No Discord snowflake is 0.
USER_INSTALL_SCOPE = 0


def default_allowance(scope: int, daily_quota: int, user_install_quota: int) -> int:
    """The allowance before any admin rule: USER_INSTALL_DAILY_QUOTA in the user-install scope,
    else DAILY_QUOTA."""
    return user_install_quota if scope == USER_INSTALL_SCOPE else daily_quota


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
    purchased: int = 0  # credits bought through Discord, user-wide, never expiring (0 = none or unread)
    paid_purchased: int = 0  # of the job just charged, the credits paid from purchased ones

    @property
    def remaining(self) -> int | None:
        """Credits left of the period's allowance (None = unlimited); purchased credits are apart."""
        if self.limit is None:
            return None
        return max(0, self.limit + self.granted - self.used)

    def from_purchased(self, cost: int) -> int:
        """How many of a job's `cost` credits are paid from purchased credits: what the allowance
        (spent first) does not cover."""
        left = self.remaining
        return 0 if left is None else max(0, cost - left)


@dataclass(frozen=True, slots=True)
class Limits:
    """Everything checked, atomically, before a job is charged."""

    allowance: int | None  # credits per period; None = unlimited
    period: Period
    max_concurrent: int | None = None  # unfinished jobs per member (awaiting approval included)
    cooldown: float = 0.0  # seconds between two requests of one member
    daily_budget: int | None = None  # credits the whole guild may spend per budget day
    budget_window: Period | None = None  # that day; a UTC day when not given
    purchased: bool = False  # the member may spend purchased credits once the allowance is spent


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


class Figures(Protocol):
    """The usage figures a limit check reads, for one job, inside the transaction that charges it
    (storage provides them, read lazily: a limit that is off costs no query)."""

    cost: int  # what the job costs
    now: float

    async def open_job_for_origin(self) -> int | None:
        """An unfinished job from the same origin (None when there is none, or no origin)."""
        ...

    async def last_request_at(self) -> float | None:
        """When the member last asked for a job in the guild."""
        ...

    async def active_jobs(self) -> int:
        """The member's unfinished jobs in the guild (this one excluded)."""
        ...

    async def usage(self, period: Period) -> tuple[int, int]:
        """(used, granted) credits of the member in the period."""
        ...

    async def held(self) -> int:
        """Credits of the member's other jobs still awaiting approval."""
        ...

    async def purchased(self) -> int:
        """The member's purchased credits (user-wide: every server and context)."""
        ...

    async def guild_spent(self, since: float, until: float) -> int:
        """Credits the guild spent on jobs started in [since, until), refunds excluded."""
        ...


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """The rule a job must pass before it is charged: which limits apply and in what order.

    Storage calls it inside the charging transaction (under the lock `serial_with_guild` asks
    for), so concurrent requests can never overspend."""

    limits: Limits
    for_approval: bool = False  # count the member's other waiting requests as spent
    first_request: bool = True  # the cooldown spaces out requests: checked when asked, not at approval

    @property
    def period(self) -> Period:
        """The period a charge is booked in."""
        return self.limits.period

    @property
    def serial_with_guild(self) -> bool:
        """A guild budget makes every charge in the guild one decision, not just the member's."""
        return self.limits.daily_budget is not None

    async def __call__(self, figures: Figures) -> Standing:
        """Raise the first limit the job would break; otherwise the member's standing before it.

        A job whose origin already has an unfinished job raises AlreadyStarted first: a double click
        hears that it started, not that it is cooling down."""
        limits, cost, now = self.limits, figures.cost, figures.now
        started = await figures.open_job_for_origin()
        if started is not None:
            raise AlreadyStarted(started)
        if limits.cooldown > 0 and self.first_request:
            last = await figures.last_request_at()
            if last is not None and now - last < limits.cooldown:
                raise CoolingDown(last + limits.cooldown)
        if limits.max_concurrent is not None:
            active = await figures.active_jobs()
            if active >= limits.max_concurrent:
                raise TooManyJobs(active, limits.max_concurrent)
        used, granted = await figures.usage(limits.period)
        standing = Standing(limit=limits.allowance, used=used, period=limits.period, granted=granted)
        if limits.allowance is not None:
            # Credits this member already asked for but nobody approved yet: they could not afford both.
            held = await figures.held() if self.for_approval else 0
            # What the allowance left does not cover (never less than nothing left: a member over a
            # lowered allowance is short by the cost, not by the overshoot too).
            short = cost - max(0, limits.allowance + granted - used - held)
            if short > 0 and limits.purchased:
                # Read only when the allowance falls short: purchased credits are spent after it.
                standing = replace(standing, purchased=await figures.purchased())
            if short > standing.purchased:
                raise QuotaExceeded(standing, cost, held)
        if limits.daily_budget is not None:
            window = limits.budget_window or period_for("day", 0, now)
            assert window.starts_at is not None
            spent = await figures.guild_spent(window.starts_at.timestamp(), window.resets_at.timestamp())
            if spent + cost > limits.daily_budget:
                raise BudgetExhausted(spent, limits.daily_budget, cost, window)
        return standing
