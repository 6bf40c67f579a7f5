"""The naive reference bot: what a first attempt at /animate looks like, run on the bench's workload.

It is the yardstick every figure of the benchmark is compared with (issue #13), so it must be honest and
correct -- it delivers every job -- while doing none of the bot's work: on /animate it defers, answers,
posts a status message, submits the upload's URL straight through (no download, no normalisation),
polls ``/status`` every second until the job is done, then ``/result``, edits the status message after
every poll (no coalescing; a poll skips its edit only while the previous edit of that message is still
waiting on Discord's rate limit, so edits cannot pile up without bound), downloads the video and posts
it (no re-encode: a file over the upload limit is posted as a link). No database: jobs live in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from discord import app_commands

logger = logging.getLogger(__name__)

MODEL_PATH = "/models/wan-ai/wan-2-2/image-to-video"
TIMEOUT = aiohttp.ClientTimeout(total=30)
UPLOAD_LIMIT = 10 * 1024 * 1024
TERMINAL = frozenset({"completed", "succeeded", "failed", "cancelled", "canceled"})


@dataclass
class NaiveJob:
    job_id: int
    channel_id: int
    status_message_id: int | None = None
    request_id: str | None = None
    state: str = "pending"  # pending | running | delivered | failed


def _ignore_failure(task: asyncio.Task[Any]) -> None:
    # A status edit that lost to the rate limit is just skipped, like the poll it belonged to.
    if not task.cancelled() and task.exception() is not None:
        logger.debug("status edit failed: %r", task.exception())


class NaiveBot(discord.Client):
    def __init__(self, *, runcomfy_base_url: str, runcomfy_token: str, poll_interval: float = 1.0) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.base = runcomfy_base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {runcomfy_token}"}
        self.poll_interval = poll_interval
        self.jobs: list[NaiveJob] = []
        self.session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

        @self.tree.command(name="animate", description="Animate an image")
        async def animate(interaction: discord.Interaction, image: discord.Attachment, prompt: str) -> None:
            await self.animate(interaction, image, prompt)

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession()
        await self.tree.sync()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        await super().close()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def animate(self, interaction: discord.Interaction, image: discord.Attachment, prompt: str) -> None:
        await interaction.response.defer(ephemeral=True)
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel | discord.Thread)
        job = NaiveJob(job_id=len(self.jobs) + 1, channel_id=channel.id)
        self.jobs.append(job)
        try:
            status = await self.post(
                channel,
                content=f"Animating for {interaction.user.mention}: queued",
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException:
            job.state = "failed"
            await interaction.followup.send("Could not post in this channel.", ephemeral=True)
            return
        job.status_message_id = status.id
        try:
            job.request_id = await self.submit(image.url, prompt)
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            job.state = "failed"
            await interaction.followup.send(f"Could not submit: {exc}", ephemeral=True)
            return
        job.state = "running"
        self._spawn(self.follow(job, status, channel))
        with contextlib.suppress(discord.HTTPException):
            await interaction.followup.send("Submitted.", ephemeral=True)

    async def submit(self, image_url: str, prompt: str) -> str:
        assert self.session is not None
        body = {"prompt": prompt, "img_url": image_url, "resolution": "480P"}
        async with self.session.post(
            self.base + MODEL_PATH, json=body, headers=self.headers, timeout=TIMEOUT
        ) as resp:
            resp.raise_for_status()
            data = await resp.json()
        return str(data["request_id"])

    async def get(self, url: str) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(url, headers=self.headers, timeout=TIMEOUT) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def post(self, channel: discord.TextChannel | discord.Thread, **kwargs: Any) -> discord.Message:
        """Send, and keep trying while Discord says 429 (discord.py gives up after five tries)."""
        for attempt in range(20):
            if "file" in kwargs:
                kwargs["file"].reset()
            try:
                return await channel.send(**kwargs)
            except discord.HTTPException as exc:
                if exc.status != 429 or attempt == 19:
                    raise
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    async def follow(
        self, job: NaiveJob, status: discord.Message, channel: discord.TextChannel | discord.Thread
    ) -> None:
        try:
            await self._follow(job, status, channel)
        except Exception:
            # Visible in the bench as an undelivered job rather than a run that never ends.
            logger.exception("naive job %s failed", job.request_id)
            job.state = "failed"

    async def _follow(
        self, job: NaiveJob, status: discord.Message, channel: discord.TextChannel | discord.Thread
    ) -> None:
        base = f"{self.base}/requests/{job.request_id}"
        started = time.monotonic()
        edit: asyncio.Task[Any] | None = None
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                state = str((await self.get(base + "/status")).get("status", "")).lower()
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("status of %s failed: %r", job.request_id, exc)
                continue
            if state in TERMINAL:
                break
            if edit is None or edit.done():
                text = f"Animating: {state} ({time.monotonic() - started:.0f} s)"
                edit = asyncio.create_task(status.edit(content=text))
                edit.add_done_callback(_ignore_failure)
        if edit is not None:
            edit.cancel()
        result = await self.get(base + "/result")
        output = result.get("output") or {}
        url = output.get("video") or next(iter(output.get("videos") or []), None)
        if str(result.get("status", "")).lower() not in ("succeeded", "completed") or not url:
            job.state = "failed"
            await self.post(channel, content=f"The job failed: {result.get('error')!r}")
            return
        assert self.session is not None
        async with self.session.get(str(url), timeout=TIMEOUT) as resp:
            resp.raise_for_status()
            data = await resp.read()
        name = f"naive-{job.request_id}.mp4"
        if len(data) > UPLOAD_LIMIT:
            await self.post(channel, content=f"Done (too large to upload): {url} {name}")
        else:
            await self.post(channel, content="Done!", file=discord.File(io.BytesIO(data), filename=name))
        job.state = "delivered"
        with contextlib.suppress(discord.HTTPException):
            await status.edit(content="Animating: done")

    # The same questions the benchmark driver asks the real bot's database.
    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.state] = out.get(job.state, 0) + 1
        return out

    def job_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "job_id": j.job_id,
                "request_id": j.request_id,
                "thread_id": None,
                "status_message_id": j.status_message_id,
                "channel_id": j.channel_id,
                "state": j.state,
                "video_name": f"naive-{j.request_id}.mp4",
            }
            for j in self.jobs
        ]
