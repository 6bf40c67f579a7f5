from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from bot.quota_rules import AlreadyStarted, Figures, Limits, Period, QuotaExceeded, Standing
from storage import lifecycle
from storage.db import Database
from storage.jobs import JobRepository, JobState, NewJob
from storage.quota import QuotaRepository
from tests.ledger import daily_period, job_ledger


def new_job(user_id: int = 7, guild_id: int = 1, cost: int = 1) -> NewJob:
    return NewJob(
        guild_id=guild_id,
        channel_id=10,
        user_id=user_id,
        prompt="a cat",
        negative_prompt=None,
        resolution="480P",
        template=None,
        seed=None,
        prompt_extend=True,
        cost=cost,
        upload_limit=10 * 1024 * 1024,
    )


async def test_ten_concurrent_reservations_with_one_credit_make_exactly_one_job(db: Database) -> None:
    quota = QuotaRepository(db)
    period = daily_period()
    # The user already spent 4 of 5 credits today.
    for _ in range(4):
        await quota.reserve_job(new_job(), Limits(5, period))

    results = await asyncio.gather(
        *(quota.reserve_job(new_job(), Limits(5, period)) for _ in range(10)), return_exceptions=True
    )

    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(made) == 1
    assert len(refused) == 9
    rows = await db.fetchall("SELECT COUNT(*) AS n FROM jobs")
    assert rows[0]["n"] == 5
    standing = await quota.standing(1, 7, 5, period)
    assert standing.used == 5 and standing.remaining == 0


async def test_quota_is_per_user_and_per_guild(db: Database) -> None:
    quota = QuotaRepository(db)
    period = daily_period()
    await quota.reserve_job(new_job(user_id=1), Limits(1, period))
    await quota.reserve_job(new_job(user_id=2), Limits(1, period))
    await quota.reserve_job(new_job(user_id=1, guild_id=2), Limits(1, period))
    with pytest.raises(QuotaExceeded) as info:
        await quota.reserve_job(new_job(user_id=1), Limits(1, period))
    assert info.value.standing.remaining == 0


async def test_cost_above_remaining_is_refused(db: Database) -> None:
    quota = QuotaRepository(db)
    period = daily_period()
    await quota.reserve_job(new_job(cost=2), Limits(3, period))
    with pytest.raises(QuotaExceeded) as info:
        await quota.reserve_job(new_job(cost=2), Limits(3, period))
    assert info.value.standing.remaining == 1 and info.value.cost == 2


async def test_refund_happens_once_and_lands_in_the_charge_period(db: Database) -> None:
    quota = QuotaRepository(db)
    yesterday = daily_period(1_700_000_000 - 86_400)
    today = daily_period(1_700_000_000)
    job_id, _ = await quota.reserve_job(new_job(), Limits(1, yesterday))
    jobs = JobRepository(db)

    first = await jobs.transition(job_id, JobState.FAILED, refund=True, error="x")
    # A failed job cannot fail again (finished states are terminal), so the only way to a second refund
    # is the refund itself: the ledger's unique index keeps it to one.
    async with db.transaction() as tx:
        second = await lifecycle.refund_charge(tx, job_id, "again", 1_700_000_000)
    assert first is True and second is True  # the second refund ran, but the refund is unique
    assert await job_ledger(quota, job_id) == [("charge", 1), ("refund", -1)]
    assert (await quota.standing(1, 7, 1, yesterday)).used == 0
    assert (await quota.standing(1, 7, 1, today)).used == 0


async def test_end_job_is_compare_and_set(db: Database) -> None:
    quota = QuotaRepository(db)
    jobs = JobRepository(db)
    job_id, _ = await quota.reserve_job(new_job(), Limits(5, daily_period()))
    for state in (JobState.QUEUED, JobState.DELIVERING, JobState.DELIVERED):
        assert await jobs.transition(job_id, state)
    ended = await jobs.transition(job_id, JobState.CANCELLED, refund=True)
    assert ended is False
    job = await jobs.get(job_id)
    assert job is not None and job.state is JobState.DELIVERED
    assert await job_ledger(quota, job_id) == [("charge", 1)]


async def test_concurrent_cancel_and_fail_refund_once(db: Database) -> None:
    quota = QuotaRepository(db)
    jobs = JobRepository(db)
    job_id, _ = await quota.reserve_job(new_job(), Limits(5, daily_period()))
    await jobs.transition(job_id, JobState.QUEUED, request_id="r1")
    results = await asyncio.gather(
        jobs.transition(job_id, JobState.CANCELLED, refund=True),
        jobs.transition(job_id, JobState.FAILED, refund=True),
    )
    assert sorted(results) == [False, True]
    assert await job_ledger(quota, job_id) == [("charge", 1), ("refund", -1)]


async def deliver(jobs: JobRepository, job_id: int) -> bool:
    """Walk a pending job along the lifecycle to delivered."""
    return all(
        [await jobs.transition(job_id, s) for s in (JobState.QUEUED, JobState.DELIVERING, JobState.DELIVERED)]
    )


def test_daily_period_resets_at_utc_midnight() -> None:
    period: Period = daily_period(1_700_000_000)  # 2023-11-14 22:13:20 UTC
    assert period.key == "2023-11-14"
    assert period.resets_at.isoformat() == "2023-11-15T00:00:00+00:00"


async def test_check_job_refuses_like_reserve_but_charges_nothing(db: Database) -> None:
    quota = QuotaRepository(db)
    period = daily_period()
    limits = Limits(1, period)
    standing = await quota.check_job(new_job(), limits)  # affordable: no exception, nothing written
    assert standing.remaining == 1
    row = await db.fetchone("SELECT COUNT(*) AS n FROM jobs")
    assert row is not None and row["n"] == 0
    await quota.reserve_job(new_job(), limits)
    with pytest.raises(QuotaExceeded):
        await quota.check_job(new_job(), limits)
    row = await db.fetchone("SELECT COUNT(*) AS n FROM jobs")
    assert row is not None and row["n"] == 1


async def test_one_unfinished_job_per_origin_even_when_racing(db: Database) -> None:
    quota = QuotaRepository(db)
    period = daily_period()
    clicked = replace(new_job(), origin="again:1:99")
    results = await asyncio.gather(
        *(quota.reserve_job(clicked, Limits(5, period)) for _ in range(5)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, AlreadyStarted)]
    assert len(made) == 1 and len(refused) == 4
    job_id = made[0][0]
    assert all(r.job_id == job_id for r in refused)
    assert (await quota.standing(1, 7, 5, period)).used == 1
    with pytest.raises(AlreadyStarted):
        await quota.check_job(clicked, Limits(5, period))
    # Once that job has ended, the same button may start another one.
    assert await deliver(JobRepository(db), job_id)
    second, _ = await quota.reserve_job(clicked, Limits(5, period))
    assert second != job_id


async def test_the_origin_index_holds_without_the_check(db: Database) -> None:
    """Another process may insert between our check and our insert: the unique index still refuses."""
    quota = QuotaRepository(db)
    period = daily_period()
    clicked = replace(new_job(), origin="edit:1:abc")
    await quota.reserve_job(clicked, Limits(5, period))

    class NoCheck:
        """A rule that passes whatever the figures say: only the index stands in the way."""

        serial_with_guild = False

        @property
        def period(self) -> Period:
            return period

        async def __call__(self, figures: Figures, /) -> Standing:
            return Standing(limit=5, used=0, period=period)

    with pytest.raises(AlreadyStarted) as info:
        await quota.reserve(replace(clicked, prompt="again"), NoCheck())
    assert info.value.job_id is None
    row = await db.fetchone("SELECT COUNT(*) AS n FROM jobs")
    ledger = await db.fetchone("SELECT COUNT(*) AS n FROM quota_ledger")
    assert row is not None and row["n"] == 1 and ledger is not None and ledger["n"] == 1


async def test_stale_pending_lists_only_old_pending_jobs(db: Database) -> None:
    quota = QuotaRepository(db)
    jobs = JobRepository(db)
    period = daily_period()
    old, _ = await quota.reserve_job(new_job(), Limits(5, period))
    young, _ = await quota.reserve_job(new_job(), Limits(5, period))
    queued, _ = await quota.reserve_job(new_job(), Limits(5, period))
    await db.execute("UPDATE jobs SET updated_at = updated_at - 600 WHERE id IN (?, ?)", (old, queued))
    await jobs.transition(queued, JobState.QUEUED)
    await db.execute("UPDATE jobs SET updated_at = updated_at - 600 WHERE id = ?", (queued,))
    assert [j.id for j in await jobs.stale_pending(time.time() - 300)] == [old]
    assert young not in [j.id for j in await jobs.stale_pending(time.time() - 300)]
