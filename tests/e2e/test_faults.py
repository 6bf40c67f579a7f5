"""Issue 6: faults at RunComfy, at Discord and in storage end with a delivered video or a clear
message and a refund -- never a stuck job, a double charge or a double delivery."""

from __future__ import annotations

import logging
import re

import pytest

from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger

STATUS_EDIT = r"/channels/\d+/messages/\d+$"


async def start_job(h: Harness, **script: object) -> int:
    if script:
        h.runcomfy.scripts.append(JobScript(**script))  # type: ignore[arg-type]
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    return await h.last_job_id()


async def test_transient_runcomfy_faults_while_polling_still_deliver(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.fail_next("status", 503, times=3)
    h.runcomfy.fail_next("status", 429, retry_after="0.1")
    h.runcomfy.fail_next("status", 429)
    h.runcomfy.fail_next("status", 200, raw=b'{"request_id": "tr')
    h.runcomfy.fail_next("result", 500, times=2)
    h.runcomfy.fail_next("status", 0, delay=6.0)  # slower than the bot's 5 s timeout
    job_id = await start_job(h, unknown_status="warming_up", run_seconds=0.5)
    job = await h.wait_job(job_id, "delivered", timeout=30)
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1)]
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_request_that_runcomfy_forgets_fails_with_refund(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    job = await h.job(job_id)
    del h.runcomfy.jobs[job.request_id or ""]  # RunComfy now answers 404001 for it
    job = await h.wait_job(job_id, "failed")
    assert "no longer knows" in (job.error or "")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]


async def test_job_that_never_starts_is_cancelled_at_the_deadline(harness: Harness) -> None:
    h = harness
    await h.start_bot(job_timeout=0.5)
    job_id = await start_job(h, queue_seconds=None)
    job = await h.wait_job(job_id, "cancelled")
    assert "did not start it within" in (job.error or "")
    assert h.runcomfy.job_state(job.request_id or "") == "cancelled"
    assert any("cancelled it" in m["content"] for m in h.discord.messages(job.thread_id))
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]


async def test_job_that_never_finishes_is_announced_then_given_up(harness: Harness) -> None:
    h = harness
    await h.start_bot(job_timeout=0.5, job_hard_timeout=2.0, overdue_poll_interval=0.3)
    job_id = await start_job(h, queue_seconds=0, run_seconds=None)
    job = await h.wait_job(job_id, "running")

    def told() -> bool:
        return any("unusually long" in m["content"] for m in h.discord.messages(job.thread_id))

    await h.discord.wait_for(told, timeout=10)
    job = await h.wait_job(job_id, "failed", timeout=10)
    assert "did not finish within" in (job.error or "")
    assert sum("unusually long" in m["content"] for m in h.discord.messages(job.thread_id)) == 1
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    # After the overdue notice, polling slowed down to the overdue interval.
    polls = [r.at for r in h.runcomfy.requests_to("status")]
    assert len(polls) < 40


async def test_balance_running_out_mid_way(harness: Harness) -> None:
    h = harness
    h.runcomfy.balance = 1
    await h.start_bot()
    first = await start_job(h)
    second = await h.animate(user="bob")
    text = await h.reply(second)
    assert "out of credit" in text and "not charged" in text
    await h.wait_job(first, "delivered")
    bob_job = await h.last_job_id()
    assert (await h.job(bob_job)).state.value == "failed"
    assert await job_ledger(h.running.quota, bob_job) == [("charge", 1), ("refund", -1)]


async def test_rate_limited_status_edits_are_retried_and_coalesced(harness: Harness) -> None:
    h = harness
    await h.start_bot(status_edit_interval=0.5)
    h.discord.fail_next("PATCH", STATUS_EDIT, 429, retry_after=0.2, times=2)
    job_id = await start_job(h, queue_seconds=1.5, run_seconds=1.0, initial_queue_position=30)
    job = await h.wait_job(job_id, "delivered", timeout=30)
    assert "Done" in h.status_text(job.status_message_id or 0)
    edits = h.discord.calls_to("PATCH", rf"/channels/\d+/messages/{job.status_message_id}$")
    # ~30 queue positions over 1.5 s and a second of progress, folded into a handful of edits.
    assert len(edits) <= 12, len(edits)


async def test_deleted_status_message_is_reposted_and_its_button_works(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None, initial_queue_position=5)
    job = await h.job(job_id)
    old_status = job.status_message_id or 0
    await h.discord.user_deletes_message(old_status)
    h.runcomfy.jobs[job.request_id or ""].script.initial_queue_position = 2  # a change to show

    async def reposted() -> bool:
        fresh = await h.job(job_id)
        return fresh.status_message_id != old_status

    await h.discord.wait_for(reposted, timeout=10)
    job = await h.job(job_id)
    assert job.status_channel_id == job.thread_id
    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job_id}", user="alice")
    assert "Cancelled" in await h.reply(click)
    await h.wait_job(job_id, "cancelled")


async def test_deleted_thread_falls_back_to_the_channel(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    job = await h.job(job_id)
    await h.discord.user_deletes_channel(job.thread_id or 0)
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job_id, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert int(delivered["channel_id"]) == h.discord.channel_id == job.delivery_channel_id
    assert delivered["attachments"]


async def test_bot_removed_from_guild_refunds_and_dms_the_link(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    job = await h.job(job_id)
    await h.discord.remove_guild(h.discord.guild_id)
    h.discord.fail_next(
        "*",
        rf"/channels/({h.discord.channel_id}|{job.thread_id})/messages",
        403,
        body={"code": 50001, "message": "Missing Access"},
        times=50,
    )
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job_id, "failed")
    assert "missing access" in (job.error or "")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    dm = h.discord.dm_channel_id("alice")
    assert dm is not None
    [message] = h.discord.messages(dm)
    assert h.runcomfy.output_url(job.request_id or "") in message["content"]


async def test_forged_button_for_another_guilds_job_does_nothing(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    # A second server where "mod" is a moderator too; a modified client clicks there with a
    # custom_id naming the first server's job.
    other_guild = h.discord.add_guild("Other server")
    other_channel = h.discord.add_channel("general", guild_id=other_guild)
    moderators = h.discord.add_role("Mods", 1 << 13, guild_id=other_guild)  # Manage Messages
    h.discord.add_member("mod", roles=[moderators], guild_id=other_guild)
    await h.discord.dispatch_guild_create(other_guild)
    message = await h.discord.post_user_message("hi", user="mod", channel_id=other_channel)
    # A custom_id the message does not carry: discord.py itself drops it unanswered.
    ignored = await h.discord.click_forged(int(message["id"]), f"animate:cancel:{job_id}", user="mod")
    # A message that does carry it (a copy of the button in the other server): our own check refuses.
    button = {"type": 2, "style": 4, "label": "Cancel", "custom_id": f"animate:cancel:{job_id}"}
    h.discord.get_message(int(message["id"]))["components"] = [{"type": 1, "components": [button]}]  # type: ignore[index]
    click = await h.discord.click(int(message["id"]), f"animate:cancel:{job_id}", user="mod")
    assert "doesn't belong" in await h.reply(click)
    assert ignored.callbacks == []
    assert (await h.job(job_id)).state.value == "queued"
    assert h.runcomfy.requests_to("cancel") == []


async def test_database_read_only_gives_a_clear_message_and_no_charge(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await h.running.db.execute("PRAGMA query_only = 1")
    inter = await h.animate()
    text = await h.reply(inter)
    assert "database" in text.lower() and "Nothing was charged" in text
    assert h.runcomfy.requests_to("submit") == []


async def test_tokens_never_appear_in_logs_or_messages(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    caplog.set_level(logging.DEBUG)
    await h.start_bot()
    await h.wait_job(await start_job(h), "delivered")
    h.runcomfy.fail_next(
        "submit", 401, body={"error_code": 400004, "error_message": f"bad token {RUNCOMFY_TOKEN}"}
    )
    await h.reply(await h.animate(user="bob"))
    await h.wait_job(await start_job(h, outcome="failed", error=f"Bearer {RUNCOMFY_TOKEN}"), "failed")
    secrets = re.compile(re.escape(DISCORD_TOKEN) + "|" + re.escape(RUNCOMFY_TOKEN))
    for record in caplog.records:
        assert not secrets.search(record.getMessage()), record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            assert not secrets.search(str(record.exc_info[1]))
    for call in h.discord.calls:
        assert not secrets.search(str(call.json)), call.path
    jobs = await h.running.db.fetchall("SELECT error FROM jobs")
    assert not any(secrets.search(str(r["error"])) for r in jobs)


async def test_a_discord_hiccup_right_after_submit_does_not_orphan_the_job(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    engine = h.running.engine
    real_present = engine.presenter.present
    calls = 0

    async def flaky_present(job: object, *, force: bool = False) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("network blip")  # not an HTTPException: discord.py lets it through
        await real_present(job, force=force)  # type: ignore[arg-type]

    engine.presenter.present = flaky_present  # type: ignore[method-assign]
    inter = await h.animate()
    assert "on its way" in await h.reply(inter)
    job = await h.wait_job(1, "delivered")
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1)]


async def test_video_discord_keeps_refusing_is_sent_by_dm_and_refunded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.engine import _common as engine_module

    h = harness
    monkeypatch.setattr(engine_module, "DELIVERY_TIMEOUT", 1.0)
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    job = await h.job(job_id)
    # Discord answers 503 to every post in the thread and the channel for a while.
    h.discord.fail_next(
        "POST", rf"/channels/({h.discord.channel_id}|{job.thread_id})/messages$", 503, times=1000
    )
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job_id, "failed", timeout=20)
    assert await job_ledger(h.running.quota, job_id) == [("charge", 1), ("refund", -1)]
    dm = await h.discord.wait_for(lambda: h.discord.dm_channel_id("alice"))
    assert h.runcomfy.output_url(job.request_id or "") in h.discord.messages(dm)[0]["content"]


async def test_upload_refused_for_another_reason_falls_back_to_the_link(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job_id = await start_job(h, queue_seconds=None)
    job = await h.job(job_id)
    h.discord.fail_next(
        "POST",
        rf"/channels/{job.thread_id}/messages$",
        400,
        body={"code": 50035, "message": "Invalid Form Body"},
    )
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job_id, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    assert delivered["attachments"] == [] and "Discord refused the upload" in delivered["content"]
