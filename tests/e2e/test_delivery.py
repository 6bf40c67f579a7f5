"""Videos reach the user even when they are too big for Discord or cannot be downloaded."""

from __future__ import annotations

import io

import av

from storage.jobs import Job
from tests.e2e.conftest import Harness
from tests.fakes.discord import Perm
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger
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
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]  # it was generated: no refund


def long_output_urls(h: Harness, length: int = 1950) -> None:
    """RunComfy hands out long signed URLs: serve the video under a long query string (the fake's
    /files route ignores the query)."""
    plain = h.runcomfy.output_url

    def signed(request_id: str) -> str:
        base = plain(request_id) + "?X-Signature="
        return base + "s" * (length - len(base))

    h.runcomfy.output_url = signed  # type: ignore[method-assign]


async def queued_job(h: Harness) -> Job:
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    return await h.job(await h.last_job_id())


def finish(h: Harness, job: Job) -> None:
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")


async def test_long_signed_link_goes_into_an_embed_when_the_download_fails(harness: Harness) -> None:
    h = harness
    long_output_urls(h)
    h.runcomfy.scripts.append(JobScript(video_status=404))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    url = h.runcomfy.output_url(job.request_id or "")
    assert len(url) == 1950 and job.result_url == url
    delivered = h.message(job.delivery_message_id or 0)
    assert len(delivered["content"]) <= 2000 and "(link below)" in delivered["content"]
    assert "job #1" in delivered["content"] and url not in delivered["content"]
    [embed] = delivered["embeds"]
    assert embed["description"] == url
    buttons = [b["custom_id"] for b in h.buttons(job.delivery_message_id or 0)]
    assert buttons == [f"animate:{action}:1" for action in ("again", "edit", "details")]
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]  # delivered: no refund


async def test_long_signed_link_beside_a_compressed_video(harness: Harness) -> None:
    h = harness
    long_output_urls(h)
    clip = make_clip(seconds=1.0, size=(320, 240))
    h.discord.upload_limit = len(clip) // 3
    h.runcomfy.video_bytes = clip
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered", timeout=60)
    delivered = h.message(job.delivery_message_id or 0)
    assert 0 < len(delivered["attachments"][0]["data"]) <= h.discord.upload_limit
    assert "Compressed to fit" in delivered["content"] and len(delivered["content"]) <= 2000
    assert delivered["embeds"][0]["description"] == h.runcomfy.output_url(job.request_id or "")


async def test_long_signed_link_reaches_the_requester_by_dm_when_the_server_is_closed(
    harness: Harness,
) -> None:
    h = harness
    long_output_urls(h)
    await h.start_bot()
    job = await queued_job(h)
    h.discord.fail_next(
        "POST",
        rf"/channels/({h.discord.channel_id}|{job.thread_id})/messages$",
        403,
        body={"code": 50001, "message": "Missing Access"},
        times=2,
    )
    finish(h, job)
    job = await h.wait_job(job.id, "failed")
    assert job.error == "I could not post the video in this channel (missing access)."
    [dm] = h.discord.messages(h.discord.dm_channel_id("alice"))
    assert "missing access" in dm["content"] and len(dm["content"]) <= 2000
    assert dm["embeds"][0]["description"] == h.runcomfy.output_url(job.request_id or "")


async def test_locked_thread_sends_the_video_file_to_the_channel(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await queued_job(h)
    await h.discord.set_thread_state(job.thread_id or 0, archived=True, locked=True)
    finish(h, job)
    job = await h.wait_job(job.id, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert job.delivery_channel_id == h.discord.channel_id == int(delivered["channel_id"])
    assert delivered["attachments"][0]["data"] == h.runcomfy.video_bytes
    assert h.discord.calls_to("POST", rf"/channels/{job.thread_id}/messages$")[0].status == 400
    assert "the video is in this channel" in h.status_text(job.status_message_id or 0)
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1)]


async def test_failure_in_a_locked_thread_is_told_in_the_channel(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None, outcome="failed"))
    await h.reply(await h.animate())
    job = await h.job(1)
    await h.discord.set_thread_state(job.thread_id or 0, locked=True)
    finish(h, job)
    await h.wait_job(1, "failed")
    told = [m for m in h.discord.messages(h.discord.channel_id) if "sorry, this job failed" in m["content"]]
    assert len(told) == 1 and f"<@{h.discord.user_ids['alice']}>" in told[0]["content"]


async def test_missing_attach_files_posts_the_link_and_says_why(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await queued_job(h)
    h.discord.set_overwrite(h.discord.channel_id, "bot", deny=Perm.ATTACH_FILES)
    await h.discord.dispatch("CHANNEL_UPDATE", h.discord.channel_payload(h.discord.channel_id))
    finish(h, job)
    job = await h.wait_job(job.id, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert int(delivered["channel_id"]) == job.thread_id
    assert delivered["attachments"] == []
    assert "not allowed to attach files" in delivered["content"]
    assert h.runcomfy.output_url(job.request_id or "") in delivered["content"]
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1)]


async def test_missing_send_permission_is_named_in_the_refund(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await queued_job(h)
    h.discord.set_overwrite(
        h.discord.channel_id, "bot", deny=Perm.SEND_MESSAGES | Perm.SEND_MESSAGES_IN_THREADS
    )
    await h.discord.dispatch("CHANNEL_UPDATE", h.discord.channel_payload(h.discord.channel_id))
    finish(h, job)
    job = await h.wait_job(job.id, "failed")
    channel = h.discord.channel_id
    assert job.error == (
        f"I could not post the video in <#{channel}>: I'm missing these permissions there: Send Messages."
    )
    [dm] = h.discord.messages(h.discord.dm_channel_id("alice"))
    assert "Send Messages" in dm["content"] and h.runcomfy.output_url(job.request_id or "") in dm["content"]
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1), ("refund", -1)]


async def test_invalid_form_falls_back_to_a_plain_message(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await queued_job(h)
    h.discord.fail_next(
        "POST",
        rf"/channels/{job.thread_id}/messages$",
        400,
        body={"code": 50035, "message": "Invalid Form Body"},
    )
    finish(h, job)
    job = await h.wait_job(job.id, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert delivered["components"] == [] and delivered["embeds"] == []
    assert "Discord refused the upload" in delivered["content"]
    assert h.runcomfy.output_url(job.request_id or "") in delivered["content"]
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1)]


async def test_status_message_refusal_gives_discords_reason(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.fail_next(
        "POST",
        rf"/channels/{h.discord.channel_id}/messages$",
        403,
        body={"code": 50001, "message": "Missing Access"},
    )
    text = await h.reply(await h.animate())
    assert text == "I can't see this channel (missing access). Nothing was charged."
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]
    assert h.runcomfy.requests_to("submit") == []
