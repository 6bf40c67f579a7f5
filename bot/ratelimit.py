"""This process's share of Discord's global rate limit, fixes to discord.py's per-route limiter, and
the pacing of gateway IDENTIFYs.

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

A request counts from the hook until a window after its answer (see `RestRateLimiter`): Discord
counts it on arrival, which the hook cannot see.

The per-route limits stay discord.py's (it reads Discord's headers), with `SharedBuckets` and
`CountedRatelimit` mending the two ways it sent more than a bucket allows (429s in every burst).

A sliding window rather than a token bucket: Discord counts requests per second, and a bucket of
capacity c refilling at r lets c + r through in one second; a window of the last `rate` requests
guarantees at most `rate` in any second and still lets a burst of `rate` go out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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


class _Deadline:
    """One Discord call's deadline (see `deadline`): it runs once a request of the call has left."""

    __slots__ = ("running", "seconds", "timeout")

    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self.timeout, self.seconds, self.running = timeout, seconds, False

    def start(self) -> None:
        """A request leaves: from now on the call has `seconds` (once; later requests count on)."""
        if not self.running:
            self.running = True
            with contextlib.suppress(RuntimeError):  # not this task's, or already left
                self.timeout.reschedule(asyncio.get_running_loop().time() + self.seconds)

    async def paused(self, wait: Awaitable[Slot]) -> Slot:
        """Await `wait` (a turn of the share) with the deadline stopped; it resumes with what was left."""
        when = self.timeout.when() if self.running and not self.timeout.expired() else None
        if when is None:
            return await wait
        loop = asyncio.get_running_loop()
        left = when - loop.time()
        try:
            self.timeout.reschedule(None)
        except RuntimeError:
            return await wait
        try:
            return await wait
        finally:
            with contextlib.suppress(RuntimeError):
                self.timeout.reschedule(loop.time() + left)


# The deadline of the Discord call this task is making, if it set one with `deadline`.
_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "discord_call_deadline", default=None
)


@contextlib.asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """A timeout of `seconds` for a Discord call that runs from the moment its first request leaves,
    and stops while a later one waits for this process's REST share. Until then the call only waits
    its turn, here or in discord.py's lock on a route whose limits it does not know yet (behind a post
    to the same channel that waits here): under a backlog that takes minutes while Discord answers at
    once, and giving up then would fail a job Discord never saw (or look for a post never sent)."""
    async with asyncio.timeout(None) as timeout:
        token = _DEADLINE.set(_Deadline(timeout, seconds))
        try:
            yield
        finally:
            _DEADLINE.reset(token)


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


class Slot:
    """One acquisition: it counts until `expires`."""

    __slots__ = ("expires",)

    def __init__(self, expires: float) -> None:
        self.expires = expires


class SlidingWindowLimiter:
    """At most `limit` acquisitions in any `window`-second span. Waiters go in arrival order, urgent
    ones ahead of the others. An acquisition counts for `window` seconds from when it was taken, or,
    once `release`d, from its release if that is later."""

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
        # (expiry, seq, slot), a heap; an entry whose expiry is no longer its slot's is stale.
        self._expiries: list[tuple[float, int, Slot]] = []
        self._live = 0  # slots still counting
        self._queue: list[_Waiter] = []  # a heap; its head is the only waiter that may take a slot
        self._seq = itertools.count()
        self.waited = 0  # acquisitions that had to wait (for logs and tests)

    def delay(self) -> float:
        """Seconds until one more acquisition would be allowed (0: now)."""
        now = self._clock()
        heap = self._expiries
        while heap and (heap[0][0] <= now or heap[0][0] != heap[0][2].expires):
            expiry, _, slot = heapq.heappop(heap)
            if expiry == slot.expires:  # its current entry: the slot stops counting
                self._live -= 1
        if self._live < self.limit:
            return 0.0
        return heap[0][0] - now

    def _count(self, slot: Slot, expires: float) -> None:
        slot.expires = expires
        heapq.heappush(self._expiries, (expires, next(self._seq), slot))

    def release(self, slot: Slot) -> None:
        """The request is answered: it counts for a whole window from now (it may have reached the
        other side at any moment until now)."""
        self.delay()  # settles the slots that stopped counting, this one perhaps among them
        now = self._clock()
        if slot.expires <= now:  # it stopped counting meanwhile (answered after more than a window)
            self._live += 1
        self._count(slot, now + self.window)

    async def acquire(self, *, urgent: bool = False) -> Slot:
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
                    slot = Slot(0.0)
                    self._live += 1
                    self._count(slot, self._clock() + self.window)
                    return slot
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
    """`DISCORD_REST_RATE` requests per second for this process, hooked into an aiohttp session.

    Discord counts a request when it arrives, which is some time after the hook let it go (a new
    connection, a busy event loop, the network) and differently for each: counting it only from the
    hook let a 51st request, sent a second after the first, arrive before the first had (a global
    429 when a burst's first requests were slow to leave). So a request counts from the hook until a
    whole window after its answer (or failure): it arrived somewhere in between, so no window of
    Discord's sees more than `rate` of this process's requests, however late they arrived. (A request
    still unanswered a window after it left stops counting until its answer, so that a slot never
    leaks when no answer or failure is ever reported.)"""

    def __init__(self, rate: int, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.rate = rate
        self.window = SlidingWindowLimiter(rate, 1.0, clock=clock, sleep=sleep)

    def attach(self, trace: aiohttp.TraceConfig) -> None:
        """Run before every request of the session `trace` is given to (discord.py's `http_trace`)."""
        trace.on_request_start.append(self._on_request_start)
        trace.on_request_end.append(self._on_request_done)
        trace.on_request_exception.append(self._on_request_done)

    async def _on_request_start(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        limit = _DEADLINE.get()
        if counts_against_global_limit(params.url):
            turn = self.window.acquire(urgent=is_interaction_answer(params.url))
            ctx.rest_slot = await (turn if limit is None else limit.paused(turn))
        if limit is not None:
            limit.start()

    async def _on_request_done(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
    ) -> None:
        slot = getattr(ctx, "rest_slot", None)
        if isinstance(slot, Slot):
            ctx.rest_slot = None  # once
            self.window.release(slot)


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


# Two answers whose reset times differ by less than this belong to the same window: a later window
# resets at least a whole window (Discord's are a second or more) after an earlier one, so erring
# towards "the same" only ever holds a token back until the window ends.
SAME_WINDOW = 0.25


class CountedRatelimit(discord.http.Ratelimit):
    """discord.py's route limiter, with a count of what it already sent that a response cannot undo.

    discord.py takes the first response after a window reset at its word: `X-RateLimit-Remaining`
    becomes the tokens left, although the other requests it sent in that window may still be on
    their way and not in Discord's count yet (three sent at once, the first answer says 2 left: it
    sent two more, and one got a 429). And a late answer of the window, carrying an older, higher
    count, raised the tokens left again. Here the tokens left never exceed what the header allows
    minus the other requests still out, and within one window (same reset time) they only go down.
    """

    __slots__ = ("_window_end",)

    def __init__(self, max_ratelimit_timeout: float | None) -> None:
        super().__init__(max_ratelimit_timeout)
        self._window_end: float | None = None  # the window of the last answer (its reset time)

    def update(self, response: aiohttp.ClientResponse, *, use_clock: bool = False) -> None:
        before, last_end = self.remaining, self._window_end
        super().update(response, use_clock=use_clock)
        try:
            header = int(response.headers.get("X-Ratelimit-Remaining", 0))
        except ValueError:  # remote input: then discord.py's own reading stands
            return
        # Discord's reset time (epoch seconds) names the window; without it, the expiry discord.py
        # just computed from Reset-After (shifted by how late this answer was handled) stands in.
        try:
            self._window_end = float(response.headers["X-Ratelimit-Reset"])
        except (KeyError, ValueError):
            self._window_end = (
                None if self.expires is None else time.time() + self.expires - self._loop.time()
            )
        others = max(0, self.outgoing - 1)  # this request is still counted as outgoing here
        allowed = max(0, header - others)
        end = self._window_end
        if last_end is not None and end is not None and abs(end - last_end) < SAME_WINDOW:
            allowed = min(allowed, before)  # the same window: a token once spent stays spent
        self.remaining = min(self.remaining, allowed)

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        self._window_end = None  # the next answer opens a new window

    async def _refresh(self) -> None:
        """discord.py's, except that it never refills before the window it last heard of ends: its
        sleep starts from an older answer, and refilling `limit - outgoing` tokens then forgot the
        requests of the new window that were already answered."""
        error = self._max_ratelimit_timeout and self.reset_after > self._max_ratelimit_timeout
        exception = discord.errors.RateLimited(self.reset_after) if error else None
        async with self._sleeping:
            if not error:
                await asyncio.sleep(self.reset_after)
                # Once, not in a loop: waiters queued here must not starve behind newer windows.
                left = self.expires - self._loop.time() if self.expires is not None else 0.0
                if left > 0:
                    await asyncio.sleep(left)
        self.reset()
        self._wake(self.remaining, exception=exception)


class SharedBuckets:
    """One limiter per Discord bucket, also for a route first used in several channels at once, and
    each a `CountedRatelimit`.

    discord.py keys a route whose bucket hash it does not know yet by `route:major` (a temporary
    limiter, limit 1) and, when a response reveals the hash, files that limiter under `hash:major` --
    but only for the route's first response. Requests to other channels that were in flight at the same
    moment ran on temporary limiters of their own, which are never filed under the hash: the next
    request to one of those channels made a second limiter for the same Discord bucket (limit 1 again)
    while the first still had requests queued, and the two together sent more than the bucket allows
    (429s on status posts at every burst start). Here a lookup of `hash:major` that finds nothing first
    adopts the temporary limiter of a route with that hash and the same major parameters.
    """

    def __init__(self, http: discord.http.HTTPClient) -> None:
        self._http = http
        self.adopted = 0  # temporary limiters filed under their hash here (for tests and logs)

    @classmethod
    def install(cls, http: discord.http.HTTPClient) -> SharedBuckets | None:
        """None (and a warning) if discord.py no longer has the internals this relies on; the pinned
        version has them, and tests/bot/test_ratelimit_buckets.py fails if they go."""
        needed = ("get_ratelimit", "_buckets", "_bucket_hashes", "max_ratelimit_timeout")
        if not all(hasattr(http, name) for name in needed):
            log.warning("discord.py's rate-limit internals changed; not sharing route buckets")
            return None
        shared = cls(http)
        http.get_ratelimit = shared  # type: ignore[method-assign]
        return shared

    def __call__(self, key: str) -> discord.http.Ratelimit:
        """What `HTTPClient.get_ratelimit` does, with the adoption and the counting limiter."""
        buckets = self._http._buckets
        found = buckets.get(key)
        if found is None:
            found = self._temporary(key)
            if found is not None:
                self.adopted += 1
                buckets[key] = found
            else:
                buckets[key] = found = CountedRatelimit(self._http.max_ratelimit_timeout)
                self._http._try_clear_expired_ratelimits()
        return found

    def _temporary(self, key: str) -> discord.http.Ratelimit | None:
        # `hash:major` or `route key:major`; neither a hash nor a route key holds a colon.
        prefix, _, major = key.partition(":")
        hashes = self._http._bucket_hashes
        if prefix in hashes:  # a temporary key itself
            return None
        buckets = self._http._buckets
        for route_key, bucket_hash in hashes.items():  # one entry per route the bot uses: a few dozen
            if bucket_hash == prefix:
                temporary = buckets.get(f"{route_key}:{major}")
                if temporary is not None:
                    return temporary
        return None


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
