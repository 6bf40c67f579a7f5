"""Opt-in DMs when a job finishes, and the ETA on status messages."""

from __future__ import annotations

import re
import time

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript


async def test_dm_when_done_is_opt_in(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    inter = await h.discord.slash("animate-notify", {}, user="alice")
    assert "don't get DMs" in await h.reply(inter)

    await h.reply(await h.animate())
    await h.wait_job(1, "delivered")
    assert h.discord.dm_channel_id("alice") is None  # not opted in: no DM

    inter = await h.discord.slash("animate-notify", {"dm": True}, user="alice")
    assert "I'll DM you" in await h.reply(inter)
    await h.reply(await h.animate("second"))
    job = await h.wait_job(2, "delivered")
    dm = await h.discord.wait_for(lambda: h.discord.dm_channel_id("alice"))  # sent just after delivery
    [message] = await h.discord.wait_for(lambda: h.discord.messages(dm))
    assert f"/{job.delivery_message_id}" in message["content"] and "second" in message["content"]

    h.runcomfy.scripts.append(JobScript(outcome="failed", error="out of memory"))
    await h.reply(await h.animate("third"))
    await h.wait_job(3, "failed")
    await h.discord.wait_for(lambda: len(h.discord.messages(dm)) == 2)
    assert (
        "failed" in h.discord.messages(dm)[1]["content"]
        and "refunded" in h.discord.messages(dm)[1]["content"]
    )

    inter = await h.discord.slash("animate-notify", {"dm": False}, user="alice")
    assert "no more DMs" in await h.reply(inter)


async def test_closed_dms_do_not_break_anything(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await h.reply(await h.discord.slash("animate-notify", {"dm": True}, user="bob"))
    h.discord.close_dms("bob")
    await h.reply(await h.animate(user="bob"))
    await h.wait_job(1, "delivered")


async def test_status_shows_an_eta_from_recent_jobs(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    for _ in range(3):
        await h.reply(await h.animate())
    for job_id in (1, 2, 3):
        await h.wait_job(job_id, "delivered")
    h.running.engine._eta_cache.clear()  # don't wait a minute for the cache

    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.reply(await h.animate())
    job = await h.wait_job(4, "queued")
    await h.discord.wait_for(lambda: "Expected" in h.status_text(job.status_message_id or 0))
    status = h.status_text(job.status_message_id or 0)
    match = re.search(r"Expected (?:<t:(\d+):R>|any moment now)", status)
    assert match, status
    if match.group(1):
        assert abs(int(match.group(1)) - time.time()) < 60
    # The status message carried the expectation from its very post (no edit needed to show it).
    posts = h.discord.calls_to("POST", rf"/channels/{h.discord.channel_id}/messages$")
    first = next(c for c in posts if c.json and "#4 " in str(c.json.get("embeds")))
    assert "Expected" in str(first.json["embeds"][0]["fields"]), first.json
