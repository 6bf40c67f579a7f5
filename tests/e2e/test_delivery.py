"""Videos reach the user even when they are too big for Discord or cannot be downloaded."""

from __future__ import annotations

import io

import av

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.samples import make_clip


async def test_video_over_the_upload_limit_is_reencoded_and_linked(harness: Harness) -> None:
    h = harness
    clip = make_clip(seconds=1.0, size=(320, 240))
    h.discord.upload_limit = len(clip) // 3
    h.runcomfy.video_bytes = clip
    await h.start_bot()
    inter = await h.animate()
    await h.reply(inter)
    job = await h.wait_job(1, "delivered", timeout=60)
    delivered = h.message(job.delivery_message_id or 0)
    data = delivered["attachments"][0]["data"]
    assert 0 < len(data) <= h.discord.upload_limit
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames or container.duration
    assert "Compressed to fit" in delivered["content"]
    assert h.runcomfy.output_url(job.request_id or "") in delivered["content"]


async def test_video_that_cannot_be_downloaded_is_linked(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(video_status=404))
    await h.start_bot()
    inter = await h.animate()
    await h.reply(inter)
    job = await h.wait_job(1, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert delivered["attachments"] == []
    assert "may expire" in delivered["content"]
    assert h.runcomfy.output_url(job.request_id or "") in delivered["content"]
    assert f"<@{h.discord.user_ids['alice']}>" in delivered["content"]


async def test_video_over_10_mib_that_cannot_be_recompressed_is_linked(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(video=b"\x00\x00\x00\x18ftypmp42" + bytes(11 * 1024 * 1024)))
    await h.start_bot()
    inter = await h.animate()
    await h.reply(inter)
    job = await h.wait_job(1, "delivered", timeout=30)
    delivered = h.message(job.delivery_message_id or 0)
    assert delivered["attachments"] == []
    assert "too large to upload here" in delivered["content"]
    assert h.runcomfy.output_url(job.request_id or "") in delivered["content"]
    assert await h.running.quota.job_ledger(1) == [("charge", 1)]  # it was generated: no refund
