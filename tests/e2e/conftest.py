"""End-to-end harness: the real bot (real discord.py) against the fake Discord and fake RunComfy."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.client import AnimateBot
from bot.settings import Settings
from storage.jobs import Job
from tests.fakes.discord import FakeDiscord, FakeInteraction, patched_discord
from tests.fakes.runcomfy import FakeRunComfy

ROOT = Path(__file__).resolve().parents[2]
DISCORD_TOKEN = "test-discord-token"

# Loaded by the interpreter at start-up (site imports `sitecustomize`) so that a bot started as
# `python -m bot` talks to the fake Discord while its own code stays unmodified.
SITECUSTOMIZE = """
import os
import discord.gateway, discord.http, yarl
base = os.environ["FAKE_DISCORD_URL"]
discord.http.Route.BASE = base + "/api/v10"
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http", "ws", 1) + "/gateway")
"""
RUNCOMFY_TOKEN = "test-runcomfy-token"


def jpeg_bytes(width: int = 640, height: int = 480, colour: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@dataclass
class Harness:
    discord: FakeDiscord
    runcomfy: FakeRunComfy
    db_path: Path
    bot: AnimateBot | None = None
    task: asyncio.Task[None] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    process_logs: list[Path] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": DISCORD_TOKEN,
            "runcomfy_api_token": RUNCOMFY_TOKEN,
            "runcomfy_base_url": self.runcomfy.base_url,
            "database_path": self.db_path,
            "daily_quota": 5,
            "poll_first_delay": 0.05,
            "poll_max_interval": 0.2,
            "status_edit_interval": 0.0,
            "channel_edit_interval": 0.0,
            "http_timeout": 5.0,
            "retry_backoff_base": 0.01,
            "retry_backoff_cap": 0.2,
        }
        values.update(self.overrides)
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    async def start_bot(self, **overrides: Any) -> AnimateBot:
        assert self.bot is None, "a bot is already running"
        bot = AnimateBot(self.settings(**overrides), guild_ready_timeout=0.05)
        await bot.login(DISCORD_TOKEN)
        self.bot = bot
        self.task = asyncio.create_task(bot.connect(reconnect=False))
        # discord.py's own readiness (READY + GUILD_CREATE processed): the fake's flag would still be
        # set from a previous bot's connection after a restart.
        await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.bot = self.task = None

    async def spawn_bot_process(self, tmp_path: Path, **env_overrides: str) -> asyncio.subprocess.Process:
        """Run the bot as users do, `python -m bot`, against the fakes and this harness' database."""
        shim = tmp_path / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_"))}
        env.update(
            PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]),
            FAKE_DISCORD_URL=self.discord.url,
            DISCORD_TOKEN=DISCORD_TOKEN,
            RUNCOMFY_API_TOKEN=RUNCOMFY_TOKEN,
            RUNCOMFY_BASE_URL=self.runcomfy.base_url,
            DATABASE_PATH=str(self.db_path),
            POLL_FIRST_DELAY="0.05",
            POLL_MAX_INTERVAL="0.2",
            STATUS_EDIT_INTERVAL="0",
            RETRY_BACKOFF_BASE="0.01",
            RETRY_BACKOFF_CAP="0.2",
        )
        env.update(env_overrides)
        # Logs go to a file: a pipe nobody reads would fill up and stall the bot.
        log_path = tmp_path / f"bot-{len(self.processes)}.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=tmp_path, env=env, stdout=log_file, stderr=log_file
            )
        self.processes.append(proc)
        self.process_logs.append(log_path)
        return proc

    @property
    def running(self) -> AnimateBot:
        assert self.bot is not None
        return self.bot

    def image(
        self, data: bytes | None = None, filename: str = "photo.jpg", content_type: str = "image/jpeg"
    ) -> dict[str, Any]:
        return self.discord.add_attachment(filename, jpeg_bytes() if data is None else data, content_type)

    async def animate(
        self,
        prompt: str = "the cat turns its head and blinks",
        *,
        user: str = "alice",
        image: dict[str, Any] | None = None,
        channel_id: int | None = None,
        **options: Any,
    ) -> FakeInteraction:
        opts = {"image": image or self.image(), "prompt": prompt, **options}
        return await self.discord.slash("animate", opts, user=user, channel_id=channel_id)

    async def reply(self, interaction: FakeInteraction, timeout: float = 15) -> str:
        """The text of the bot's (ephemeral) answer, once it replaced the "thinking…" state."""

        def answered() -> str | None:
            for snap in reversed(interaction.followups):
                content = snap.get("content")
                if content:
                    return str(content)
            for callback in interaction.callbacks:  # an immediate (type 4) response
                content = (callback.get("data") or {}).get("content")
                if content:
                    return str(content)
            return None

        return str(await self.discord.wait_for(answered, timeout=timeout))

    async def job(self, job_id: int) -> Job:
        job = await self.running.jobs.get(job_id)
        assert job is not None
        return job

    async def wait_job(self, job_id: int, *states: str, timeout: float = 15) -> Job:
        async def reached() -> Job | None:
            job = await self.running.jobs.get(job_id)
            return job if job is not None and job.state.value in states else None

        def step_done() -> bool:
            return job_id not in self.running.engine._busy

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await reached()
            if job is not None:
                # The state is written first, then the same engine step edits the status message and
                # posts in the thread: let that step finish so tests see what users would.
                await self.discord.wait_for(step_done, timeout=max(0.1, deadline - loop.time()))
                return await self.job(job_id)
            if asyncio.get_running_loop().time() > deadline:
                current = await self.running.jobs.get(job_id)
                raise AssertionError(f"job {job_id} never reached {states}; now {current and current.state}")
            await asyncio.sleep(0.02)

    async def last_job_id(self) -> int:
        row = await self.running.db.fetchone("SELECT MAX(id) AS id FROM jobs")
        assert row is not None and row["id"] is not None
        return int(row["id"])

    def message(self, message_id: int) -> dict[str, Any]:
        msg = self.discord.get_message(message_id)
        assert msg is not None, f"no message {message_id}"
        return msg

    def status_text(self, message_id: int) -> str:
        embed = self.message(message_id)["embeds"][0]
        return next(f["value"] for f in embed["fields"] if f["name"] == "Status")

    def buttons(self, message_id: int) -> list[dict[str, Any]]:
        rows = self.message(message_id).get("components") or []
        return [c for row in rows for c in row.get("components", [])]


# Stopping a bot takes well under a second; a teardown that takes longer is a bug, reported with
# every pending task's stack instead of hanging the run until pytest-timeout kills it.
TEARDOWN_TIMEOUT = 20.0


def _task_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(file=out)
    return out.getvalue()


async def _stop_bounded(h: Harness) -> None:
    try:
        async with asyncio.timeout(TEARDOWN_TIMEOUT):
            await h.stop_bot()
    except TimeoutError:
        stacks = _task_stacks()
        bot = h.bot
        if bot is not None:  # release what the half-closed bot holds, so the run can go on
            leftovers = [t for t in (h.task, getattr(bot.engine, "_runner", None)) if t is not None]
            for task in leftovers:
                task.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await asyncio.gather(*leftovers, return_exceptions=True)
                    await bot.http.close()
                    await bot.session.close()
                    await bot.db.close()
        h.bot = h.task = None
        pytest.fail(f"stopping the bot took over {TEARDOWN_TIMEOUT} s; pending tasks:\n{stacks}")


@contextlib.asynccontextmanager
async def harness_on(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness around a given fake Discord (a subclass with other behaviour, e.g. rate limits)."""
    async with FakeRunComfy(RUNCOMFY_TOKEN) as runcomfy, fake:
        with patched_discord(fake):
            h = Harness(discord=fake, runcomfy=runcomfy, db_path=tmp_path / "bot.db")
            try:
                yield h
            finally:
                await _stop_bounded(h)
                for proc in h.processes:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
        assert fake.unknown_routes == [], fake.unknown_routes


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness_on(FakeDiscord(DISCORD_TOKEN), tmp_path) as h:
        yield h
