"""SIGKILL at the worst moments: the next process resumes, posts each video exactly once, and
neither loses nor double-charges a credit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


async def start_in_process(h: Harness, tmp_path: Path, script: JobScript) -> asyncio.subprocess.Process:
    h.runcomfy.scripts.append(script)
    proc = await h.spawn_bot_process(tmp_path)
    await h.discord.wait_until_ready(timeout=30)
    await h.discord.wait_for(lambda: h.discord.find_command("animate"), timeout=30)
    inter = await h.animate("crash test")
    assert "on its way" in await h.reply(inter, timeout=30)
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


def deliveries(h: Harness) -> list[dict[str, object]]:
    return [
        m
        for channel_id in [h.discord.channel_id, *h.discord.threads]
        for m in h.discord.messages(channel_id)
        if "job #1" in str(m["content"])
    ]


async def test_sigkill_while_queued_resumes_without_resubmitting(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proc = await start_in_process(h, tmp_path, JobScript(queue_seconds=None, run_seconds=None))
    await h.discord.wait_for(lambda: h.runcomfy.jobs, timeout=10)
    await asyncio.sleep(0.3)  # a few polls happen
    await kill(proc)
    [request_id] = h.runcomfy.jobs
    h.runcomfy.advance(request_id)
    h.runcomfy.advance(request_id)

    await h.start_bot()
    await h.wait_job(1, "delivered")
    assert len(deliveries(h)) == 1
    assert len(h.runcomfy.requests_to("submit")) == 1
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


async def test_sigkill_mid_download_delivers_once(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.runcomfy.fail_next("video", 0, delay=60.0)  # the first download hangs
    proc = await start_in_process(h, tmp_path, JobScript(queue_seconds=0, run_seconds=0.2))
    await h.discord.wait_for(lambda: h.runcomfy.requests_to("video"), timeout=20)
    await kill(proc)

    await h.start_bot()
    await h.wait_job(1, "delivered")
    [delivered] = deliveries(h)
    assert delivered["attachments"]
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


async def test_sigkill_mid_upload_never_posts_twice(harness: Harness, tmp_path: Path) -> None:
    h = harness
    # Discord stores the video message, but the bot dies before hearing back.
    status_post = h.discord.stall_after("POST", r"/channels/\d+/messages$")
    status_post.set()  # the first message, the status, goes through
    upload = h.discord.stall_after("POST", r"/channels/\d+/messages$")  # the next, the video, is held
    proc = await start_in_process(h, tmp_path, JobScript(queue_seconds=0, run_seconds=0.2))
    await h.discord.wait_for(lambda: deliveries(h), timeout=20)
    await kill(proc)
    upload.set()
    assert len(deliveries(h)) == 1

    await h.start_bot()
    job = await h.wait_job(1, "delivered")
    assert len(deliveries(h)) == 1
    assert job.delivery_message_id == int(str(deliveries(h)[0]["id"]))
    assert job.delivery_channel_id == int(str(deliveries(h)[0]["channel_id"]))
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]


async def test_sigterm_mid_job_exits_promptly_and_resumes(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proc = await start_in_process(h, tmp_path, JobScript(queue_seconds=None, run_seconds=None))
    await h.discord.wait_for(lambda: h.runcomfy.jobs, timeout=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    assert loop.time() - started < 10
    assert "Traceback" not in h.process_logs[0].read_text()

    [request_id] = h.runcomfy.jobs
    h.runcomfy.advance(request_id)
    h.runcomfy.advance(request_id)
    await h.start_bot()
    await h.wait_job(1, "delivered")
    assert len(deliveries(h)) == 1
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_sigterm_during_a_submit_lets_it_finish(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.runcomfy.fail_next("submit", 0, delay=1.5)  # RunComfy is slow to answer, then accepts the job
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    proc = await h.spawn_bot_process(tmp_path)
    await h.discord.wait_until_ready(timeout=30)
    await h.discord.wait_for(lambda: h.discord.find_command("animate"), timeout=30)
    inter = await h.animate("submitted while stopping")
    await h.discord.wait_for(lambda: h.runcomfy.requests_to("submit"), timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    assert "on its way" in await h.reply(inter)  # the submit completed before the process exited

    await h.start_bot()
    job = await h.wait_job(1, "queued")
    assert job.request_id in h.runcomfy.jobs
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]  # not refunded: it is running


async def test_sigkill_between_posting_the_status_and_storing_it_leaves_no_orphan(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    # Discord stores the status message, but the bot dies before it hears back and records its id.
    hold = h.discord.stall_after("POST", rf"/channels/{h.discord.channel_id}/messages$")
    proc = await h.spawn_bot_process(tmp_path)
    await h.discord.wait_until_ready(timeout=30)
    await h.discord.wait_for(lambda: h.discord.find_command("animate"), timeout=30)
    await h.animate("orphan test")
    [status] = await h.discord.wait_for(lambda: h.discord.messages(h.discord.channel_id), timeout=20)
    assert "Submitting" in next(f["value"] for f in status["embeds"][0]["fields"] if f["name"] == "Status")
    await kill(proc)
    hold.set()

    await h.start_bot()
    job = await h.wait_job(1, "failed")
    assert job.status_message_id == int(status["id"])
    assert "restarted" in h.status_text(job.status_message_id)
    assert h.buttons(job.status_message_id) == []  # no dead Cancel button
    assert [m["id"] for m in h.discord.messages(h.discord.channel_id)] == [status["id"]]
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]
    assert h.runcomfy.requests_to("submit") == []
