"""Issue #13: no avoidable 429s. The real bot (real discord.py) against a fake Discord that enforces
per-route buckets and the global limit with Discord's headers (bench/fakes_server.py
`RateLimitedDiscord`, with short windows so the tests stay fast); every 429 it sends is counted in
`rejected`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.fakes_server import RateLimitedDiscord, Window
from bot.client import AnimateBot
from bot.ratelimit import SlidingWindowLimiter, Slot
from tests.e2e.conftest import DISCORD_TOKEN, Harness, harness_on
from tests.fakes.discord import RecordedCall
from tests.fakes.runcomfy import JobScript

# Three messages per channel per 0.4 s: a burst of five in one channel must queue in discord.py.
ROUTE_LIMITS = (
    ("POST", re.compile(r"/channels/(\d+)/messages"), "message-create", 3, 0.4),
    ("PATCH", re.compile(r"/channels/(\d+)/messages/\d+"), "message-edit", 3, 0.4),
    ("POST", re.compile(r"/channels/(\d+)/messages/\d+/threads"), "thread-create", 3, 0.4),
    ("*", re.compile(r"/webhooks/(\d+/[^/]+)(?:/.*)?"), "webhook", 5, 0.4),
)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Harness]:
    """The e2e harness, but Discord answers 429 beyond its limits (on from the start)."""
    fake = RateLimitedDiscord(DISCORD_TOKEN, route_limits=ROUTE_LIMITS, global_limit=1000)
    fake.ratelimits = True
    async with harness_on(fake, tmp_path) as h:
        yield h


def rejected(h: Harness) -> dict[str, int]:
    assert isinstance(h.discord, RateLimitedDiscord)
    return dict(h.discord.rejected)


async def test_first_posts_to_several_channels_at_once_then_bursts_get_no_429(limited: Harness) -> None:
    h = limited
    channels = [h.discord.channel_id, *(h.discord.add_channel(f"burst-{i}") for i in range(3))]
    bot = await h.start_bot()

    def posts() -> list[RecordedCall]:
        return h.discord.calls_to("POST", r"^/channels/\d+/messages$")

    async def burst(tag: str, n: int) -> list[object]:
        return await asyncio.gather(
            *(bot.get_partial_messageable(c).send(f"{tag} {i}") for c in channels for i in range(n))
        )

    # Four channels' first posts at once, five each (over the bucket's three): the route's bucket hash
    # comes back on one channel's first answer while the others' first requests are still out.
    first = asyncio.create_task(burst("first", 5))
    await h.discord.wait_for(lambda: len(posts()) >= 1, timeout=5)
    # ... and more posts to the same channels while those are still queued.
    second = await burst("second", 2)
    assert len(await first) == 20 and len(second) == 8
    assert rejected(h) == {}
    assert len([c for c in posts() if c.status < 300]) == 28


async def test_jobs_started_in_several_channels_at_once_get_no_429(limited: Harness) -> None:
    h = limited
    channels = [h.discord.channel_id, *(h.discord.add_channel(f"animate-{i}") for i in range(2))]
    for _ in range(15):
        h.runcomfy.scripts.append(JobScript(queue_seconds=0.05, run_seconds=0.05))
    await h.start_bot()
    users = [f"user{i}" for i in range(15)]
    for user in users:
        h.discord.add_member(user)
    inters = await asyncio.gather(
        *(h.animate(user=u, channel_id=channels[i % len(channels)]) for i, u in enumerate(users))
    )
    for inter in inters:
        await h.reply(inter)
    for job_id in range(1, 16):
        await h.wait_job(job_id, "delivered", timeout=30)
    assert rejected(h) == {}


async def test_requests_slow_to_leave_never_overrun_the_global_limit(limited: Harness) -> None:
    """The first burst reaches Discord 0.2 s after the share let it go (a busy loop, new connections):
    the next burst, sent once a second has passed since the first was let go, must still not land in
    the window the first one opened."""
    h = limited
    assert isinstance(h.discord, RateLimitedDiscord)
    h.discord._global = Window(10, 1.0)  # Discord's global limit, scaled down to the bot's share
    channels = [h.discord.add_channel(f"wide-{i}") for i in range(10)]
    bot = AnimateBot(h.settings(discord_rest_rate=10), guild_ready_timeout=0.05)
    slowed: list[str] = []

    async def slow_to_leave(session: object, ctx: object, params: aiohttp.TraceRequestStartParams) -> None:
        if "/messages" in params.url.path and len(slowed) < len(channels):
            slowed.append(params.url.path)
            await asyncio.sleep(0.2)

    assert bot.http.http_trace is not None
    bot.http.http_trace.on_request_start.append(slow_to_leave)  # after the share's own hook
    await bot.login(DISCORD_TOKEN)
    h.bot, h.task = bot, asyncio.create_task(bot.connect(reconnect=False))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
    await asyncio.sleep(1.0)  # start-up's requests are out of every window

    first = [bot.get_partial_messageable(c).send("first") for c in channels]
    second = [bot.get_partial_messageable(c).send("second") for c in channels]
    assert len(await asyncio.gather(*first, *second)) == 20
    assert len(slowed) == 10
    assert rejected(h) == {}


async def share_backlog(window: SlidingWindowLimiter, slots: list[Slot]) -> None:
    """Keep the REST share in use (each held slot counts a whole second from its release) until a
    post has waited its turn, then for twice its deadline (0.3 s in these tests) more."""
    while not any(w.priority == 1 for w in window._queue):
        for slot in slots:
            window.release(slot)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)


async def test_a_status_post_queued_behind_the_rest_share_past_its_deadline_still_goes_out(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet at full size (`python -m bench -s fleet`): thousands of commands queue behind each
    process' REST share for minutes while Discord answers at once. A post's deadline counts its time
    on the way to Discord, not its turn in this process' queue: the job is delivered instead of
    failing with "Discord didn't confirm my status message" (or looking for a post never sent)."""
    from bot.engine import _common as engine_module

    h = harness
    monkeypatch.setattr(engine_module, "POST_TIMEOUT", 0.3)
    bot = await h.start_bot(discord_rest_rate=5)
    window = bot.rest_limiter.window
    h.runcomfy.scripts.append(JobScript(queue_seconds=0, run_seconds=0.1))
    slots = [await window.acquire() for _ in range(5)]
    held = asyncio.create_task(share_backlog(window, slots))
    inter = await h.animate()
    await asyncio.wait_for(held, timeout=10)
    job = await h.wait_job(1, "delivered", "failed", timeout=20)
    assert job.state.value == "delivered", await h.reply(inter)
    assert window.waited >= 1
    statuses = [m for m in h.discord.messages(h.discord.channel_id) if m["embeds"]]
    assert [int(m["id"]) for m in statuses] == [job.status_message_id]  # posted once, never looked for
    assert h.discord.calls_to("GET", rf"^/channels/{h.discord.channel_id}/messages$") == []


async def test_posts_to_one_channel_queued_behind_the_rest_share_all_go_out(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first answer discord.py lets one request per route (a channel's messages) be in
    flight: while the first status post waits for the share, the others to that channel wait in
    discord.py behind it. That is waiting its turn too, not Discord being slow: all are delivered."""
    from bot.engine import _common as engine_module

    h = harness
    monkeypatch.setattr(engine_module, "POST_TIMEOUT", 0.3)
    bot = await h.start_bot(discord_rest_rate=5, daily_quota=10)
    window = bot.rest_limiter.window
    for _ in range(3):
        h.runcomfy.scripts.append(JobScript(queue_seconds=0, run_seconds=0.1))
    slots = [await window.acquire() for _ in range(5)]
    held = asyncio.create_task(share_backlog(window, slots))
    inters = await asyncio.gather(*(h.animate(user=u) for u in ("alice", "bob", "mod")))
    await asyncio.wait_for(held, timeout=10)
    for job_id in (1, 2, 3):
        job = await h.wait_job(job_id, "delivered", "failed", timeout=20)
        assert job.state.value == "delivered", [await h.reply(i) for i in inters]
    statuses = [m for m in h.discord.messages(h.discord.channel_id) if m["embeds"]]
    assert len(statuses) == 3
    assert h.discord.calls_to("GET", rf"^/channels/{h.discord.channel_id}/messages$") == []
