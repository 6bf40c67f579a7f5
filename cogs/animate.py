"""/animate: check the request, normalise the image, reserve credits, hand the job to the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import policy, ui
from bot.i18n import N_, Msg, render, tr, trn
from bot.media import MediaError, download_capped, normalize_image
from storage.guilds import guild_repository
from storage.jobs import JobState, NewJob
from storage.quota import AlreadyStarted, LimitExceeded, Limits

if TYPE_CHECKING:
    from bot.client import AnimateBot
    from bot.media import NormalizedImage
    from storage.jobs import Job

log = logging.getLogger(__name__)

TEMPLATES = ("squish", "flying", "carousel", "rotation", "poke", "inflate", "dissolve")
PROMPT_MAX = 800
NEGATIVE_MAX = 500
# Larger uploads are refused before download; the API itself recommends images of at most 50 MB.
MAX_SOURCE_BYTES = 50 * 1024 * 1024
# Images smaller than this on a side are refused (bot.media.normalize_image's `min_side`); Discord
# declares an image's size with the attachment, so this is checked before downloading too.
MIN_SIDE = 360
# Source images downloaded at once, bot-wide (each may be up to MAX_SOURCE_BYTES in memory).
DOWNLOADS_AT_ONCE = 3
# A member's second request waits this long for their first to be downloaded and charged.
MEMBER_WAIT = 30.0


# Channels a job can live in (a forum post is a Thread; DMs are excluded by guild_only).
PostableChannel = (
    discord.TextChannel
    | discord.Thread
    | discord.VoiceChannel
    | discord.StageChannel
    | discord.PartialMessageable
)
POSTABLE = (
    discord.TextChannel,
    discord.Thread,
    discord.VoiceChannel,
    discord.StageChannel,
    discord.PartialMessageable,
)
THREAD_TYPES = (
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
)


@dataclass(frozen=True, slots=True)
class AnimateRequest:
    """What the user asked for, however they asked (slash command, button, modal, context menu)."""

    prompt: str
    negative_prompt: str | None = None
    resolution: str = "480P"
    template: str | None = None
    seed: int | None = None
    prompt_extend: bool = True


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where the still image comes from: an attachment (URLs are signed and expire, so use it soon)."""

    url: str
    filename: str
    content_type: str | None
    size: int
    width: int | None = None  # as Discord declares it (images only); untrusted, the decode re-checks
    height: int | None = None

    @classmethod
    def from_attachment(cls, attachment: discord.Attachment) -> ImageSource:
        return cls(
            attachment.url,
            attachment.filename,
            attachment.content_type,
            attachment.size,
            attachment.width,
            attachment.height,
        )


def missing_permissions(perms: discord.Permissions, *, in_thread: bool) -> list[str]:
    """The names (English, as in Discord's English client; translate with `tr`) of what the bot lacks."""
    needed = {
        N_("Send Messages"): perms.send_messages_in_threads if in_thread else perms.send_messages,
        N_("Embed Links"): perms.embed_links,
        N_("Attach Files"): perms.attach_files,
        N_("View Channel"): perms.view_channel,
    }
    if not in_thread:
        needed[N_("Create Public Threads")] = perms.create_public_threads
        needed[N_("Send Messages in Threads")] = perms.send_messages_in_threads
    return [name for name, ok in needed.items() if not ok]


@dataclass(slots=True)
class MemberSlot:
    acquired: bool  # False: the member's earlier request did not finish in time
    waited: bool  # True: another request of theirs went first (it may have spent the credits)


class DownloadGate:
    """Bounds the expensive part of a request -- download, decode, charge: a few at once bot-wide
    (`downloads`), and one at a time per member, so one member's burst cannot crowd out everyone."""

    def __init__(self, downloads: int) -> None:
        self.downloads = asyncio.Semaphore(downloads)
        self._members: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, requests holding or waiting

    @asynccontextmanager
    async def member(self, user_id: int, wait: float) -> AsyncIterator[MemberSlot]:
        lock, users = self._members.get(user_id, (asyncio.Lock(), 0))
        self._members[user_id] = (lock, users + 1)
        slot = MemberSlot(acquired=False, waited=lock.locked())
        try:
            try:
                async with asyncio.timeout(wait):
                    await lock.acquire()
                slot.acquired = True
            except TimeoutError:
                pass
            yield slot
        finally:
            if slot.acquired:
                lock.release()
            lock, users = self._members[user_id]
            if users <= 1:
                del self._members[user_id]
            else:
                self._members[user_id] = (lock, users - 1)


class Animate(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        self.decoders = asyncio.Semaphore(4)
        self.gate = DownloadGate(DOWNLOADS_AT_ONCE)

    @app_commands.command(name="animate", description=_l("Turn an image into a 5-second video with Wan 2.2"))
    @app_commands.guild_only()
    @app_commands.describe(
        image=_l("The still image to animate (JPEG, PNG, WebP or BMP)"),
        prompt=_l("What should happen in the video"),
        negative_prompt=_l("What the video should avoid"),
        resolution=_l("Output resolution (1080P costs more credits)"),
        template=_l("An effect template, e.g. squish, flying, carousel"),
        seed=_l("A fixed seed for reproducible results"),
        prompt_extend=_l("Let the model enrich your prompt (default: on)"),
    )
    async def animate(
        self,
        interaction: discord.Interaction[AnimateBot],
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        negative_prompt: app_commands.Range[str, 1, NEGATIVE_MAX] | None = None,
        resolution: Literal["480P", "1080P"] = "480P",
        template: app_commands.Range[str, 1, 100] | None = None,
        seed: app_commands.Range[int, 0, 2_147_483_647] | None = None,
        prompt_extend: bool = True,
    ) -> None:
        # Acknowledge first: everything below may take longer than Discord's 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        request = AnimateRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            resolution=resolution,
            template=template,
            seed=seed,
            prompt_extend=prompt_extend,
        )
        await self.start(interaction, request, ImageSource.from_attachment(image))

    async def start(
        self,
        interaction: discord.Interaction[AnimateBot],
        request: AnimateRequest,
        source: ImageSource,
        channel: PostableChannel | None = None,
        *,
        origin: str | None = None,
    ) -> None:
        """Check, normalise, charge and launch one request; the interaction is already deferred
        (ephemeral) and gets the answer. `channel` defaults to the interaction's channel.

        Everything cheap runs before the image is downloaded: bans, channel rules, the request itself
        (declared type and size too), permissions, the blocklist and a read-only check of every limit.
        `origin` names the click or form this came from: at most one unfinished job per origin."""
        prompt, negative_prompt, template = request.prompt, request.negative_prompt, request.template
        resolution = request.resolution
        # The requester reads the ephemeral answers in their own language; the job's public messages
        # are in the server's.
        loc = interaction.locale
        guild_locale = interaction.guild_locale.value if interaction.guild_locale else None

        async def reply(text: str) -> None:
            await interaction.edit_original_response(
                content=render(text, loc), allowed_mentions=ui.NO_MENTIONS
            )

        if not self.bot.engine.accepting:
            await reply(tr(loc, "The bot is restarting — please try again in a minute. Nothing was charged."))
            return
        assert interaction.guild_id is not None
        target = channel if channel is not None else interaction.channel
        if not isinstance(target, POSTABLE):
            await reply(tr(loc, "I can't post in this kind of channel. Use /animate in a text channel."))
            return
        channel = target
        in_thread = isinstance(channel, discord.Thread) or channel.type in THREAD_TYPES
        guilds = guild_repository(self.bot.db)
        config = await guilds.get(interaction.guild_id)
        user = interaction.user

        ban = await guilds.get_ban(interaction.guild_id, user.id)
        if ban is not None:
            if ban.reason:
                text = tr(
                    loc,
                    "A server admin has blocked you from using /animate here ({reason}).",
                    reason=ui.clip(ban.reason, 200),
                )
            else:
                text = tr(loc, "A server admin has blocked you from using /animate here.")
            await reply(text)
            return
        problem = (
            policy.channel_problem(
                config,
                channel_id=channel.id,
                parent_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
                nsfw=bool(getattr(channel, "is_nsfw", lambda: False)()),
            )
            or self.check_request(prompt, negative_prompt, source)
            or self.check_dimensions(source)
        )
        if problem:
            await reply(problem)
            return
        missing = missing_permissions(interaction.app_permissions, in_thread=in_thread)
        if missing:
            await reply(
                tr(
                    loc,
                    "I can't run jobs in this channel because I'm missing these permissions here: "
                    "{permissions}. Ask a server admin to grant them, or use another channel.",
                    permissions=", ".join(tr(loc, name) for name in missing),
                )
            )
            return
        # Compiling (cached) and matching admins' regexes stays off the event loop.
        blocklist = await asyncio.to_thread(policy.compiled_blocklist, config.blocklist)
        hit = await asyncio.to_thread(blocklist.check, f"{prompt}\n{template or ''}")
        if hit is not None:
            if hit.entry:
                details = tr(
                    guild_locale,
                    "<@{user}> in <#{channel}>: matched `{matched}`",
                    user=user.id,
                    channel=channel.id,
                    matched=ui.clip(hit.matched, 80),
                )
            else:
                details = tr(
                    guild_locale,
                    "<@{user}> in <#{channel}>: the blocklist check timed out",
                    user=user.id,
                    channel=channel.id,
                )
            self.bot.dispatch(
                "animate_audit",
                interaction.guild_id,
                user.id,
                tr(guild_locale, "Prompt blocked"),
                details,
                guild_locale,
            )
            await reply(policy.describe_block(hit))
            return

        settings = self.bot.settings
        cost = policy.cost_of(config, resolution, settings.cost_480p, settings.cost_1080p)
        override = await guilds.user_override(interaction.guild_id, user.id)
        allowance = policy.resolve_allowance(config, policy.role_ids(user), override, settings.daily_quota)
        new = NewJob(
            guild_id=interaction.guild_id,
            channel_id=channel.id,
            user_id=interaction.user.id,
            prompt=prompt.strip(),
            negative_prompt=negative_prompt.strip() if negative_prompt else None,
            resolution=resolution,
            template=template.strip().lower() if template else None,
            seed=request.seed,
            prompt_extend=request.prompt_extend,
            cost=cost,
            upload_limit=interaction.filesize_limit,
            locale=guild_locale,
            origin=origin,
        )
        approval = config.approval_required
        # A fast refusal before any download: a member who cannot afford the job costs ~nothing. It
        # charges nothing and decides nothing -- reserve_job re-checks in its transaction.
        refusal = await self._refusal(new, policy.limits_for(config, allowance), approval)
        if refusal is not None:
            await reply(render(refusal, loc))
            return

        async with self.gate.member(user.id, MEMBER_WAIT) as slot:
            if not slot.acquired:
                await reply(
                    tr(
                        loc,
                        "Your previous image is still being prepared. Please try again in a moment. "
                        "Nothing was charged.",
                    )
                )
                return
            if slot.waited:
                # Their request that went first may have spent the credits or started this very job.
                refusal = await self._refusal(new, policy.limits_for(config, allowance), approval)
                if refusal is not None:
                    await reply(render(refusal, loc))
                    return
            try:
                async with self.gate.downloads:
                    raw = await download_capped(
                        self.bot.session, source.url, max_bytes=MAX_SOURCE_BYTES, timeout=60
                    )
                async with self.decoders:  # a large photo takes hundreds of MB while it is decoded
                    normalised = await asyncio.to_thread(normalize_image, raw)
            except MediaError as exc:
                await reply(exc.localized(loc))
                return
            del raw
            try:
                job_id, standing = await self.bot.quota.reserve_job(
                    new, policy.limits_for(config, allowance), await_approval=approval
                )
            except (LimitExceeded, AlreadyStarted) as exc:
                await reply(render(self._describe_refusal(exc, resolution), loc))
                return

        # From here on the credits are reserved: any failure before RunComfy has the job refunds them.
        try:
            job = await self.bot.jobs.get(job_id)
            assert job is not None
            if normalised.adjusted:
                # Shown on the public status message: stored in the job's language.
                job.image_note = tr(
                    job.locale,
                    "Adjusted for the model: {changes}",
                    changes=changes_text(normalised, job.locale),
                )
                await self.bot.jobs.update(job.id, image_note=job.image_note)
            if config.approval_required:
                await reply(await self.request_approval(job, normalised, channel))
                return
            result = await self.bot.engine.launch(job, normalised, channel, make_thread=not in_thread)
        except BaseException:
            await self.bot.engine.abandon(
                job_id, Msg("An internal error stopped this job before it started.")
            )
            raise
        text = render(result.message, loc)
        if result.ok:
            left = standing.remaining
            if left is None:
                text += tr(loc, " Your credits are unlimited.")
            else:
                when = policy.period_word(standing.period)
                text += trn(loc, left, " {n} credit left {when}.", " {n} credits left {when}.", when=when)
            if normalised.adjusted:
                text += "\n" + tr(
                    loc,
                    "I adjusted your image to fit the model: {changes}.",
                    changes=changes_text(normalised, loc),
                )
        await reply(text)

    async def _refusal(self, new: NewJob, limits: Limits, approval: bool) -> str | None:
        """Why the job would be refused right now (read-only, nothing charged), or None."""
        try:
            await self.bot.quota.check_job(new, limits, await_approval=approval)
        except (LimitExceeded, AlreadyStarted) as exc:
            return self._describe_refusal(exc, new.resolution)
        return None

    @staticmethod
    def _describe_refusal(exc: LimitExceeded | AlreadyStarted, resolution: str) -> str:
        if isinstance(exc, AlreadyStarted):
            if exc.job_id is None:
                return Msg("This was already started — nothing more was charged.")
            return Msg("This was already started as job #{id} — nothing more was charged.", id=exc.job_id)
        return policy.describe_limit(exc, resolution)

    async def request_approval(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> str:
        """Approval mode: post the status message with Approve / Reject; nothing is charged or submitted."""
        try:
            failure = await self.bot.engine.post_status(job, image, channel)
        except BaseException:
            await self._end_unapproved(job, Msg("An internal error stopped this request."))
            raise
        if failure is not None:
            await self._end_unapproved(job, failure.message)
            return failure.message
        self.bot.dispatch("job_event", job, "requested", job.user_id)
        link = ui.message_link(job.guild_id, job.channel_id, job.status_message_id)
        return Msg.plural(
            job.cost,
            "Your request is waiting for a moderator's approval: {link}\n"
            "Nothing is charged unless it is approved; it will cost {n} credit.",
            "Your request is waiting for a moderator's approval: {link}\n"
            "Nothing is charged unless it is approved; it will cost {n} credits.",
            link=link,
        )

    async def _end_unapproved(self, job: Job, reason: str) -> None:
        ended = await self.bot.quota.end_job(
            job.id,
            JobState.FAILED,
            expect=(JobState.AWAITING_APPROVAL,),
            refund=False,
            error=render(reason, job.locale),
        )
        if ended and job.status_message_id is not None:
            fresh = await self.bot.jobs.get(job.id)
            if fresh is not None:
                await self.bot.engine.present(fresh, force=True)

    @staticmethod
    def check_request(prompt: str, negative_prompt: str | None, image: ImageSource) -> str | None:
        """A friendly sentence for input we can reject before downloading anything (a bot.i18n.Msg)."""
        if not prompt.strip():
            return Msg("Please describe what should happen in the video (the prompt is empty).")
        if len(prompt) > PROMPT_MAX:
            return Msg(
                "Your prompt is {length} characters; the model accepts at most {limit}.",
                length=len(prompt),
                limit=PROMPT_MAX,
            )
        if negative_prompt is not None and len(negative_prompt) > NEGATIVE_MAX:
            return Msg(
                "Your negative prompt is {length} characters; the model accepts at most {limit}.",
                length=len(negative_prompt),
                limit=NEGATIVE_MAX,
            )
        content_type = (image.content_type or "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith("image/"):
            return Msg(
                "`{filename}` isn't an image ({content_type}). Attach a JPEG, PNG, WebP or BMP picture.",
                filename=ui.clip(image.filename, 80),
                content_type=content_type,
            )
        if image.size > MAX_SOURCE_BYTES:
            return Msg(
                "That image is {size:.1f} MB; please attach one under {limit} MB.",
                size=image.size / 1_048_576,
                limit=MAX_SOURCE_BYTES // 1_048_576,
            )
        return None

    @staticmethod
    def check_dimensions(image: ImageSource) -> str | None:
        """Refuse an image Discord says is too small before downloading it (the same words as the
        decoder's refusal; a lying size is caught by the decoder anyway)."""
        if image.width is None or image.height is None or image.width <= 0 or image.height <= 0:
            return None
        if image.width < MIN_SIDE or image.height < MIN_SIDE:
            return Msg(
                "That image is too small ({width}x{height} px): it must be at least "
                "{min_side}x{min_side} px and small images aren't upscaled. Please upload a larger image.",
                width=image.width,
                height=image.height,
                min_side=MIN_SIDE,
            )
        return None

    @animate.autocomplete("template")
    async def template_autocomplete(
        self, interaction: discord.Interaction[AnimateBot], current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.strip().lower()
        names = [t for t in TEMPLATES if needle in t] if needle else list(TEMPLATES)
        choices = [app_commands.Choice(name=name, value=name) for name in names]
        if needle and needle not in TEMPLATES:
            # Free text is allowed: RunComfy may know templates we don't list.
            choices.append(
                app_commands.Choice(name=ui.clip(current.strip(), 100), value=ui.clip(current.strip(), 100))
            )
        return choices[:25]


def changes_text(image: NormalizedImage, locale: discord.Locale | str | None) -> str:
    """What normalisation changed about the image, in the reader's language."""
    return "; ".join(render(change, locale) for change in image.changes)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Animate(bot))
