"""Job leases in one bot process (bot/engine/_leases.py): what it holds, drops, takes over and hands back."""

from __future__ import annotations

import asyncio
import time

from storage.db import open_database
from storage.quota import Limits, QuotaRepository
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import daily_period, job_ledger
from tests.storage.test_quota import new_job

HOLD = "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?"


async def queued_job(h: Harness) -> int:
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=0.1))
    assert "on its way" in await h.reply(await h.animate("held"))
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "queued")
    return job_id


async def test_a_job_is_held_by_its_submitter_dropped_when_held_elsewhere_and_taken_when_expired(
    harness: Harness, pg_url: str
) -> None:
    h = harness
    bot = await h.start_bot(database_url=pg_url)
    job_id = await queued_job(h)
    job = await h.job(job_id)
    # The submission's record made this process the holder (no extra write).
    assert job.lease_owner == bot.engine.owner and job.lease_expires_at is not None

    # Another (live) process holds it now: a step here reads the row, sees that, and leaves it alone.
    await bot.db.execute(HOLD, ("other-host-1-abcd", time.time() + 60, job_id))
    polls = len(h.runcomfy.requests_to("status"))
    await bot.engine.poller.step(job_id)
    assert len(h.runcomfy.requests_to("status")) == polls
    assert (await h.job(job_id)).state.value == "queued"
    await bot.engine.leases.beat()  # not claimed while that lease runs
    assert (await h.job(job_id)).lease_owner == "other-host-1-abcd"

    # That process died: its lease expires, the next beat takes the job over and polls it to the end.
    await bot.db.execute(HOLD, ("other-host-1-abcd", time.time() - 1, job_id))
    await bot.engine.leases.beat()
    assert (await h.job(job_id)).lease_owner == bot.engine.owner
    h.runcomfy.advance(job.request_id or "")
    done = await h.wait_job(job_id, "delivered")
    assert done.lease_owner is None  # a finished job holds no lease
    assert await job_ledger(bot.quota, job_id) == [("charge", 1)]


async def test_stopping_releases_the_leases_for_the_next_process(harness: Harness, pg_url: str) -> None:
    h = harness
    await h.start_bot(database_url=pg_url)
    job_id = await queued_job(h)
    await h.stop_bot()
    db = await open_database(h.db_path, pg_url)
    try:
        row = await db.fetchone(
            "SELECT lease_owner, lease_expires_at, state FROM jobs WHERE id = ?", (job_id,)
        )
        assert row is not None and (row["lease_owner"], row["lease_expires_at"], row["state"]) == (
            None,
            None,
            "queued",
        )
    finally:
        await db.close()
    # The next process resumes it at once.
    bot = await h.start_bot(database_url=pg_url)
    assert (await h.job(job_id)).lease_owner == bot.engine.owner


async def test_a_live_process_pending_job_survives_a_start_and_a_dead_ones_is_refunded(
    harness: Harness, pg_url: str
) -> None:
    h = harness
    db = await open_database(h.db_path, pg_url)
    try:
        quota = QuotaRepository(db)
        live, _ = await quota.reserve_job(new_job(user_id=7), Limits(5, daily_period()))
        dead, _ = await quota.reserve_job(new_job(user_id=8), Limits(5, daily_period()))
        await db.execute(HOLD, ("live-host-1-aaaa", time.time() + 60, live))
        await db.execute(HOLD, ("dead-host-2-bbbb", time.time() - 1, dead))
    finally:
        await db.close()
    bot = await h.start_bot(database_url=pg_url)
    # Never resubmitted; the dead process's job is refunded, the live one's left to its submitter.
    assert (await h.job(dead)).state.value == "failed"
    assert await job_ledger(bot.quota, dead) == [("charge", 1), ("refund", -1)]
    assert (await h.job(live)).state.value == "pending"
    assert h.runcomfy.requests_to("submit") == []
    # Once its lease expires (the submitter died after all), a beat refunds it too.
    await bot.db.execute(HOLD, ("live-host-1-aaaa", time.time() - 1, live))
    await bot.engine.leases.beat()
    assert (await h.job(live)).state.value == "failed"
    assert await job_ledger(bot.quota, live) == [("charge", 1), ("refund", -1)]


async def test_sqlite_restart_resumes_at_once_despite_its_last_starts_leases(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await queued_job(h)
    await h.stop_bot()
    # As after a crash: the old process's lease is still running.
    db = await open_database(h.db_path)
    try:
        await db.execute(HOLD, ("crashed-host-1-cccc", time.time() + 60, job_id))
    finally:
        await db.close()
    bot = await h.start_bot()
    assert (await h.job(job_id)).lease_owner == bot.engine.owner
    h.runcomfy.advance((await h.job(job_id)).request_id or "")
    await h.wait_job(job_id, "delivered")


async def test_the_pending_sweep_leaves_a_job_another_live_process_is_still_submitting(
    harness: Harness, pg_url: str
) -> None:
    """The fleet at full size (`python -m bench -s fleet`): a process's status posts queue behind its
    REST share for minutes, so its pending jobs look stale to the other processes' sweeps. A running
    lease says its process lives: the sweep leaves the job to it, and it is refunded only once that
    lease expired (the process died)."""
    h = harness
    db = await open_database(h.db_path, pg_url)
    try:
        quota = QuotaRepository(db)
        busy, _ = await quota.reserve_job(new_job(user_id=7), Limits(5, daily_period()))
        await db.execute(HOLD, ("busy-host-1-aaaa", time.time() + 60, busy))
        await db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time() - 3600, busy))
    finally:
        await db.close()
    bot = await h.start_bot(database_url=pg_url)
    assert await bot.engine.sweep_pending() == 0
    assert (await h.job(busy)).state.value == "pending"
    assert await job_ledger(bot.quota, busy) == [("charge", 1)]
    # That process died after all: its lease runs out, and the job is refunded, never resubmitted.
    await bot.db.execute(HOLD, ("busy-host-1-aaaa", time.time() - 1, busy))
    assert await bot.engine.sweep_pending() == 1
    assert (await h.job(busy)).state.value == "failed"
    assert await job_ledger(bot.quota, busy) == [("charge", 1), ("refund", -1)]
    assert h.runcomfy.requests_to("submit") == []


async def test_a_new_job_is_held_by_its_process_from_the_insert_while_it_waits_to_be_posted(
    harness: Harness,
) -> None:
    h = harness
    bot = await h.start_bot(discord_rest_rate=5)
    window = bot.rest_limiter.window
    slots = [await window.acquire() for _ in range(5)]
    h.runcomfy.scripts.append(JobScript(queue_seconds=0, run_seconds=0.1))

    async def held_while_queued() -> tuple[str | None, str | None]:
        # The share stays in use until the job's status post waits for its turn.
        while not any(w.priority == 1 for w in window._queue):
            for slot in slots:
                window.release(slot)
            await asyncio.sleep(0.02)
        job = await h.job(await h.last_job_id())
        return job.state.value, job.lease_owner

    watch = asyncio.create_task(held_while_queued())
    inter = await h.animate()
    assert await asyncio.wait_for(watch, timeout=10) == ("pending", bot.engine.owner)
    assert "on its way" in await h.reply(inter)
    await h.wait_job(1, "delivered")
