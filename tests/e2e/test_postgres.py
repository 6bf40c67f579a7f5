"""The whole bot on PostgreSQL (DATABASE_URL): the same commands, answers and guarantees as on SQLite."""

from __future__ import annotations

from storage.postgres import PostgresDatabase
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


async def test_animate_cancel_and_restart_on_postgres(harness: Harness, pg_url: str) -> None:
    h = harness
    h.overrides["database_url"] = pg_url
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42" + b"pg" * 100
    await h.start_bot()
    assert isinstance(h.running.db, PostgresDatabase)
    assert not h.db_path.exists()  # SQLite is not touched at all

    inter = await h.animate("the cat turns its head")
    assert "4 credits left" in await h.reply(inter)
    first = await h.wait_job(await h.last_job_id(), "delivered")
    delivered = h.message(first.delivery_message_id or 0)
    assert delivered["attachments"][0]["data"] == h.runcomfy.video_bytes

    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.reply(await h.animate("second"))
    second = await h.wait_job(await h.last_job_id(), "queued")

    # A new process on the same database resumes the job and handles its button.
    await h.stop_bot()
    await h.start_bot()
    click = await h.discord.click(second.status_message_id or 0, f"animate:cancel:{second.id}", user="alice")
    assert "Cancelled" in await h.reply(click)
    await h.wait_job(second.id, "cancelled")
    assert await job_ledger(h.running.quota, first.id) == [("charge", 1)]
    assert await job_ledger(h.running.quota, second.id) == [("charge", 1), ("refund", -1)]
    assert len(h.runcomfy.requests_to("submit")) == 2
