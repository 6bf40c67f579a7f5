"""BACKEND=preview: the whole bot works with no RunComfy token, and says the video is a preview."""

from __future__ import annotations

import io

import av

from tests.e2e.conftest import Harness
from tests.ledger import job_ledger


async def test_preview_backend_delivers_a_labelled_local_clip(harness: Harness) -> None:
    h = harness
    await h.start_bot(backend="preview", runcomfy_api_token=None)
    inter = await h.animate("a gentle zoom")
    assert "on its way" in await h.reply(inter)
    job = await h.wait_job(1, "delivered", timeout=30)

    status = h.message(job.status_message_id or 0)["embeds"][0]
    assert "(preview)" in status["title"] and "PREVIEW" in status["footer"]["text"]
    delivered = h.message(job.delivery_message_id or 0)
    assert "preview" in delivered["content"] and "not an AI video" in delivered["content"]
    with av.open(io.BytesIO(delivered["attachments"][0]["data"])) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
    assert frames > 24
    assert h.runcomfy.requests == []  # RunComfy was never called
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


async def test_preview_jobs_can_be_cancelled_while_queued(harness: Harness) -> None:
    h = harness
    await h.start_bot(backend="preview", runcomfy_api_token=None)
    assert h.running.preview is not None
    h.running.preview._queue_seconds = 30  # hold the job in the queue for the click
    inter = await h.animate()
    await h.reply(inter)
    job = await h.wait_job(1, "queued")
    click = await h.discord.click(job.status_message_id or 0, "animate:cancel:1")
    assert "Cancelled" in await h.reply(click)
    await h.wait_job(1, "cancelled")
