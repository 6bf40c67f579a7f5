"""bot/ratelimit.py's route-bucket fixes on top of discord.py's limiter (`SharedBuckets`,
`CountedRatelimit`) and the REST share counting a request until a window after its answer. The
end-to-end proof against a rate-limited fake Discord is tests/e2e/test_rate_limits.py."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import discord.http
import pytest
from multidict import CIMultiDict
from yarl import URL

from bot.ratelimit import CountedRatelimit, RestRateLimiter, SharedBuckets, SlidingWindowLimiter, Slot
from tests.bot.test_ratelimit import FakeClock

ROUTE = "POST /channels/{channel_id}/messages"


def answer(remaining: int, reset_after: float, limit: int = 5, reset: float | None = None) -> Any:
    """What `Ratelimit.update` reads of an aiohttp response (`reset`: X-RateLimit-Reset, epoch s)."""
    headers: CIMultiDict[str] = CIMultiDict(
        {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(remaining),
            "X-Ratelimit-Reset-After": f"{reset_after:.3f}",
            "X-Ratelimit-Bucket": "abc",
        }
    )
    if reset is not None:
        headers["X-Ratelimit-Reset"] = f"{reset:.3f}"
    return SimpleNamespace(headers=headers)


def test_discord_py_internals_the_fixes_rely_on_are_there() -> None:
    """The lock files pin discord.py; if an upgrade moves these, this fails (and the bot would only
    log a warning and run without the fixes)."""
    request = inspect.getsource(discord.http.HTTPClient.request)
    assert "key = f'{route_key}:{route.major_parameters}'" in request
    assert "key = f'{bucket_hash}:{route.major_parameters}'" in request
    assert "ratelimit = self.get_ratelimit(key)" in request
    assert "ratelimit.update(response, use_clock=self.use_clock)" in request
    assert set(inspect.signature(discord.http.Ratelimit.update).parameters) == {
        "self",
        "response",
        "use_clock",
    }
    for name in ("_refresh", "reset", "_wake"):
        assert callable(getattr(discord.http.Ratelimit, name))
    for slot in ("_sleeping", "_loop", "_max_ratelimit_timeout", "outgoing", "expires", "remaining"):
        assert slot in discord.http.Ratelimit.__slots__


async def test_a_channels_temporary_limiter_is_filed_under_the_hash() -> None:
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    shared = SharedBuckets.install(http)
    assert shared is not None and http.get_ratelimit == shared
    # Channels 1 and 2 posted before the route's hash was known: each got a temporary limiter.
    first, second = http.get_ratelimit(f"{ROUTE}:1"), http.get_ratelimit(f"{ROUTE}:2")
    assert isinstance(first, CountedRatelimit) and first is not second
    # Channel 1's answer revealed the hash; discord.py filed only channel 1's limiter under it.
    http._bucket_hashes[ROUTE] = "abc"
    http._buckets["abc:1"] = first
    # Channel 2's next request looks up `abc:2`: it must find channel 2's limiter, not a new one.
    assert http.get_ratelimit("abc:2") is second
    assert http.get_ratelimit("abc:2") is second and shared.adopted == 1
    # A channel that never had a temporary limiter gets a fresh (counting) one.
    third = http.get_ratelimit("abc:3")
    assert isinstance(third, CountedRatelimit) and third not in (first, second)
    assert http.get_ratelimit("abc:1") is first
    await http.close()


async def test_install_declines_when_discord_py_changed() -> None:
    assert SharedBuckets.install(SimpleNamespace()) is None  # type: ignore[arg-type]


async def test_the_first_answer_after_a_reset_does_not_forget_the_requests_still_out() -> None:
    stock, counted = discord.http.Ratelimit(None), CountedRatelimit(None)
    for limiter in (stock, counted):
        limiter.limit = limiter.remaining = 3  # a known bucket of three, just reset
        for _ in range(3):
            await limiter.acquire()  # three sent at once
        assert limiter.remaining == 0 and limiter.outgoing == 3
        # The first answer was counted before the other two arrived: "2 left".
        limiter.update(answer(remaining=2, reset_after=1.0, limit=3))
    assert stock.remaining == 2  # discord.py would send two more into a full window
    assert counted.remaining == 0  # 2 left, minus the two still out


async def test_a_late_answer_of_the_same_window_does_not_give_tokens_back() -> None:
    limiter = CountedRatelimit(None)
    limiter.limit = limiter.remaining = 3
    for _ in range(3):
        await limiter.acquire()
    limiter.outgoing = 1  # two answered; the last one out carries the oldest count
    limiter.update(answer(remaining=0, reset_after=1.0, limit=3))
    limiter.update(answer(remaining=2, reset_after=0.99, limit=3))
    assert limiter.remaining == 0
    # An answer from a later window (it resets a whole window later) is believed.
    limiter.update(answer(remaining=2, reset_after=2.0, limit=3))
    assert limiter.remaining == 2


async def test_discords_reset_time_names_the_window_however_late_an_answer_is_handled() -> None:
    limiter = CountedRatelimit(None)
    limiter.limit = limiter.remaining = 3
    for _ in range(3):
        await limiter.acquire()
    limiter.outgoing = 1
    limiter.update(answer(remaining=0, reset_after=1.0, limit=3, reset=5000.0))
    # Handled 0.6 s late (a busy loop): its Reset-After no longer lines up, its reset time does.
    limiter.update(answer(remaining=2, reset_after=1.6, limit=3, reset=5000.0))
    assert limiter.remaining == 0
    limiter.update(answer(remaining=2, reset_after=2.0, limit=3, reset=5001.0))
    assert limiter.remaining == 2


async def test_a_fresh_limiter_learns_the_bucket_from_its_first_answer() -> None:
    limiter = CountedRatelimit(None)  # limit 1 until an answer says otherwise
    await limiter.acquire()
    limiter.update(answer(remaining=4, reset_after=5.0, limit=5))
    assert (limiter.limit, limiter.remaining) == (5, 4)


async def test_refresh_waits_for_the_window_it_last_heard_of(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exhausted limiter sleeps `reset_after` from an old answer; a newer answer meanwhile opened
    a later window. discord.py then refilled `limit - outgoing` tokens into that window at once."""
    limiter = CountedRatelimit(None)
    limiter.limit, limiter.remaining, limiter.reset_after = 3, 0, 0.5
    sleeps: list[float] = []
    now = [100.0]
    limiter._loop = SimpleNamespace(time=lambda: now[0])  # type: ignore[assignment]
    limiter.expires = 100.5

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:  # while asleep: an answer of the next window, ending at 101.3
            limiter.expires = 101.3
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    await limiter._refresh()
    assert sleeps == [0.5, pytest.approx(0.8)]
    assert limiter.remaining == 3  # refilled once that window is over


async def test_an_answered_request_counts_a_whole_window_from_its_answer() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    answered, unanswered = await limiter.acquire(), await limiter.acquire()
    assert isinstance(answered, Slot) and isinstance(unanswered, Slot)
    clock.now += 0.4
    limiter.release(answered)  # it may have reached Discord only now
    assert limiter.delay() == pytest.approx(0.6)  # the unanswered one frees first, at 1001.0
    clock.now += 0.6
    assert limiter.delay() == 0.0
    await limiter.acquire()
    assert limiter.delay() == pytest.approx(0.4)  # then the answered one, at 1001.4
    # Answered after more than a window: it counts again, for a window from its answer.
    one = SlidingWindowLimiter(1, 1.0, clock=clock, sleep=clock.sleep)
    slow = await one.acquire()
    clock.now += 1.5
    assert one.delay() == 0.0
    one.release(slow)
    assert one.delay() == pytest.approx(1.0)


async def test_rest_limiter_releases_on_answer_and_on_failure() -> None:
    clock = FakeClock()
    limiter = RestRateLimiter(1, clock=clock, sleep=clock.sleep)
    trace = aiohttp.TraceConfig()
    limiter.attach(trace)
    start, end, failed = trace.on_request_start[0], trace.on_request_end[0], trace.on_request_exception[0]
    params: Any = SimpleNamespace(method="POST", url=URL("https://discord.com/api/v10/channels/1/messages"))
    for done in (end, failed):
        ctx = SimpleNamespace()
        await start(None, ctx, params)  # type: ignore[arg-type]
        clock.now += 0.3  # answered (or failed) 0.3 s after it was let go
        await done(None, ctx, params)  # type: ignore[arg-type]
        await done(None, ctx, params)  # type: ignore[arg-type]  # a second signal changes nothing
        assert limiter.window.delay() == pytest.approx(1.0)
        clock.now += 1.0
    callback = SimpleNamespace()
    await start(
        None, callback, SimpleNamespace(url=URL("https://discord.com/api/v10/interactions/9/t/callback"))
    )  # type: ignore[arg-type]
    await end(None, callback, params)  # type: ignore[arg-type]  # an exempt request holds nothing
    assert limiter.window.delay() == 0.0
