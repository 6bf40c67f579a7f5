"""Credits: atomic reservation with the job row, exactly-once refunds, per-period usage and limits.

Ledger semantics (table quota_ledger, one row per event, `period` = the quota period it belongs to):

* ``charge``  +cost when a job is submitted (or approved), in the period current at that moment;
* ``refund``  -cost when a charged job fails or is cancelled, in the *charge's* period, at most once;
* ``grant``   -n when an admin gives a member n extra credits; it counts for the period current when
  it was given and expires with it.

So ``used = charges + refunds`` and ``granted = -grants`` per period, and a member may spend
``allowance + granted - used`` more. Jobs awaiting approval have no ledger row at all.

Purchased credits (storage/premium.py) are user-wide and never expire: a charge's ``purchased`` column
says how many of its credits came from them (spent after the allowance; its refund carries the same,
negated), so ``used`` counts only the rest and a refund returns each credit to its bucket.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from bot.quota_rules import AlreadyStarted, LimitCheck, Limits, Period, Standing
from storage import lifecycle
from storage.db import Database, Transaction, lock_key
from storage.jobs import JobRepository, JobState, NewJob
from storage.premium import purchased_balance, user_lock

if TYPE_CHECKING:
    from bot.quota_rules import Figures

# States in which a job counts towards a member's concurrent-job limit.
_OPEN_STATES = tuple(sorted(s.value for s in lifecycle.OPEN))


def _lock_keys(guild_id: int, user_id: int, serial_with_guild: bool) -> tuple[int, ...]:
    """What a charge decision must be serial with: the member, and the guild when it has a budget.
    (Several bot processes may share one PostgreSQL database; see Transaction.lock.)"""
    # The user's own key too: purchased credits are one balance over every server (storage.premium).
    member = lock_key("quota-member", guild_id, user_id)
    if serial_with_guild:
        return member, user_lock(user_id), lock_key("quota-guild", guild_id)
    return member, user_lock(user_id)


async def _usage(tx: Transaction | Database, guild_id: int, user_id: int, period: Period) -> tuple[int, int]:
    """(used, granted) of a member in a period."""
    row = await tx.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'grant' THEN 0 ELSE credits - purchased END), 0) AS used,"
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


def _after(before: Standing, cost: int, purchased: int) -> Standing:
    """The standing once a job of `cost` is charged, `purchased` of it from purchased credits."""
    return Standing(
        before.limit,
        before.used + cost - purchased,
        before.period,
        before.granted,
        before.purchased - purchased,
        purchased,
    )


class Check(Protocol):
    """A rule evaluated inside the charging transaction (bot.quota_rules.LimitCheck is the one)."""

    @property
    def period(self) -> Period: ...

    @property
    def serial_with_guild(self) -> bool: ...

    async def __call__(self, figures: Figures, /) -> Standing: ...


class _Figures:
    """bot.quota_rules.Figures read from the database (or one transaction), each when asked."""

    def __init__(
        self, tx: Transaction | Database, new: NewJob, now: float, *, exclude_job: int | None
    ) -> None:
        self.tx = tx
        self.new = new
        self.cost = new.cost
        self.now = now
        self.exclude = -1 if exclude_job is None else exclude_job

    async def open_job_for_origin(self) -> int | None:
        if self.new.origin is None:
            return None
        marks = ", ".join("?" for _ in _OPEN_STATES)
        row = await self.tx.fetchone(
            f"SELECT id FROM jobs WHERE origin = ? AND id != ? AND state IN ({marks})",
            (self.new.origin, self.exclude, *_OPEN_STATES),
        )
        return None if row is None else int(row["id"])

    async def last_request_at(self) -> float | None:
        row = await self.tx.fetchone(
            "SELECT MAX(created_at) AS last FROM jobs WHERE guild_id = ? AND user_id = ?",
            (self.new.guild_id, self.new.user_id),
        )
        last = row["last"] if row else None
        return None if last is None else float(last)

    async def active_jobs(self) -> int:
        marks = ", ".join("?" for _ in _OPEN_STATES)
        row = await self.tx.fetchone(
            f"SELECT COUNT(*) AS n FROM jobs WHERE guild_id = ? AND user_id = ? AND id != ?"
            f" AND state IN ({marks})",
            (self.new.guild_id, self.new.user_id, self.exclude, *_OPEN_STATES),
        )
        return int(row["n"]) if row else 0

    async def usage(self, period: Period) -> tuple[int, int]:
        return await _usage(self.tx, self.new.guild_id, self.new.user_id, period)

    async def held(self) -> int:
        row = await self.tx.fetchone(
            "SELECT COALESCE(SUM(cost), 0) AS held FROM jobs WHERE guild_id = ? AND user_id = ?"
            " AND state = 'awaiting_approval' AND id != ?",
            (self.new.guild_id, self.new.user_id, self.exclude),
        )
        return int(row["held"]) if row else 0

    async def guild_spent(self, since: float, until: float) -> int:
        return await guild_spent(self.tx, self.new.guild_id, since, until)

    async def purchased(self) -> int:
        return await purchased_balance(self.tx, self.new.user_id)


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def standing(self, guild_id: int, user_id: int, limit: int | None, period: Period) -> Standing:
        used, granted = await _usage(self.db, guild_id, user_id, period)
        return Standing(limit=limit, used=used, period=period, granted=granted)

    async def guild_spent(self, guild_id: int, since: float, until: float) -> int:
        """Credits the guild was charged for jobs started in [since, until) and not refunded."""
        return await guild_spent(self.db, guild_id, since, until)

    async def check(self, new: NewJob, check: Check) -> Standing:
        """Run `check` over the member's figures, read-only and without charging: a fast refusal before
        any expensive work (downloading, decoding). It decides nothing -- `reserve` re-checks
        everything in its transaction -- so it needs no lock beyond each read's."""
        return await check(_Figures(self.db, new, time.time(), exclude_job=None))

    async def reserve(
        self, new: NewJob, check: Check, *, await_approval: bool = False
    ) -> tuple[int, Standing]:
        """Create the job row and charge its cost in one transaction if `check` passes over the
        figures read in that transaction; whatever it raises (a LimitExceeded, AlreadyStarted) is
        raised and nothing is written.

        The check and the charge share one transaction under the database lock, so concurrent commands
        from one member can never overspend or exceed the concurrency limit. With `await_approval`
        the job is created in state awaiting_approval and nothing is charged (only checked).
        """
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.lock(*_lock_keys(new.guild_id, new.user_id, check.serial_with_guild))
            before = await check(_Figures(tx, new, now, exclude_job=None))
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
            paid = before.from_purchased(new.cost)
            await self._charge(tx, new.guild_id, new.user_id, job_id, check.period, new.cost, now, paid)
        return job_id, _after(before, new.cost, paid)

    async def approve(self, job_id: int, check: Check) -> Standing | None:
        """Charge an awaiting job and move it to pending, atomically, if `check` passes in that
        transaction.

        Returns None if the job is no longer awaiting approval (someone else decided first); raises
        what `check` raises if the member cannot afford it now (the job then stays awaiting approval).
        """
        now = time.time()
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT guild_id, user_id, cost, state FROM jobs WHERE id = ?", (job_id,))
            if row is None or row["state"] != JobState.AWAITING_APPROVAL.value:
                return None
            # guild and user never change; what else was read is re-checked under the lock below.
            await tx.lock(*_lock_keys(int(row["guild_id"]), int(row["user_id"]), check.serial_with_guild))
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
            before = await check(_Figures(tx, probe, now, exclude_job=job_id))
            moved = await lifecycle.move(
                tx, job_id, JobState.PENDING, within=JobState.AWAITING_APPROVAL, now=now
            )
            if not moved:  # decided by another process while this one waited for the lock
                return None
            paid = before.from_purchased(probe.cost)
            await self._charge(tx, probe.guild_id, probe.user_id, job_id, check.period, probe.cost, now, paid)
        return _after(before, probe.cost, paid)

    # The limits rule bound in (bot.quota_rules.LimitCheck): shorthands for callers that have Limits.
    async def check_job(self, new: NewJob, limits: Limits, *, await_approval: bool = False) -> Standing:
        """`check` with the standard limits rule."""
        return await self.check(new, LimitCheck(limits, for_approval=await_approval))

    async def reserve_job(
        self,
        new: NewJob,
        limits: Limits | int | None,
        period: Period | None = None,
        *,
        await_approval: bool = False,
    ) -> tuple[int, Standing]:
        """`reserve` with the standard limits rule. `reserve_job(new, allowance, period)` is
        shorthand for `Limits(allowance, period)`."""
        if not isinstance(limits, Limits):
            if period is None:
                raise TypeError("reserve_job(new, allowance, period) needs a period")
            limits = Limits(limits, period)
        check = LimitCheck(limits, for_approval=await_approval)
        return await self.reserve(new, check, await_approval=await_approval)

    async def approve_job(self, job_id: int, limits: Limits) -> Standing | None:
        """`approve` with the standard limits rule (no cooldown: that spaces out requests)."""
        return await self.approve(job_id, LimitCheck(limits, first_request=False))

    @staticmethod
    async def _charge(
        tx: Transaction,
        guild_id: int,
        user_id: int,
        job_id: int,
        period: Period,
        cost: int,
        now: float,
        purchased: int = 0,
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_ledger"
            " (guild_id, user_id, job_id, period, credits, kind, created_at, purchased)"
            " VALUES (?, ?, ?, ?, ?, 'charge', ?, ?)",
            (guild_id, user_id, job_id, period.key, cost, now, purchased),
        )

    async def grant(
        self, guild_id: int, user_id: int, credits: int, period: Period, *, reason: str | None = None
    ) -> None:
        """Give a member `credits` extra credits for `period` only (a 'grant' row of -credits)."""
        if credits <= 0:
            raise ValueError("a grant must be positive")
        async with self.db.transaction() as tx:
            await tx.lock(*_lock_keys(guild_id, user_id, False))
            await tx.execute(
                "INSERT INTO quota_ledger"
                " (guild_id, user_id, job_id, period, credits, kind, reason, created_at)"
                " VALUES (?, ?, NULL, ?, ?, 'grant', ?, ?)",
                (guild_id, user_id, period.key, -credits, reason, time.time()),
            )
