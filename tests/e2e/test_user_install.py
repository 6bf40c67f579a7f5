"""Issue #15: the user-installable /animate. Where the bot is not a member (a DM, a group DM, a server
that did not add it) the job lives in the interaction: the status is the original response, the
video a follow-up while the token lives, then a DM; quotas are per user across those places."""

from __future__ import annotations

import re
from typing import Any

from bot import ui
from bot.quota_rules import USER_INSTALL_SCOPE
from tests.e2e.conftest import Harness
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
