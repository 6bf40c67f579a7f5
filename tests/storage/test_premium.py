"""Purchased credits (storage/premium.py) on both backends: granted once, spent once, taken back once."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from bot.quota_rules import Limits, QuotaExceeded
from storage import lifecycle
from storage.db import Database, open_database
from storage.jobs import JobState
from storage.premium import Entitlement, PremiumRepository
from storage.quota import QuotaRepository
from tests.ledger import daily_period, job_ledger
from tests.storage.conftest import DbTarget
from tests.storage.test_quota import new_job

USER = 7
PACK = Entitlement(
    id=1_300_000_000_000_000_001, sku_id=1_200_000_000_000_000_001, user_id=USER, guild_id=None
)


def spend(allowance: int = 0) -> Limits:
    return Limits(allowance, daily_period(), purchased=True)


async def test_an_entitlement_seen_by_two_processes_at_once_is_granted_once(db_target: DbTarget) -> None:
    one, two = await open_database(*db_target), await open_database(*db_target)
    try:
        repos = [PremiumRepository(one), PremiumRepository(two)]
        granted = await asyncio.gather(
            *(repos[i % 2].grant(PACK, 10, consumable=True, seen_guild_id=i or None) for i in range(10))
        )
        assert sum(granted) == 1
        assert await repos[0].balance(USER) == 10 and await repos[1].balance(USER) == 10
        record = await repos[1].get(PACK.id)
        assert record is not None and record.credits == 10 and not record.consumed
    finally:
        await one.close()
        await two.close()


async def test_purchased_credits_are_spent_once_across_processes_and_servers(db_target: DbTarget) -> None:
    one, two = await open_database(*db_target), await open_database(*db_target)
    try:
        await PremiumRepository(one).grant(PACK, 3, consumable=True)
        quotas = [QuotaRepository(one), QuotaRepository(two)]
        # No allowance at all: only the 3 purchased credits pay, whichever server asks.
        results = await asyncio.gather(
            *(quotas[i % 2].reserve_job(new_job(guild_id=1 + i % 4), spend()) for i in range(20)),
            return_exceptions=True,
        )
        made = [r for r in results if not isinstance(r, BaseException)]
        assert len(made) == 3
        assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
        assert await PremiumRepository(two).balance(USER) == 0
    finally:
        await one.close()
        await two.close()


async def test_the_allowance_is_spent_first_and_a_refund_returns_each_credit_to_its_bucket(
    db: Database,
) -> None:
    quota, premium = QuotaRepository(db), PremiumRepository(db)
    await premium.grant(PACK, 10, consumable=True)
    first, standing = await quota.reserve_job(new_job(cost=2), spend(3))
    assert (standing.used, standing.remaining) == (2, 1) and await premium.balance(USER) == 10
    second, standing = await quota.reserve_job(new_job(cost=2), spend(3))
    assert (standing.used, standing.remaining, standing.purchased) == (3, 0, 9)
    assert await premium.balance(USER) == 9
    async with db.transaction() as tx:
        assert await lifecycle.move(tx, second, JobState.FAILED, refund=True, reason="failed")
    assert await job_ledger(quota, second) == [("charge", 2), ("refund", -2)]
    assert await premium.balance(USER) == 10
    assert (await quota.standing(1, USER, 3, daily_period())).used == 2
    assert first != second


async def test_a_refund_takes_back_only_the_unspent_credits_once(db: Database) -> None:
    quota, premium = QuotaRepository(db), PremiumRepository(db)
    await premium.grant(PACK, 10, consumable=True)
    for _ in range(4):
        await quota.reserve_job(new_job(), spend())
    await db.execute("UPDATE jobs SET state = 'delivered'", ())  # spent (held credits count as unspent)
    deleted = Entitlement(PACK.id, PACK.sku_id, USER, None, deleted=True)
    revocation = await premium.revoke(deleted)
    assert revocation is not None and (revocation.record.credits, revocation.taken_back) == (10, 6)
    assert await premium.revoke(deleted) is None
    assert await premium.balance(USER) == 0
    # Granting it again (an interaction still carrying it) changes nothing.
    assert await premium.grant(PACK, 10, consumable=True) is False
    assert await premium.balance(USER) == 0


async def test_a_refund_counts_credits_held_by_a_running_job_and_its_failure_returns_nothing(
    db: Database,
) -> None:
    quota, premium = QuotaRepository(db), PremiumRepository(db)
    await premium.grant(PACK, 10, consumable=True)
    held, _ = await quota.reserve_job(new_job(cost=6), spend())
    await quota.reserve_job(new_job(cost=3), spend())  # this one is delivered: really spent
    await db.execute("UPDATE jobs SET state = 'delivered' WHERE id != ?", (held,))
    # 1 left, 6 held by the unfinished job: those 7 are unspent, the 3 delivered were spent.
    revocation = await premium.revoke(Entitlement(PACK.id, PACK.sku_id, USER, None, deleted=True))
    assert revocation is not None and revocation.taken_back == 7
    assert await premium.balance(USER) == 0
    async with db.transaction() as tx:
        assert await lifecycle.move(tx, held, JobState.FAILED, refund=True, reason="failed")
    # The refund pays off the debt: nothing of the refunded pack comes back.
    assert await premium.balance(USER) == 0
    with pytest.raises(QuotaExceeded):
        await quota.reserve_job(new_job(), spend())
    # A new pack is whole.
    await premium.grant(Entitlement(PACK.id + 1, PACK.sku_id, USER, None), 5, consumable=True)
    assert await premium.balance(USER) == 5


async def test_a_second_refund_does_not_count_held_credits_twice(db: Database) -> None:
    quota, premium = QuotaRepository(db), PremiumRepository(db)
    other = Entitlement(PACK.id + 1, PACK.sku_id, USER, None)
    await premium.grant(PACK, 4, consumable=True)
    await premium.grant(other, 4, consumable=True)
    held, _ = await quota.reserve_job(new_job(cost=6), spend())
    first = await premium.revoke(dataclasses.replace(PACK, deleted=True))
    assert first is not None and first.taken_back == 4  # 2 left + 6 held
    second = await premium.revoke(dataclasses.replace(other, deleted=True))
    assert second is not None and second.taken_back == 4  # 8 unspent in all, 4 of them taken already
    async with db.transaction() as tx:
        assert await lifecycle.move(tx, held, JobState.FAILED, refund=True, reason="failed")
    assert await premium.balance(USER) == 0


async def test_an_entitlement_first_seen_deleted_never_grants(db: Database) -> None:
    premium = PremiumRepository(db)
    assert await premium.revoke(Entitlement(PACK.id, PACK.sku_id, USER, None, deleted=True)) is None
    assert await premium.grant(PACK, 10, consumable=True) is False
    assert await premium.balance(USER) == 0
    assert await premium.unconsumed() == []


async def test_consumes_pending_until_marked(db: Database) -> None:
    premium = PremiumRepository(db)
    await premium.grant(PACK, 10, consumable=True)
    assert [r.id for r in await premium.unconsumed()] == [PACK.id]
    await premium.mark_consumed(PACK.id)
    assert await premium.unconsumed() == []


async def test_a_server_subscription_counts_while_live(db: Database) -> None:
    premium = PremiumRepository(db)
    sub = Entitlement(1_300_000_000_000_000_009, 1_200_000_000_000_000_009, USER, 55)
    assert await premium.guild_subscribed(55) is False
    await premium.record_subscription(sub)
    assert await premium.guild_subscribed(55) and not await premium.guild_subscribed(56)
    await premium.record_subscription(Entitlement(sub.id, sub.sku_id, USER, 55, ends_at=time.time() - 1))
    assert await premium.guild_subscribed(55) is False
    await premium.record_subscription(Entitlement(sub.id, sub.sku_id, USER, 55, ends_at=time.time() + 99))
    assert await premium.guild_subscribed(55) is True
    await premium.record_subscription(Entitlement(sub.id, sub.sku_id, USER, 55, deleted=True))
    assert await premium.guild_subscribed(55) is False


async def test_a_refund_whose_payload_names_no_user_takes_back_from_the_grants_user(db: Database) -> None:
    premium = PremiumRepository(db)
    await premium.grant(PACK, 10, consumable=True)
    revocation = await premium.revoke(Entitlement(PACK.id, PACK.sku_id, None, None, deleted=True))
    assert revocation is not None and revocation.taken_back == 10 and revocation.record.user_id == USER
    assert await premium.balance(USER) == 0
    # Never seen and naming nobody: recorded revoked, so it never grants later.
    unseen = Entitlement(PACK.id + 5, PACK.sku_id, None, None, deleted=True)
    assert await premium.revoke(unseen) is None
    assert (
        await premium.grant(dataclasses.replace(unseen, user_id=USER, deleted=False), 10, consumable=True)
        is False
    )
    assert await premium.balance(USER) == 0
