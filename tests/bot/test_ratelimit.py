"""bot/ratelimit.py with a fake clock: the REST share window and IDENTIFY pacing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord.http
import pytest
from yarl import URL

from bot import ratelimit
from bot.ratelimit import (
    BucketSweep,
    IdentifyPacer,
    RestRateLimiter,
    SlidingWindowLimiter,
    counts_against_global_limit,
    is_interaction_answer,
)


class FakeClock:
    """Time moves only when someone sleeps; `sleeps` records every wait asked for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other waiters run, as a real sleep would


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


async def test_window_lets_a_burst_through_then_paces() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(5, 1.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        sent.append(clock())

    await asyncio.gather(*(one() for _ in range(17)))
    assert len(sent) == 17
    assert sent[:5] == [1000.0] * 5  # a burst up to the rate goes out at once
    assert sent == sorted(sent)  # in arrival order
    assert max_in_window(sent, 1.0) == 5  # never more than the rate in any one-second window
    assert sent[-1] - sent[0] == pytest.approx(3.0)  # 17 requests at 5/s: the last in the 4th second
    assert limiter.waited == 3  # the 6th, 11th and 16th waited; each wait freed the next 5


async def test_window_frees_up_as_time_passes() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 0.4
    await limiter.acquire()
    assert limiter.delay() == pytest.approx(0.6)
    clock.now += 0.6
    assert limiter.delay() == 0.0  # the first send left the window
    await limiter.acquire()
    assert clock.sleeps == []
    assert limiter.delay() == pytest.approx(0.4)


async def test_interaction_answers_go_ahead_of_queued_requests() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def gated_sleep(seconds: float) -> None:  # time passes only once the test says so
        await gate.wait()
        await clock.sleep(seconds)

    limiter = SlidingWindowLimiter(2, 1.0, clock=clock, sleep=gated_sleep)
    order: list[str] = []
    sent: list[float] = []

    async def one(name: str, urgent: bool = False) -> None:
        await limiter.acquire(urgent=urgent)
        order.append(name)
        sent.append(clock())

    tasks = [asyncio.create_task(one(f"edit{i}")) for i in range(5)]
    await asyncio.sleep(0)  # edit0 and edit1 take the window; edit2 sleeps at the head, 3 and 4 queue
    assert order == ["edit0", "edit1"]
    tasks.append(asyncio.create_task(one("answer", urgent=True)))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["edit0", "edit1", "answer", "edit2", "edit3", "edit4"]
    assert max_in_window(sent, 1.0) == 2  # jumping the queue never bends the window


async def test_a_cancelled_waiter_does_not_hold_up_the_others() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()
        await clock.sleep(seconds)

    limiter = SlidingWindowLimiter(1, 1.0, clock=clock, sleep=slow_sleep)
    await limiter.acquire()
    head = asyncio.create_task(limiter.acquire())
    behind = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    head.cancel()  # the head leaves while sleeping: the next one must take over
    gate.set()
    await asyncio.wait_for(behind, 1)
    assert head.cancelled() and limiter.delay() > 0


async def test_a_queue_of_waiters_is_not_scanned_on_every_acquisition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the share in use hundreds of requests queue; each one leaving the queue used to compare
    itself with every waiter (`me in queue`): quadratic. Only a cancelled waiter looks for itself."""
    compared = 0
    original = ratelimit._Waiter.__eq__

    def counting(self: Any, other: Any) -> Any:
        nonlocal compared
        compared += 1
        return original(self, other)

    monkeypatch.setattr(ratelimit._Waiter, "__eq__", counting)
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        sent.append(clock())

    await asyncio.gather(*(one() for _ in range(200)))
    assert compared == 0
    assert len(sent) == 200
    assert max_in_window(sent, 1.0) <= 10


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(1, 0)


@pytest.mark.parametrize(
    ("url", "counted"),
    [
        ("https://discord.com/api/v10/channels/1/messages", True),
        ("https://discord.com/api/v10/webhooks/1/tok/messages/@original", True),  # follow-ups count
        ("https://discord.com/api/v10/webhooks/1/tok?wait=1", True),
        ("https://discord.com/api/v10/interactions/123/aW50ZXJhY3Rpb246abc/callback", False),
        ("http://127.0.0.1:5/api/v10/interactions/123/tok/callback?with_response=false", False),
        ("wss://gateway.discord.gg/?v=10&encoding=json", False),
        ("https://cdn.discordapp.com/attachments/1/2/cat.png", False),
    ],
)
def test_what_counts_against_the_global_limit(url: str, counted: bool) -> None:
    assert counts_against_global_limit(URL(url)) is counted
    assert is_interaction_answer(URL(url)) is ("/webhooks/" in url)


async def test_rest_limiter_hook_holds_api_requests_but_not_callbacks() -> None:
    clock = FakeClock()
    limiter = RestRateLimiter(1, clock=clock, sleep=clock.sleep)
    trace = aiohttp.TraceConfig()
    limiter.attach(trace)
    hook = trace.on_request_start[0]

    async def request(url: str) -> None:
        params: Any = SimpleNamespace(method="POST", url=URL(url), headers={})
        await hook(None, SimpleNamespace(), params)  # type: ignore[arg-type]

    await request("https://discord.com/api/v10/channels/1/messages")
    for _ in range(3):  # acks go straight through while the share is used up
        await request("https://discord.com/api/v10/interactions/9/tok/callback")
    assert clock.sleeps == []
    await request("https://discord.com/api/v10/channels/1/messages")
    assert clock.sleeps == [pytest.approx(1.0)]


async def test_a_deadline_runs_once_a_request_left_and_not_while_one_waits_for_the_share() -> None:
    limiter = RestRateLimiter(1)  # the real clock: asyncio.timeout runs on the loop's
    trace = aiohttp.TraceConfig()
    limiter.attach(trace)
    hook = trace.on_request_start[0]

    async def request() -> None:
        params: Any = SimpleNamespace(
            method="POST", url=URL("https://discord.com/api/v10/channels/1/messages")
        )
        await hook(None, SimpleNamespace(), params)  # type: ignore[arg-type]

    async with ratelimit.deadline(0.2):
        await asyncio.sleep(0.3)  # before its first request leaves (discord.py's lock on the route)
        await request()  # the share is used for the next second
    async with ratelimit.deadline(0.2):
        await request()  # about a second in the queue: not Discord's time
    with pytest.raises(TimeoutError):
        async with ratelimit.deadline(0.2):
            await request()  # the queue again, then longer than the deadline on the way
            await asyncio.sleep(0.5)
    assert limiter.window.waited == 2


async def test_identify_pacer_buckets_by_max_concurrency() -> None:
    clock = FakeClock()
    fetched: list[int] = []

    async def concurrency() -> int:
        fetched.append(1)
        return 2

    pacer = IdentifyPacer(concurrency, clock=clock, sleep=clock.sleep)
    starts: dict[int, float] = {}

    async def identify(shard_id: int) -> None:
        await pacer.wait(shard_id)
        starts[shard_id] = clock()

    await asyncio.gather(*(identify(i) for i in range(4)))
    # Shards 0 and 1 are in different buckets and start together; 2 and 3 wait their bucket's 5 s.
    assert starts[0] == starts[1] == 1000.0
    assert starts[2] == starts[3] == 1005.0
    assert fetched == [1]  # asked once
    clock.now += 60
    await identify(0)  # a re-IDENTIFY long after the last one does not wait
    assert starts[0] == 1065.0


async def test_identify_pacer_assumes_one_when_the_gateway_cannot_say() -> None:
    clock = FakeClock()

    async def broken() -> int:
        raise OSError("unreachable")

    pacer = IdentifyPacer(broken, clock=clock, sleep=clock.sleep)
    await pacer.wait(0)
    await pacer.wait(1)
    assert await pacer.concurrency() == 1
    assert clock.sleeps == [pytest.approx(5.0)]


async def test_bucket_sweep_is_amortised_and_drops_idle_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py scans every route bucket each time it adds one past 256: quadratic with a thread per
    job. Installed, the scan runs only when the map doubled, and idle buckets still go."""
    looks = 0
    original = discord.http.Ratelimit.is_inactive

    def counting(self: discord.http.Ratelimit) -> bool:
        nonlocal looks
        looks += 1
        return original(self)

    monkeypatch.setattr(discord.http.Ratelimit, "is_inactive", counting)
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    clock = FakeClock()
    sweep = BucketSweep.install(http, clock)
    for i in range(5000):
        http.get_ratelimit(f"POST /channels/{i}/messages")
    # Unswept, that was ~4,700 scans of up to 5,000 buckets (~12 million looks).
    assert looks < 3 * 5000
    assert sweep.sweeps == 5  # at 256, 512, 1024, 2048 and 4096 buckets
    assert len(http._buckets) == 5000  # all active: nothing to drop

    for bucket in http._buckets.values():  # five minutes without a request: idle
        bucket._last_request -= 301
    for i in range(5000, 5000 + 8192):
        http.get_ratelimit(f"POST /channels/{i}/messages")
    assert sweep.sweeps == 7  # at 8,192 (the 5,000 idle ones go) and at 6,384 (twice the 3,192 left)
    assert len(http._buckets) == 8192
    assert not any(f"POST /channels/{i}/messages" in http._buckets for i in range(5000))

    # A minute later the next new bucket sweeps, however few were added: idle ones never linger long.
    for bucket in list(http._buckets.values())[:100]:
        bucket._last_request -= 301
    clock.now += 61
    http.get_ratelimit("POST /channels/last/messages")
    assert sweep.sweeps == 8 and len(http._buckets) == 8192 - 100 + 1
    await http.close()
