"""`python -m bot migrate-to-postgres`: a database made by today's SQLite code, copied completely."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bot import __main__ as bot_main
from bot import migrate
from bot.quota_rules import Limits, period_for
from storage.db import Database, open_database
from storage.guilds import GuildRepository
from storage.jobs import JobRepository, JobState
from storage.prefs import PrefsRepository
from storage.quota import QuotaRepository
from storage.sqlite import SQLiteDatabase
from tests.ledger import daily_period
from tests.storage.test_quota import new_job

G, U, ROLE, CHANNEL = (
    1_100_000_000_000_000_001,
    1_200_000_000_000_000_002,
    1_300_000_000_000_003,
    1_400_000_004,
)
TABLES = (
    "jobs",
    "quota_ledger",
    "meta",
    "guild_settings",
    "guild_role_allowances",
    "guild_user_overrides",
    "guild_channels",
    "guild_blocklist",
    "guild_bans",
    "user_prefs",
)


async def build_todays_database(path: Path) -> None:
    """Every table with rows, written through the repositories as the bot writes them."""
    db = await SQLiteDatabase.open(path)
    try:
        guilds = GuildRepository(db)
        await guilds.update(
            G,
            U,
            allowance=3,
            period="week",
            reset_hour=5,
            cost_480p=1,
            cost_1080p=3,
            max_concurrent=4,
            cooldown_seconds=0,
            daily_budget=50,
            unlimited_role_id=ROLE,
            admin_role_id=ROLE + 1,
            moderator_role_id=ROLE + 2,
            approval_required=True,
            require_age_restricted=True,
            audit_channel_id=CHANNEL,
        )
        await guilds.set_role_allowance(G, ROLE + 5, 9)
        await guilds.set_user_override(G, U, 7)
        await guilds.set_channel(G, CHANNEL, True)
        await guilds.set_channel(G, CHANNEL + 1, True)
        await guilds.add_block(G, "word", "forbidden words", U)
        await guilds.add_block(G, "regex", r"\bno+\b", None)
        await guilds.ban(G, U + 1, "spam ü 🚫", U)
        await PrefsRepository(db).set_dm_on_finish(U, True)
        await db.set_meta("command_hash", "abc123")

        quota, jobs = QuotaRepository(db), JobRepository(db)
        limits = Limits(10, daily_period())
        delivered, _ = await quota.reserve_job(new_job(user_id=U, guild_id=G), limits)
        await jobs.update(
            delivered,
            thread_id=CHANNEL + 10,
            status_message_id=CHANNEL + 11,
            status_has_image=False,
        )
        # Through the lifecycle, as the engine moves it: submitted, finished, posted.
        await jobs.transition(delivered, JobState.QUEUED, request_id="req-1", submitted_at=1_700_000_000.25)
        await jobs.transition(
            delivered,
            JobState.DELIVERING,
            result_url="https://example.com/v.mp4",
            finished_at=1_700_000_060.5,
        )
        await jobs.transition(
            delivered,
            JobState.DELIVERED,
            delivery_message_id=CHANNEL + 12,
            delivery_channel_id=CHANNEL + 10,
        )
        failed, _ = await quota.reserve_job(new_job(user_id=U, guild_id=G, cost=2), limits)
        await jobs.transition(failed, JobState.FAILED, within=JobState.PENDING, refund=True, error="boom")
        await quota.reserve_job(new_job(user_id=U + 2, guild_id=G), limits, await_approval=True)
        await quota.grant(G, U, 4, period_for("week", 5), reason="event")
        # A job deleted after it got an id: SQLite's AUTOINCREMENT never reuses it, nor may PostgreSQL.
        gone, _ = await quota.reserve_job(new_job(user_id=5, guild_id=2), limits)
        await db.execute("DELETE FROM quota_ledger WHERE job_id = ?", (gone,))
        await db.execute("DELETE FROM jobs WHERE id = ?", (gone,))
    finally:
        await db.close()


async def table_rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    rows: list[Any] = await db.fetchall(f"SELECT * FROM {table}")
    return sorted((tuple(r) for r in rows), key=repr)


async def test_copies_everything_verifies_and_refuses_a_second_run(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "animate.db"
    await build_todays_database(source)

    assert await migrate.main_async(["--from", str(source), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "jobs: 3 rows copied and verified" in out and "guild_blocklist: 2 rows" in out

    sqlite = await open_database(source)
    pg = await open_database(tmp_path / "unused.db", pg_url)
    try:
        for table in TABLES:
            expected = await table_rows(sqlite, table)
            assert expected, f"the fixture should fill {table}"
            assert await table_rows(pg, table) == expected, table
        # The repositories read the same Python values from both.
        for job_id in (1, 2, 3):
            assert await JobRepository(pg).get(job_id) == await JobRepository(sqlite).get(job_id)
        assert await GuildRepository(pg).get(G) == await GuildRepository(sqlite).get(G)
        assert await GuildRepository(pg).get_ban(G, U + 1) == await GuildRepository(sqlite).get_ban(G, U + 1)
        assert await PrefsRepository(pg).dm_on_finish(U) is True
        week = period_for("week", 5)
        assert await QuotaRepository(pg).standing(G, U, 3, week) == await QuotaRepository(sqlite).standing(
            G, U, 3, week
        )
        # New ids continue after the highest SQLite ever handed out (4, deleted), never reusing one.
        job_id, _ = await QuotaRepository(pg).reserve_job(new_job(), Limits(None, daily_period()))
        assert job_id == 5
    finally:
        await sqlite.close()
        await pg.close()

    # A second run finds rows and refuses, changing nothing.
    assert await migrate.main_async(["--from", str(source), "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "jobs" in err
    pg = await open_database(tmp_path / "unused.db", pg_url)
    try:
        row = await pg.fetchone("SELECT COUNT(*) AS n FROM jobs")
        assert row is not None and row["n"] == 4
    finally:
        await pg.close()


async def test_a_failed_verification_writes_nothing(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "animate.db"
    await build_todays_database(source)
    original = migrate.PostgresTransaction.copy_records

    async def lose_a_row(self: Any, table: str, columns: Any, records: Any) -> None:
        await original(self, table, columns, records[1:] if table == "guild_bans" else records)

    monkeypatch.setattr(migrate.PostgresTransaction, "copy_records", lose_a_row)
    assert await migrate.main_async(["--from", str(source), "--to", pg_url]) == 1
    assert "guild_bans: verification failed" in capsys.readouterr().err
    pg = await open_database(tmp_path / "unused.db", pg_url)
    try:
        for table in TABLES:
            assert await pg.fetchone(f"SELECT 1 FROM {table}") is None, table
    finally:
        await pg.close()


async def test_a_value_postgresql_cannot_hold_is_named(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "animate.db"
    db = await SQLiteDatabase.open(source)
    await db.execute("INSERT INTO guild_channels (guild_id, channel_id) VALUES ('not a number', 5)")
    await db.close()
    assert await migrate.main_async(["--from", str(source), "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "guild_channels row 1: guild_id holds str 'not a number', not bigint" in err


async def test_clear_refusals_without_source_or_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert await migrate.main_async(["--from", str(tmp_path / "missing.db")]) == 1
    assert "--to postgresql://" in capsys.readouterr().err
    url = "postgresql://bot:pw-never-shown@127.0.0.1:1/x"
    assert await migrate.main_async(["--from", str(tmp_path / "missing.db"), "--to", url]) == 1
    captured = capsys.readouterr()
    assert "there is no SQLite database at" in captured.err
    assert "pw-never-shown" not in captured.err + captured.out
    assert not (tmp_path / "missing.db").exists()


def test_python_m_bot_dispatches_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot@127.0.0.1:1/x")
    monkeypatch.setattr(sys, "argv", ["animate-bot", "migrate-to-postgres", "--from", "nothing.db"])
    assert bot_main.main() == 1
    assert "there is no SQLite database at nothing.db" in capsys.readouterr().err
