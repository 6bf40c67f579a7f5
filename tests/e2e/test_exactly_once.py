"""Issue #11: a message Discord stored but whose answer was lost (5xx, dropped connection, timeout)
is never posted twice -- the bot sends it with a deterministic nonce and looks for it before sending
again -- and the job is recorded with the message that is there."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Harness
from tests.fakes.discord import Perm
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger

POST = r"/channels/{}/messages$"


async def queued_job(h: Harness) -> int:
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    return await h.last_job_id()


def finish(h: Harness, request_id: str | None) -> None:
    h.runcomfy.advance(request_id or "")
    h.runcomfy.advance(request_id or "")


def videos(h: Harness, job_id: int) -> list[dict[str, object]]:
    return [
        m
        for channel_id in [h.discord.channel_id, *h.discord.threads]
        for m in h.discord.messages(channel_id)
        if f"job #{job_id}" in str(m["content"])
    ]


async def assert_delivered_once(h: Harness, job_id: int) -> None:
    job = await h.wait_job(job_id, "delivered", timeout=20)
    [video] = videos(h, job_id)
    assert video["attachments"]
    assert job.delivery_message_id == int(str(video["id"]))
    assert job.delivery_channel_id == int(str(video["channel_id"]))
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    assert "Done" in h.status_text(job.status_message_id or 0)


@pytest.mark.parametrize("outcome", [503, "drop"])
async def test_video_stored_but_answer_lost_is_posted_once(harness: Harness, outcome: int | str) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await queued_job(h))
    fault = h.discord.fail_after_store("POST", POST.format(job.thread_id), outcome)
    finish(h, job.request_id)
    await assert_delivered_once(h, job.id)
    assert fault.hits == 1


async def test_video_upload_that_goes_unanswered_is_posted_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.engine import _common as engine_module

    h = harness
    monkeypatch.setattr(engine_module, "POST_TIMEOUT", 0.5)
    await h.start_bot()
    job = await h.job(await queued_job(h))
    h.discord.fail_after_store("POST", POST.format(job.thread_id), "timeout", hold=3.0)
    finish(h, job.request_id)
    await assert_delivered_once(h, job.id)


async def test_lost_answer_after_the_nonce_window_is_found_by_looking(harness: Harness) -> None:
    h = harness
    h.discord.nonce_window = 0.0  # Discord no longer dedups by nonce: only looking can tell
    await h.start_bot()
    job = await h.job(await queued_job(h))
    h.discord.fail_after_store("POST", POST.format(job.thread_id), 503)
    finish(h, job.request_id)
    await assert_delivered_once(h, job.id)


async def test_lost_answer_without_read_history_is_deduplicated_by_the_nonce(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await queued_job(h))
    # The bot cannot read the thread back, so looking finds nothing; the nonce still makes the
    # repeat return the stored message.
    h.discord.set_overwrite(h.discord.channel_id, "bot", deny=Perm.READ_MESSAGE_HISTORY)
    h.discord.fail_after_store("POST", POST.format(job.thread_id), 503)
    finish(h, job.request_id)
    job = await h.wait_job(job.id, "delivered", timeout=20)
    [video] = videos(h, job.id)
    assert job.delivery_message_id == int(str(video["id"]))
    posts = h.discord.calls_to("POST", POST.format(job.thread_id))
    assert len(posts) == 2 and posts[0].json["nonce"] == posts[1].json["nonce"]
    assert posts[0].json["enforce_nonce"] is True


async def test_status_message_stored_but_answer_lost_is_used(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.fail_after_store("POST", POST.format(h.discord.channel_id), 503)  # the status message
    h.runcomfy.scripts.append(JobScript(queue_seconds=0, run_seconds=0.1))
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    job = await h.wait_job(1, "delivered")
    statuses = [m for m in h.discord.messages(h.discord.channel_id) if m["embeds"]]
    assert [int(m["id"]) for m in statuses] == [job.status_message_id]
    assert "Done" in h.status_text(job.status_message_id or 0)
    assert h.buttons(job.status_message_id or 0) == []
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_status_message_discord_never_confirms_is_not_charged(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.fail_next("POST", POST.format(h.discord.channel_id), 503, times=2)
    inter = await h.animate()
    text = await h.reply(inter)
    assert "didn't confirm my status message" in text and "Nothing was charged" in text
    assert h.discord.messages(h.discord.channel_id) == []
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]
    assert h.runcomfy.requests_to("submit") == []


async def test_reposted_status_whose_answer_is_lost_is_not_posted_twice(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None, initial_queue_position=5))
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    job = await h.job(1)
    old_status = job.status_message_id or 0
    h.discord.fail_after_store("POST", POST.format(job.thread_id), 503)  # the re-post
    await h.discord.user_deletes_message(old_status)
    h.runcomfy.jobs[job.request_id or ""].script.initial_queue_position = 2  # a change to show

    async def reposted() -> bool:
        return (await h.job(1)).status_message_id != old_status

    await h.discord.wait_for(reposted, timeout=10)
    finish(h, job.request_id)
    job = await h.wait_job(1, "delivered")
    statuses = [m for m in h.discord.messages(job.thread_id) if m["embeds"]]
    assert [int(m["id"]) for m in statuses] == [job.status_message_id]
    assert "Done" in h.status_text(job.status_message_id or 0)
