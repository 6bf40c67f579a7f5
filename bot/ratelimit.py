"""This process's share of Discord's global rate limit, and the pacing of gateway IDENTIFYs.

Discord allows a bot token 50 REST requests per second in total, across every process that uses it
(interaction callbacks are exempt), and bans the IP for a while after 10,000 refused requests in 10
minutes, so a fleet must not rely on 429s to find the limit. Each process therefore sends at most
`DISCORD_REST_RATE` requests in any one-second window; an operator running N processes sets it to
50 / N (rounded down), and the sum stays under Discord's limit whatever the processes do.

The limiter sits in discord.py's aiohttp session as a request-start trace hook: aiohttp awaits it
before a request is sent, and it is the one place every request to Discord's API passes through --
discord.py's REST client, its webhook adapter (interaction follow-ups and `@original` edits), and
the retries discord.py makes on its own, each of which Discord counts. (Wrapping
`HTTPClient.request` would miss the webhook adapter and count a retried request once.)

A sliding window rather than a token bucket: Discord counts requests per second, and a bucket of
capacity c refilling at r lets c + r through in one second; a window of the last `rate` send times
guarantees at most `rate` in any second and still lets a burst of `rate` go out at once.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
import discord.http
from yarl import URL

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# `POST /interactions/{id}/{token}/callback`: exempt from the global limit, and the 3 s ack deadline
# must never wait behind a queue of status edits.
_CALLBACK = re.compile(r"/interactions/\d+/[^/]+/callback$")
_API = re.compile(r"/api/v\d+/")
# `/webhooks/{application_id}/{interaction_token}...`: the answer a member is waiting for (follow-ups
# and edits of the original response). They count, but go ahead of status posts and edits.
_WEBHOOK = re.compile(r"/api/v\d+/webhooks/\d+/[^/]+")


def counts_against_global_limit(url: URL) -> bool:
    """Discord API requests count; interaction callbacks, the gateway websocket and the CDN do not."""
    path = url.path
    return _API.search(path) is not None and _CALLBACK.search(path) is None


def is_interaction_answer(url: URL) -> bool:
    return _WEBHOOK.search(url.path) is not None


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    wake: asyncio.Future[None] | None = field(default=None, compare=False)


class SlidingWindowLimiter:
    """At most `limit` acquisitions in any `window`-second span. Waiters go in arrival order, urgent
    ones ahead of the others."""

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._queue: list[_Waiter] = []  # a heap; its head is the only waiter that may take a slot
        self._seq = itertools.count()
        self.waited = 0  # acquisitions that had to wait (for logs and tests)

    def delay(self) -> float:
        """Seconds until one more acquisition would be allowed (0: now)."""
        now = self._clock()
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window - now

    async def acquire(self, *, urgent: bool = False) -> None:
        me = _Waiter(0 if urgent else 1, next(self._seq))
        heapq.heappush(self._queue, me)
        waited = taken = False
        try:
            while True:
                if self._queue[0] is not me:
                    # Woken when it becomes the head (the head before it took its slot or left).
                    me.wake = asyncio.get_running_loop().create_future()
                    await me.wake
                    continue
                wait = self.delay()
                if wait <= 0:
                    heapq.heappop(self._queue)
                    taken = True
                    self._sent.append(self._clock())
                    return
                if not waited:
                    waited = True
                    self.waited += 1
                    log.debug("Discord REST share in use; waiting %.2f s", wait)
                # An urgent newcomer may become the head meanwhile; then this one waits its turn.
                await self._sleep(wait)
        finally:
            # Cancelled while waiting. (Not `me in self._queue` on every exit: that compared `me`
            # with each of hundreds of queued waiters per request once the share was in use.)
            if not taken:
                self._queue.remove(me)
                heapq.heapify(self._queue)
            if self._queue and self._queue[0].wake is not None and not self._queue[0].wake.done():
                self._queue[0].wake.set_result(None)


class RestRateLimiter:
    """`DISCORD_REST_RATE` requests per second for this process, hooked into an aiohttp session."""

    def __init__(self, rate: int, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.rate = rate
        self.window = SlidingWindowLimiter(rate, 1.0, clock=clock, sleep=sleep)

    def attach(self, trace: aiohttp.TraceConfig) -> None:
        """Run before every request of the session `trace` is given to (discord.py's `http_trace`)."""
        trace.on_request_start.append(self._on_request_start)

    async def _on_request_start(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if counts_against_global_limit(params.url):
            await self.window.acquire(urgent=is_interaction_answer(params.url))


class BucketSweep:
    """discord.py's route buckets, swept in amortised constant time.

    discord.py keeps one `Ratelimit` per route key (a channel's messages, a thread, a webhook...) and,
    once it holds 256, scans all of them for idle ones each time it adds a new one; a bucket is idle
    only 5 minutes after its last request. With thousands of jobs, each with its own thread, nearly
    every request makes a new key, so the scan ran on nearly every request over tens of thousands of
    buckets: quadratic, and the largest single cost of the process at 10,000 jobs in flight. Here the
    scan runs only once the map has doubled since the last one (so each new bucket pays for one look
    at one old bucket) or a minute has passed; the idle ones still go, at most a minute later.
    """

    FLOOR = 256  # discord.py's own threshold
    INTERVAL = 60.0  # ... and at least this often, so idle buckets go about as soon as discord.py's

    def __init__(self, http: discord.http.HTTPClient, clock: Clock = time.monotonic) -> None:
        self._http = http
        self._sweep: Callable[[], None] = http._try_clear_expired_ratelimits
        self._clock = clock
        self._last = clock()
        self.next_at = self.FLOOR
        self.sweeps = 0  # for tests and logs

    @classmethod
    def install(cls, http: discord.http.HTTPClient, clock: Clock = time.monotonic) -> BucketSweep:
        sweep = cls(http, clock)
        http._try_clear_expired_ratelimits = sweep  # type: ignore[method-assign]
        return sweep

    def __call__(self) -> None:
        now = self._clock()
        if len(self._http._buckets) < self.next_at and now - self._last < self.INTERVAL:
            return
        self._sweep()
        self._last = now
        self.sweeps += 1
        self.next_at = max(self.FLOOR, 2 * len(self._http._buckets))


class IdentifyPacer:
    """Shards IDENTIFY in buckets of `max_concurrency` (bucket = shard_id % max_concurrency), each
    bucket at most once per 5 s. discord.py's default waits 5 s before every IDENTIFY but the first,
    which makes a process with many shards start slowly even when Discord allows them together."""

    WINDOW = 5.0

    def __init__(
        self,
        max_concurrency: Callable[[], Awaitable[int]],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._fetch = max_concurrency
        self._concurrency: int | None = None
        self._clock = clock
        self._sleep = sleep
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def concurrency(self) -> int:
        if self._concurrency is None:
            try:
                value = await self._fetch()
            except Exception as exc:  # unknown: the safe assumption is Discord's minimum
                log.warning("Could not read the gateway's max_concurrency (%s); assuming 1", exc)
                value = 1
            self._concurrency = value if isinstance(value, int) and value >= 1 else 1
        return self._concurrency

    async def wait(self, shard_id: int | None) -> None:
        bucket = (shard_id or 0) % await self.concurrency()
        lock = self._locks.setdefault(bucket, asyncio.Lock())
        async with lock:
            last = self._last.get(bucket)
            if last is not None:
                wait = last + self.WINDOW - self._clock()
                if wait > 0:
                    log.info("Shard %s waits %.1f s for its IDENTIFY slot", shard_id, wait)
                    await self._sleep(wait)
            self._last[bucket] = self._clock()
