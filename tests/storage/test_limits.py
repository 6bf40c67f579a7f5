"""QuotaRepository limits: concurrency, cooldown, budget, grants, approval, periods."""

from __future__ import annotations

import asyncio

import pytest

from bot.quota_rules import BudgetExhausted, CoolingDown, Limits, QuotaExceeded, TooManyJobs, period_for
from storage.db import Database
from storage.jobs import JobRepository, JobState
from storage.quota import QuotaRepository
from tests.ledger import daily_period, job_ledger
from tests.storage.test_quota import deliver, new_job


async def test_concurrency_limit_is_atomic(db: Database) -> None:
    quota = QuotaRepository(db)
    limits = Limits(None, daily_period(), max_concurrent=2)
    results = await asyncio.gather(
        *(quota.reserve_job(new_job(), limits) for _ in range(6)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 2
    refused = [r for r in results if isinstance(r, TooManyJobs)]
    assert len(refused) == 4 and refused[0].limit == 2
    # A finished job frees a slot.
    first = next(r for r in results if isinstance(r, tuple))
    await deliver(JobRepository(db), first[0])
    await quota.reserve_job(new_job(), limits)


async def test_cooldown_says_when_it_frees_up(db: Database) -> None:
    quota = QuotaRepository(db)
    limits = Limits(5, daily_period(), cooldown=60)
    await quota.reserve_job(new_job(), limits)
    with pytest.raises(CoolingDown) as info:
        await quota.reserve_job(new_job(), limits)
    assert info.value.frees_at is not None and type(info.value) is CoolingDown
    await quota.reserve_job(new_job(user_id=8), limits)  # per member


async def test_guild_budget_counts_unrefunded_charges_of_everyone(db: Database) -> None:
    quota = QuotaRepository(db)
    limits = Limits(None, daily_period(), daily_budget=3)
    first, _ = await quota.reserve_job(new_job(user_id=1, cost=2), limits)
    with pytest.raises(BudgetExhausted) as info:
        await quota.reserve_job(new_job(user_id=2, cost=2), limits)
    assert info.value.spent == 2 and info.value.frees_at is not None
    await quota.reserve_job(new_job(user_id=2, guild_id=9, cost=2), limits)  # another guild
    await JobRepository(db).transition(first, JobState.FAILED, refund=True)
    await quota.reserve_job(new_job(user_id=2, cost=2), limits)  # the refund freed the budget


async def test_grants_add_to_the_current_period_only(db: Database) -> None:
    quota = QuotaRepository(db)
    today = daily_period(1_700_000_000)
    tomorrow = daily_period(1_700_000_000 + 86_400)
    await quota.grant(1, 7, 2, today)
    standing = await quota.standing(1, 7, 1, today)
    assert (standing.granted, standing.remaining) == (2, 3)
    assert (await quota.standing(1, 7, 1, tomorrow)).remaining == 1
    for _ in range(3):
        await quota.reserve_job(new_job(), Limits(1, today))
    with pytest.raises(QuotaExceeded):
        await quota.reserve_job(new_job(), Limits(1, today))
    with pytest.raises(ValueError):
        await quota.grant(1, 7, 0, today)


async def test_approval_holds_credits_without_charging_then_charges_once(db: Database) -> None:
    quota = QuotaRepository(db)
    jobs = JobRepository(db)
    limits = Limits(2, daily_period())
    job_id, _ = await quota.reserve_job(new_job(cost=2), limits, await_approval=True)
    job = await jobs.get(job_id)
    assert job is not None and job.state is JobState.AWAITING_APPROVAL
    assert await job_ledger(quota, job_id) == []
    with pytest.raises(QuotaExceeded) as info:  # the waiting request holds both credits
        await quota.reserve_job(new_job(cost=1), limits, await_approval=True)
    assert info.value.held == 2
    results = await asyncio.gather(quota.approve_job(job_id, limits), quota.approve_job(job_id, limits))
    assert sum(r is not None for r in results) == 1  # two moderators at once: one wins
    assert await job_ledger(quota, job_id) == [("charge", 2)]
    job = await jobs.get(job_id)
    assert job is not None and job.state is JobState.PENDING


async def test_approval_refused_when_the_member_can_no_longer_afford_it(db: Database) -> None:
    quota = QuotaRepository(db)
    limits = Limits(1, daily_period())
    job_id, _ = await quota.reserve_job(new_job(), limits, await_approval=True)
    await quota.reserve_job(new_job(), Limits(5, daily_period()))  # spent meanwhile (e.g. bigger allowance)
    with pytest.raises(QuotaExceeded):
        await quota.approve_job(job_id, limits)
    assert await job_ledger(quota, job_id) == []
    assert await quota.approve_job(999, limits) is None


def test_periods_reset_at_the_configured_hour() -> None:
    now = 1_700_000_000  # Tuesday 2023-11-14 22:13:20 UTC
    day = period_for("day", 23, now)
    assert day.key == "day:2023-11-13T23" and day.resets_at.isoformat() == "2023-11-14T23:00:00+00:00"
    assert period_for("day", 0, now).key == "2023-11-14"  # the legacy key
    week = period_for("week", 5, now)
    assert week.key == "week:2023-11-13T05" and week.resets_at.isoformat() == "2023-11-20T05:00:00+00:00"
    # Monday 03:00 is still in the previous week when weeks reset at 05:00.
    monday_early = 1_699_844_400  # 2023-11-13 03:00 UTC
    assert period_for("week", 5, monday_early).key == "week:2023-11-06T05"
    with pytest.raises(ValueError):
        period_for("day", 24, now)
