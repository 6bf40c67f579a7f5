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
  channel_id}]}`` -> per-job delivery lag and RunComfy call counts, Discord calls by kind
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

if __package__ in (None, ""):  # `python bench/fakes_server.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.discord import FakeDiscord
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


class Control:
    def __init__(self, discord: FakeDiscord, runcomfy: FakeRunComfy) -> None:
        self.discord = discord
        self.runcomfy = runcomfy
        self.image = jpeg_bytes()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/info", self.info)
        app.router.add_post("/configure", self.configure)
        app.router.add_post("/users", self.users)
        app.router.add_post("/slash", self.slash)
        app.router.add_post("/interactions", self.interactions)
        app.router.add_get("/mark", self.mark)
        app.router.add_post("/report", self.report)
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
            self.runcomfy.default_script = JobScript(**body["default"])
        for spec in body.get("scripts", []):
            self.runcomfy.scripts.append(JobScript(**spec))
        if "validate_images" in body:
            self.runcomfy.validate_images = bool(body["validate_images"])
        return web.json_response({"scripts": len(self.runcomfy.scripts)})

    async def users(self, request: web.Request) -> web.Response:
        body = await request.json()
        prefix = str(body.get("prefix", "u"))
        names = []
        for i in range(int(body["count"])):
            name = f"{prefix}{i}"
            if name not in self.discord.user_ids:
                self.discord.add_member(name)
            names.append(name)
        return web.json_response({"names": names})

    async def slash(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = str(body.get("prompt", "the cat turns its head and blinks"))
        users: list[str] = list(body["users"])
        # Build every attachment first, then dispatch the commands back to back.
        images = [self.discord.add_attachment("photo.jpg", self.image, "image/jpeg") for _ in users]
        inters = await asyncio.gather(
            *(
                self.discord.slash("animate", {"image": img, "prompt": prompt}, user=user)
                for user, img in zip(users, images, strict=True)
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
        return web.json_response({"calls": len(self.discord.calls), "requests": len(self.runcomfy.requests)})

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
        for call in calls:
            if call.method == "PATCH" and (m := _MESSAGE.fullmatch(call.path)):
                edits[int(m.group(2))] += 1
            elif call.method == "POST" and (m := _CHANNEL_POST.fullmatch(call.path)) and call.status < 300:
                for name, _, _ in call.files:
                    if name.endswith(".mp4"):
                        video_at.setdefault(int(m.group(1)), call.at)
                        video_by_name.setdefault(name, call.at)

        jobs_out = []
        for job in body.get("jobs", []):
            fake_job = self.runcomfy.jobs.get(job.get("request_id") or "")
            row: dict[str, Any] = {"job_id": job["job_id"], "known": fake_job is not None}
            if fake_job is not None:
                script = fake_job.script
                duration = (script.queue_seconds or 0.0) + (script.run_seconds or 0.0)
                done_at = fake_job.submitted_at + duration
                posted = video_by_name.get(f"animate-{job['job_id']}.mp4")
                if posted is None and job.get("thread_id"):
                    posted = video_at.get(int(job["thread_id"]))
                row.update(
                    {
                        "duration": duration,
                        "status_calls": fake_job.status_calls,
                        "result_calls": fake_job.result_calls,
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
                "jobs": jobs_out,
            }
        )


async def serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The image check would make the fake RunComfy download and decode every image: fake-side work.
    async with (
        FakeRunComfy(RUNCOMFY_TOKEN, validate_images=False) as runcomfy,
        FakeDiscord(DISCORD_TOKEN) as discord,
    ):
        discord.dispatch_message_events = False  # the bot has no message intents anyway
        runner = web.AppRunner(Control(discord, runcomfy).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        actual = runner.addresses[0][1]
        print(json.dumps({"control": f"http://127.0.0.1:{actual}"}), flush=True)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    asyncio.run(serve(args.port))
    print(f"fakes ran {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
