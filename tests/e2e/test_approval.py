"""Approval mode: jobs wait, unsubmitted and uncharged, until a moderator approves or rejects them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from bot import engine
from tests.e2e.adminkit import admin
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


async def approval_on(h: Harness, **options: Any) -> None:
    text = await admin(h, "moderation approval", enabled=True, moderator_role="Moderator", **options)
    assert "Approval mode on" in text


async def request(h: Harness, user: str = "alice", **options: Any) -> tuple[int, int]:
    """/animate in approval mode: returns (job id, status message id)."""
    inter = await h.animate(user=user, **options)
    text = await h.reply(inter)
    assert "waiting for a moderator's approval" in text, text
    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "awaiting_approval")
    assert job.status_message_id is not None
    return job_id, job.status_message_id


async def click(h: Harness, message_id: int, action: str, job_id: int, user: str) -> str:
    inter = await h.discord.click(message_id, f"animate:{action}:{job_id}", user=user)
    text = await h.reply(inter)
    assert inter.ephemeral
    return text


async def test_approve_submits_delivers_and_charges_once(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)

    # Waiting: nothing submitted, nothing charged, the buttons are there.
    assert h.runcomfy.requests_to("submit") == []
    assert await job_ledger(h.running.quota, job_id) == []
    assert "Waiting for approval" in h.status_text(message_id)
    ids = [b["custom_id"] for b in h.buttons(message_id)]
    assert ids == [f"animate:approve:{job_id}", f"animate:reject:{job_id}", f"animate:withdraw:{job_id}"]

    # A plain member may neither approve nor withdraw someone else's request.
    assert "Only members with the" in await click(h, message_id, "approve", job_id, "bob")
    assert "Only the person who asked" in await click(h, message_id, "withdraw", job_id, "bob")
    assert (await h.job(job_id)).state.value == "awaiting_approval"

    text = await click(h, message_id, "approve", job_id, "mod")
    assert "Approved" in text and "charged 1 credit" in text
    job = await h.wait_job(job_id, "delivered")
    assert job.thread_id is not None
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    assert len(h.runcomfy.requests_to("submit")) == 1
    assert h.buttons(message_id) == []

    # A late click from a client still showing the old buttons changes nothing.
    stale_msg = await h.discord.post_user_message("stale", user="admin")
    button = {"type": 2, "style": 3, "label": "Approve", "custom_id": f"animate:approve:{job_id}"}
    stale_msg["components"] = [{"type": 1, "components": [button]}]
    stale = await h.discord.click(int(stale_msg["id"]), button["custom_id"], user="admin")
    assert "doesn't belong" in await h.reply(stale)
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_reject_never_charges_or_submits(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    text = await click(h, message_id, "reject", job_id, "admin")  # admins may always decide
    assert "Rejected" in text and "not charged" in text
    job = await h.wait_job(job_id, "rejected")
    status = h.status_text(message_id)
    assert f"Rejected by <@{h.discord.user_ids['admin']}>" in status and "Nothing was charged" in status
    assert h.buttons(message_id) == []
    assert job.request_id is None
    assert h.runcomfy.requests_to("submit") == []
    assert await job_ledger(h.running.quota, job_id) == []


async def test_requester_withdraws(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    assert "Withdrawn" in await click(h, message_id, "withdraw", job_id, "alice")
    await h.wait_job(job_id, "cancelled")
    assert "Nothing was charged" in h.status_text(message_id)
    assert await job_ledger(h.running.quota, job_id) == []


async def test_requests_survive_a_restart(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    await h.stop_bot()

    await h.start_bot()
    assert len(h.discord.identify_payloads) == 2  # start_bot waited for the new bot's own login
    assert (await h.job(job_id)).state.value == "awaiting_approval"  # not failed by the restart
    assert "Approved" in await click(h, message_id, "approve", job_id, "mod")
    await h.wait_job(job_id, "delivered")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]


async def test_approval_re_checks_the_quota_and_leaves_the_request_waiting(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=1)
    await approval_on(h)
    first, first_msg = await request(h)
    # The second request is refused outright: the first one already holds alice's only credit.
    text = await h.reply(await h.animate())
    assert "out of credits" in text and "awaiting approval" in text
    # Meanwhile an admin lowers alice's allowance to 0: approval must not overspend.
    await admin(h, "quota user", member="alice", credits=0)
    text = await click(h, first_msg, "approve", first, "mod")
    assert "Not approved yet" in text and "out of credits" in text and "stays waiting" in text
    assert (await h.job(first)).state.value == "awaiting_approval"
    assert h.runcomfy.requests_to("submit") == []
    # Giving alice a credit makes the same request approvable.
    await admin(h, "quota grant", member="alice", credits=1)
    assert "Approved" in await click(h, first_msg, "approve", first, "mod")
    await h.wait_job(first, "delivered")


async def test_forged_button_for_another_guilds_job_does_nothing(harness: Harness) -> None:
    h = harness
    other_guild = h.discord.add_guild("Other Guild", owner="owner")
    other_channel = h.discord.add_channel("animate", guild_id=other_guild)
    await h.start_bot()
    await approval_on(h)
    job_id, _ = await request(h)

    # Someone in the other guild crafts a message whose button carries this guild's job id.
    forged = await h.discord.post_user_message("hello", user="owner", channel_id=other_channel)
    button = {"type": 2, "style": 3, "label": "Approve", "custom_id": f"animate:approve:{job_id}"}
    forged["components"] = [{"type": 1, "components": [button]}]
    click_ = await h.discord.click(int(forged["id"]), button["custom_id"], user="owner")
    assert "doesn't belong to a job here" in await h.reply(click_)
    assert (await h.job(job_id)).state.value == "awaiting_approval"
    assert h.runcomfy.requests_to("submit") == []


async def test_a_request_approved_a_day_later_gets_a_fresh_image_url(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    # Discord's signed attachment URLs expire after about a day: make the request a day old.
    await h.running.db.execute(
        "UPDATE jobs SET created_at = created_at - 86400, image_url = ? WHERE id = ?",
        ("https://expired.invalid/source.jpg", job_id),
    )
    assert "Approved" in await click(h, message_id, "approve", job_id, "mod")
    job = await h.wait_job(job_id, "delivered")
    assert h.discord.calls_to("GET", rf"/channels/\d+/messages/{message_id}$")  # the message was re-read
    submitted = h.runcomfy.jobs[job.request_id or ""].params["img_url"]
    assert submitted == job.image_url and "expired.invalid" not in submitted
    assert submitted == h.message(message_id)["attachments"][0]["url"]


async def test_a_request_whose_post_a_crash_orphaned_is_found_at_start_and_can_be_approved(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    await h.stop_bot()
    # Discord stores the request's post, but the process never hears back (and is killed meanwhile):
    # the post's id is never stored.
    h.discord.fail_after_store("POST", rf"/channels/{h.discord.channel_id}/messages$", "timeout", hold=30)
    identified = len(h.discord.identify_payloads)  # the in-process bot's READY is no sign of the new one
    proc = await h.spawn_bot_process(tmp_path)
    await h.discord.wait_for(lambda: len(h.discord.identify_payloads) > identified, timeout=30)
    await h.discord.wait_until_ready(timeout=30)
    await h.animate("orphaned request")
    [post] = await h.discord.wait_for(lambda: h.discord.messages(h.discord.channel_id), timeout=20)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    await h.start_bot()
    job_id = await h.last_job_id()

    async def stored() -> bool:
        return (await h.job(job_id)).status_message_id is not None

    await h.discord.wait_for(stored)
    job = await h.job(job_id)
    assert job.state.value == "awaiting_approval" and job.status_message_id == int(post["id"])
    assert job.image_url == post["attachments"][0]["url"]
    assert "Waiting for approval" in h.status_text(job.status_message_id)
    # Its buttons work again: a moderator approves it, it is charged once and delivered.
    text = await click(h, job.status_message_id, "approve", job_id, "mod")
    assert "Approved" in text and "charged 1 credit" in text
    await h.wait_job(job_id, "delivered")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    assert [m["id"] for m in h.discord.messages(h.discord.channel_id)] == [post["id"]]  # no second post


async def test_on_a_shared_database_a_request_a_peer_orphaned_is_found_while_the_bot_runs(
    harness: Harness, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    h.overrides["database_url"] = pg_url
    monkeypatch.setattr(engine, "ORPHAN_AGE", 0.3)  # production: 5 minutes
    await h.start_bot()  # its start-up look finds nothing: the request does not exist yet
    await approval_on(h)
    job_id, message_id = await request(h)
    # As if a peer process had posted it and died before storing the post's id: no start-up
    # follows (this process keeps running), so only a repeated look can find it.
    await h.running.db.execute("UPDATE jobs SET status_message_id = NULL WHERE id = ?", (job_id,))

    async def stored() -> bool:
        return (await h.job(job_id)).status_message_id == message_id

    await h.discord.wait_for(stored)
    text = await click(h, message_id, "approve", job_id, "mod")
    assert "Approved" in text and "charged 1 credit" in text
    await h.wait_job(job_id, "delivered")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1)]
    assert [m["id"] for m in h.discord.messages(h.discord.channel_id)] == [str(message_id)]


async def test_a_request_that_never_got_posted_ends_uncharged_at_start(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    # As if the process had died before its post was stored, and the post is gone too.
    await h.running.db.execute("UPDATE jobs SET status_message_id = NULL WHERE id = ?", (job_id,))
    await h.stop_bot()
    h.discord._delete_message(h.message(message_id))

    await h.start_bot()
    job = await h.wait_job(job_id, "failed")
    assert job.error is not None and "restarted before this request could be posted" in job.error
    assert await job_ledger(h.running.quota, job_id) == []
    assert h.discord.messages(h.discord.channel_id) == []  # nothing posted in its place


async def test_a_quick_approval_takes_the_buttons_off_at_once(harness: Harness) -> None:
    h = harness
    # Production's spacing of routine edits: the approval's edit is not one of them.
    await h.start_bot(status_edit_interval=30.0)
    await approval_on(h)
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))  # stays queued
    job_id, message_id = await request(h)
    assert "Approved" in await click(h, message_id, "approve", job_id, "mod")
    await h.wait_job(job_id, "queued")
    assert "Queued" in h.status_text(message_id)
    assert [b["custom_id"] for b in h.buttons(message_id)] == [f"animate:cancel:{job_id}"]
