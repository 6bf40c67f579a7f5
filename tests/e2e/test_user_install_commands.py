"""Issue #15, finishing touches: /quota and /jobs are installable by a user too. Where the bot is not a
member (a DM, a group DM, a server that did not add it) they show the user-install allowance and
jobs; in a server that added the bot, that server's, as before."""

from __future__ import annotations

from typing import Any

from bot.quota_rules import USER_INSTALL_SCOPE
from tests.e2e.conftest import Harness
from tests.fakes.discord import FakeInteraction
from tests.fakes.runcomfy import JobScript

USER_INSTALL_SOURCE = (
    "your user-install allowance, the same in every DM, group DM and server that did not add the bot"
)


async def answer(h: Harness, name: str, channel_id: int | None = None, **options: Any) -> FakeInteraction:
    inter = await h.discord.slash(name, options, user=options.pop("user", "alice"), channel_id=channel_id)
    await inter.wait_response()
    return inter


def embed_of(inter: FakeInteraction) -> dict[str, Any]:
    return dict(inter.callbacks[0]["data"]["embeds"][0])


def field(embed: dict[str, Any], name: str) -> str | None:
    return next((f["value"] for f in embed["fields"] if f["name"] == name), None)


def server_without_bot(h: Harness, *members: str) -> int:
    elsewhere = h.discord.add_guild("Elsewhere", with_bot=False)
    for name in members or ("alice",):
        h.discord.add_member(name, guild_id=elsewhere)
    return h.discord.add_channel("chat", guild_id=elsewhere)


async def run_job(h: Harness, channel_id: int | None = None, user: str = "alice") -> int:
    await h.reply(await h.animate(channel_id=channel_id, user=user))
    job = await h.wait_job(await h.last_job_id(), "delivered")
    return job.id


def commands_synced(h: Harness) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in h.discord.global_commands}


async def test_quota_and_jobs_are_installable_by_a_user_and_run_everywhere(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    synced = commands_synced(h)
    for name in ("quota", "jobs"):
        assert sorted(synced[name]["integration_types"]) == [0, 1]
        assert sorted(synced[name]["contexts"]) == [0, 1, 2]
    # The admin-only ones stay the server's.
    assert synced["animate-stats"].get("integration_types") in (None, [0])


async def test_quota_in_a_dm_shows_the_user_install_allowance(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=5, user_install_daily_quota=3)
    dm = h.discord.open_dm("alice")
    await run_job(h, dm)
    for channel in (dm, h.discord.add_group_dm(["alice", "bob"]), server_without_bot(h)):
        inter = await answer(h, "quota", channel)
        assert inter.ephemeral
        embed = embed_of(inter)
        assert field(embed, "Left today") == "**2** of 3"  # the one DM job, from USER_INSTALL_DAILY_QUOTA
        assert field(embed, "Allowance from") == USER_INSTALL_SOURCE
        assert field(embed, "Purchased credits") is None  # nothing for sale
    # In the server that added the bot: its own allowance, untouched by the DM job, as before.
    embed = embed_of(await answer(h, "quota"))
    assert field(embed, "Left today") == "**5** of 5"
    assert field(embed, "Allowance from") == "the bot default"


async def test_quota_in_a_dm_shows_purchased_credits_and_the_packs(harness: Harness) -> None:
    h = harness
    sku = h.discord.add_sku("10 credits")
    await h.start_bot(premium_skus=f"{sku}:10", user_install_daily_quota=1)
    await h.discord.purchase("alice", sku, dispatch=False)  # carried by the interaction: granted there
    inter = await answer(h, "quota", h.discord.open_dm("alice"))
    embed = embed_of(inter)
    assert field(embed, "Left today") == "**1** of 1"
    assert field(embed, "Purchased credits") == "**10** (never expire, used after the allowance)"
    buttons = [c for row in inter.callbacks[0]["data"]["components"] for c in row["components"]]
    assert [(b["style"], b["sku_id"]) for b in buttons] == [(6, str(sku))]


async def test_looking_up_another_member_is_refused_outside_a_server_that_added_the_bot(
    harness: Harness,
) -> None:
    h = harness
    await h.start_bot()
    for channel in (h.discord.open_dm("admin"), server_without_bot(h, "admin", "bob")):
        inter = await answer(h, "quota", channel, member="bob", user="admin")
        data = inter.callbacks[0]["data"]
        assert inter.ephemeral and not data.get("embeds")
        assert data["content"] == (
            "Looking up another member's credits works only in a server that added the bot, "
            "for its admins. Use /quota on its own for yours."
        )
    # In the server, an admin still may (as before), and naming oneself is just /quota anywhere.
    embed = embed_of(await answer(h, "quota", member="bob", user="admin"))
    assert embed["title"] == "/animate credits of Bob"
    embed = embed_of(await answer(h, "quota", h.discord.open_dm("alice"), member="alice"))
    assert embed["title"] == "Your /animate credits" and field(embed, "Allowance from") == USER_INSTALL_SOURCE


async def test_jobs_in_a_dm_lists_the_user_install_jobs_with_links_to_their_videos(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    dm = h.discord.open_dm("alice")
    empty = await answer(h, "jobs", dm)
    assert (
        empty.ephemeral
        and "haven't run /animate with your user install" in empty.callbacks[0]["data"]["content"]
    )
    in_dm = await run_job(h, dm)
    group = h.discord.add_group_dm(["alice", "bob"])
    in_group = await run_job(h, group)
    elsewhere = await run_job(h, server_without_bot(h))
    in_server = await run_job(h)
    await run_job(h, dm, user="bob")  # someone else's

    for channel in (dm, group):
        inter = await answer(h, "jobs", channel)
        assert inter.ephemeral
        embed = embed_of(inter)
        assert embed["title"] == "Your recent /animate jobs with your user install"
        lines = embed["description"].split("\n")[::2]  # each job: its line, then its prompt
        assert [line.split("**")[1] for line in lines] == [f"#{elsewhere}", f"#{in_group}", f"#{in_dm}"]
        for job_id, line in zip((elsewhere, in_group, in_dm), lines, strict=True):
            job = await h.job(job_id)
            assert job.guild_id == USER_INSTALL_SCOPE and "✅ delivered" in line
            if job_id == elsewhere:  # a server that did not add the bot: no place to link to
                assert "](" not in line
            else:  # the video, posted in the DM or group DM (the status was only the requester's)
                url = f"https://discord.com/channels/@me/{job.channel_id}/{job.delivery_message_id}"
                assert line.endswith(f" · [video]({url})")
    # In the server: its own jobs, with the thread, as before.
    embed = embed_of(await answer(h, "jobs"))
    assert embed["title"] == "Your recent /animate jobs"
    job = await h.job(in_server)
    assert (
        embed["description"].startswith(f"**#{in_server}**") and f"<#{job.thread_id}>" in embed["description"]
    )
    assert embed["description"].count("**#") == 1  # none of the user-install jobs


async def test_jobs_links_a_video_that_went_by_dm_after_the_token_expired(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=None))
    await h.reply(await h.animate(channel_id=server_without_bot(h)))
    job = await h.wait_job(await h.last_job_id(), "running")
    h.discord.interaction_token_lifetime = 0.0  # Discord now answers 401/50027 on the webhook
    assert job.request_id is not None
    h.runcomfy.advance(job.request_id)
    job = await h.wait_job(job.id, "delivered")
    dm = h.discord.dm_channel_id("alice")
    assert job.interaction_context == 0 and job.delivery_channel_id == dm
    h.discord.interaction_token_lifetime = 900.0
    embed = embed_of(await answer(h, "jobs", h.discord.open_dm("alice")))
    # A server that did not add the bot has no link of its own, but the DM the video went to has.
    url = f"https://discord.com/channels/@me/{dm}/{job.delivery_message_id}"
    assert embed["description"].split("\n")[0].endswith(f" · [video]({url})")
