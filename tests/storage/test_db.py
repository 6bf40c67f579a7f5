from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.quota_rules import Limits
from storage import lifecycle
from storage.db import BACKGROUND, Database, StorageError, load_migrations, mark_background
from storage.jobs import JobRepository, JobState
from storage.quota import QuotaRepository
from storage.sqlite import PriorityLock, SQLiteDatabase
from tests.ledger import daily_period, job_ledger
from tests.storage.test_quota import new_job


class WorkerTrips:
    count = 0


def count_worker_trips(monkeypatch: pytest.MonkeyPatch) -> WorkerTrips:
    """Counts trips to aiosqlite's worker thread (each a thread hand-off and a wake-up of the loop)."""
    trips = WorkerTrips()
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.count += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return trips


async def test_open_applies_migrations_and_enables_wal(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "sub" / "a.db")
    try:
        mode = await db.fetchone("PRAGMA journal_mode")
        assert mode is not None and mode[0] == "wal"
        versions = await db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [v for v, _, _ in load_migrations()]
    finally:
        await db.close()


async def test_reopening_does_not_reapply_migrations(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = await Database.open(path)
    await db.set_meta("k", "v")
    await db.close()
    db = await Database.open(path)
    try:
        assert await db.get_meta("k") == "v"
        assert await db.migrate() == len(load_migrations())
    finally:
        await db.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = await Database.open(path)
    await db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
    await db.close()
    with pytest.raises(StorageError, match="newer than this bot"):
        await Database.open(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_unwritable_location_gives_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(StorageError, match="cannot"):
        await Database.open(locked / "x" / "a.db")


async def test_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot use the database"):
        await Database.open(path)


async def test_many_coroutines_never_see_database_is_locked(db: Database) -> None:
    quota = QuotaRepository(db)
    jobs = JobRepository(db)
    period = daily_period()

    async def worker(user: int) -> None:
        for _ in range(10):
            job_id, _ = await quota.reserve_job(new_job(user_id=user), 1000, period)
            await jobs.transition(job_id, JobState.QUEUED, request_id=f"r{job_id}")
            await jobs.count_polls(job_id)
            await jobs.transition(job_id, JobState.FAILED, within=JobState.QUEUED, refund=True)

    await asyncio.gather(*(worker(u) for u in range(20)))
    row = await db.fetchone("SELECT COUNT(*) AS n, SUM(poll_count) AS p FROM jobs WHERE state = 'failed'")
    assert row is not None and row["n"] == 200 and row["p"] == 200
    ledger = await db.fetchone("SELECT SUM(credits) AS s FROM quota_ledger")
    assert ledger is not None and ledger["s"] == 0


async def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
                await tx.execute("INSERT INTO meta (key, value) VALUES ('a', '2')")
        assert await db.get_meta("a") is None
    finally:
        await db.close()


async def test_update_rejects_unknown_columns(db: Database) -> None:
    with pytest.raises(ValueError):
        await JobRepository(db).update(1, user_id=5)


V1_JOB = (
    "INSERT INTO jobs (guild_id, channel_id, user_id, status_message_id, thread_id, prompt, resolution,"
    " prompt_extend, cost, upload_limit, request_id, state, created_at, submitted_at, updated_at)"
    " VALUES (1, 2, 3, 4, 5, 'old job', '480P', 1, 1, 10485760, 'req-old', 'queued', 100, 101, 101)"
)


@pytest.mark.parametrize("start", range(1, len(load_migrations()) + 1))
async def test_schema_migrates_forward_from_every_version(tmp_path: Path, start: int) -> None:
    path = tmp_path / "old.db"
    # Build a database as version `start` of the bot left it, with a job in flight.
    conn = await aiosqlite.connect(path, isolation_level=None)
    old = SQLiteDatabase(conn, path)
    assert await old.migrate(target=start) == start
    await old.execute(V1_JOB)
    await old.execute(
        "INSERT INTO quota_ledger (guild_id, user_id, job_id, period, credits, kind, created_at)"
        " VALUES (1, 3, 1, '2026-01-01', 1, 'charge', 100)"
    )
    await old.close()

    db = await Database.open(path)
    try:
        versions = await db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == list(range(1, len(load_migrations()) + 1))
        job = await JobRepository(db).get(1)
        assert job is not None and job.request_id == "req-old" and job.state is JobState.QUEUED
        assert job.delivery_started_at is None and job.status_has_image is True
        assert await job_ledger(QuotaRepository(db), 1) == [("charge", 1)]
    finally:
        await db.close()


async def test_write_errors_become_storage_errors(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a.db")
    try:
        await db.execute("PRAGMA query_only = 1")
        with pytest.raises(StorageError, match="readonly"):
            await db.set_meta("k", "v")
        with pytest.raises(StorageError, match="readonly"):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
    finally:
        await db.close()


async def test_unreachable_path_gives_a_clear_error() -> None:
    with pytest.raises(StorageError, match="cannot open the database"):
        await Database.open("/proc/animate/nested/a.db")


async def test_each_statement_is_one_trip_to_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trip to aiosqlite's thread is a thread hand-off and a wake-up of the event loop: with
    thousands of jobs polling, three per read (execute, fetch, close) were most of the database's
    CPU. Every statement, in a transaction or not, is one trip."""
    db = await SQLiteDatabase.open(tmp_path / "a.db")
    trips = count_worker_trips(monkeypatch)
    try:
        await db.set_meta("k", "v")
        assert await db.get_meta("k") == "v"
        assert len(await db.fetchall("SELECT key FROM meta")) == 1
        assert await db.execute("UPDATE meta SET value = ? WHERE key = ?", ("w", "k")) == 1
        assert trips.count == 4
        trips.count = 0
        async with db.transaction() as tx:
            await tx.execute("UPDATE meta SET value = ? WHERE key = ?", ("x", "k"))
            row = await tx.fetchone("SELECT value FROM meta WHERE key = ?", ("k",))
            assert row is not None and row["value"] == "x"
        assert trips.count == 4  # BEGIN, two statements, COMMIT
        with pytest.raises(sqlite3.IntegrityError):
            await db.insert("INSERT INTO meta (key, value) VALUES (?, ?)", ("k", "dup"))
        assert await db.get_meta("k") == "x"
    finally:
        await db.close()


async def test_a_state_change_without_refund_is_one_trip_and_a_refund_keeps_its_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job changes state four times: each move is one compare-and-set UPDATE, atomic on its own,
    so it runs without BEGIN/COMMIT (one trip, not three). A move with a refund writes twice and
    stays one transaction."""
    db = await SQLiteDatabase.open(tmp_path / "a.db")
    jobs, quota = JobRepository(db), QuotaRepository(db)
    job_id, _ = await quota.reserve_job(new_job(), Limits(5, daily_period()))
    other, _ = await quota.reserve_job(new_job(), Limits(5, daily_period()))
    statements: list[str] = []
    await db._conn.set_trace_callback(statements.append)
    trips = count_worker_trips(monkeypatch)
    try:
        assert await jobs.transition(job_id, JobState.QUEUED, request_id="r1")
        assert trips.count == 1 and len(statements) == 1 and statements[0].startswith("UPDATE jobs")
        assert not await jobs.transition(job_id, JobState.QUEUED, request_id="r2")  # lost the race
        trips.count = 0
        statements.clear()
        assert await jobs.transition(other, JobState.FAILED, within=JobState.PENDING, refund=True)
        assert trips.count == 4 and statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
        assert [kind for kind, _ in await job_ledger(quota, other)] == ["charge", "refund"]
        job = await jobs.get(job_id)
        assert job is not None and job.state is JobState.QUEUED and job.request_id == "r1"
        with pytest.raises(TypeError):  # the refund must never be written apart from its move
            await lifecycle.move(db, job_id, JobState.FAILED, refund=True)
        job = await jobs.get(job_id)
        assert job is not None and job.state is JobState.QUEUED
    finally:
        await db.close()


async def test_interactive_statements_go_ahead_of_queued_background_ones(tmp_path: Path) -> None:
    """Thousands of jobs' polls queue on the one SQLite connection; a member's command waiting on the
    database is served before them (storage.db.BACKGROUND), and background work still moves."""
    db = await SQLiteDatabase.open(tmp_path / "a.db")
    done: list[str] = []

    async def read(name: str, background: bool) -> None:
        if background:
            mark_background()  # this task only
        await db.fetchone("SELECT 1")
        done.append(name)

    try:
        tasks: list[asyncio.Task[None]] = []
        async with db.transaction():  # holds the connection while the others queue
            tasks += [asyncio.create_task(read(f"poll{i}", True)) for i in range(8)]
            await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(read("command", False)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert done[0] == "command"
        assert sorted(done[1:]) == sorted(f"poll{i}" for i in range(8))
        assert not BACKGROUND.get()  # the marks stayed in their tasks
    finally:
        await db.close()


async def test_priority_lock_lets_background_work_through_and_survives_cancels() -> None:
    lock = PriorityLock()
    order: list[str] = []

    async def take(name: str, background: bool) -> None:
        await lock.acquire(background=background)
        order.append(name)
        await asyncio.sleep(0)
        lock.release()

    await lock.acquire()
    waiting = [asyncio.create_task(take("bg", True))]
    waiting += [asyncio.create_task(take(f"i{n}", False)) for n in range(6)]
    doomed = asyncio.create_task(take("cancelled", False))
    await asyncio.sleep(0)
    doomed.cancel()
    lock.release()
    await asyncio.gather(*waiting)
    # FAIRNESS interactive hand-offs, then the waiting background one, then the rest.
    assert order == ["i0", "i1", "i2", "i3", "bg", "i4", "i5"]
    assert doomed.cancelled() and not lock.locked()

    # Handed the lock just as it is cancelled: the waiter passes it on instead of keeping it.
    await lock.acquire()
    first = asyncio.create_task(lock.acquire())
    second = asyncio.create_task(take("next", True))
    await asyncio.sleep(0)
    lock.release()  # hands it to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, second, return_exceptions=True)
    assert order[-1] == "next" and not lock.locked()
