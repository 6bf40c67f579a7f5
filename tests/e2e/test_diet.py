"""Issue #13, the bot's side: what one plain job costs in database writes, Discord calls and RunComfy
calls, counted end to end through the fakes (counts, never timings)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from bot.engine import _poller as poller
from storage.sqlite import SQLiteDatabase, SQLiteTransaction
from tests.e2e.conftest import Harness, jpeg_bytes
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
                seen.append(" ".join(sql.split()))
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


def statement(sql: str) -> str:
    """A write statement named by its table and the columns it sets (or inserts)."""
    words = sql.split()
    if words[0] == "INSERT":
        return f"INSERT {words[2]}"
    sets = sql.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    columns = re.findall(r"(\w+) = ", sets)
    return f"UPDATE {words[1]} " + " ".join(c for c in columns if c not in ("updated_at", "lease_expires_at"))


async def test_a_delivered_job_writes_one_statement_per_step(harness: Harness, writes: list[str]) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.6, run_seconds=0.6, initial_queue_position=2))
    await h.start_bot()
    writes.clear()
    # A photo larger than the model takes: its adjustment note costs no write of its own.
    await h.reply(await h.animate(image=h.image(jpeg_bytes(2400, 1800))))
    job = await h.wait_job(1, "delivered")
    assert job.image_note and "resized" in job.image_note
    full = [" ".join(w.split()) for w in writes]
    assert [statement(w) for w in full] == [
        "INSERT jobs",  # reserve: the job, with its image note ...
        "INSERT quota_ledger",  # ... and its charge, in one transaction
        "UPDATE jobs status_message_id image_url lease_owner",  # the status message (hosting the image)
        "UPDATE jobs state request_id submitted_at lease_owner",  # queued: RunComfy has it
        "UPDATE jobs thread_id",  # the thread opened after the submit
        "UPDATE jobs state started_at queue_position poll_count",  # running
        # Succeeded, with the first upload's mark (what makes the post exactly-once) in the same write.
        "UPDATE jobs state result_url finished_at queue_position delivery_started_at poll_count",
        # Delivered; the lease and any interaction token (a credential) go in the same write.
        "UPDATE jobs state finished_at lease_owner interaction_token delivery_channel_id delivery_message_id",
    ], "\n".join(full)


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


def kind(call: Any) -> str:
    """The bench's names for Discord calls (bench/fakes_server.py `classify`), plus what an edit showed."""
    if call.path.startswith("/interactions/"):
        return "ack"
    if call.path.startswith("/webhooks/"):
        return "reply edit"
    if call.path.endswith("/threads"):
        return "thread create"
    if call.method == "PATCH":
        words = ("Queued", "Generating", "uploading", "Done")
        return "edit " + next((w for w in words if w in describe(call.json)), describe(call.json))
    if any(name.endswith(".mp4") for name, _, _ in call.files):
        return "video post"
    return "status post" if call.files else f"post {describe(call.json)}"


async def test_a_plain_job_costs_seven_discord_calls(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.6, run_seconds=0.6, initial_queue_position=2))
    # Production's spacing of routine edits (queue positions): state changes still show at once.
    await h.start_bot(status_edit_interval=10.0)
    before = len(h.discord.calls)
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    calls = h.discord.calls[before:]
    # Every call of the job, the acknowledgement included (the bench counts it too). A queue the job
    # left within status_edit_interval is not shown: the status message goes from its post straight
    # to "Generating" -- the answer to the command already said the job is on its way.
    assert sorted(kind(c) for c in calls) == sorted(
        [
            "ack",
            "status post",
            "thread create",
            "reply edit",
            "edit Generating",
            "video post",
            "edit Done",
        ]
    ), "\n".join(f"{c.method} {c.path[:40]} {describe(c.json)}" for c in calls)
    # The post shows the image from the start; no edit has to add it.
    post = next(c for c in calls if kind(c) == "status post")
    assert (post.json["embeds"][0].get("thumbnail") or {}).get("url") == "attachment://source.jpg"
    assert job.delivery_message_id is not None


async def test_a_long_queue_is_shown_at_a_bounded_rate(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(queue_seconds=1.5, run_seconds=1.0, initial_queue_position=9))
    # Polls every 0.05-0.2 s; the queue position may be shown once per 0.5 s.
    await h.start_bot(status_edit_interval=0.5)
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    edits = [kind(c) for c in h.discord.calls_to("PATCH", rf"/messages/{job.status_message_id}$")]
    queued = [e for e in edits if e == "edit Queued"]
    # The queue outlasted the interval: shown, but never more often than every 0.5 s (1.5 s of queue).
    assert 1 <= len(queued) <= 3, edits
    assert edits[len(queued) :] == ["edit Generating", "edit Done"], edits
    assert h.runcomfy.status_calls(job.request_id or "") > len(queued) + 2  # most polls cost no edit


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
