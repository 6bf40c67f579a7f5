"""Job leases (migration 0008), on both backends: claim, renew, release, and disjoint concurrent claims."""

from __future__ import annotations

import asyncio

from storage.db import Database, open_database
from storage.jobs import JobRepository, JobState
from storage.quota import Limits, QuotaRepository
from tests.ledger import daily_period
from tests.storage.conftest import DbTarget
from tests.storage.test_quota import new_job

NOW = 1_000_000.0


async def job_in(db: Database, state: JobState) -> int:
    """A charged job put straight into `state` (test setup, bypassing the lifecycle)."""
    job_id, _ = await QuotaRepository(db).reserve_job(new_job(), Limits(10_000, daily_period()))
    await db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state.value, job_id))
    return job_id


async def lease_of(db: Database, job_id: int) -> tuple[str | None, float | None]:
    job = await JobRepository(db).get(job_id)
    assert job is not None
    return job.lease_owner, job.lease_expires_at


async def test_claim_takes_unheld_and_expired_jobs_only(db: Database) -> None:
    jobs = JobRepository(db)
    free = [await job_in(db, s) for s in (JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING)]
    pending = await job_in(db, JobState.PENDING)
    done = await job_in(db, JobState.DELIVERED)
    held = await job_in(db, JobState.QUEUED)
    expired = await job_in(db, JobState.RUNNING)
    hold = "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?"
    await db.execute(hold, ("b", NOW + 5, held))
    await db.execute(hold, ("c", NOW - 1, expired))

    claimed = await jobs.claim("a", NOW, 30)

    assert [j.id for j in claimed] == [*free, expired]
    assert all(j.lease_owner == "a" and j.lease_expires_at == NOW + 30 for j in claimed)
    assert await lease_of(db, held) == ("b", NOW + 5)
    assert await lease_of(db, pending) == (None, None)  # a pending job is never claimed for resubmit
    assert await lease_of(db, done) == (None, None)
    assert await jobs.claim("b", NOW, 30) == []  # nothing left to take


async def test_claim_respects_the_limit(db: Database) -> None:
    ids = [await job_in(db, JobState.QUEUED) for _ in range(5)]
    first = await JobRepository(db).claim("a", NOW, 30, limit=2)
    rest = await JobRepository(db).claim("b", NOW, 30, limit=10)
    assert [j.id for j in first] == ids[:2] and [j.id for j in rest] == ids[2:]


async def test_renew_extends_only_the_owners_leases_in_one_statement(db: Database) -> None:
    jobs = JobRepository(db)
    mine = [await job_in(db, JobState.QUEUED) for _ in range(3)]
    await jobs.claim("a", NOW, 30)
    other = await job_in(db, JobState.RUNNING)
    await jobs.claim("b", NOW, 30)

    assert await jobs.renew("a", NOW + 20, 30) == 3
    assert [await lease_of(db, j) for j in mine] == [("a", NOW + 50)] * 3
    assert await lease_of(db, other) == ("b", NOW + 30)
    # Past b's expiry, a may take b's job; b renewing late finds nothing of its own any more.
    taken = await jobs.claim("a", NOW + 31, 30)
    assert [j.id for j in taken] == [other]
    assert await jobs.renew("b", NOW + 32, 30) == 0


async def test_release_hands_jobs_over_at_once(db: Database) -> None:
    jobs = JobRepository(db)
    ids = [await job_in(db, JobState.QUEUED) for _ in range(3)]
    await jobs.claim("a", NOW, 30)
    assert await jobs.release("a", [ids[0]]) == 1
    assert [j.id for j in await jobs.claim("b", NOW + 1, 30)] == [ids[0]]
    assert await jobs.release("a") == 2
    assert [j.id for j in await jobs.claim("b", NOW + 1, 30)] == ids[1:]
    assert await jobs.release("a", []) == 0


async def test_a_finishing_move_drops_the_lease_in_the_same_write(db: Database) -> None:
    jobs = JobRepository(db)
    job_id = await job_in(db, JobState.RUNNING)
    await jobs.claim("a", NOW, 30)
    assert await jobs.transition(job_id, JobState.DELIVERING)
    assert await lease_of(db, job_id) == ("a", NOW + 30)  # still being worked on
    assert await jobs.transition(job_id, JobState.DELIVERED)
    assert await lease_of(db, job_id) == (None, None)
    assert await jobs.renew("a", NOW + 10, 30) == 0


async def test_expired_pending_jobs_are_found_for_a_refund(db: Database) -> None:
    jobs = JobRepository(db)
    dead = await job_in(db, JobState.PENDING)
    alive = await job_in(db, JobState.PENDING)
    unheld = await job_in(db, JobState.PENDING)
    hold = "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?"
    await db.execute(hold, ("x", NOW - 1, dead))
    await db.execute(hold, ("y", NOW + 9, alive))
    assert [j.id for j in await jobs.expired_pending(NOW)] == [dead]
    assert unheld not in [j.id for j in await jobs.expired_pending(NOW + 100)]


async def test_concurrent_claimers_get_disjoint_sets(db_target: DbTarget) -> None:
    """Several connections (processes, on PostgreSQL) claiming at once never take the same job."""
    first = await open_database(*db_target)
    try:
        ids = {await job_in(first, JobState.QUEUED) for _ in range(60)}
        others = [first] if first.dialect == "sqlite" else [await open_database(*db_target) for _ in range(3)]
        claimers = [*others, first] if first.dialect != "sqlite" else [first] * 4
        try:
            results = await asyncio.gather(
                *(
                    JobRepository(database).claim(f"owner-{n}", NOW, 30, limit=5)
                    for _ in range(4)
                    for n, database in enumerate(claimers)
                )
            )
        finally:
            for database in others:
                if database is not first:
                    await database.close()
        taken = [job.id for batch in results for job in batch]
        assert len(taken) == len(set(taken)) == 60
        assert set(taken) == ids
    finally:
        await first.close()
