"""Stopping the bot mid-job and starting a new one on the same database loses and repeats nothing."""

from __future__ import annotations

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


async def test_restart_mid_job_delivers_exactly_once_and_buttons_still_work(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42restarted"
    await h.start_bot()
    for _ in range(2):
        h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    first = await h.animate("first job")
    await h.reply(first)
    second = await h.animate("second job")
    await h.reply(second)
    job1 = await h.wait_job(1, "queued")
    job2 = await h.wait_job(2, "queued")
    syncs = len(h.discord.calls_to("PUT", r"/applications/\d+/commands"))

    await h.stop_bot()
    # While the bot is down, RunComfy finishes the first job.
    h.runcomfy.advance(job1.request_id or "")
    h.runcomfy.advance(job1.request_id or "")
    assert h.runcomfy.job_state(job1.request_id or "") == "succeeded"

    await h.start_bot()
    job1 = await h.wait_job(1, "delivered")
    deliveries = [
        m
        for m in h.discord.messages(job1.thread_id)
        if m["attachments"] and m["author"]["id"] == str(h.discord.application_id)
    ]
    assert len(deliveries) == 1
    assert deliveries[0]["attachments"][0]["data"] == h.runcomfy.video_bytes

    # The Cancel button posted by the first process is handled by the second.
    click = await h.discord.click(job2.status_message_id or 0, "animate:cancel:2", user="alice")
    assert "Cancelled" in await h.reply(click)
    await h.wait_job(2, "cancelled")

    assert len(h.runcomfy.requests_to("submit")) == 2  # nothing was submitted again
    assert (
        len(h.discord.calls_to("PUT", r"/applications/\d+/commands")) == syncs
    )  # unchanged commands: no re-sync
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]
    assert await job_ledger(h.running.quota, 2) == [("charge", 1), ("refund", -1)]


async def test_job_pending_at_crash_is_refunded_not_resubmitted(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    # Simulate a crash between reserving credits and RunComfy confirming the submit.
    from storage.jobs import NewJob
    from tests.ledger import daily_period

    new = NewJob(
        guild_id=h.discord.guild_id,
        channel_id=h.discord.channel_id,
        user_id=h.discord.user_ids["alice"],
        prompt="lost",
        negative_prompt=None,
        resolution="480P",
        template=None,
        seed=None,
        prompt_extend=True,
        cost=1,
        upload_limit=10 * 1024 * 1024,
    )
    job_id, _ = await h.running.quota.reserve_job(new, 5, daily_period())
    await h.stop_bot()

    await h.start_bot()
    job = await h.wait_job(job_id, "failed")
    assert "restarted" in (job.error or "")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    assert h.runcomfy.requests_to("submit") == []
