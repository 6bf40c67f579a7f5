"""The fake Discord and fake RunComfy in a process of their own, driven over a tiny HTTP control API.

Keeping the fakes out of the bot's process means their CPU time and memory never count against the bot.
Both fakes stamp events with ``time.monotonic()`` (the fake RunComfy uses loop time, which is the same
clock), so every latency the benchmark reports is a difference of two readings of one clock, taken here.

Started by ``bench.run`` as ``python -m bench.fakes_server``; it prints one JSON line
(``{"control": "http://127.0.0.1:PORT"}``) once it is listening and runs until SIGTERM/SIGINT.

Control API (JSON in, JSON out):

* ``GET  /info``          URLs, tokens and ids the bot needs
* ``POST /configure``     ``{"scripts": [{"queue_seconds", "run_seconds"}...], "default": {...}}``
* ``POST /users``         ``{"count": n, "prefix": "u"}`` -> ``{"names": [...]}`` (new guild members)
* ``POST /slash``         ``{"users": [...], "prompt": "..."}`` -> ``{"ids": [...]}``: one /animate per
  entry, all dispatched back to back ("arriving at once")
* ``POST /interactions``  ``{"ids": [...]}`` -> per interaction: acked, ack latency, answer latency, answer
* ``GET  /mark``          current record counts, to scope a later report
* ``POST /report``        ``{"since": mark, "jobs": [{job_id, request_id, thread_id, status_message_id,
  channel_id, video_name?}]}`` -> per-job delivery lag and RunComfy calls (status/result/cancel),
  Discord calls by kind, 429s

* ``POST /videos``        ``{"guilds": [...]}`` -> ``{"posted": n, "quiet_seconds": s}``: video posts Discord
  accepted in those guilds' channels and threads, and the seconds since either fake last saw a request
  (the fleet's drivers wait on it instead of polling the shared database)

``/configure`` also takes ``"ratelimits": true|false`` and script entries may name a ``"video"``
(``clip480``/``clip1080``, see ``bench.inputs``); ``/slash`` and ``/users`` take a ``"space"`` (a
guild + channel: ``main``, ``main-1`` .. ``main-19``, ``tight``, ``5min``, ``wide``; ``/slash`` takes a
list ``"spaces"`` used round-robin) and ``/slash`` an ``"image"`` input name. Started with
``--fleet-guilds N --fleet-shards K`` it also holds spaces ``fleet-0`` .. ``fleet-{N-1}``, a guild each,
guild ``i`` on shard ``i % K`` (the fleet scenario: one bot process per shard). ``/report`` rows carry
``video_posts``: how many times the job's video was posted (exactly once is right).

The fake Discord here is ``RateLimitedDiscord``: Discord's rate limits on top of the test fake (per-route
buckets per channel/webhook and the global 50 requests/s per token, 429s with Discord's body and headers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import io
import json
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

if __package__ in (None, ""):  # `python bench/fakes_server.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import inputs
from bot.__main__ import GC_THRESHOLDS
from tests.fakes.discord import FakeDiscord, RecordedCall
from tests.fakes.discord._common import _json_response
from tests.fakes.runcomfy import FakeRunComfy, JobScript

DISCORD_TOKEN = "bench-discord-token"
RUNCOMFY_TOKEN = "bench-runcomfy-token"

_CALLBACK = re.compile(r"/interactions/\d+/[^/]+/callback")
_WEBHOOK = re.compile(r"/webhooks/\d+/[^/]+(/.*)?")
_CHANNEL_POST = re.compile(r"/channels/(\d+)/messages")
_MESSAGE = re.compile(r"/channels/(\d+)/messages/(\d+)")
_THREAD_FROM_MESSAGE = re.compile(r"/channels/\d+/messages/(\d+)/threads")
_ID = re.compile(r"\d{6,}")


def jpeg_bytes(width: int = 640, height: int = 480) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 160)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def classify(method: str, path: str, files: list[tuple[str, bytes, str]]) -> str:
    """A short, stable name for the kind of Discord REST call."""
    if _CALLBACK.fullmatch(path):
        return "interaction ack"
    if _WEBHOOK.fullmatch(path):
        return "interaction reply edit" if method == "PATCH" else f"interaction webhook {method}"
    if _THREAD_FROM_MESSAGE.fullmatch(path) and method == "POST":
        return "thread create"
    if _MESSAGE.fullmatch(path) and method == "PATCH":
        return "status edit"
    if _CHANNEL_POST.fullmatch(path) and method == "POST":
        if any(name.endswith(".mp4") for name, _, _ in files):
            return "video post"
        return "message post (status/notice)"
    return f"{method} {_ID.sub('{id}', path)}"


# Discord's per-route limits as bots meet them: (method, path pattern, bucket name, limit, window s).
# The first group of the pattern is the major parameter (channel, or the webhook id + token).
ROUTE_LIMITS: tuple[tuple[str, re.Pattern[str], str, int, float], ...] = (
    ("POST", re.compile(r"/channels/(\d+)/messages"), "message-create", 5, 5.0),
    ("PATCH", re.compile(r"/channels/(\d+)/messages/\d+"), "message-edit", 5, 5.0),
    ("DELETE", re.compile(r"/channels/(\d+)/messages/\d+"), "message-delete", 5, 1.0),
    ("POST", re.compile(r"/channels/(\d+)/messages/\d+/threads"), "thread-create", 5, 5.0),
    ("POST", re.compile(r"/channels/(\d+)/threads"), "thread-create", 5, 5.0),
    ("*", re.compile(r"/webhooks/(\d+/[^/]+)(?:/.*)?"), "webhook", 5, 2.0),
)
GLOBAL_LIMIT = 50  # requests per second per bot token; interaction callbacks are exempt


@dataclass
class Window:
    """A fixed rate-limit window as Discord runs them: it opens with the first request, admits `limit`
    requests, and resets completely `seconds` later (discord.py relies on that: after sleeping
    `Reset-After` it sends a whole bucket's worth again)."""

    limit: int
    seconds: float
    opened: float = float("-inf")
    count: int = 0

    def _roll(self, now: float) -> None:
        if now >= self.opened + self.seconds:
            self.opened, self.count = now, 0

    def take(self, now: float) -> bool:
        self._roll(now)
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit - self.count)

    def reset_after(self, now: float) -> float:
        self._roll(now)
        return max(0.001, self.opened + self.seconds - now)


_UNLIMITED_HEADERS = {
    "X-RateLimit-Limit": "100000",
    "X-RateLimit-Remaining": "99999",
    "X-RateLimit-Reset-After": "1.000",
}


class RateLimitedDiscord(FakeDiscord):
    """The test fake with Discord's rate limits in front: every answer of a limited route carries the
    ``X-RateLimit-*`` headers, and a request over a limit gets 429 with Discord's JSON body
    (``message``, ``retry_after``, ``global``), ``Retry-After`` and ``Via`` (without ``Via`` discord.py
    would take the 429 for a Cloudflare ban). The 429 is recorded in ``calls`` like any answer."""

    def __init__(
        self,
        token: str,
        route_limits: tuple[tuple[str, re.Pattern[str], str, int, float], ...] = ROUTE_LIMITS,
        global_limit: int = GLOBAL_LIMIT,
    ) -> None:
        super().__init__(token)
        self.route_limits = route_limits
        self.ratelimits = False  # scenarios switch them on (/configure)
        self.rejected: Counter[str] = Counter()  # "route" or "global" -> 429s sent
        self._buckets: dict[tuple[str, str], Window] = {}
        self._global = Window(global_limit, 1.0)

    def _route_name(self, method: str, path: str) -> str | None:
        """The bucket hash of a limited route (its major parameter included), without counting."""
        for m, pattern, name, _limit, _seconds in self.route_limits:
            if m in ("*", method) and (match := pattern.fullmatch(path)):
                return hashlib.md5(f"{name}:{match.group(1)}".encode()).hexdigest()
        return None

    def _limit_for(self, method: str, path: str) -> tuple[str, Window] | None:
        for m, pattern, name, limit, seconds in self.route_limits:
            if m in ("*", method) and (match := pattern.fullmatch(path)):
                key = (name, match.group(1))
                window = self._buckets.get(key)
                if window is None:
                    window = self._buckets[key] = Window(limit, seconds)
                return name, window
        return None

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        if not self.ratelimits:
            # Limits off (the capacity run), but real Discord always sends the headers: without them
            # discord.py lets one request per route bucket in flight, a serialisation Discord never has.
            resp = await super()._api_handler(request)
            path = request.path[len(f"/api/v{request.match_info['version']}") :] or "/"
            named = self._route_name(request.method.upper(), path)
            if named is not None and not resp.prepared:
                resp.headers.update(_UNLIMITED_HEADERS | {"X-RateLimit-Bucket": named})
            return resp
        path = request.path[len(f"/api/v{request.match_info['version']}") :] or "/"
        method = request.method.upper()
        now = time.monotonic()
        exempt = bool(_CALLBACK.fullmatch(path) or _WEBHOOK.fullmatch(path))  # interaction routes
        if not exempt and not self._global.take(now):
            return self._too_many(method, path, self._global.reset_after(now), None, None)
        route = self._limit_for(method, path)
        if route is not None and not route[1].take(now):
            return self._too_many(method, path, route[1].reset_after(now), route[0], route[1])
        resp = await super()._api_handler(request)
        if route is not None and not resp.prepared:
            name, window = route
            resp.headers.update(self._headers(name, window, time.monotonic()))
        return resp

    def _headers(self, name: str, window: Window, now: float) -> dict[str, str]:
        after = window.reset_after(now)
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining(now)),
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": hashlib.md5(name.encode()).hexdigest(),
        }

    def _too_many(
        self, method: str, path: str, retry: float, name: str | None, window: Window | None
    ) -> web.Response:
        is_global = name is None
        self.rejected["global" if is_global else "route"] += 1
        self.calls.append(RecordedCall(method=method, path=path, query={}, json=None, files=[], status=429))
        headers = {
            "Retry-After": str(max(1, int(retry + 0.999))),
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        elif window is not None:
            headers.update(self._headers(name or "", window, time.monotonic()))
        body = {"message": "You are being rate limited.", "retry_after": round(retry, 3), "global": is_global}
        # Exactly "application/json" (no charset), or discord.py reads the body as text and gives up.
        return _json_response(body, 429, headers)


SPACES_EXTRA_CHANNELS = 19  # main-1 .. main-19 in the default guild
SHAPE_GUILDS = ("tight", "5min", "wide")


class Control:
    def __init__(
        self,
        discord: RateLimitedDiscord,
        runcomfy: FakeRunComfy,
        fleet_guilds: int = 0,
        fleet_shards: int = 1,
    ) -> None:
        self.discord = discord
        self.runcomfy = runcomfy
        self.image = jpeg_bytes()
        self.inputs: dict[str, bytes] = {}
        # Spaces: a guild and a channel the driver can aim commands at.
        self.spaces: dict[str, tuple[int, int]] = {"main": (discord.guild_id, discord.channel_id)}
        for i in range(1, SPACES_EXTRA_CHANNELS + 1):
            self.spaces[f"main-{i}"] = (discord.guild_id, discord.add_channel(f"animate-{i}"))
        for name in SHAPE_GUILDS:
            gid = discord.add_guild(f"Shape {name}", owner="owner")
            self.spaces[name] = (gid, discord.add_channel("animate", guild_id=gid))
        # Before any bot connects: each shard's IDENTIFY then brings its guilds (GUILD_CREATE).
        for i in range(fleet_guilds):
            gid = discord.add_guild(f"Fleet {i}", owner="owner", shard=(i % fleet_shards, fleet_shards))
            self.spaces[f"fleet-{i}"] = (gid, discord.add_channel("animate", guild_id=gid))
        self._video_cursor = 0  # calls already counted into _videos_by_guild
        self._videos_by_guild: Counter[int] = Counter()

    def input(self, name: str) -> bytes:
        if name not in self.inputs:
            self.inputs[name] = inputs.load(name)
        return self.inputs[name]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)  # /report for 10,000 jobs is several MB
        app.router.add_get("/info", self.info)
        app.router.add_post("/configure", self.configure)
        app.router.add_post("/users", self.users)
        app.router.add_post("/slash", self.slash)
        app.router.add_post("/interactions", self.interactions)
        app.router.add_get("/mark", self.mark)
        app.router.add_get("/spaces", self.list_spaces)
        app.router.add_post("/report", self.report)
        app.router.add_post("/videos", self.videos)
        return app

    async def info(self, request: web.Request) -> web.Response:
        d = self.discord
        return web.json_response(
            {
                "discord_token": d.token,
                "discord_url": d.url,
                "api_base": d.api_base,
                "gateway_url": d.gateway_url,
                "runcomfy_token": self.runcomfy.token,
                "runcomfy_base_url": self.runcomfy.base_url,
                "guild_id": d.guild_id,
                "channel_id": d.channel_id,
            }
        )

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "default" in body:
            self.runcomfy.default_script = self._script(body["default"])
        for spec in body.get("scripts", []):
            self.runcomfy.scripts.append(self._script(spec))
        if "ratelimits" in body:
            self.discord.ratelimits = bool(body["ratelimits"])
        if "validate_images" in body:
            self.runcomfy.validate_images = bool(body["validate_images"])
        return web.json_response({"scripts": len(self.runcomfy.scripts)})

    def _script(self, spec: dict[str, Any]) -> JobScript:
        spec = dict(spec)
        if isinstance(spec.get("video"), str):
            spec["video"] = self.input(spec["video"])
        return JobScript(**spec)

    async def users(self, request: web.Request) -> web.Response:
        body = await request.json()
        prefix = str(body.get("prefix", "u"))
        gid = self.spaces[str(body.get("space", "main"))][0]
        names = []
        for i in range(int(body["count"])):
            name = f"{prefix}{i}"
            uid = self.discord.user_ids.get(name)
            if uid is None or uid not in self.discord.guilds[gid]["members"]:
                self.discord.add_member(name, guild_id=gid)
            names.append(name)
        return web.json_response({"names": names})

    async def slash(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = str(body.get("prompt", "the cat turns its head and blinks"))
        users: list[str] = list(body["users"])
        kind = body.get("image")
        data, filename, ctype = (
            (self.input(kind), inputs.FILENAMES[kind], inputs.CONTENT_TYPES[kind])
            if kind
            else (self.image, "photo.jpg", "image/jpeg")
        )
        spaces: list[str] = list(body.get("spaces") or [body.get("space", "main")])
        channels = [self.spaces[spaces[i % len(spaces)]][1] for i in range(len(users))]
        # Build every attachment first, then dispatch the commands back to back.
        images = [self.discord.add_attachment(filename, data, ctype) for _ in users]
        inters = await asyncio.gather(
            *(
                self.discord.slash("animate", {"image": img, "prompt": prompt}, user=user, channel_id=ch)
                for user, img, ch in zip(users, images, channels, strict=True)
            )
        )
        return web.json_response({"ids": [str(i.id) for i in inters]})

    def _answer_times(self) -> dict[str, float]:
        """token -> monotonic time of the first PATCH of the interaction's original response."""
        first: dict[str, float] = {}
        for call in self.discord.calls:
            if call.method == "PATCH" and call.path.startswith("/webhooks/"):
                parts = call.path.split("/")
                if len(parts) > 3:
                    first.setdefault(parts[3], call.at)
        return first

    async def interactions(self, request: web.Request) -> web.Response:
        body = await request.json()
        answers = self._answer_times()
        out = []
        for raw in body["ids"]:
            inter = self.discord.interactions.get(int(raw))
            if inter is None:
                out.append({"id": raw, "known": False})
                continue
            reply = next((s.get("content") for s in reversed(inter.followups) if s.get("content")), None)
            answered_at = answers.get(inter.token)
            out.append(
                {
                    "id": raw,
                    "known": True,
                    "acked": inter.acked,
                    "ack_latency": inter.ack_latency,
                    "rejected": len(inter.rejected_callbacks),
                    "reply": reply,
                    "answer_latency": (
                        answered_at - inter.dispatched_at
                        if answered_at is not None and inter.dispatched_at is not None
                        else None
                    ),
                }
            )
        return web.json_response({"interactions": out})

    async def mark(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "calls": len(self.discord.calls),
                "requests": len(self.runcomfy.requests),
                "submits": len(self.runcomfy.jobs),
                "rejected": dict(self.discord.rejected),
            }
        )

    async def videos(self, request: web.Request) -> web.Response:
        """Accepted video posts in the given guilds; counted incrementally (only new calls are read),
        so three drivers polling it twice a second stay cheap with 100,000 calls recorded."""
        body = await request.json()
        calls = self.discord.calls
        for call in calls[self._video_cursor :]:
            if (
                call.method == "POST"
                and call.status < 300
                and (m := _CHANNEL_POST.fullmatch(call.path))
                and any(name.endswith(".mp4") for name, _, _ in call.files)
            ):
                channel = self.discord.channels.get(int(m.group(1))) or {}
                self._videos_by_guild[int(channel.get("guild_id") or 0)] += 1
        self._video_cursor = len(calls)
        posted = sum(self._videos_by_guild[int(g)] for g in body.get("guilds", []))
        return web.json_response({"posted": posted, "quiet_seconds": self._quiet_seconds()})

    def _quiet_seconds(self) -> float:
        """Seconds since either fake last saw a request (0 before the first): a bot with work left
        calls Discord or RunComfy every few seconds, so a long silence means nothing is in flight."""
        last = [seq[-1].at for seq in (self.discord.calls, self.runcomfy.requests) if seq]
        return time.monotonic() - max(last) if last else 0.0

    async def list_spaces(self, request: web.Request) -> web.Response:
        return web.json_response(
            {k: {"guild_id": str(g), "channel_id": str(c)} for k, (g, c) in self.spaces.items()}
        )

    async def report(self, request: web.Request) -> web.Response:
        body = await request.json()
        since = body.get("since") or {"calls": 0, "requests": 0}
        calls = self.discord.calls[int(since["calls"]) :]
        kinds = Counter(classify(c.method, c.path, c.files) for c in calls)
        failed = Counter(f"{c.method} {c.status}" for c in calls if c.status >= 400)
        rc_requests = self.runcomfy.requests[int(since["requests"]) :]
        endpoints = Counter(r.endpoint or "other" for r in rc_requests)

        # Per-message indexes: edits of each status message, video posts per channel/filename.
        edits: Counter[int] = Counter()
        video_at: dict[int, float] = {}  # channel id -> first video post time
        video_by_name: dict[str, float] = {}
        video_posts: Counter[str] = Counter()  # filename -> accepted posts (a duplicate delivery shows)
        for call in calls:
            if call.method == "PATCH" and (m := _MESSAGE.fullmatch(call.path)):
                edits[int(m.group(2))] += 1
            elif call.method == "POST" and (m := _CHANNEL_POST.fullmatch(call.path)) and call.status < 300:
                for name, _, _ in call.files:
                    if name.endswith(".mp4"):
                        video_at.setdefault(int(m.group(1)), call.at)
                        video_by_name.setdefault(name, call.at)
                        video_posts[name] += 1
                # A video too large to upload, posted as a link (the naive bot): its name is in the text.
                content = call.json.get("content") if isinstance(call.json, dict) else None
                if isinstance(content, str) and ".mp4" in content:
                    for word in content.split():
                        if word.endswith(".mp4"):
                            video_by_name.setdefault(word.rsplit("/", 1)[-1], call.at)

        jobs_out = []
        for job in body.get("jobs", []):
            fake_job = self.runcomfy.jobs.get(job.get("request_id") or "")
            row: dict[str, Any] = {"job_id": job["job_id"], "known": fake_job is not None}
            row["video_posts"] = video_posts[job.get("video_name") or f"animate-{job['job_id']}.mp4"]
            if fake_job is not None:
                script = fake_job.script
                duration = (script.queue_seconds or 0.0) + (script.run_seconds or 0.0)
                done_at = fake_job.submitted_at + duration
                posted = video_by_name.get(job.get("video_name") or f"animate-{job['job_id']}.mp4")
                if posted is None and job.get("thread_id"):
                    posted = video_at.get(int(job["thread_id"]))
                row.update(
                    {
                        "duration": duration,
                        "status_calls": fake_job.status_calls,
                        "result_calls": fake_job.result_calls,
                        "cancel_calls": fake_job.cancel_calls,
                        "done_at": done_at,
                        "posted_at": posted,
                        "delivery_lag": None if posted is None else posted - done_at,
                    }
                )
            smid = job.get("status_message_id")
            row["status_edits"] = edits.get(int(smid), 0) if smid else 0
            jobs_out.append(row)
        return web.json_response(
            {
                "discord_calls": len(calls),
                "discord_kinds": dict(kinds),
                "discord_failures": dict(failed),
                "runcomfy_endpoints": dict(endpoints),
                "unknown_routes": len(self.discord.unknown_routes),
                "rejected": {
                    k: v - int((since.get("rejected") or {}).get(k, 0))
                    for k, v in self.discord.rejected.items()
                },
                "jobs": jobs_out,
                "fakes_gc_full_collections": GC_PAUSES.summary(),
            }
        )


class GcPauses:
    """The fakes' own full collections. Latencies are stamped here (an ack: INTERACTION_CREATE sent ->
    callback received), so a pause of this process' collector would be counted as the bot's latency."""

    def __init__(self) -> None:
        self.full: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.full.append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, float]:
        return {"count": len(self.full), "seconds": sum(self.full), "max": max(self.full, default=0.0)}


GC_PAUSES = GcPauses()


async def serve(port: int, fleet_guilds: int = 0, fleet_shards: int = 1) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The image check would make the fake RunComfy download and decode every image: fake-side work.
    discord = RateLimitedDiscord(DISCORD_TOKEN)
    async with FakeRunComfy(RUNCOMFY_TOKEN, validate_images=False) as runcomfy, discord:
        discord.dispatch_message_events = False  # the bot has no message intents anyway
        runner = web.AppRunner(Control(discord, runcomfy, fleet_guilds, fleet_shards).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        actual = runner.addresses[0][1]
        # With 10,000 jobs the fakes hold as many objects as the bot: the collector is set up as the
        # bot's (bot/__main__.py tune_gc), so its full passes do not stall the fakes' timestamps.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.callbacks.append(GC_PAUSES)
        print(json.dumps({"control": f"http://127.0.0.1:{actual}"}), flush=True)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fleet-guilds", type=int, default=0, help="guilds fleet-0.. spread over shards")
    parser.add_argument("--fleet-shards", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    asyncio.run(serve(args.port, args.fleet_guilds, args.fleet_shards))
    ran = time.monotonic() - started
    print(f"fakes ran {ran:.1f} s; full GC passes {GC_PAUSES.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
