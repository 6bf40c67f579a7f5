"""What every part of the engine shares: its dependencies, the limits, and the Discord helpers for
posting with a nonce and finding our own earlier posts."""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import discord

from bot.engine._surface import InteractionStatus, Tokens
from bot.fetch import OutputFetcher
from bot.i18n import N_, tr
from bot.ratelimit import deadline
from bot.runcomfy import CancelResult, GenerationParams, JobResult, JobStatus, Submission
from bot.settings import Settings
from storage.jobs import Job, JobRepository
from storage.lifecycle import JobEvent
from storage.quota import QuotaRepository
from storage.stats import StatsRepository

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# Output videos above this are not downloaded at all (a 5 s clip is a few MB; this is a safety cap).
MAX_VIDEO_DOWNLOAD = 200 * 1024 * 1024
# Older jobs get their image URL re-signed before submit (Discord's attachment URLs expire).
IMAGE_URL_MAX_AGE = 3600.0
# A finished video that could not be posted for this long is sent by DM with a refund instead.
DELIVERY_TIMEOUT = 3600.0
ETA_MIN_SAMPLES = 3  # fewer finished jobs than this say too little to promise a time
MAX_CONTENT = 2000  # Discord's limit for a message's content
MAX_SHOWN_LINK = 4000  # longer links fit nowhere (an embed description holds 4096 characters)
# One message post may take this long, plus the upload at a pessimistic rate; discord.py itself
# would wait five minutes (aiohttp's default) before giving up on a silent Discord.
POST_TIMEOUT = 60.0
# A post whose id was never stored (its process died between posting and storing) is no live process's
# once it is this old: posting (two attempts, POST_TIMEOUT each) takes far less.
ORPHAN_AGE = 300.0
UPLOAD_RATE_FLOOR = 256 * 1024  # bytes per second
# Our earlier post is looked for, oldest first, from this long before its attempt started (clocks
# differ a little), reading at most RECONCILE_LIMIT messages per channel.
RECONCILE_MARGIN = 60.0
RECONCILE_LIMIT = 500
# A post that failed like this may still have been stored by Discord: look before sending again.
AMBIGUOUS = (discord.DiscordServerError, aiohttp.ClientError, OSError, TimeoutError)
THREAD_CLOSED = (50083, 160005)  # archived and locked thread; locked thread
# RunComfy accepted a job but the database refused to record it: retry the write with backoff for about
# this long, then log an ERROR for the operator (the pending sweep keeps retrying once a minute).
RECORD_RETRY_WINDOW = 60.0
# How often jobs stuck in `pending` are looked for while running, and how much longer than one
# RunComfy request a submit may take before a pending job nobody here is submitting is ended.
PENDING_SWEEP_INTERVAL = 60.0
PENDING_GRACE = 60.0


class VideoBackend(Protocol):
    """What the engine needs from a generator: RunComfyClient, or the local PreviewBackend."""

    async def submit(self, params: GenerationParams) -> Submission: ...
    async def status(self, request_id: str) -> JobStatus: ...
    async def result(self, request_id: str) -> JobResult: ...
    async def cancel(self, request_id: str) -> CancelResult: ...


class Unverifiable(Exception):
    """Discord could not be read (5xx, network), so whether a message of ours is there is unknown."""


def owner_id() -> str:
    """hostname-pid-random: names this process in job leases; never reused by a later start."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(slots=True)
class Context:
    """The engine's dependencies and the little state its parts share about jobs in flight here."""

    client: discord.Client
    settings: Settings
    jobs: JobRepository
    quota: QuotaRepository
    runcomfy: VideoBackend
    session: aiohttp.ClientSession
    outputs: OutputFetcher
    stats: StatsRepository
    closing: bool = False  # shutting down: no more status edits
    submitting: set[int] = field(default_factory=set)  # jobs this process is launching or submitting
    # Accepted by RunComfy, but the database refused the write: the columns still to record. The
    # request id lives here until the write lands, so a paid job is never forgotten or refunded.
    unrecorded: dict[int, dict[str, Any]] = field(default_factory=dict)
    reconciled: set[int] = field(default_factory=set)  # jobs whose earlier delivery attempt was checked
    # Who holds this process's job leases (storage migration 0008): unique per process and start.
    owner: str = field(default_factory=lambda: owner_id())
    # The interaction tokens of jobs that live in their interaction (bot/engine/_surface.py).
    tokens: Tokens = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = Tokens(self)

    def emit(self, job: Job, event: JobEvent, actor_id: int | None = None) -> None:
        """Tell listening cogs (audit log, stats, notifications) about a job event: `on_job_event`."""
        self.client.dispatch("job_event", job, event, actor_id)

    def status_message(self, job: Job) -> discord.PartialMessage:
        assert job.status_message_id is not None
        if job.in_interaction:  # the interaction's original response, through its webhook
            return InteractionStatus(self, job)
        channel_id = job.status_channel_id or job.channel_id
        channel = self.client.get_partial_messageable(channel_id, guild_id=job.guild_id)
        return channel.get_partial_message(job.status_message_id)

    def messageable(self, channel_id: int, guild_id: int) -> discord.abc.Messageable:
        """The cached channel or thread (its permissions are known), else a partial one."""
        guild = self.client.get_guild(guild_id)
        channel = guild.get_channel_or_thread(channel_id) if guild is not None else None
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    async def send_quietly(self, job: Job, channel_id: int, content: str) -> None:
        channel = self.client.get_partial_messageable(channel_id, guild_id=job.guild_id)
        try:
            await channel.send(content=content, allowed_mentions=requester_only(job))
        except discord.HTTPException as exc:
            log.info("Job %s: could not post in %s: %s", job.id, channel_id, exc)

    async def find_own(
        self, job: Job, where: int, since: float, ours: Callable[[discord.Message], bool]
    ) -> discord.Message | None:
        """The first message of ours in `where` posted after `since` (epoch seconds) that `ours` accepts.
        A channel we may not read counts as not having it; a failing Discord raises Unverifiable."""
        me = self.client.user
        if me is None:
            return None
        start = datetime.fromtimestamp(max(0.0, since - RECONCILE_MARGIN), UTC)
        channel = self.client.get_partial_messageable(where, guild_id=job.guild_id)
        try:
            async with deadline(POST_TIMEOUT):
                async for message in channel.history(limit=RECONCILE_LIMIT, after=start):
                    if message.author.id == me.id and ours(message):
                        return message
        except AMBIGUOUS as exc:
            raise Unverifiable(str(exc)) from exc
        except discord.HTTPException as exc:
            log.info("Job %s: could not read %s to reconcile: %s", job.id, where, exc)
        return None

    async def find_status(
        self, job: Job, where: int, *, besides: int | None = None, since: float | None = None
    ) -> discord.Message | None:
        """Our status message of this job in `where` (other than `besides`), posted after `since`
        (default: when the job was created), found by its buttons' custom_ids or its embed footer
        `Job #N`. Raises Unverifiable if Discord can't be read."""
        footer = re.compile(rf"#{job.id}(?!\d)")
        custom_id = re.compile(rf"^animate:(cancel|approve|reject|withdraw):{job.id}$")

        def ours(message: discord.Message) -> bool:
            if message.id == besides:
                return False
            if any(
                custom_id.match(getattr(child, "custom_id", None) or "")
                for row in message.components
                for child in getattr(row, "children", ())
            ):
                return True
            return any(footer.search(e.footer.text or "") for e in message.embeds)

        return await self.find_own(job, where, job.created_at if since is None else since, ours)


async def send(
    target: discord.abc.Messageable, *, nonce: str, size: int = 0, **fields: Any
) -> discord.Message:
    """Post a message with a deterministic nonce and a deadline. discord.py sends `enforce_nonce`
    with it, so a repeat within Discord's window returns the first message instead of a copy."""
    # Not wait_for: on Python 3.11 it runs the send in a task of its own (issue #13). And not
    # counting the wait for this process's REST share (see ratelimit.deadline).
    async with deadline(POST_TIMEOUT + size / UPLOAD_RATE_FLOOR):
        return await target.send(nonce=nonce, **fields)


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def nonce(kind: str, job: Job, epoch: int | None = None) -> str:
    """A nonce for one logical message of a job (Discord allows 25 characters): its kind, the job, the
    job's creation time (so a fresh database reusing job ids never matches an old message) and, for
    a re-post, what it replaces. The same call always gives the same nonce, also after a restart."""
    parts = [f"{kind}{_b36(job.id)}", _b36(int(job.created_at))]
    if epoch is not None:
        parts.append(_b36(epoch % 36**6))
    return ".".join(parts)[:25]


def requester_only(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])


def missing_in(channel: object, *, file: bool, locale: str | None = None) -> list[str] | None:
    """The permissions (named in `locale`) the bot lacks to post in `channel`; None if unknown."""
    permissions_for = getattr(channel, "permissions_for", None)
    guild = getattr(channel, "guild", None)
    if permissions_for is None or guild is None or guild.me is None:
        return None
    perms: discord.Permissions = permissions_for(guild.me)
    in_thread = isinstance(channel, discord.Thread)
    if not perms.view_channel:  # Discord then denies everything else as well
        return [tr(locale, N_("View Channel"))]
    can_send = perms.send_messages_in_threads if in_thread else perms.send_messages
    needed = {N_("Send Messages in Threads") if in_thread else N_("Send Messages"): can_send}
    if can_send:  # without Send Messages, Discord reports the others as missing too: name the cause
        needed[N_("Embed Links")] = perms.embed_links
        if file:
            needed[N_("Attach Files")] = perms.attach_files
    return [tr(locale, name) for name, ok in needed.items() if not ok]
