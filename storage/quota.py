"""Credits: atomic reservation with the job row, exactly-once refunds, per-period usage and limits.

Ledger semantics (table quota_ledger, one row per event, `period` = the quota period it belongs to):

* ``charge``  +cost when a job is submitted (or approved), in the period current at that moment;
* ``refund``  -cost when a charged job fails or is cancelled, in the *charge's* period, at most once;
* ``grant``   -n when an admin gives a member n extra credits; it counts for the period current when
  it was given and expires with it.

So ``used = charges + refunds`` and ``granted = -grants`` per period, and a member may spend
``allowance + granted - used`` more. Jobs awaiting approval have no ledger row at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from storage import lifecycle
from storage.db import Database, Transaction, lock_key
from storage.jobs import JobRepository, JobState, NewJob

PeriodKind = Literal["day", "week"]
# States in which a job counts towards a member's concurrent-job limit.
_OPEN_STATES = tuple(sorted(s.value for s in lifecycle.OPEN))


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


def _lock_keys(guild_id: int, user_id: int, limits: Limits | None) -> tuple[int, ...]:
    """What a charge decision must be serial with: the member, and the guild when it has a budget.
    (Several bot processes may share one PostgreSQL database; see Transaction.lock.)"""
    member = lock_key("quota-member", guild_id, user_id)
    if limits is not None and limits.daily_budget is not None:
        return member, lock_key("quota-guild", guild_id)
    return (member,)


async def _usage(tx: Transaction | Database, guild_id: int, user_id: int, period: Period) -> tuple[int, int]:
    """(used, granted) of a member in a period."""
    row = await tx.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'grant' THEN 0 ELSE credits END), 0) AS used,"
        " COALESCE(-SUM(CASE WHEN kind = 'grant' THEN credits ELSE 0 END), 0) AS granted"
        " FROM quota_ledger WHERE guild_id = ? AND user_id = ? AND period = ?",
        (guild_id, user_id, period.key),
    )
    return (int(row["used"]), int(row["granted"])) if row else (0, 0)


async def guild_spent(tx: Transaction | Database, guild_id: int, since: float, until: float) -> int:
    """Credits the guild was charged for jobs started in [since, until) and not refunded."""
    row = await tx.fetchone(
        "SELECT COALESCE(SUM(c.credits), 0) AS spent FROM quota_ledger c"
        " WHERE c.guild_id = ? AND c.kind = 'charge' AND c.created_at >= ? AND c.created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM quota_ledger r WHERE r.job_id = c.job_id AND r.kind = 'refund')",
        (guild_id, since, until),
    )
    return int(row["spent"]) if row else 0


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def standing(self, guild_id: int, user_id: int, limit: int | None, period: Period) -> Standing:
        used, granted = await _usage(self.db, guild_id, user_id, period)
        return Standing(limit=limit, used=used, period=period, granted=granted)

    async def _check(
        self,
        tx: Transaction | Database,
        new: NewJob,
        limits: Limits,
        now: float,
        *,
        exclude_job: int | None,
        for_approval: bool,
    ) -> Standing:
        """Raise the first limit `new` would break; otherwise return the member's standing before it.

        A job whose origin already has an unfinished job raises AlreadyStarted first: a double click
        hears that it started, not that it is cooling down."""
        exclude = -1 if exclude_job is None else exclude_job
        marks = ", ".join("?" for _ in _OPEN_STATES)
        if new.origin is not None:
            row = await tx.fetchone(
                f"SELECT id FROM jobs WHERE origin = ? AND id != ? AND state IN ({marks})",
                (new.origin, exclude, *_OPEN_STATES),
            )
            if row is not None:
                raise AlreadyStarted(int(row["id"]))
        if limits.cooldown > 0 and exclude_job is None:
            # The cooldown spaces out requests, so it is checked when a member asks, not at approval.
            row = await tx.fetchone(
                "SELECT MAX(created_at) AS last FROM jobs WHERE guild_id = ? AND user_id = ?",
                (new.guild_id, new.user_id),
            )
            last = row["last"] if row else None
            if last is not None and now - float(last) < limits.cooldown:
                raise CoolingDown(float(last) + limits.cooldown)
        if limits.max_concurrent is not None:
            row = await tx.fetchone(
                f"SELECT COUNT(*) AS n FROM jobs WHERE guild_id = ? AND user_id = ? AND id != ?"
                f" AND state IN ({marks})",
                (new.guild_id, new.user_id, exclude, *_OPEN_STATES),
            )
            active = int(row["n"]) if row else 0
            if active >= limits.max_concurrent:
                raise TooManyJobs(active, limits.max_concurrent)
        used, granted = await _usage(tx, new.guild_id, new.user_id, limits.period)
        standing = Standing(limit=limits.allowance, used=used, period=limits.period, granted=granted)
        if limits.allowance is not None:
            held = 0
            if for_approval:
                # Credits this member already asked for but nobody approved yet: they could not afford both.
                row = await tx.fetchone(
                    "SELECT COALESCE(SUM(cost), 0) AS held FROM jobs WHERE guild_id = ? AND user_id = ?"
                    " AND state = 'awaiting_approval' AND id != ?",
                    (new.guild_id, new.user_id, exclude),
                )
                held = int(row["held"]) if row else 0
            if used + held + new.cost > limits.allowance + granted:
                raise QuotaExceeded(standing, new.cost, held)
        if limits.daily_budget is not None:
            window = limits.budget_window or period_for("day", 0, now)
            assert window.starts_at is not None
            spent = await guild_spent(
                tx, new.guild_id, window.starts_at.timestamp(), window.resets_at.timestamp()
            )
            if spent + new.cost > limits.daily_budget:
                raise BudgetExhausted(spent, limits.daily_budget, new.cost, window)
        return standing

    async def check_job(self, new: NewJob, limits: Limits, *, await_approval: bool = False) -> Standing:
        """The same checks as `reserve_job`, read-only and without charging: a fast refusal before any
        expensive work (downloading, decoding). It decides nothing -- `reserve_job` re-checks everything
        in its transaction -- so it needs no lock beyond each read's."""
        return await self._check(
            self.db, new, limits, time.time(), exclude_job=None, for_approval=await_approval
        )

    async def reserve_job(
        self,
        new: NewJob,
        limits: Limits | int | None,
        period: Period | None = None,
        *,
        await_approval: bool = False,
    ) -> tuple[int, Standing]:
        """Create the job row and charge its cost in one transaction, or raise a LimitExceeded (or
        AlreadyStarted when `new.origin` already has an unfinished job).

        The check and the charge share one transaction under the database lock, so concurrent commands
        from one member can never overspend or exceed the concurrency limit. With `await_approval`
        the job is created in state awaiting_approval and nothing is charged (only checked).
        `reserve_job(new, allowance, period)` is shorthand for `Limits(allowance, period)`.
        """
        if not isinstance(limits, Limits):
            if period is None:
                raise TypeError("reserve_job(new, allowance, period) needs a period")
            limits = Limits(limits, period)
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.lock(*_lock_keys(new.guild_id, new.user_id, limits))
            before = await self._check(tx, new, limits, now, exclude_job=None, for_approval=await_approval)
            try:
                job_id = await JobRepository.insert(
                    tx, new, now, state=JobState.AWAITING_APPROVAL if await_approval else JobState.PENDING
                )
            except tx.unique_violation as exc:
                # Only the one-unfinished-job-per-origin index can refuse this insert (another
                # process won the race the check above could not see).
                raise AlreadyStarted(None) from exc
            if await_approval:
                return job_id, before
            await self._charge(tx, new.guild_id, new.user_id, job_id, limits.period, new.cost, now)
        return job_id, Standing(before.limit, before.used + new.cost, before.period, before.granted)

    async def approve_job(self, job_id: int, limits: Limits) -> Standing | None:
        """Charge an awaiting job and move it to pending, atomically, with every limit re-checked.

        Returns None if the job is no longer awaiting approval (someone else decided first); raises a
        LimitExceeded if the member cannot afford it now (the job then stays awaiting approval).
        """
        now = time.time()
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT guild_id, user_id, cost, state FROM jobs WHERE id = ?", (job_id,))
            if row is None or row["state"] != JobState.AWAITING_APPROVAL.value:
                return None
            # guild and user never change; what else was read is re-checked under the lock below.
            await tx.lock(*_lock_keys(int(row["guild_id"]), int(row["user_id"]), limits))
            # Another process may have approved it while this one waited for the lock: that click
            # hears it was decided, not that the member (now charged for it) cannot afford it.
            state = await tx.fetchone("SELECT state FROM jobs WHERE id = ?", (job_id,))
            if state is None or state["state"] != JobState.AWAITING_APPROVAL.value:
                return None
            probe = NewJob(
                guild_id=int(row["guild_id"]),
                channel_id=0,
                user_id=int(row["user_id"]),
                prompt="",
                negative_prompt=None,
                resolution="",
                template=None,
                seed=None,
                prompt_extend=False,
                cost=int(row["cost"]),
                upload_limit=0,
            )
            before = await self._check(tx, probe, limits, now, exclude_job=job_id, for_approval=False)
            moved = await lifecycle.move(
                tx, job_id, JobState.PENDING, within=JobState.AWAITING_APPROVAL, now=now
            )
            if not moved:  # decided by another process while this one waited for the lock
                return None
            await self._charge(tx, probe.guild_id, probe.user_id, job_id, limits.period, probe.cost, now)
        return Standing(before.limit, before.used + probe.cost, before.period, before.granted)

    @staticmethod
    async def _charge(
        tx: Transaction, guild_id: int, user_id: int, job_id: int, period: Period, cost: int, now: float
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_ledger (guild_id, user_id, job_id, period, credits, kind, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'charge', ?)",
            (guild_id, user_id, job_id, period.key, cost, now),
        )

    async def grant(
        self, guild_id: int, user_id: int, credits: int, period: Period, *, reason: str | None = None
    ) -> None:
        """Give a member `credits` extra credits for `period` only (a 'grant' row of -credits)."""
        if credits <= 0:
            raise ValueError("a grant must be positive")
        async with self.db.transaction() as tx:
            await tx.lock(*_lock_keys(guild_id, user_id, None))
            await tx.execute(
                "INSERT INTO quota_ledger"
                " (guild_id, user_id, job_id, period, credits, kind, reason, created_at)"
                " VALUES (?, ?, NULL, ?, ?, 'grant', ?, ?)",
                (guild_id, user_id, period.key, -credits, reason, time.time()),
            )
