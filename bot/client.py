"""The bot: owns the HTTP session, the database, the RunComfy client and the job engine."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import errors, i18n, metrics, ui
from bot.admission import MAX_SOURCE_BYTES, Admission
from bot.engine import JobEngine, VideoBackend
from bot.fetch import OutputFetcher
from bot.media import download_capped
from bot.premium import EntitlementSink, subscription_boost
from bot.preview import PreviewBackend
from bot.ratelimit import BucketSweep, IdentifyPacer, RestRateLimiter, SharedBuckets
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from bot.ui import ButtonHandler, CancelButton, DecisionButton, ResultButton
from storage.store import Store

if TYPE_CHECKING:
    from bot.admission import ImageSource
    from storage.db import Database
    from storage.jobs import JobRepository
    from storage.quota import QuotaRepository
    from storage.spec import GenerationSpec

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
    "cogs.premium",
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


class RequestStarter(Protocol):
    """cogs/animate.py's `Animate.start`: admit, launch and answer one request (used by cogs/remix.py)."""

    async def start(
        self,
        interaction: discord.Interaction[Any],
        spec: GenerationSpec,
        source: ImageSource,
        channel: Any = None,
        *,
        origin: str | None = None,
        spoiler: bool = False,
    ) -> None: ...


class AnimateBot(commands.AutoShardedBot):
    # Set in setup_hook, which discord.py runs after login and before the gateway connects.
    session: aiohttp.ClientSession
    outputs: OutputFetcher
    store: Store  # every repository, built once by open_storage
    runcomfy: VideoBackend
    preview: PreviewBackend | None = None
    engine: JobEngine
    admission: Admission
    # Typed accessors for cross-cog calls, set by each cog while it is loaded.
    # The cogs other parts reach, set by each cog while it is loaded. Typed by what is used of them,
    # so the client never imports a cog (no import cycle, not even for the type checker).
    animate: RequestStarter | None = None
    remix: ButtonHandler | None = None
    approval: ButtonHandler | None = None
    premium: EntitlementSink | None = None  # set only while credits are sold (PREMIUM_SKUS)

    def __init__(self, settings: Settings, **options: Any) -> None:
        # The bot never joins voice; skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        # Slash commands and buttons arrive as interactions whatever the intents; the guild cache is
        # all we need. No privileged intents.
        intents = discord.Intents.none()
        intents.guilds = True
        # Sees every Discord HTTP answer, so 429s are counted even when discord.py retries them.
        trace = options.setdefault("http_trace", metrics.discord_http_trace())
        # ... and holds every API request to this process's share of the global rate limit.
        self.rest_limiter = RestRateLimiter(settings.discord_rest_rate)
        self.rest_limiter.attach(trace)
        self.identify_pacer = IdentifyPacer(self._max_concurrency)
        if settings.locales_dir is not None:
            i18n.add_catalogs(settings.locales_dir)
        if settings.shard_ids is not None:
            options["shard_ids"] = list(settings.shard_ids)
        # Unset SHARD_COUNT: discord.py asks GET /gateway/bot for Discord's recommended count and runs
        # every shard here (one shard for most servers' bots: today's one-process behaviour).
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=ui.NO_MENTIONS,
            help_command=None,
            shard_count=settings.shard_count,
            **options,
        )
        self.settings = settings
        self.bucket_sweep = BucketSweep.install(self.http)  # thousands of threads: see BucketSweep
        self.shared_buckets = SharedBuckets.install(self.http)  # one limiter per Discord bucket
        self._setup_begun = False
        self.tree.error(self.on_app_command_error)

    async def open_storage(self) -> None:
        """Open and migrate the database. `python -m bot` does this before logging in, so a bad
        DATABASE_PATH fails at once; otherwise setup_hook does it."""
        self.store = await Store.open(self.settings.database_path, self.settings.database_dsn)

    # Read-only shortcuts onto the store (many tests reach them): still one object graph.
    @property
    def db(self) -> Database:
        return self.store.db

    @property
    def jobs(self) -> JobRepository:
        return self.store.jobs

    @property
    def quota(self) -> QuotaRepository:
        return self.store.quota

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
                async with asyncio.timeout(wait):  # not wait_for: see JobEngine._run
                    await stop.wait()
            if stop.is_set() or self.is_closed():
                return False
            delay = min(LOGIN_RETRY_CAP, delay * 2)

    async def setup_hook(self) -> None:
        user_agent = "animate-bot (+https://github.com/; discord image-to-video)"
        self._setup_begun = True
        if not hasattr(self, "store"):
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
            jobs=self.store.jobs,
            quota=self.store.quota,
            stats=self.store.stats,
            runcomfy=self.runcomfy,
            session=self.session,
            outputs=self.outputs,
        )
        self.admission = Admission(
            settings=self.settings,
            guilds=self.store.guilds,
            jobs=self.store.jobs,
            quota=self.store.quota,
            download=self.download_source,
            accepting=lambda: self.engine.accepting,
            abandon=self.engine.abandon,
            boost=subscription_boost(self.settings, self.store.premium),
            lease=self.engine.lease_columns,
        )
        # Every job button is registered for the bot's life; a click finds its handling cog through a
        # typed attribute (bot.remix, bot.approval) and says so if that cog is not loaded.
        self.add_dynamic_items(CancelButton, ResultButton, DecisionButton)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # Descriptions, choice names and the context-menu name get their translations at sync.
        await self.tree.set_translator(i18n.CatalogTranslator())
        if self.syncs_commands:
            await self.sync_commands_if_changed()
        else:
            log.info("Slash commands are synced by the process running shard 0; not syncing here")
        await self.engine.start()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self.identify_pacer.wait(shard_id)

    async def _max_concurrency(self) -> int:
        # Only a process running several shards needs it; spare the others a request.
        count = self.shard_count or 1
        if len(self.shard_ids or range(count)) <= 1:
            return 1
        limits = await self.fetch_session_start_limits()
        log.info(
            "Gateway: %d shard(s) here of %d, max_concurrency %d, %d of %d IDENTIFYs left today",
            len(self.shard_ids or range(count)),
            count,
            limits.max_concurrency,
            limits.remaining,
            limits.total,
        )
        return limits.max_concurrency

    @property
    def syncs_commands(self) -> bool:
        """Only the process running shard 0 syncs (all of them, unsharded): one fleet, one definition.
        The fingerprint check in the database would make repeats harmless, but with a database per
        process (or during a rolling restart) several processes would each sync the same commands."""
        return self.settings.shard_ids is None or 0 in self.settings.shard_ids

    async def download_source(self, url: str) -> bytes:
        """A member's source image (an attachment URL), capped in size and time."""
        return await download_capped(self.session, url, max_bytes=MAX_SOURCE_BYTES, timeout=60)

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
        if hasattr(self, "store"):
            await self.store.close()

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
        # With shards, discord.py sends this once all of this process's shards are ready.
        assert self.user is not None
        log.info(
            "Logged in as %s (%s) in %d guild(s) on shard(s) %s of %s",
            self.user,
            self.user.id,
            len(self.guilds),
            ",".join(str(i) for i in sorted(self.shards)),
            self.shard_count,
        )

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("Shard %d ready", shard_id)

    async def on_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Last resort: the user always hears back, and never sees a traceback (bot/errors.py)."""
        await errors.on_app_command_error(interaction, error)
