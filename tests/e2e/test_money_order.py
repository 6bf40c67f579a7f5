"""Issue 11 (C): money and effort in the right order.

A paid job survives the database refusing to record it; jobs stuck in `pending` are reconciled while
the bot runs; cheap checks run before any download and downloads are bounded; a double click starts
one job; of several Cancel clicks only the one that cancelled says the credits went back."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
import yarl

import bot.engine._common as engine_module
from bot.runcomfy import GenerationParams, Submission
from tests.e2e.conftest import RUNCOMFY_TOKEN, Harness, jpeg_bytes
from tests.fakes.discord import FakeInteraction
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


def refuse_writes_after_submit(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The database turns read-only exactly when RunComfy has accepted the job (disk full, say)."""
    backend = h.running.engine.runcomfy
    real_submit = backend.submit
    accepted: list[str] = []

    async def submit(params: GenerationParams) -> Submission:
        submission = await real_submit(params)
        await h.running.db.execute("PRAGMA query_only = 1")
        accepted.append(submission.request_id)
        return submission

    monkeypatch.setattr(backend, "submit", submit)
    return accepted


async def allow_writes(h: Harness) -> None:
    await h.running.db.execute("PRAGMA query_only = 0")


async def replies(h: Harness, interactions: list[FakeInteraction]) -> list[str]:
    return list(await asyncio.gather(*(h.reply(i) for i in interactions)))


# ------------------------------------------------------------------ a write failure after RunComfy accepted


async def test_write_failure_after_accept_keeps_the_paid_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.start_bot()
    accepted = refuse_writes_after_submit(h, monkeypatch)
    text = await h.reply(await h.animate())
    # The truth: it was submitted and runs -- not "nothing was charged".
    assert "on its way" in text and "<#" in text, text
    assert "charged" not in text.lower()
    job_id = await h.last_job_id()
    assert (await h.job(job_id)).state.value == "pending"  # the database could not take it yet
    await asyncio.sleep(0.3)
    assert (await h.job(job_id)).state.value == "pending"
    await allow_writes(h)
    job = await h.wait_job(job_id, "delivered")
    assert job.request_id == accepted[0]
    assert len(h.runcomfy.requests_to("submit")) == 1
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    # The thread opened while the database refused writes was recorded too, and got the video.
    assert job.thread_id is not None and f"<#{job.thread_id}>" in text
    assert any(m.get("attachments") for m in h.discord.messages(job.thread_id))


async def test_write_that_keeps_failing_is_logged_and_recorded_by_the_sweep(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    monkeypatch.setattr(engine_module, "RECORD_RETRY_WINDOW", 0.3, raising=False)
    monkeypatch.setattr(engine_module, "PENDING_SWEEP_INTERVAL", 0.2, raising=False)
    await h.start_bot()
    accepted = refuse_writes_after_submit(h, monkeypatch)
    caplog.set_level(logging.INFO, logger="bot.engine")
    assert "on its way" in await h.reply(await h.animate())
    job_id = await h.last_job_id()

    def operator_told() -> logging.LogRecord | None:
        return next(
            (r for r in caplog.records if r.levelno >= logging.ERROR and accepted[0] in r.getMessage()), None
        )

    record = await h.discord.wait_for(operator_told, timeout=10)
    assert f"Job {job_id}" in record.getMessage() and RUNCOMFY_TOKEN not in record.getMessage()
    await asyncio.sleep(0.5)  # sweeps run meanwhile: they never refund a job RunComfy accepted
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    await allow_writes(h)
    job = await h.wait_job(job_id, "delivered")  # the next sweep recorded it, then polling took over
    assert job.request_id == accepted[0]
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]


async def test_stuck_pending_job_is_refunded_while_running(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunComfy did not confirm the submit and the refund could not be written at that moment: the job
    stays pending. It used to wait for a restart; now the running bot ends it, refunded, and says so."""
    h = harness
    monkeypatch.setattr(engine_module, "PENDING_SWEEP_INTERVAL", 0.1, raising=False)
    await h.start_bot()
    backend = h.running.engine.runcomfy
    real_submit = backend.submit

    async def submit(params: GenerationParams) -> Submission:
        await h.running.db.execute("PRAGMA query_only = 1")
        return await real_submit(params)

    monkeypatch.setattr(backend, "submit", submit)
    h.runcomfy.fail_next("submit", 500)  # outcome unknown: never re-sent
    text = await h.reply(await h.animate())
    assert "database" in text.lower()
    job_id = await h.last_job_id()
    await allow_writes(h)
    await asyncio.sleep(0.3)
    assert (await h.job(job_id)).state.value == "pending"  # young: it might still be submitting
    # Time passes (older than a submit can take): the sweep reconciles it.
    await h.running.db.execute("UPDATE jobs SET updated_at = updated_at - 3600 WHERE id = ?", (job_id,))
    job = await h.wait_job(job_id, "failed")
    assert "never confirmed" in (job.error or "")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    assert len(h.runcomfy.requests_to("submit")) == 1

    def notices() -> list[dict[str, Any]]:
        posted = h.discord.messages(h.discord.channel_id)
        return [m for m in posted if f"job #{job_id}" in (m["content"] or "")]

    # The notice follows the state change: wait for it rather than race it.
    await h.discord.wait_for(notices, timeout=10)
    await asyncio.sleep(0.2)  # a second notice would have arrived by now
    told = notices()
    assert len(told) == 1 and "refunded" in told[0]["content"]
    assert [int(u) for u in told[0]["allowed_mentions"]["users"]] == [job.user_id]
    assert "RunComfy never confirmed" in h.status_text(job.status_message_id or 0)


# ------------------------------------------------------------------ cheap checks first, bounded downloads


async def test_member_without_credits_costs_no_download(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=0)
    huge = h.discord.add_attachment(
        "huge.jpg", jpeg_bytes() + bytes(40 * 1024 * 1024), "image/jpeg", width=6000, height=4000
    )
    path = yarl.URL(huge["url"]).path
    commands = await asyncio.gather(*(h.animate(image=huge) for _ in range(20)))
    texts = await replies(h, list(commands))
    assert all("out of credits" in t for t in texts), texts
    assert [p for p in h.discord.cdn_requests if p.endswith(path)] == []
    assert h.runcomfy.requests_to("submit") == []
    row = await h.running.db.fetchone("SELECT COUNT(*) AS n FROM jobs")
    assert row is not None and row["n"] == 0


async def test_one_download_per_member_and_a_few_bot_wide(harness: Harness) -> None:
    h = harness
    h.runcomfy.default_script = JobScript(queue_seconds=None)
    await h.start_bot()
    # One member, four commands at once: their downloads take turns, and every job is made.
    mine = h.image()
    mine_path = h.discord.slow_cdn(mine, 0.25)
    commands = await asyncio.gather(*(h.animate(image=mine) for _ in range(4)))
    texts = await replies(h, list(commands))
    assert all("on its way" in t for t in texts), texts
    assert h.discord.cdn_peak[mine_path] == 1
    # Five members at once: at most a few downloads bot-wide.
    users = ["bob", "mod", "admin", "owner", "carol"]
    h.discord.add_member("carol")
    images: dict[str, dict[str, Any]] = {u: h.image() for u in users}
    for image in images.values():
        h.discord.slow_cdn(image, 0.25)
    h.discord.cdn_peak_total = 0
    commands = await asyncio.gather(*(h.animate(image=images[u], user=u) for u in users))
    texts = await replies(h, list(commands))
    assert all("on its way" in t for t in texts), texts
    assert 1 <= h.discord.cdn_peak_total <= 3


async def test_a_member_who_spent_their_credits_meanwhile_is_refused_before_downloading(
    harness: Harness,
) -> None:
    h = harness
    h.runcomfy.default_script = JobScript(queue_seconds=None)
    await h.start_bot(daily_quota=1)
    image = h.image()
    path = h.discord.slow_cdn(image, 0.3)
    commands = await asyncio.gather(*(h.animate(image=image) for _ in range(5)))
    texts = await replies(h, list(commands))
    assert sum("on its way" in t for t in texts) == 1, texts
    assert sum("out of credits" in t for t in texts) == 4, texts
    # The four that waited re-checked after the first had been charged: one download in all.
    assert len([p for p in h.discord.cdn_requests if p.endswith(path)]) == 1


# ------------------------------------------------------------------ double clicks: Animate again, Edit prompt


async def delivered_job(h: Harness) -> int:
    assert "on its way" in await h.reply(await h.animate("a cat waves"))
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "delivered")
    return job_id


async def test_double_click_on_animate_again_starts_one_job(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    first = await h.job(await delivered_job(h))
    message_id = first.delivery_message_id or 0
    button = f"animate:again:{first.id}"
    clicks = await asyncio.gather(
        h.discord.click(message_id, button, user="alice"),
        h.discord.click(message_id, button, user="alice"),
        h.discord.click(message_id, button, user="mod"),  # a moderator at the same moment
    )
    texts = await replies(h, list(clicks))
    assert sum("on its way" in t for t in texts) == 1, texts
    assert sum("already started" in t for t in texts) == 2, texts
    assert all(c.ephemeral for c in clicks)
    rows = await h.running.db.fetchall("SELECT id FROM jobs ORDER BY id")
    assert [r["id"] for r in rows] == [first.id, first.id + 1]
    charges = await h.running.db.fetchall("SELECT job_id FROM quota_ledger WHERE kind = 'charge'")
    assert sorted(r["job_id"] for r in charges) == [first.id, first.id + 1]
    assert len(h.runcomfy.requests_to("submit")) == 2
    # Once that job has finished, the same button starts another one.
    await h.wait_job(first.id + 1, "delivered")
    again = await h.discord.click(message_id, button, user="alice")
    assert "on its way" in await h.reply(again)


async def test_double_submit_of_one_edit_prompt_form_starts_one_job(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    first = await h.job(await delivered_job(h))
    click = await h.discord.click(first.delivery_message_id or 0, f"animate:edit:{first.id}")
    await click.wait_response()
    modal = click.modal
    assert modal is not None
    inputs = [
        c
        for row in modal["components"]
        for c in ([row["component"]] if "component" in row else row.get("components", []))
    ]
    prompt_id = next(c["custom_id"] for c in inputs if c.get("value") == "a cat waves")
    submits = await asyncio.gather(
        h.discord.submit_modal(click, {prompt_id: "a cat dances"}),
        h.discord.submit_modal(click, {prompt_id: "a cat dances"}),
    )
    texts = await replies(h, list(submits))
    assert sum("on its way" in t for t in texts) == 1, texts
    assert sum("already started" in t for t in texts) == 1, texts
    row = await h.running.db.fetchone("SELECT COUNT(*) AS n FROM jobs")
    assert row is not None and row["n"] == 2
    assert len(h.runcomfy.requests_to("submit")) == 2
    # A form opened again is a new request.
    reopened = await h.discord.click(first.delivery_message_id or 0, f"animate:edit:{first.id}")
    await reopened.wait_response()
    assert "on its way" in await h.reply(await h.discord.submit_modal(reopened, {prompt_id: "a cat sings"}))


# ------------------------------------------------------------------ concurrent Cancel clicks


async def test_of_three_concurrent_cancel_clicks_one_says_refunded(harness: Harness) -> None:
    h = harness
    h.runcomfy.default_script = JobScript(queue_seconds=None)
    await h.start_bot()
    assert "on its way" in await h.reply(await h.animate())
    job = await h.wait_job(await h.last_job_id(), "queued")
    status = job.status_message_id or 0
    clicks = await asyncio.gather(
        *(h.discord.click(status, f"animate:cancel:{job.id}", user="alice") for _ in range(3))
    )
    texts = await replies(h, list(clicks))
    assert sum(bool(re.search(r"Cancelled\. Your 1 credit went back", t)) for t in texts) == 1, texts
    assert sum("This job has already been cancelled." in t for t in texts) == 2, texts
    job = await h.wait_job(job.id, "cancelled")
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1), ("refund", -1)]
    assert len(h.runcomfy.requests_to("cancel")) == 1
