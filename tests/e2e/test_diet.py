"""Issue #13, the bot's side: what one plain job costs in database writes, Discord calls and RunComfy
calls, counted end to end through the fakes (counts, never timings)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.engine import _poller as poller
from storage.sqlite import SQLiteDatabase, SQLiteTransaction
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every write statement the bot sends to SQLite, in order."""
    seen: list[str] = []

    def counting(cls: type, name: str) -> None:
        original = getattr(cls, name)

        async def wrapper(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            if sql.lstrip().upper().startswith(WRITES):
                seen.append(" ".join(sql.split())[:80])
            return await original(self, sql, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    for cls in (SQLiteDatabase, SQLiteTransaction):
        for name in ("execute", "insert"):
            counting(cls, name)
    yield seen


async def test_a_delivered_job_writes_at_most_ten_times(harness: Harness, writes: list[str]) -> None:
    h = harness
    # Several status checks while queued and running: none of them may cost a write of its own.
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.6, run_seconds=0.6, initial_queue_position=2))
    await h.start_bot()
    writes.clear()  # start-up (migrations, command hash) is not the job's
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    assert job.request_id is not None
    polls = h.runcomfy.status_calls(job.request_id)
    assert polls >= 5
    assert len(writes) <= 10, "\n".join(writes)
    assert not any("poll_count = poll_count + " in w for w in writes)
    # The count is still kept: written with the state changes.
    assert 0 < job.poll_count <= polls + h.runcomfy.jobs[job.request_id].result_calls


async def copy_job(h: Harness, job_id: int, times: int) -> None:
    """Recent history: `times` more delivered jobs exactly like `job_id`."""
    db = h.running.db
    columns = [r["name"] for r in await db.fetchall("PRAGMA table_info(jobs)") if r["name"] != "id"]
    names = ", ".join(columns)
    values = ", ".join("request_id || '-' || ?" if c == "request_id" else c for c in columns)
    for n in range(times):
        await db.execute(f"INSERT INTO jobs ({names}) SELECT {values} FROM jobs WHERE id = ?", (n, job_id))


async def test_with_history_a_running_job_is_polled_on_result_alone(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await h.reply(await h.animate())
    await h.wait_job(1, "delivered")
    await copy_job(h, 1, 5)  # six recent jobs at this resolution: enough to plan polls
    h.running.engine._eta_cache.clear()

    h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=1.0))
    await h.reply(await h.animate("again"))
    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "delivered")
    calls = [r.endpoint for r in h.runcomfy.requests if job.request_id and job.request_id in r.path]
    assert calls[0] == "status" and "result" in calls
    first_result = calls.index("result")
    # Once it was seen running, /status was never asked again: /result told both "still running"
    # and, at the end, the video -- no /status + /result pair at completion.
    assert "status" not in calls[first_result:]
    assert calls[:first_result] == ["status"] * first_result
    assert calls.count("result") >= 2


def describe(body: Any) -> str:
    """What a call showed: the status field of a status message, else the start of its content."""
    if not isinstance(body, dict):
        return ""
    for embed in body.get("embeds") or []:
        for f in embed.get("fields", []):
            if f.get("name") == "Status":
                return f"status={f.get('value')!r} thumb={'thumbnail' in embed}"
    return str(body.get("content") or body.get("name") or body.get("type"))[:60]


async def test_a_plain_job_costs_at_most_seven_discord_calls(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.6, run_seconds=0.6, initial_queue_position=2))
    # Production's coalescing of routine edits (queue positions): state changes still show at once.
    await h.start_bot(status_edit_interval=10.0)
    before = len(h.discord.calls)
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    calls = [f"{c.method} {c.path[:40]} {describe(c.json)}" for c in h.discord.calls[before:]]
    shown = [c for c in calls if c.startswith("PATCH /channels/")]
    # Interaction acknowledgements are exempt from Discord's rate limits: they are no REST budget.
    rest = [c for c in calls if not c.startswith("POST /interactions/")]
    assert len(rest) <= 7, "\n".join(calls)
    # Every state change is still visible: queued, generating, done (no "uploading" flash).
    words = [next((w for w in ("Queued", "Generating", "uploading", "Done") if w in c), c) for c in shown]
    assert words == ["Queued", "Generating", "Done"], "\n".join(shown)
    assert job.delivery_message_id is not None


async def test_uploading_is_shown_when_the_upload_lingers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    monkeypatch.setattr(poller, "UPLOADING_SHOWN_AFTER", 0.1)
    h.runcomfy.fail_next("video", 0, delay=1.0)  # the video download takes a second
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    texts = [describe(c.json) for c in h.discord.calls_to("PATCH", rf"/messages/{job.status_message_id}$")]
    assert any("uploading" in t for t in texts), texts
    assert "Done" in texts[-1]


async def test_an_edit_that_shows_nothing_new_is_not_sent(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "queued")
    edits = rf"/messages/{job.status_message_id}$"
    before = len(h.discord.calls_to("PATCH", edits))
    for _ in range(3):
        await h.running.engine.presenter.refresh(job.id, force=True)
    assert len(h.discord.calls_to("PATCH", edits)) == before
    # A real change is still shown at once.
    h.runcomfy.advance(job.request_id or "")
    await h.wait_job(1, "running")
    assert len(h.discord.calls_to("PATCH", edits)) == before + 1
    assert "Generating" in h.status_text(job.status_message_id or 0)
