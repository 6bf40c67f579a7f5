"""The bot: owns the HTTP session, the database, the RunComfy client and the job engine."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import errors, i18n, metrics, ui
from bot.engine import JobEngine, VideoBackend
from bot.fetch import OutputFetcher
from bot.preview import PreviewBackend
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from bot.ui import CancelButton, ResultButton
from storage.db import Database
from storage.jobs import JobRepository
from storage.quota import QuotaRepository

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.animate",
    "cogs.remix",
    "cogs.quota",
    "cogs.admin",
    "cogs.approval",
    "cogs.audit",
    "cogs.history",
    "cogs.notify",
    "cogs.ops",
)


# Login retries while Discord is unreachable at start-up: seconds, doubling up to the cap.
LOGIN_RETRY_BASE = 1.0
LOGIN_RETRY_CAP = 60.0


def describe_unreachable(exc: BaseException) -> str:
    """One line about a connection failure, without a traceback (and never a token: none is in it)."""
    if isinstance(exc, discord.DiscordServerError):
        return f"HTTP {exc.status} from Discord"
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
        return f"cannot connect to {exc.host}:{exc.port}: {inner.strerror or inner}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class AnimateBot(commands.Bot):
    # Set in setup_hook, which discord.py runs after login and before the gateway connects.
    session: aiohttp.ClientSession
    outputs: OutputFetcher
    db: Database
    jobs: JobRepository
    quota: QuotaRepository
    runcomfy: VideoBackend
    preview: PreviewBackend | None = None
    engine: JobEngine

    def __init__(self, settings: Settings, **options: Any) -> None:
        # The bot never joins voice; skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        # Slash commands and buttons arrive as interactions whatever the intents; the guild cache is
        # all we need. No privileged intents.
        intents = discord.Intents.none()
        intents.guilds = True
        # Sees every Discord HTTP answer, so 429s are counted even when discord.py retries them.
        options.setdefault("http_trace", metrics.discord_http_trace())
        if settings.locales_dir is not None:
            i18n.add_catalogs(settings.locales_dir)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=ui.NO_MENTIONS,
            help_command=None,
            **options,
        )
        self.settings = settings
        self._setup_begun = False
        self.tree.error(self.on_app_command_error)

    async def open_storage(self) -> None:
        """Open and migrate the database. `python -m bot` does this before logging in, so a bad
        DATABASE_PATH fails at once; otherwise setup_hook does it."""
        self.db = await Database.open(self.settings.database_path)
        self.jobs = JobRepository(self.db)
        self.quota = QuotaRepository(self.db)

    async def login_retrying(self, token: str, stop: asyncio.Event) -> bool:
        """Log in, retrying while Discord is unreachable (DNS, refused, timeouts, 5xx) with capped
        exponential backoff and jitter, one warning per attempt. False if `stop` was set or the bot
        closed meanwhile. A rejected token (LoginFailure) and any other refusal are raised."""
        delay = LOGIN_RETRY_BASE
        while True:
            self._setup_begun = False
            try:
                await self.login(token)
                return True
            except (OSError, aiohttp.ClientError, TimeoutError, discord.DiscordServerError) as exc:
                if self._setup_begun or stop.is_set() or self.is_closed():
                    # setup_hook is not safe to run twice; a closing bot has nothing to retry.
                    raise
                reason = describe_unreachable(exc)
            # static_login makes a new session per attempt: close the failed one (and its connector,
            # which a closed session cannot reuse) so nothing is left unclosed at exit.
            await self.http.close()
            self.http.connector = discord.utils.MISSING
            wait = random.uniform(delay / 2, delay)
            log.warning("Discord unreachable (%s); retrying in %.1f s", reason, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set() or self.is_closed():
                return False
            delay = min(LOGIN_RETRY_CAP, delay * 2)

    async def setup_hook(self) -> None:
        user_agent = "animate-bot (+https://github.com/; discord image-to-video)"
        self._setup_begun = True
        if not hasattr(self, "db"):
            await self.open_storage()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.http_timeout, connect=10),
            headers={"User-Agent": user_agent},
        )
        # RunComfy's output URLs are fetched through their own guarded session (see bot/fetch.py).
        self.outputs = OutputFetcher(
            self.session, trusted_origin=self.settings.runcomfy_base_url, user_agent=user_agent
        )
        ui.configure(preview=self.settings.backend == "preview")
        if self.settings.backend == "preview":
            self.preview = PreviewBackend(self.session)
            self.runcomfy = self.preview
            log.warning("BACKEND=preview: videos are local previews, not Wan 2.2 generations")
        else:
            self.runcomfy = RunComfyClient(
                self.session,
                base_url=self.settings.runcomfy_base_url,
                token=self.settings.runcomfy_token,
                model=self.settings.runcomfy_model,
                request_timeout=self.settings.http_timeout,
                backoff_base=self.settings.retry_backoff_base,
                backoff_cap=self.settings.retry_backoff_cap,
            )
        self.engine = JobEngine(
            client=self,
            settings=self.settings,
            jobs=self.jobs,
            quota=self.quota,
            runcomfy=self.runcomfy,
            session=self.session,
            outputs=self.outputs,
        )
        self.add_dynamic_items(CancelButton, ResultButton)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # Descriptions, choice names and the context-menu name get their translations at sync.
        await self.tree.set_translator(i18n.CatalogTranslator())
        await self.sync_commands_if_changed()
        await self.engine.start()

    async def close(self) -> None:
        log.info("Shutting down")
        if hasattr(self, "engine"):
            await self.engine.stop()
        if self.preview is not None:
            await self.preview.close()
        await super().close()
        if hasattr(self, "outputs"):
            await self.outputs.close()
        if hasattr(self, "session"):
            await self.session.close()
        if hasattr(self, "db"):
            await self.db.close()

    def command_fingerprint(self, guild: discord.abc.Snowflake | None) -> str:
        """The commands' definition, translations included: a changed catalog re-syncs as well."""
        payload = [cmd.to_dict(self.tree) for cmd in self.tree.get_commands(guild=guild)]
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")) + i18n.catalog_digest()
        return hashlib.sha256(blob.encode()).hexdigest()

    async def sync_commands_if_changed(self) -> bool:
        """Sync slash commands only when their definition changed: syncing is rate limited."""
        guild: discord.Object | None = None
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
        key = f"commands:{self.application_id}:{guild.id if guild else 'global'}"
        fingerprint = self.command_fingerprint(guild)
        if await self.db.get_meta(key) == fingerprint:
            log.info("Slash commands unchanged; not syncing")
            return False
        synced = await self.tree.sync(guild=guild)
        await self.db.set_meta(key, fingerprint)
        log.info(
            "Synced %d slash command(s) %s", len(synced), f"to guild {guild.id}" if guild else "globally"
        )
        return True

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("Logged in as %s (%s) in %d guild(s)", self.user, self.user.id, len(self.guilds))

    async def on_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Last resort: the user always hears back, and never sees a traceback (bot/errors.py)."""
        await errors.on_app_command_error(interaction, error)
