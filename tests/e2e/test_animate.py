"""/animate as Discord drives it: slash command, status message, thread, delivery, cancel."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import daily_period, job_ledger


async def test_happy_path_delivers_the_video_in_a_thread(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42" + b"video!" * 1000
    await h.start_bot()

    inter = await h.animate("the cat turns its head", resolution="480P", seed=42, template="squish")
    text = await h.reply(inter)
    assert inter.ack_latency is not None and inter.ack_latency < 3
    assert inter.ephemeral
    assert "on its way" in text and "4 credits left" in text

    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "delivered")
    assert job.thread_id is not None and job.status_message_id is not None
    assert job.request_id in h.runcomfy.jobs

    # The status message carries the normalised image that RunComfy fetched.
    status = h.message(job.status_message_id)
    assert status["attachments"][0]["filename"].startswith("source.")
    assert h.runcomfy.jobs[job.request_id].params["img_url"] == job.image_url
    assert h.runcomfy.jobs[job.request_id].params["seed"] == 42
    assert "Done" in h.status_text(job.status_message_id)
    assert h.buttons(job.status_message_id) == []

    delivered = h.message(job.delivery_message_id or 0)
    assert int(delivered["channel_id"]) == job.thread_id == job.delivery_channel_id
    assert delivered["attachments"][0]["data"] == h.runcomfy.video_bytes
    assert f"<@{h.discord.user_ids['alice']}>" in delivered["content"]
    assert [int(u) for u in delivered["allowed_mentions"]["users"]] == [h.discord.user_ids["alice"]]
    assert delivered["allowed_mentions"]["parse"] == []

    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    assert len(h.runcomfy.requests_to("submit")) == 1


async def queued_job(h: Harness, user: str = "alice") -> int:
    """Start a job that stays queued at RunComfy until the test advances it."""
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate(user=user)
    await h.reply(inter)
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "queued")
    return job_id


async def test_requester_cancels_while_queued_and_is_refunded(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await queued_job(h)
    job = await h.job(job_id)
    assert job.status_message_id is not None
    [button] = h.buttons(job.status_message_id)
    assert button["custom_id"] == f"animate:cancel:{job_id}" and not button.get("disabled")

    click = await h.discord.click(job.status_message_id, button["custom_id"], user="alice")
    text = await h.reply(click)
    assert "Cancelled" in text and "1 credit went back" in text
    assert click.ephemeral

    job = await h.wait_job(job_id, "cancelled")
    assert h.runcomfy.job_state(job.request_id or "") == "cancelled"
    assert "Cancelled" in h.status_text(job.status_message_id or 0)
    assert h.buttons(job.status_message_id or 0) == []
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    standing = await h.running.quota.standing(job.guild_id, job.user_id, 5, daily_period())
    assert standing.remaining == 5


async def test_another_user_cannot_cancel(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await queued_job(h)
    job = await h.job(job_id)
    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job_id}", user="bob")
    text = await h.reply(click)
    assert "Only the person who started this job" in text and click.ephemeral
    assert (await h.job(job_id)).state.value == "queued"
    assert h.runcomfy.requests_to("cancel") == []


async def test_moderator_can_cancel_someone_elses_job(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await queued_job(h)
    job = await h.job(job_id)
    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job_id}", user="mod")
    text = await h.reply(click)
    assert "Cancelled" in text and f"<@{h.discord.user_ids['alice']}>'s 1 credit" in text
    job = await h.wait_job(job_id, "cancelled")
    assert f"<@{h.discord.user_ids['mod']}>" in h.status_text(job.status_message_id or 0)


async def test_cancel_after_start_is_explained_and_job_still_delivers(harness: Harness) -> None:
    h = harness
    await h.start_bot(poll_first_delay=30)  # the bot has not noticed the start yet when the click comes
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate()
    await h.reply(inter)
    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "queued")
    h.runcomfy.advance(job.request_id or "")  # RunComfy starts it

    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job_id}", user="alice")
    text = await h.reply(click)
    assert "already generating" in text and "can't be cancelled" in text
    job = await h.wait_job(job_id, "running")
    [button] = h.buttons(job.status_message_id or 0)
    assert button.get("disabled") is True
    assert "Generating" in h.status_text(job.status_message_id or 0)
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]


async def test_runcomfy_failure_is_reported_and_refunded(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(outcome="failed", error={"message": "NSFW content detected"}))
    await h.start_bot()
    inter = await h.animate()
    await h.reply(inter)
    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "failed")
    assert "NSFW content detected" in (job.error or "")
    status = h.status_text(job.status_message_id or 0)
    assert "Failed" in status and "refunded" in status
    thread_msgs = h.discord.messages(job.thread_id)
    assert any("failed" in m["content"] and "refunded" in m["content"] for m in thread_msgs)
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]


async def test_quota_exhausted_is_refused_without_submitting(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=1)
    first = await h.animate()
    assert "0 credits left" in await h.reply(first)
    second = await h.animate()
    text = await h.reply(second)
    assert "out of credits" in text and "<t:" in text and second.ephemeral
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_two_users_at_once(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42two-users"
    await h.start_bot()
    a, b = await asyncio.gather(h.animate("alice's cat", user="alice"), h.animate("bob's dog", user="bob"))
    await h.reply(a)
    await h.reply(b)
    rows = await h.running.db.fetchall("SELECT id, user_id, prompt FROM jobs ORDER BY id")
    assert len(rows) == 2
    for row in rows:
        job = await h.wait_job(row["id"], "delivered")
        delivered = h.message(job.delivery_message_id or 0)
        assert f"<@{row['user_id']}>" in delivered["content"]
        assert int(delivered["channel_id"]) == job.thread_id
    assert len({(await h.job(r["id"])).thread_id for r in rows}) == 2


async def test_quota_command_shows_remaining_and_reset(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=3)
    await h.reply(await h.animate(resolution="1080P"))
    inter = await h.discord.slash("quota", {}, user="alice")
    response = await inter.wait_response()
    assert inter.ephemeral
    embed = response["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Left today"] == "**1** of 3"
    assert fields["Resets"].startswith("<t:")
    other = await h.discord.slash("quota", {}, user="bob")
    fields = {f["name"]: f["value"] for f in (await other.wait_response())["embeds"][0]["fields"]}
    assert fields["Left today"] == "**3** of 3"


async def test_missing_channel_permission_is_named(harness: Harness) -> None:
    from tests.fakes.discord import Perm

    h = harness
    channel_id = h.discord.add_channel(
        "no-threads", overwrites=[{"id": "bot", "deny": Perm.CREATE_PUBLIC_THREADS}]
    )
    await h.start_bot()
    inter = await h.animate(channel_id=channel_id)
    text = await h.reply(inter)
    assert "Create Public Threads" in text
    assert h.runcomfy.requests_to("submit") == []
