"""/animate: check the request, normalise the image, reserve credits, hand the job to the engine."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy, ui
from bot.media import MediaError, download_capped, normalize_image
from storage.guilds import guild_repository
from storage.jobs import JobState, NewJob
from storage.quota import LimitExceeded

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
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff", "image/heic")


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

    @classmethod
    def from_attachment(cls, attachment: discord.Attachment) -> ImageSource:
        return cls(attachment.url, attachment.filename, attachment.content_type, attachment.size)


def missing_permissions(perms: discord.Permissions, *, in_thread: bool) -> list[str]:
    needed = {
        "Send Messages": perms.send_messages_in_threads if in_thread else perms.send_messages,
        "Embed Links": perms.embed_links,
        "Attach Files": perms.attach_files,
        "View Channel": perms.view_channel,
    }
    if not in_thread:
        needed["Create Public Threads"] = perms.create_public_threads
        needed["Send Messages in Threads"] = perms.send_messages_in_threads
    return [name for name, ok in needed.items() if not ok]


class Animate(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    def cost_of(self, resolution: str) -> int:
        """The bot-wide price (a guild's own prices come from policy.cost_of)."""
        settings = self.bot.settings
        return settings.cost_1080p if resolution == "1080P" else settings.cost_480p

    @app_commands.command(name="animate", description="Turn an image into a 5-second video with Wan 2.2")
    @app_commands.guild_only()
    @app_commands.describe(
        image="The still image to animate (JPEG, PNG, WebP or BMP)",
        prompt="What should happen in the video",
        negative_prompt="What the video should avoid",
        resolution="Output resolution (1080P costs more credits)",
        template="An effect template, e.g. squish, flying, carousel",
        seed="A fixed seed for reproducible results",
        prompt_extend="Let the model enrich your prompt (default: on)",
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
    ) -> None:
        """Check, normalise, charge and launch one request; the interaction is already deferred
        (ephemeral) and gets the answer. `channel` defaults to the interaction's channel."""
        prompt, negative_prompt, template = request.prompt, request.negative_prompt, request.template
        resolution = request.resolution

        async def reply(text: str) -> None:
            await interaction.edit_original_response(content=text, allowed_mentions=ui.NO_MENTIONS)

        if not self.bot.engine.accepting:
            await reply("The bot is restarting — please try again in a minute. Nothing was charged.")
            return
        assert interaction.guild_id is not None
        target = channel if channel is not None else interaction.channel
        if not isinstance(target, POSTABLE):
            await reply("I can't post in this kind of channel. Use /animate in a text channel.")
            return
        channel = target
        in_thread = isinstance(channel, discord.Thread) or channel.type in THREAD_TYPES
        guilds = guild_repository(self.bot.db)
        config = await guilds.get(interaction.guild_id)
        user = interaction.user

        ban = await guilds.get_ban(interaction.guild_id, user.id)
        if ban is not None:
            why = f" ({ui.clip(ban.reason, 200)})" if ban.reason else ""
            await reply(f"A server admin has blocked you from using /animate here{why}.")
            return
        problem = policy.channel_problem(
            config,
            channel_id=channel.id,
            parent_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
            nsfw=bool(getattr(channel, "is_nsfw", lambda: False)()),
        ) or self.check_request(prompt, negative_prompt, source)
        if problem:
            await reply(problem)
            return
        missing = missing_permissions(interaction.app_permissions, in_thread=in_thread)
        if missing:
            await reply(
                "I can't run jobs in this channel because I'm missing these permissions here: "
                + ", ".join(missing)
                + ". Ask a server admin to grant them, or use another channel."
            )
            return
        blocklist = policy.compiled_blocklist(config.blocklist)
        hit = await asyncio.to_thread(blocklist.check, f"{prompt}\n{template or ''}")
        if hit is not None:
            self.bot.dispatch(
                "animate_audit",
                interaction.guild_id,
                user.id,
                "Prompt blocked",
                f"<@{user.id}> in <#{channel.id}>: "
                + (f"matched `{ui.clip(hit.matched, 80)}`" if hit.entry else "the blocklist check timed out"),
            )
            await reply(policy.describe_block(hit))
            return

        try:
            raw = await download_capped(self.bot.session, source.url, max_bytes=MAX_SOURCE_BYTES, timeout=60)
            normalised = await asyncio.to_thread(normalize_image, raw)
        except MediaError as exc:
            await reply(exc.user_message)
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
        )
        try:
            job_id, standing = await self.bot.quota.reserve_job(
                new, policy.limits_for(config, allowance), await_approval=config.approval_required
            )
        except LimitExceeded as exc:
            await reply(policy.describe_limit(exc, resolution))
            return

        job = await self.bot.jobs.get(job_id)
        assert job is not None
        if normalised.adjusted:
            job.image_note = "Adjusted for the model: " + "; ".join(normalised.changes)
            await self.bot.jobs.update(job.id, image_note=job.image_note)
        if config.approval_required:
            await reply(await self.request_approval(job, normalised, channel))
            return
        try:
            result = await self.bot.engine.launch(job, normalised, channel, make_thread=not in_thread)
        except BaseException:
            await self.bot.engine.abandon(job_id, "An internal error stopped this job before it started.")
            raise
        text = result.message
        if result.ok:
            left = standing.remaining
            if left is None:
                text += " Your credits are unlimited."
            else:
                text += (
                    f" {left} credit{'s' if left != 1 else ''} left {policy.period_word(standing.period)}."
                )
            if normalised.adjusted:
                text += "\nI adjusted your image to fit the model: " + "; ".join(normalised.changes) + "."
        await reply(text)

    async def request_approval(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> str:
        """Approval mode: post the status message with Approve / Reject; nothing is charged or submitted."""
        try:
            failure = await self.bot.engine.post_status(job, image, channel)
        except BaseException:
            await self._end_unapproved(job, "An internal error stopped this request.")
            raise
        if failure is not None:
            await self._end_unapproved(job, failure.message)
            return failure.message
        self.bot.dispatch("job_event", job, "requested", job.user_id)
        link = f"https://discord.com/channels/{job.guild_id}/{job.channel_id}/{job.status_message_id}"
        return (
            f"Your request is waiting for a moderator's approval: {link}\n"
            f"Nothing is charged unless it is approved; it will cost {job.cost} "
            f"credit{'s' if job.cost != 1 else ''}."
        )

    async def _end_unapproved(self, job: Job, reason: str) -> None:
        ended = await self.bot.quota.end_job(
            job.id, JobState.FAILED, expect=(JobState.AWAITING_APPROVAL,), refund=False, error=reason
        )
        if ended and job.status_message_id is not None:
            fresh = await self.bot.jobs.get(job.id)
            if fresh is not None:
                await self.bot.engine.present(fresh, force=True)

    @staticmethod
    def check_request(prompt: str, negative_prompt: str | None, image: ImageSource) -> str | None:
        """A friendly sentence for input we can reject before downloading anything."""
        if not prompt.strip():
            return "Please describe what should happen in the video (the prompt is empty)."
        if len(prompt) > PROMPT_MAX:
            return f"Your prompt is {len(prompt)} characters; the model accepts at most {PROMPT_MAX}."
        if negative_prompt is not None and len(negative_prompt) > NEGATIVE_MAX:
            return (
                f"Your negative prompt is {len(negative_prompt)} characters; "
                f"the model accepts at most {NEGATIVE_MAX}."
            )
        content_type = (image.content_type or "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith("image/"):
            return (
                f"`{ui.clip(image.filename, 80)}` isn't an image ({content_type}). "
                "Attach a JPEG, PNG, WebP or BMP picture."
            )
        if image.size > MAX_SOURCE_BYTES:
            return (
                f"That image is {image.size / 1_048_576:.1f} MB; please attach one under "
                f"{MAX_SOURCE_BYTES // 1_048_576} MB."
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


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Animate(bot))
