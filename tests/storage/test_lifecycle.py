"""The job lifecycle: every allowed move works, every other is refused, refunds happen exactly once."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.quota_rules import Limits
from storage import lifecycle
from storage.db import Database, open_database
from storage.jobs import JobRepository, JobState
from storage.lifecycle import TRANSITIONS, IllegalTransition, JobEvent
from storage.quota import QuotaRepository
from tests.ledger import daily_period, job_ledger
from tests.storage.conftest import DbTarget
from tests.storage.test_quota import new_job

MIGRATIONS = Path(__file__).resolve().parents[2] / "storage" / "migrations"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "l.db")
    yield database
    await database.close()


async def job_in(db: Database, state: JobState) -> int:
    """A charged job put straight into `state` (bypassing the lifecycle: this is the test's setup)."""
    job_id, _ = await QuotaRepository(db).reserve_job(new_job(), Limits(1000, daily_period()))
    await db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state.value, job_id))
    return job_id


async def state_of(db: Database, job_id: int) -> JobState:
    job = await JobRepository(db).get(job_id)
    assert job is not None
    return job.state


def test_the_table_covers_every_state_and_finished_states_are_terminal() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state, targets in TRANSITIONS.items():
        assert state not in targets  # no move to itself
        assert state.finished == (not targets)
    assert {JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED} == lifecycle.FINISHED
    # Every unfinished state can still end, and every state is reachable from a starting one.
    reachable = set(lifecycle.INITIAL)
    for _ in JobState:
        reachable |= {t for s in reachable for t in TRANSITIONS[s]}
    assert reachable == set(JobState)


def test_the_named_groups_mean_one_thing_each() -> None:
    assert {JobState.QUEUED, JobState.RUNNING} == lifecycle.POLLED
    assert lifecycle.CANCELLABLE <= lifecycle.POLLED
    assert all(JobState.CANCELLED in TRANSITIONS[s] for s in lifecycle.CANCELLABLE)
    assert {JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING} == lifecycle.UNFINISHED
    assert lifecycle.UNFINISHED | {JobState.AWAITING_APPROVAL} == lifecycle.OPEN
    assert not (lifecycle.OPEN & lifecycle.FINISHED) and set(JobState) == lifecycle.OPEN | lifecycle.FINISHED


def test_the_one_job_per_origin_index_covers_exactly_the_open_states() -> None:
    sql = (MIGRATIONS / "0007_job_origin.sql").read_text()
    listed = set(re.findall(r"'([a-z_]+)'", sql.split("state IN", 1)[1]))
    assert listed == {s.value for s in lifecycle.OPEN}


@pytest.mark.parametrize(("start", "to"), list(itertools.product(JobState, JobState)))
async def test_every_allowed_move_works_and_every_other_is_refused(
    db: Database, start: JobState, to: JobState
) -> None:
    job_id = await job_in(db, start)
    jobs = JobRepository(db)
    allowed = to in TRANSITIONS[start]
    if not any(to in targets for targets in TRANSITIONS.values()):
        with pytest.raises(IllegalTransition):  # nothing may move there at all (e.g. a fresh pending)
            await jobs.transition(job_id, to)
    else:
        assert await jobs.transition(job_id, to) is allowed
    assert await state_of(db, job_id) is (to if allowed else start)


async def test_a_refund_is_written_with_its_move_exactly_once(db: Database) -> None:
    quota, jobs = QuotaRepository(db), JobRepository(db)
    job_id = await job_in(db, JobState.QUEUED)
    assert await jobs.transition(job_id, JobState.FAILED, refund=True, reason="failed", error="boom")
    # A second ending (a racing cancel) is refused, and so is its refund.
    assert not await jobs.transition(job_id, JobState.CANCELLED, refund=True, reason="cancelled")
    assert await job_ledger(quota, job_id) == [("charge", 1), ("refund", -1)]
    job = await jobs.get(job_id)
    assert job is not None and job.error == "boom" and job.finished_at is not None


async def test_a_refused_move_writes_no_refund(db: Database) -> None:
    quota, jobs = QuotaRepository(db), JobRepository(db)
    job_id = await job_in(db, JobState.DELIVERED)
    assert not await jobs.transition(job_id, JobState.FAILED, refund=True)
    assert await job_ledger(quota, job_id) == [("charge", 1)]


async def test_a_job_never_charged_gets_no_refund_row(db: Database) -> None:
    quota, jobs = QuotaRepository(db), JobRepository(db)
    job_id, _ = await quota.reserve_job(new_job(), Limits(5, daily_period()), await_approval=True)
    assert await state_of(db, job_id) is JobState.AWAITING_APPROVAL
    assert await jobs.transition(job_id, JobState.CANCELLED, within=JobState.AWAITING_APPROVAL, refund=True)
    assert await job_ledger(quota, job_id) == []


async def test_within_narrows_the_sources_to_what_the_caller_saw(db: Database) -> None:
    jobs = JobRepository(db)
    running = await job_in(db, JobState.RUNNING)
    # Withdrawing a request only works while it awaits approval, never once it runs.
    assert not await jobs.transition(running, JobState.CANCELLED, within=JobState.AWAITING_APPROVAL)
    assert await state_of(db, running) is JobState.RUNNING
    assert await jobs.transition(running, JobState.CANCELLED, within=lifecycle.CANCELLABLE)
    with pytest.raises(IllegalTransition):  # a source the table does not allow is a programming error
        await jobs.transition(running, JobState.DELIVERED, within=JobState.QUEUED)


async def test_the_state_changes_only_through_a_transition(db: Database) -> None:
    jobs = JobRepository(db)
    job_id = await job_in(db, JobState.QUEUED)
    with pytest.raises(ValueError):
        await jobs.update(job_id, state=JobState.DELIVERED)
    with pytest.raises(ValueError):
        await jobs.transition(job_id, JobState.RUNNING, state="delivered")
    # A guarded column update leaves a job that has ended alone.
    assert await jobs.update(job_id, only_in=lifecycle.POLLED, queue_position=3)
    await jobs.transition(job_id, JobState.CANCELLED)
    assert not await jobs.update(job_id, only_in=lifecycle.POLLED, queue_position=1)
    job = await jobs.get(job_id)
    assert job is not None and job.queue_position == 3


async def test_a_new_job_starts_pending_or_awaiting_approval_only(db: Database) -> None:
    async with db.transaction() as tx:
        with pytest.raises(IllegalTransition):
            await JobRepository.insert(tx, new_job(), state=JobState.QUEUED)


async def test_approval_moves_the_job_with_its_charge_in_one_transaction(db: Database) -> None:
    quota = QuotaRepository(db)
    limits = Limits(5, daily_period())
    job_id, _ = await quota.reserve_job(new_job(), limits, await_approval=True)
    assert await quota.approve_job(job_id, limits) is not None
    assert await state_of(db, job_id) is JobState.PENDING
    assert await job_ledger(quota, job_id) == [("charge", 1)]
    assert await quota.approve_job(job_id, limits) is None  # decided already: no second charge
    assert await job_ledger(quota, job_id) == [("charge", 1)]


def test_job_event_names_keep_their_wire_values() -> None:
    wire = {"requested", "approved", "rejected", "submitted", "started", "delivered", "failed", "cancelled"}
    assert {e.value for e in JobEvent} == wire
    assert (
        JobEvent.FAILED == "failed" and f"{JobEvent.DELIVERED}" == "delivered"
    )  # listeners may compare strings


async def test_an_orphaned_approval_request_is_recovered_by_one_process_only(db_target: DbTarget) -> None:
    one, two = await open_database(*db_target), await open_database(*db_target)
    try:
        job_id, _ = await QuotaRepository(one).reserve_job(
            new_job(), Limits(5, daily_period()), await_approval=True
        )
        repos = [JobRepository(one), JobRepository(two)]
        [orphan] = await repos[1].unposted_requests(time.time() + 1)
        assert orphan.id == job_id
        won = await asyncio.gather(
            *(repos[i % 2].store_found_request(job_id, 900 + i, None) for i in range(6))
        )
        assert sorted(won) == [False] * 5 + [True]
        job = await repos[0].get(job_id)
        assert job is not None and job.status_message_id == 900 + won.index(True)
        assert await repos[0].unposted_requests(time.time() + 1) == []
        # Not for a job that left approval either.
        other, _ = await QuotaRepository(one).reserve_job(new_job(), Limits(5, daily_period()))
        assert await repos[0].store_found_request(other, 901, None) is False
    finally:
        await one.close()
        await two.close()
