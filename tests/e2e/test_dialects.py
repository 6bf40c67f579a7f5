"""The core scenarios in every wording RunComfy may use (issue #11): the seed document's, the one
RunComfy's CLI expects (/result `completed`, /status `failed`, `canceled`, mixed case) and a terse one
(failure only as an `error` field). Plus the words nobody documented: warned once, given up at the
normal deadline with a refund."""

from __future__ import annotations

import logging

import pytest

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import DIALECTS, JobScript
from tests.ledger import job_ledger

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"dialect!" * 500


def thread_texts(h: Harness, thread_id: int | None) -> list[str]:
    assert thread_id is not None
    return [str(m["content"]) for m in h.discord.messages(thread_id)]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("shape", ["video", "videos"])
async def test_happy_path_is_delivered(harness: Harness, dialect: str, shape: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.video_bytes = VIDEO
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=0.1, output_shape=shape))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert delivered["attachments"][0]["data"] == VIDEO
    assert int(delivered["channel_id"]) == job.thread_id
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_failure_is_reported_in_the_thread_and_refunded(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.scripts.append(JobScript(outcome="failed", error={"message": "NSFW content detected"}))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "failed")
    assert "NSFW content detected" in (job.error or "")
    assert "Failed" in h.status_text(job.status_message_id or 0)
    assert any(
        "failed" in text and "NSFW content detected" in text and "refunded" in text
        for text in thread_texts(h, job.thread_id)
    )
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_failure_without_a_reason_is_still_a_failure(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.scripts.append(JobScript(outcome="failed"))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "failed")
    assert "RunComfy could not generate the video" in (job.error or "")
    assert any("refunded" in text for text in thread_texts(h, job.thread_id))
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_requester_cancels_while_queued_and_is_refunded(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "queued")
    click = await h.discord.click(job.status_message_id or 0, "animate:cancel:1", user="alice")
    text = await h.reply(click)
    assert "Cancelled" in text and "1 credit went back" in text
    job = await h.wait_job(1, "cancelled")
    assert h.runcomfy.job_state(job.request_id or "") == "cancelled"
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_runcomfy_side_cancel_ends_the_job_refunded(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "queued")
    h.runcomfy.jobs[job.request_id or ""].phase = "cancelled"  # cancelled on RunComfy's side
    job = await h.wait_job(1, "cancelled")
    assert "RunComfy cancelled the job" in (job.error or "")
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_restart_mid_job_then_delivered_once(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.video_bytes = VIDEO
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "queued")
    h.runcomfy.advance(job.request_id or "")
    await h.wait_job(1, "running")
    await h.stop_bot()
    h.runcomfy.advance(job.request_id or "")  # it finishes while the bot is down

    await h.start_bot()
    job = await h.wait_job(1, "delivered")
    deliveries = [m for m in h.discord.messages(job.thread_id) if m["attachments"]]
    assert len(deliveries) == 1 and deliveries[0]["attachments"][0]["data"] == VIDEO
    assert len(h.runcomfy.requests_to("submit")) == 1
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_success_without_a_video_fails_and_refunds(harness: Harness, dialect: str) -> None:
    h = harness
    h.runcomfy.dialect = dialect
    h.runcomfy.scripts.append(JobScript(output_shape="none"))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "failed")
    assert "returned no video" in (job.error or "")
    assert any("refunded" in text for text in thread_texts(h, job.thread_id))
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]


@pytest.mark.parametrize("started", [False, True])
async def test_unknown_status_is_warned_once_and_given_up_at_the_deadline(
    harness: Harness, caplog: pytest.LogCaptureFixture, started: bool
) -> None:
    """Not after JOB_HARD_TIMEOUT, and not as an "overdue" job: it ends failed and refunded, saying why.
    `started`: RunComfy had reported it running before the unknown word appeared."""
    h = harness
    caplog.set_level(logging.WARNING, logger="bot.engine")
    h.runcomfy.scripts.append(JobScript(queue_seconds=0, run_seconds=None, unknown_status="Warming_Up"))
    script = h.runcomfy.scripts[0]
    if started:
        script.unknown_status = None
    await h.start_bot(job_timeout=2.5, job_hard_timeout=3600)
    await h.reply(await h.animate())
    if started:
        await h.wait_job(1, "running")
        script.unknown_status = "Warming_Up"
    job = await h.wait_job(1, "failed", timeout=10)

    assert "does not understand" in (job.error or "") and "warming_up" in (job.error or "")
    texts = thread_texts(h, job.thread_id)
    assert any("does not understand" in text and "refunded" in text for text in texts)
    assert not any("unusually long" in text for text in texts)  # not treated as running/overdue
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]
    # Polled several times, warned once.
    assert h.runcomfy.status_calls(job.request_id or "") >= 3
    warnings = [r for r in caplog.records if "unknown status" in r.getMessage()]
    assert len(warnings) == 1 and "warming_up" in warnings[0].getMessage()


async def test_unknown_status_then_a_known_one_carries_on(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None, unknown_status="Booting"))
    script = h.runcomfy.scripts[0]
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "queued")
    await h.discord.wait_for(lambda: h.runcomfy.status_calls(job.request_id or "") >= 2, timeout=5)
    script.unknown_status = None
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(1, "delivered")
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]
