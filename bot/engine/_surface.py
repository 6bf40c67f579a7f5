"""Where a job lives: a channel message (a server that added the bot) or its interaction.

A user-installed /animate runs where the bot may not be a member -- a DM, a group DM, a server that did
not add it. There the only way to answer is the interaction itself: the status is the interaction's
original response (edited through `PATCH /webhooks/{app}/{token}/messages/...`), the video a
follow-up, and once the 15-minute token is gone (expired, or Discord answers 401/50027 or
404/10015) a DM to the requester. `place_of` decides which, once per request; the rest of the engine
speaks to either through the same objects it always used (a Messageable to post the status, a
PartialMessage to edit and fetch it, a list of delivery targets), so the channel path is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import discord

from bot import ui
from bot.i18n import tr
from bot.quota_rules import USER_INSTALL_SCOPE
from storage.jobs import InteractionSurface, Job, JobRepository, JobState

log = logging.getLogger(__name__)

# Discord's interaction contexts and integration types (application command payloads).
GUILD_CONTEXT, BOT_DM_CONTEXT, PRIVATE_CHANNEL_CONTEXT = 0, 1, 2
GUILD_INSTALL, USER_INSTALL = 0, 1
# An interaction token lives 15 minutes; stop using it a little early (clocks differ, requests take time).
TOKEN_LIFETIME = 15 * 60.0
TOKEN_MARGIN = 30.0
# What Discord answers for a token that is no longer valid: 401 Invalid Webhook Token, 404 Unknown Webhook.
TOKEN_GONE_CODES = frozenset({50027, 10015})
DM_TIMEOUT = 60.0  # opening the DM and posting one message
PRUNE_INTERVAL = 60.0  # how often expired tokens are dropped from memory


class Context(Protocol):
    """What this module needs of the engine's context (bot/engine/_common.py), which builds on it."""

    client: discord.Client
    jobs: JobRepository
    tokens: Tokens


@dataclass(frozen=True, slots=True)
class Place:
    """Where a request runs, decided once (`place_of`): whether the job lives in the interaction, and
    whose rules and quota apply -- a server's (`scope` = its id) or the requester's user-install
    allowance shared by every DM, group DM and server that did not add the bot (USER_INSTALL_SCOPE)."""

    in_interaction: bool
    scope: int
    context: int | None = None

    @property
    def server_rules(self) -> bool:
        """An admin's server rules (bans, channels, roles, blocklist, quota) apply."""
        return self.scope != USER_INSTALL_SCOPE


def place_of(
    guild_id: int | None, owners: Mapping[int, int], *, bot_in_guild: bool, context: int | None
) -> Place:
    """The channel path only where the server installed the app and the bot is a member (today's
    behaviour); otherwise the interaction. A server that installed it keeps its rules and quota on
    either path; everywhere else the user-install scope applies."""
    guild_installed = guild_id is not None and owners.get(GUILD_INSTALL) == guild_id
    if guild_id is not None and guild_installed and bot_in_guild:
        return Place(False, guild_id, context)
    if guild_id is not None and (guild_installed or bot_in_guild):
        return Place(True, guild_id, context)
    return Place(True, USER_INSTALL_SCOPE, context)


def place_of_interaction(interaction: discord.Interaction[Any]) -> Place:
    """`place_of` for a live interaction. `interaction.guild` is a stub where the bot is no member,
    so membership is read from the client's own guild cache."""
    gid = interaction.guild_id
    # discord.py exposes the owners only through this: whether the server's own install authorised it.
    owners = {GUILD_INSTALL: gid} if gid is not None and interaction.is_guild_integration() else {}
    member = gid is not None and interaction.client.get_guild(gid) is not None
    return place_of(gid, owners, bot_in_guild=member, context=_context_of(interaction))


def _context_of(interaction: discord.Interaction[Any]) -> int | None:
    ctx = interaction.context
    if ctx.guild:
        return GUILD_CONTEXT
    if ctx.dm_channel:
        return BOT_DM_CONTEXT
    if ctx.private_channel:
        return PRIVATE_CHANNEL_CONTEXT
    return None


def surface_of(interaction: discord.Interaction[Any], place: Place) -> InteractionSurface:
    """What the job stores to keep answering through this interaction (also from another process)."""
    return InteractionSurface(
        app_id=interaction.application_id,
        token=interaction.token,
        expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME,
        context=place.context,
    )


class TokenGone(discord.HTTPException):
    """The interaction token cannot be used any more: the job's status cannot be edited, and its
    video goes by DM."""

    def __init__(self) -> None:
        Exception.__init__(self, "the interaction token expired or was rejected")
        self.status = 401
        self.code = 50027
        self.text = "Invalid Webhook Token"


class ResponseGone(discord.HTTPException):
    """The original response was deleted (or dismissed): unlike a channel's status message it is not
    re-posted -- the bot may not post where it lives -- so it is reported as a plain refusal."""

    def __init__(self, cause: discord.HTTPException) -> None:
        Exception.__init__(self, str(cause))
        self.status, self.code, self.text = cause.status, cause.code, cause.text


def token_gone(exc: discord.HTTPException) -> bool:
    return isinstance(exc, TokenGone) or (exc.status in (401, 404) and exc.code in TOKEN_GONE_CODES)


class Tokens:
    """The live interaction tokens of this process's jobs. The row holds the token until the job ends
    (the same write clears it); an ending's last status edit comes after that write, so the token seen
    last is kept here until that edit, then dropped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._live: dict[int, InteractionSurface] = {}
        # Rejected (job id -> when the token would have expired): a row read before that must not
        # bring it back; past that time no row can.
        self._dead: dict[int, float] = {}
        self._pruned = time.time()

    def of(self, job: Job) -> InteractionSurface | None:
        """The job's usable token, or None once it expired or Discord rejected it."""
        self._prune()
        if job.id in self._dead:
            return None
        if job.interaction_token and job.interaction_app_id and job.interaction_expires_at:
            self._live[job.id] = InteractionSurface(
                job.interaction_app_id,
                job.interaction_token,
                job.interaction_expires_at,
                job.interaction_context,
            )
        surface = self._live.get(job.id)
        if surface is None or time.time() >= surface.expires_at - TOKEN_MARGIN:
            return None
        return surface

    def forget(self, job_id: int) -> None:
        self._live.pop(job_id, None)
        self._dead.pop(job_id, None)

    def _prune(self) -> None:
        """Drop expired tokens now and then: a job that ended without a last edit here (in another
        process, or with nothing left to edit) would otherwise stay for the process's life."""
        now = time.time()
        if now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        for job_id in [j for j, s in self._live.items() if s.expires_at <= now]:
            del self._live[job_id]
        for job_id in [j for j, expires in self._dead.items() if expires <= now]:
            del self._dead[job_id]

    async def gone(self, job: Job, exc: BaseException) -> None:
        """Discord rejected the token: never use it again (here, or in any process)."""
        if self._live.pop(job.id, None) is not None:
            log.info(
                "Job %s: the interaction token is no longer valid (%s); the rest goes by DM", job.id, exc
            )
        self._dead[job.id] = job.interaction_expires_at or time.time() + TOKEN_LIFETIME
        job.interaction_token = None
        await self.ctx.jobs.update(job.id, interaction_token=None)

    def webhook(self, job: Job) -> discord.Webhook:
        surface = self.of(job)
        if surface is None:
            raise TokenGone()
        # Built on the client's session: the process's REST share (bot/ratelimit.py) counts it.
        return discord.Webhook.partial(surface.app_id, surface.token, client=self.ctx.client)


class OriginalResponse(discord.abc.Messageable):
    """Posting the status message of a job that lives in the interaction: an edit of the deferred
    original response, with the image attached (its CDN URL becomes `img_url`). An edit is idempotent,
    so a repeat after a lost answer cannot make a second status message."""

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self.interaction = interaction

    async def _get_channel(self) -> discord.abc.MessageableChannel:  # pragma: no cover - never sends itself
        raise NotImplementedError

    async def send(self, *args: Any, **fields: Any) -> discord.Message:
        fields.pop("nonce", None)  # an edit needs none
        file = fields.pop("file", None)
        if file is not None:
            fields["attachments"] = [file]
        return await self.interaction.edit_original_response(**fields)


class InteractionStatus(discord.PartialMessage):
    """The status message of a job that lives in the interaction, as the presenter and the launcher
    use a status message: edited and fetched through the interaction webhook while the token lives."""

    def __init__(self, ctx: Context, job: Job) -> None:
        assert job.status_message_id is not None
        super().__init__(channel=ctx.client.get_partial_messageable(job.channel_id), id=job.status_message_id)
        self._ctx = ctx
        self._job = job

    async def edit(self, *args: Any, **fields: Any) -> discord.Message:
        job, tokens = self._job, self._ctx.tokens
        try:
            return await tokens.webhook(job).edit_message(self.id, **fields)
        except discord.HTTPException as exc:
            if isinstance(exc, discord.NotFound) and exc.code == 10008:
                raise ResponseGone(exc) from exc
            if not token_gone(exc):
                raise
            if not isinstance(exc, TokenGone):
                await tokens.gone(job, exc)
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                # The status can't show how it ended any more: the requester hears it by DM.
                return await self._dm_ending()
            raise TokenGone() from exc
        finally:
            if job.state.finished:
                tokens.forget(job.id)  # the last edit a job gets

    async def _dm_ending(self) -> discord.Message:
        job = self._job
        text = tr(job.locale, "Your /animate job #{id}: {state}", id=job.id, state=ui.state_line(job))
        try:
            async with asyncio.timeout(DM_TIMEOUT):
                channel = self._ctx.client.get_partial_messageable(await dm_channel_id(self._ctx, job))
                return await channel.send(
                    content=ui.clip(text, 2000),
                    nonce=f"e{job.id}.{int(job.created_at)}"[:25],  # one DM per ending, also if repeated
                    allowed_mentions=ui.NO_MENTIONS,
                )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("Job %s: could not DM the requester how it ended: %r", job.id, exc)
            raise TokenGone() from exc

    async def fetch(self) -> discord.Message:
        try:
            return await self._ctx.tokens.webhook(self._job).fetch_message(self.id)
        except discord.HTTPException as exc:
            if token_gone(exc):
                await self._ctx.tokens.gone(self._job, exc)
                raise TokenGone() from exc
            raise


class FollowUp(discord.abc.Messageable):
    """Posting a job's video as a follow-up of its interaction (public, like a server delivery).

    A webhook post takes no nonce and a follow-up cannot be searched for, so a post whose answer was
    lost could not be told from one never made. The video therefore never goes in a post: a small
    placeholder follow-up is posted once (its id stored as the job's delivery message), and the video
    is attached by editing it -- an edit is idempotent, so a repeat after a lost answer is no second
    copy. A placeholder whose own answer was lost is replaced by another (text only, no video)."""

    def __init__(self, ctx: Context, job: Job) -> None:
        self._ctx = ctx
        self._job = job

    async def _get_channel(self) -> discord.abc.MessageableChannel:  # pragma: no cover - never sends itself
        raise NotImplementedError

    async def send(self, *args: Any, **fields: Any) -> discord.Message:
        fields.pop("nonce", None)  # webhooks take none: the placeholder's id stands in for one
        file = fields.pop("file", None)
        fields["attachments"] = [] if file is None else [file]
        tokens = self._ctx.tokens
        try:
            webhook = tokens.webhook(self._job)
            retried = False
            while True:
                message_id = await self._placeholder(webhook)
                try:
                    return await webhook.edit_message(message_id, **fields)
                except discord.NotFound as exc:
                    if exc.code != 10008 or retried:
                        raise
                    # Deleted before the video reached it: nothing of it is left, so a new one.
                    self._job.delivery_message_id, retried = None, True
        except discord.HTTPException as exc:
            if token_gone(exc):
                await tokens.gone(self._job, exc)
                raise TokenGone() from exc
            raise

    async def _placeholder(self, webhook: discord.Webhook) -> int:
        job = self._job
        if job.delivery_message_id is not None:
            return job.delivery_message_id
        posted = await webhook.send(
            content=tr(job.locale, "⏳ Posting your video…"), wait=True, allowed_mentions=ui.NO_MENTIONS
        )
        job.delivery_message_id = posted.id
        await self._ctx.jobs.update(job.id, delivery_message_id=posted.id)
        return posted.id


async def dm_channel_id(ctx: Context, job: Job) -> int:
    """The requester's DM channel with the bot (`POST /users/@me/channels`); in context 1 it is the
    interaction's own channel. Bounded by DM_TIMEOUT (a TimeoutError, like Discord failing, means
    "not now")."""
    if job.interaction_context == BOT_DM_CONTEXT:
        return job.channel_id
    async with asyncio.timeout(DM_TIMEOUT):
        user = ctx.client.get_user(job.user_id) or await ctx.client.fetch_user(job.user_id)
        channel = user.dm_channel or await user.create_dm()
    return channel.id


class DirectMessage(discord.abc.Messageable):
    """The requester's DM as a delivery target, opened only when something is sent there: the
    follow-up before it must not wait on (or fail with) the DM lookup while its token runs out.
    A lookup that fails or hangs raises what a lost post raises, so the delivery is retried later."""

    def __init__(self, ctx: Context, job: Job) -> None:
        self._ctx = ctx
        self._job = job
        self.channel_id: int | None = None  # known once something was sent

    async def _get_channel(self) -> discord.abc.MessageableChannel:  # pragma: no cover - never sends itself
        raise NotImplementedError

    async def send(self, *args: Any, **fields: Any) -> discord.Message:
        self.channel_id = await dm_channel_id(self._ctx, self._job)
        return await self._ctx.client.get_partial_messageable(self.channel_id).send(*args, **fields)


def delivered_in(target: discord.abc.Messageable, target_id: int) -> int:
    """The channel a delivery to `target` (listed as `target_id`) went to."""
    if isinstance(target, DirectMessage) and target.channel_id is not None:
        return target.channel_id
    return target_id


def delivery_targets(ctx: Context, job: Job) -> list[tuple[int, discord.abc.Messageable]]:
    """Where a job that lives in the interaction delivers, in order: the follow-up while the token
    lives, then the requester's DM (a message with a nonce, so a repeat is no second copy), looked
    up only if it comes to that (listed as 0 until then, outside the bot's DM)."""
    targets: list[tuple[int, discord.abc.Messageable]] = []
    if ctx.tokens.of(job) is not None:
        targets.append((job.channel_id, FollowUp(ctx, job)))
    if job.interaction_context == BOT_DM_CONTEXT:
        targets.append((job.channel_id, ctx.client.get_partial_messageable(job.channel_id)))
    else:
        targets.append((0, DirectMessage(ctx, job)))
    return targets
