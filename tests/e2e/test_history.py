"""/jobs, /animate-stats and guild isolation."""

from __future__ import annotations

from tests.e2e.adminkit import admin, embed_of, fields
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript


async def test_jobs_lists_the_callers_recent_jobs_with_links(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(outcome="failed", error={"message": "boom"}))
    await h.start_bot()
    assert "You haven't run /animate" in await h.reply(await h.discord.slash("jobs", {}, user="alice"))
    await h.reply(await h.animate("first cat"))
    failed = await h.wait_job(await h.last_job_id(), "failed")
    await h.reply(await h.animate("second cat"))
    delivered = await h.wait_job(await h.last_job_id(), "delivered")
    await h.reply(await h.animate("bob's dog", user="bob"))

    embed = await embed_of(h, "jobs", user="alice")
    lines = embed["description"].split("\n")
    assert f"**#{delivered.id}** ✅ delivered" in lines[0] and f"<#{delivered.thread_id}>" in lines[0]
    assert "second cat" in lines[1]
    assert f"**#{failed.id}** ❌ failed" in lines[2]
    assert "bob's dog" not in embed["description"]


async def test_stats_for_admins(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(outcome="failed", error={"message": "boom"}))
    await h.start_bot()
    await h.reply(await h.animate())
    await h.wait_job(await h.last_job_id(), "failed")
    for user in ("alice", "bob"):
        await h.reply(await h.animate(user=user, resolution="1080P"))
        await h.wait_job(await h.last_job_id(), "delivered")

    shown = fields(await embed_of(h, "animate-stats", user="admin"))
    assert "✅ delivered: 2" in shown["Jobs (3)"] and "❌ failed: 1" in shown["Jobs (3)"]
    assert shown["Credits spent"] == "4"  # the failed job was refunded
    assert shown["Median time to video"].endswith("s")
    assert f"<@{h.discord.user_ids['alice']}>: 2" in shown["Top members by credits"]


async def test_guilds_are_isolated(harness: Harness) -> None:
    h = harness
    other = h.discord.add_guild("Other Guild", owner="owner")
    other_channel = h.discord.add_channel("animate", guild_id=other)
    h.discord.add_member("alice", guild_id=other)
    await h.start_bot(daily_quota=1)

    # The other guild's owner configures their guild; this guild keeps its defaults.
    text = await admin(h, "quota default", user="owner", channel_id=other_channel, credits=9)
    assert "9 credits" in text
    await admin(h, "moderation block", user="owner", channel_id=other_channel, kind="word", pattern="cat")
    shown = fields(await embed_of(h, "quota", user="alice"))
    assert shown["Left today"] == "**1** of 1"
    assert "on its way" in await h.reply(await h.animate("a cat"))  # not blocked here
    assert "out of credits" in await h.reply(await h.animate("a dog"))  # this guild's quota

    # In the other guild alice has that guild's allowance and its blocklist applies.
    text = await h.reply(await h.animate("a cat", channel_id=other_channel))
    assert "doesn't allow" in text
    text = await h.reply(await h.animate("a dog", channel_id=other_channel))
    assert "8 credits left" in text
    jobs = (await embed_of(h, "jobs", user="alice"))["description"]
    assert "a cat" in jobs and "a dog" not in jobs  # only this guild's job
    inter = await h.discord.slash("jobs", {}, user="alice", channel_id=other_channel)
    other_jobs = (await inter.wait_response())["embeds"][0]["description"]
    assert "a dog" in other_jobs and "a cat" not in other_jobs

    # Stats count only their own guild.
    inter = await h.discord.slash("animate-stats", {}, user="owner", channel_id=other_channel)
    stats = fields((await inter.wait_response())["embeds"][0])
    assert "(1)" in next(k for k in stats if k.startswith("Jobs"))
