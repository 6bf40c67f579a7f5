"""Issue #15: the user-installable /animate. Where the bot is not a member (a DM, a group DM, a server
that did not add it) the job lives in the interaction: the status is the original response, the
video a follow-up while the token lives, then a DM; quotas are per user across those places."""

from __future__ import annotations

from typing import Any

import pytest

from bot import ui
from bot.quota_rules import USER_INSTALL_SCOPE
from tests.e2e.conftest import Harness, jpeg_bytes
from tests.fakes.discord import FakeInteraction
from tests.fakes.runcomfy import JobScript


def status_lines(inter: FakeInteraction) -> list[str]:
    """The Status field of every edit of the interaction's original response, in order."""
    lines = []
    for snap in inter.followups:
        if int(snap["id"]) != inter.original_message_id or not snap.get("embeds"):
            continue
        fields = snap["embeds"][0].get("fields") or []
        lines.extend(f["value"] for f in fields if f["name"] == "Status")
    return lines


async def spent(h: Harness, scope: int, user: str) -> int:
    """Credits charged and not refunded in one quota scope (a server, or the user-install scope)."""
    row = await h.running.db.fetchone(
        "SELECT COALESCE(SUM(credits), 0) AS n FROM quota_ledger WHERE guild_id = ? AND user_id = ?",
        (scope, h.discord.user_ids[user]),
    )
    assert row is not None
    return int(row["n"])


def channel_posts(h: Harness) -> list[Any]:
    """The bot's own channel message posts (not interaction webhooks)."""
    return h.discord.calls_to("POST", r"^/channels/\d+/messages$")


async def test_a_dm_animate_lives_in_the_interaction_and_arrives_as_a_follow_up(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    inter = await h.animate(channel_id=dm)
    assert "this message shows how it goes" in await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")

    assert job.in_interaction and job.interaction_context == 1 and job.guild_id == USER_INSTALL_SCOPE
    assert job.interaction_token is None  # a credential: cleared once the job ended
    assert inter.ephemeral  # the status (and any refusal) only the requester sees
    lines = status_lines(inter)
    assert any(line.startswith("🕒 Queued") for line in lines)
    assert any(line.startswith("🎞️ Generating") for line in lines)
    assert lines[-1].startswith("✅ Done") and "below" in lines[-1]
    original = inter.original_message
    assert original is not None and original["attachments"]  # the hosted image RunComfy fetched
    assert h.runcomfy.requests_to("submit")[0].json["img_url"] == original["attachments"][0]["url"]
    assert [c["custom_id"] for row in original["components"] for c in row["components"]] == []

    [video] = inter.created_messages
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)
    assert f"job #{job.id}" in video["content"] and not int(video["flags"]) & 64
    assert [int(u) for u in video["allowed_mentions"]["users"]] == [job.user_id]
    assert job.delivery_message_id == int(video["id"])
    assert channel_posts(h) == []  # nothing but the interaction's webhook
    assert h.discord.unknown_routes == []


async def test_a_job_finishing_after_the_token_expired_is_delivered_by_dm(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    group = h.discord.add_group_dm(["alice", "bob"], name="friends")
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=None))
    inter = await h.animate(channel_id=group)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "running")
    assert job.interaction_context == 2

    h.discord.interaction_token_lifetime = 0.0  # Discord now answers 401/50027 on the webhook
    assert job.request_id is not None
    h.runcomfy.advance(job.request_id)
    job = await h.wait_job(job.id, "delivered")

    dm = h.discord.dm_channel_id("alice")
    assert dm is not None
    [video] = h.discord.messages(dm)
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)
    assert video["attachments"][0]["data"] == h.runcomfy.video_bytes
    assert f"job #{job.id}" in video["content"]
    assert job.delivery_channel_id == dm and job.interaction_token is None
    assert inter.created_messages == [] and inter.expired_calls >= 1
    assert h.discord.messages(group) == []  # the bot cannot post in a group DM, and did not try
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 1


async def test_cancel_while_queued_from_the_original_response(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate(channel_id=dm)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "queued")
    assert job.status_message_id == inter.original_message_id
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 1

    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job.id}", user="alice")
    answer = await click.wait_response()
    assert "Cancelled" in answer["content"] and click.ephemeral
    job = await h.wait_job(job.id, "cancelled")
    assert status_lines(inter)[-1].startswith("🚫 Cancelled")
    original = inter.original_message
    assert original is not None and original["components"] == []  # no Cancel button left
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 0  # refunded
    assert job.interaction_token is None and channel_posts(h) == []


async def test_a_server_that_did_not_add_the_bot_gets_the_interaction_path(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    elsewhere = h.discord.add_guild("Elsewhere", with_bot=False)
    channel = h.discord.add_channel("chat", guild_id=elsewhere)
    h.discord.add_member("alice", guild_id=elsewhere)
    assert h.running.get_guild(elsewhere) is None  # the bot is no member there
    inter = await h.animate(channel_id=channel)
    assert inter.payload["authorizing_integration_owners"] == {"1": str(h.discord.user_ids["alice"])}
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")

    assert job.in_interaction and job.interaction_context == 0
    assert job.guild_id == USER_INSTALL_SCOPE and job.channel_id == channel
    [video] = inter.created_messages
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)
    assert channel_posts(h) == [] and h.discord.threads == {}


async def test_the_guild_path_is_unchanged_where_the_server_installed_the_bot(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    inter = await h.animate()
    assert inter.payload["authorizing_integration_owners"] == {"0": str(h.discord.guild_id)}
    assert "follow it in <#" in await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert not job.in_interaction and job.guild_id == h.discord.guild_id
    assert job.interaction_token is None and job.thread_id is not None
    [status] = [m for m in h.discord.messages(h.discord.channel_id) if m["id"] == str(job.status_message_id)]
    assert not int(status["flags"]) & 64  # a public channel message, with its thread and the video in it
    assert any(m["attachments"] for m in h.discord.messages(job.thread_id))
    assert inter.created_messages == []


async def test_a_user_install_used_in_the_bots_server_keeps_the_servers_rules(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await h.running.store.guilds.ban(h.discord.guild_id, h.discord.user_ids["alice"], "spam", None)
    inter = await h.discord.slash(
        "animate", {"image": h.image(), "prompt": "a cat"}, user="alice", installed_by="user"
    )
    assert "blocked you" in await h.reply(inter)
    assert await h.running.db.fetchone("SELECT id FROM jobs") is None  # nothing reserved or charged


async def test_the_user_install_quota_is_shared_by_dms_and_group_dms_and_separate_from_servers(
    harness: Harness,
) -> None:
    h = harness
    await h.start_bot(daily_quota=1, user_install_daily_quota=2)
    dm = h.discord.open_dm("alice")
    group = h.discord.add_group_dm(["alice", "bob"])
    for channel in (dm, group):
        inter = await h.animate(channel_id=channel)
        assert "credit" in await h.reply(inter)
        await h.wait_job(await h.last_job_id(), "delivered")
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 2

    refused = await h.animate(channel_id=group)
    text = await h.reply(refused)
    assert "credit" in text.lower() and refused.ephemeral
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 2  # a refusal charges nothing

    # The server's own allowance (DAILY_QUOTA = 1) is untouched by the user-install jobs.
    in_server = await h.animate()
    assert "follow it in <#" in await h.reply(in_server)
    assert await spent(h, h.discord.guild_id, "alice") == 1
    # ... and bob's user-install allowance is his own.
    bobs = await h.animate(user="bob", channel_id=group)
    assert "this message shows how it goes" in await h.reply(bobs)


async def test_the_message_command_from_a_dm(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    posted = await h.discord.post_user_message(
        "look", user="alice", channel_id=dm, files=[("photo.jpg", jpeg_bytes(), "image/jpeg")]
    )
    menu = await h.discord.message_command("Animate this image", int(posted["id"]), user="alice")
    await menu.wait_acked()
    modal = menu.modal
    assert modal is not None
    prompt = next(  # the first paragraph input: the prompt
        c["custom_id"]
        for row in modal["components"]
        for c in ([row["component"]] if "component" in row else row["components"])
        if c.get("style") == 2
    )
    form = await h.discord.submit_modal(menu, {prompt: "the cat blinks"})
    assert "this message shows how it goes" in await h.reply(form)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert job.in_interaction and job.prompt == "the cat blinks" and job.interaction_context == 1
    [video] = form.created_messages
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)


async def test_a_restart_mid_job_keeps_answering_through_the_stored_token(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate(channel_id=dm)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "queued")
    assert job.interaction_token == inter.token  # stored, so another process can go on answering

    await h.stop_bot()
    assert job.request_id is not None
    h.runcomfy.advance(job.request_id)
    h.runcomfy.advance(job.request_id)
    await h.start_bot()
    job = await h.wait_job(job.id, "delivered")

    assert status_lines(inter)[-1].startswith("✅ Done")
    [video] = inter.created_messages
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)
    assert len(h.runcomfy.requests_to("submit")) == 1 and channel_posts(h) == []


async def test_after_a_restart_cancel_still_edits_the_original_response(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    inter = await h.animate(channel_id=dm)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "queued")
    await h.stop_bot()
    await h.start_bot()

    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job.id}", user="alice")
    assert "Cancelled" in (await click.wait_response())["content"]
    await h.wait_job(job.id, "cancelled")
    assert status_lines(inter)[-1].startswith("🚫 Cancelled")  # through the stored token, not a DM
    assert h.discord.dm_channel_id("alice") == dm and h.discord.messages(dm) == []


async def test_a_video_delivered_in_the_interaction_offers_details_only(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    group = h.discord.add_group_dm(["alice", "bob"])
    inter = await h.animate(channel_id=group)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    [video] = inter.created_messages
    ids = [c["custom_id"] for row in video["components"] for c in row["components"]]
    assert ids == [f"animate:details:{job.id}"]
    click = await h.discord.click(int(video["id"]), f"animate:details:{job.id}", user="alice")
    answer = await click.wait_response()
    assert click.ephemeral and answer["embeds"][0]["title"] == f"Job #{job.id}"
    other = await h.discord.click(int(video["id"]), f"animate:details:{job.id}", user="bob")
    assert "Only the person" in (await other.wait_response())["content"]


async def test_a_failure_after_the_token_expired_is_told_by_dm_and_refunded(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    group = h.discord.add_group_dm(["alice", "bob"])
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.05, run_seconds=None, outcome="failed", error="boom"))
    inter = await h.animate(channel_id=group)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "running")
    h.discord.interaction_token_lifetime = 0.0
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job.id, "failed")

    dm = h.discord.dm_channel_id("alice")
    assert dm is not None
    [told] = h.discord.messages(dm)
    assert (
        f"job #{job.id}" in told["content"] and "Failed" in told["content"] and "refunded" in told["content"]
    )
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 0


async def test_closed_dms_after_the_token_expired_end_the_job_honestly(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    group = h.discord.add_group_dm(["alice", "bob"])
    h.discord.close_dms("alice")
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.05, run_seconds=None))
    inter = await h.animate(channel_id=group)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "running")
    h.discord.interaction_token_lifetime = 0.0
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job.id, "failed")

    assert job.error is not None and "DMs are closed" in job.error
    assert await spent(h, USER_INSTALL_SCOPE, "alice") == 0  # never delivered: refunded, once
    refunds = await h.running.db.fetchall(
        "SELECT id FROM quota_ledger WHERE job_id = ? AND kind = 'refund'", (job.id,)
    )
    assert len(refunds) == 1
    assert inter.created_messages == [] and h.discord.messages(group) == []


async def test_a_user_install_in_the_bots_server_is_charged_to_the_server_and_approval_is_refused(
    harness: Harness,
) -> None:
    h = harness
    await h.start_bot()
    options = {"image": h.image(), "prompt": "a cat"}
    inter = await h.discord.slash("animate", options, user="alice", installed_by="user")
    assert "this message shows how it goes" in await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert job.in_interaction and job.guild_id == h.discord.guild_id  # the server's quota and rules
    assert (
        await spent(h, h.discord.guild_id, "alice") == 1 and await spent(h, USER_INSTALL_SCOPE, "alice") == 0
    )

    await h.running.store.guilds.update(h.discord.guild_id, None, approval_required=True)
    waiting = await h.discord.slash("animate", {"image": h.image(), "prompt": "a dog"}, installed_by="user")
    assert "moderators approve every request" in await h.reply(waiting)
    last = await h.job(await h.last_job_id())
    assert last.state.value == "failed" and await spent(h, h.discord.guild_id, "alice") == 1


async def test_a_deleted_original_response_is_not_reposted_in_the_channel(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.05, run_seconds=None))
    inter = await h.animate(channel_id=dm)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "running")
    await h.discord.user_deletes_message(job.status_message_id or 0)
    h.runcomfy.advance(job.request_id or "")
    job = await h.wait_job(job.id, "delivered")
    assert channel_posts(h) == []  # neither a re-posted status nor anything else outside the webhook
    assert len(inter.created_messages) == 1


@pytest.mark.parametrize(
    ("method", "outcome", "where"),
    [
        ("POST", "drop", "group"),
        ("PATCH", "drop", "group"),
        ("PATCH", "timeout", "server"),
        ("POST", "timeout", "server"),
    ],
)
async def test_a_follow_up_whose_answer_is_lost_carries_the_video_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, method: str, outcome: str, where: str
) -> None:
    from bot.engine import _common as engine_module

    h = harness
    monkeypatch.setattr(engine_module, "POST_TIMEOUT", 0.5)
    await h.start_bot()
    if where == "group":
        channel = h.discord.add_group_dm(["alice", "bob"], name="friends")
    else:
        elsewhere = h.discord.add_guild("Elsewhere", with_bot=False)
        channel = h.discord.add_channel("chat", guild_id=elsewhere)
        h.discord.add_member("alice", guild_id=elsewhere)
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=None))
    inter = await h.animate(channel_id=channel)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "running")
    assert job.interaction_context in (0, 2)
    # The video's request (not an edit of the status, the original response) is stored, then its
    # answer is lost: dropped, or none within the post's deadline.
    path = (
        r"^/webhooks/\d+/[^/]+$"
        if method == "POST"
        else rf"^/webhooks/\d+/[^/]+/messages/(?!{inter.original_message_id}$|@original$)\d+$"
    )
    fault = h.discord.fail_after_store(method, path, outcome, hold=2.0)
    assert job.request_id is not None
    h.runcomfy.advance(job.request_id)
    job = await h.wait_job(job.id, "delivered")

    assert fault.hits == 1
    videos = [m for m in inter.created_messages if m["attachments"]]
    [video] = videos
    assert video["attachments"][0]["filename"] == ui.video_filename(job.id)
    assert f"job #{job.id}" in video["content"]
    assert job.delivery_message_id == int(video["id"])
    name = ui.video_filename(job.id)
    uploads = [c for c in h.discord.calls if any(f[0] == name for f in c.files)]
    assert {c.path.rsplit("/", 1)[-1] for c in uploads} == {video["id"]}  # one message ever got it
    assert h.discord.messages(h.discord.dm_channel_id("alice") or 0) == []  # and no DM copy
    assert channel_posts(h) == []


async def test_a_failing_dm_lookup_does_not_hold_up_the_follow_up(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    group = h.discord.add_group_dm(["alice", "bob"], name="friends")
    h.discord.fail_next("POST", r"^/users/@me/channels$", 503, times=50)
    h.discord.fail_next("GET", r"^/users/\d+$", 503, times=50)
    inter = await h.animate(channel_id=group)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    [video] = inter.created_messages
    assert job.delivery_message_id == int(video["id"]) and job.delivery_channel_id == group
    assert h.discord.calls_to("POST", r"^/users/@me/channels$") == []  # never needed
