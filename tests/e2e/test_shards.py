"""Gateway shards (SHARD_COUNT / SHARD_IDS) and this process's share of Discord's global REST limit
(DISCORD_REST_RATE), against the fake Discord's sharded gateway (issue #14)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from bot.client import AnimateBot
from tests.e2e.conftest import DISCORD_TOKEN, Harness
from tests.e2e.test_metrics import healthz
from tests.fakes.discord import FakeDiscord, RecordedCall, shard_of
from tests.fakes.runcomfy import JobScript

CALLBACK = re.compile(r"^/interactions/\d+/[^/]+/callback$")


def guild_on_shard(fake: FakeDiscord, shard_id: int, count: int) -> tuple[int, int]:
    """A second server with an #animate channel and alice in it, on the chosen shard."""
    gid = fake.add_guild(f"Shard {shard_id}", shard=(shard_id, count))
    channel = fake.add_channel("animate", guild_id=gid)
    fake.add_member("alice", guild_id=gid)
    return gid, channel


async def jobs_of(bot: AnimateBot) -> list[dict[str, Any]]:
    rows = await bot.db.fetchall("SELECT id, guild_id, state FROM jobs ORDER BY id")
    return [dict(r) for r in rows]


async def delivered_in(fake: FakeDiscord, bot: AnimateBot, guild_id: int) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        return next(
            (j for j in await jobs_of(bot) if j["guild_id"] == guild_id and j["state"] == "delivered"), None
        )

    return dict(await fake.wait_for(done, timeout=15))


def interactions_sent_to(fake: FakeDiscord, shard: list[int]) -> list[int | None]:
    """Guild ids of the INTERACTION_CREATEs the fake sent over connections of `shard`."""
    return [
        gid
        for conn in fake.gateway_connections
        if conn["shard"] == shard
        for event, gid in conn["events"]
        if event == "INTERACTION_CREATE"
    ]


async def test_two_shards_in_one_process_serve_guilds_on_both(harness: Harness) -> None:
    h = harness
    h.discord.session_start_limit["max_concurrency"] = 2  # both shards may IDENTIFY together
    home = shard_of(h.discord.guild_id, 2)
    other_guild, other_channel = guild_on_shard(h.discord, 1 - home, 2)
    bot = await h.start_bot(shard_count=2)

    assert sorted(p["shard"] for p in h.discord.identify_payloads) == [[0, 2], [1, 2]]
    assert sorted(bot.shards) == [0, 1]
    assert {g.id for g in bot.guilds} == {h.discord.guild_id, other_guild}
    assert bot.get_guild(other_guild).shard_id == 1 - home  # type: ignore[union-attr]

    first = await h.animate(user="alice")
    second = await h.animate(user="alice", channel_id=other_channel)
    assert "on its way" in await h.reply(first) and "on its way" in await h.reply(second)
    await delivered_in(h.discord, bot, h.discord.guild_id)
    await delivered_in(h.discord, bot, other_guild)
    assert interactions_sent_to(h.discord, [home, 2]) == [h.discord.guild_id]
    assert interactions_sent_to(h.discord, [1 - home, 2]) == [other_guild]


async def test_two_processes_each_serve_only_their_shard(harness: Harness, tmp_path: Path) -> None:
    h = harness
    fake = h.discord
    guild = {shard_of(fake.guild_id, 2): fake.guild_id}
    channel = {shard_of(fake.guild_id, 2): fake.channel_id}
    gid, cid = guild_on_shard(fake, 1 - shard_of(fake.guild_id, 2), 2)
    guild[shard_of(gid, 2)], channel[shard_of(gid, 2)] = gid, cid

    first = await h.start_bot(shard_count=2, shard_ids="0")
    # The second process, with its own database (shared storage is a later step of issue #14).
    second = AnimateBot(
        h.settings(shard_count=2, shard_ids="1", database_path=tmp_path / "second.db"),
        guild_ready_timeout=0.05,
    )
    await second.login(DISCORD_TOKEN)
    task = asyncio.create_task(second.connect(reconnect=False))
    try:
        await asyncio.wait_for(second.wait_until_ready(), timeout=10)
        assert [p["shard"] for p in fake.identify_payloads] == [[0, 2], [1, 2]]
        assert [g.id for g in first.guilds] == [guild[0]]
        assert [g.id for g in second.guilds] == [guild[1]]
        # Only the process running shard 0 synced the commands.
        assert len(fake.calls_to("PUT", r"/applications/\d+/commands$")) == 1

        one = await fake.slash(
            "animate", {"image": h.image(), "prompt": "a"}, user="alice", channel_id=channel[0]
        )
        two = await fake.slash(
            "animate", {"image": h.image(), "prompt": "b"}, user="alice", channel_id=channel[1]
        )
        assert "on its way" in await h.reply(one) and "on its way" in await h.reply(two)
        job_one = await delivered_in(fake, first, guild[0])
        job_two = await delivered_in(fake, second, guild[1])
        # Each process saw (and charged, and delivered) only its own shard's job.
        assert [j["id"] for j in await jobs_of(first)] == [job_one["id"]]
        assert [j["id"] for j in await jobs_of(second)] == [job_two["id"]]
        assert interactions_sent_to(fake, [0, 2]) == [guild[0]]
        assert interactions_sent_to(fake, [1, 2]) == [guild[1]]
        # ... and each video is in the thread of its own server's channel.
        for cid in (channel[0], channel[1]):
            [thread] = [t for t in fake.threads.values() if int(t["parent_id"]) == cid]
            assert [m for m in fake.messages(int(thread["id"])) if m["attachments"]]
    finally:
        await second.close()
        await asyncio.gather(task, return_exceptions=True)


async def test_unset_shard_count_uses_discords_recommendation(harness: Harness) -> None:
    h = harness
    h.discord.recommended_shards = 2
    h.discord.session_start_limit["max_concurrency"] = 2
    other_guild, other_channel = guild_on_shard(h.discord, 1 - shard_of(h.discord.guild_id, 2), 2)
    bot = await h.start_bot()
    assert h.running.settings.shard_count is None
    assert len(h.discord.calls_to("GET", r"^/gateway/bot$")) >= 1
    assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
    assert sorted(p["shard"] for p in h.discord.identify_payloads) == [[0, 2], [1, 2]]
    inter = await h.animate(user="alice", channel_id=other_channel)
    assert "on its way" in await h.reply(inter)
    await delivered_in(h.discord, bot, other_guild)


async def test_default_is_one_shard_with_every_guild(harness: Harness) -> None:
    h = harness
    second_guild, _ = guild_on_shard(h.discord, 1, 2)
    bot = await h.start_bot()
    assert [p["shard"] for p in h.discord.identify_payloads] == [[0, 1]]
    assert {g.id for g in bot.guilds} == {h.discord.guild_id, second_guild}
    # One shard needs no max_concurrency: GET /gateway/bot only for the shard count.
    assert len(h.discord.calls_to("GET", r"^/gateway/bot$")) == 1


def max_in_window(calls: list[RecordedCall], window: float) -> int:
    times = sorted(c.at for c in calls)
    return max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))


async def test_rest_share_spreads_a_burst_and_never_delays_acks(harness: Harness) -> None:
    h = harness
    rate = 5
    await h.start_bot(discord_rest_rate=rate)
    users = ["alice", "bob", "mod"]
    for _ in users:  # jobs stay queued: no status changes, only the posts of the burst
        h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    burst = await asyncio.gather(*(h.animate(user=u) for u in users))
    # While the burst's follow-ups, status posts and threads queue for the REST share, a command's
    # ack goes straight out.
    quota = await h.discord.slash("quota", {}, user="bob")
    for inter in (*burst, quota):
        await inter.wait_acked()
        assert inter.rejected_callbacks == []  # within the fake's 3 s deadline
    for inter in burst:
        assert "on its way" in await h.reply(inter)
    await h.discord.wait_for(
        lambda: len([m for m in h.discord.messages(h.discord.channel_id) if m.get("embeds")]) == len(users)
    )

    counted = [c for c in h.discord.calls if not CALLBACK.match(c.path)]
    acks = [c for c in h.discord.calls if CALLBACK.match(c.path)]
    assert len(counted) > 3 * rate  # the burst really had to be spread over more than three seconds
    # Never more than `rate` in any window shorter than a second (0.5 s of slack for scheduling).
    assert max_in_window(counted, 0.5) <= rate
    # The last ack arrived while the burst was still being paced out.
    assert max(c.at for c in acks) < max(c.at for c in counted)


async def test_sharding_required_ends_the_process_with_one_clear_line(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    h.discord.max_guilds_per_shard = 0  # as if the bot were in more than 2,500 servers per shard
    proc = await h.spawn_bot_process(tmp_path, SHARD_COUNT="1")
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = h.process_logs[0].read_text()
    assert proc.returncode == 1, log
    assert log.strip().splitlines()[-1] == (
        "Discord requires more shards (4011 sharding required): raise SHARD_COUNT on every process, "
        "or unset it to use Discord's recommended count."
    )
    assert "Traceback" not in log and DISCORD_TOKEN not in log
    assert [c["shard"] for c in h.discord.gateway_connections] == [None]  # refused, never identified


async def test_healthz_needs_every_shard_of_the_process(harness: Harness) -> None:
    h = harness
    h.discord.session_start_limit["max_concurrency"] = 2
    other = shard_of(h.discord.guild_id, 2)  # whichever: one shard goes down, the other stays
    # The harness' bot does not reconnect; this one does, as in production.
    bot = AnimateBot(h.settings(metrics_port=0, shard_count=2), guild_ready_timeout=0.05)
    bot.identify_pacer.WINDOW = 0.05  # the shard's re-IDENTIFY need not wait Discord's 5 s here
    await bot.login(DISCORD_TOKEN)
    h.bot = bot
    h.task = asyncio.create_task(bot.connect(reconnect=True))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
    assert (await healthz(bot)) == (
        200,
        {"status": "ok", "checks": {"event_loop": "ok", "gateway": "ok", "database": "ok"}},
    )

    h.discord.refuse_gateway = True
    await h.discord.disconnect_gateway(4000, shard=other)

    async def answer(status: int) -> tuple[int, dict[str, Any]] | None:
        got = await healthz(bot)
        return got if got[0] == status else None

    _, body = await h.discord.wait_for(lambda: answer(503), timeout=10)
    assert body["checks"]["gateway"] == "disconnected"
    assert 1 - other in h.discord.connected_shards  # the other shard stayed up
    await h.discord.wait_for(lambda: h.discord.refused_gateway_connections >= 1, timeout=10)
    h.discord.refuse_gateway = False
    _, body = await h.discord.wait_for(lambda: answer(200), timeout=30)
    assert h.discord.connected_shards == {0: 2, 1: 2}
