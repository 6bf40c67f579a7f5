"""Remix: "Animate again", "Edit prompt" and "Details" on a finished video, and the
"Animate this image" message command. New jobs go through /animate's own checks and are charged
like any other job."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import ui
from bot.admission import NEGATIVE_MAX, PROMPT_MAX, ImageSource
from bot.errors import ReportingModal
from bot.i18n import N_, LocaleLike, tr
from cogs.animate import POSTABLE, PostableChannel
from storage.spec import GenerationSpec, Resolution

if TYPE_CHECKING:
    from bot.client import AnimateBot, RequestStarter
    from storage.jobs import Job

log = logging.getLogger(__name__)

SEED_MAX = 2_147_483_647
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".avif")
SourceLoader = Callable[[], Awaitable[ImageSource | None]]


class AnimateModal(ReportingModal):
    """Prompt and options in one form, prefilled; the image comes from `load_source` on submit. Worded in
    the language of the user who opens it (`locale`). A failure gets the common answer (bot/errors.py).

    Every opened form is one origin (`origin` + the form's own custom_id): submitting the same form
    twice at once starts one job, while a form opened again starts another."""

    CHARGES = True  # submitting starts a charged job

    def __init__(
        self,
        cog: Remix,
        *,
        title: str,
        defaults: GenerationSpec,
        load_source: SourceLoader,
        channel: PostableChannel | None,
        locale: LocaleLike = None,
        origin: str | None = None,
        spoiler: bool = False,
    ) -> None:
        super().__init__(title=tr(locale, title), timeout=15 * 60)
        self.spoiler = spoiler  # the new job's (a form has no switch for it: it follows the source)
        self.origin = f"{origin}:{self.custom_id}" if origin else None
        self.cog = cog
        self.defaults = defaults
        self.load_source = load_source
        self.channel = channel
        self.locale = locale
        self.prompt: discord.ui.TextInput[AnimateModal] = discord.ui.TextInput(
            label=tr(locale, "Prompt"),
            style=discord.TextStyle.paragraph,
            default=defaults.prompt or None,
            placeholder=tr(locale, "What should happen in the video"),
            max_length=PROMPT_MAX,
        )
        self.negative: discord.ui.TextInput[AnimateModal] = discord.ui.TextInput(
            label=tr(locale, "Negative prompt (optional)"),
            style=discord.TextStyle.paragraph,
            default=defaults.negative_prompt,
            required=False,
            max_length=NEGATIVE_MAX,
        )
        self.resolution: discord.ui.TextInput[AnimateModal] = discord.ui.TextInput(
            label=tr(locale, "Resolution: 480P or 1080P"), default=defaults.resolution.value, max_length=5
        )
        self.template: discord.ui.TextInput[AnimateModal] = discord.ui.TextInput(
            label=tr(locale, "Template (optional), e.g. squish, flying"),
            default=defaults.template,
            required=False,
            max_length=100,
        )
        self.seed: discord.ui.TextInput[AnimateModal] = discord.ui.TextInput(
            label=tr(locale, "Seed (empty = random)"),
            default=str(defaults.seed) if defaults.seed is not None else None,
            required=False,
            max_length=10,
        )
        for item in (self.prompt, self.negative, self.resolution, self.template, self.seed):
            self.add_item(item)

    def parse(self) -> GenerationSpec | str:
        """The request, or a sentence saying which field to fix (in the form's language)."""
        loc = self.locale
        resolution = self.resolution.value.strip().upper()
        if resolution not in {r.value for r in Resolution}:
            return tr(
                loc,
                "Resolution must be 480P or 1080P, not “{value}”.",
                value=ui.clip(self.resolution.value, 20),
            )
        seed: int | None = None
        if self.seed.value.strip():
            try:
                seed = int(self.seed.value.strip())
            except ValueError:
                return tr(loc, "The seed must be a whole number (or empty for a random one).")
            if not 0 <= seed <= SEED_MAX:
                return tr(loc, "The seed must be between 0 and {max}.", max=SEED_MAX)
        return GenerationSpec(
            prompt=self.prompt.value,
            negative_prompt=self.negative.value.strip() or None,
            resolution=Resolution(resolution),
            template=self.template.value.strip() or None,
            seed=seed,
            prompt_extend=self.defaults.prompt_extend,
        )

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        request = self.parse()
        if isinstance(request, str):
            await interaction.response.send_message(request, ephemeral=True, allowed_mentions=ui.NO_MENTIONS)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        source = await self.load_source()
        if source is None:
            await interaction.edit_original_response(content=tr(interaction.locale, SOURCE_GONE))
            return
        await self.cog.animate.start(
            interaction, request, source, self.channel, origin=self.origin, spoiler=self.spoiler
        )


SOURCE_GONE = N_(
    "The original image is no longer available (its message was deleted). "
    "Use /animate with the image attached instead."
)


class Remix(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        # The menu's name is what users read in the message menu: it is localised (slash command names
        # are not).
        self.menu = app_commands.ContextMenu(
            name=_l("Animate this image"),
            callback=self.animate_message,
            # Like /animate: installable by users too, and usable in DMs and private channels.
            allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=True, private_channel=True
            ),
        )

    @property
    def animate(self) -> RequestStarter:
        cog = self.bot.animate
        assert cog is not None, "cogs.animate must be loaded before cogs.remix"
        return cog

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.remix = self  # handles bot.ui.ResultButton clicks

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        if self.bot.remix is self:
            self.bot.remix = None

    # ------------------------------------------------------------------ buttons on a finished video

    async def button_refusal(
        self, interaction: discord.Interaction[Any], job: Job, action: str
    ) -> str | None:
        """Who may press a finished video's buttons: its requester or a moderator (Manage Messages)."""
        if not ui.requester_or_moderator(interaction, job):
            return tr(
                interaction.locale,
                "Only the person who made this video, or a moderator with Manage Messages, can use this.",
            )
        return None

    async def button_pressed(self, interaction: discord.Interaction[Any], job: Job, action: str) -> None:
        """A click on a finished video's button (bot.ui.ResultButton), already checked."""
        loc = interaction.locale
        if action == "details":
            await interaction.response.send_message(embed=details_embed(job, loc), ephemeral=True)
            return
        defaults = job.spec
        channel = self.job_channel(job)
        if action == "edit":
            modal = AnimateModal(
                self,
                title=N_("Edit prompt and animate again"),
                defaults=defaults,
                load_source=lambda: self.source_of(job),
                channel=channel,
                locale=loc,
                origin=f"edit:{job.id}",
                spoiler=job.spoiler,  # a remix of a spoilered video is one too
            )
            await interaction.response.send_modal(modal)
            return
        # "again": the same image and settings with a fresh seed (a fixed seed would repeat the video).
        await interaction.response.defer(ephemeral=True, thinking=True)
        source = await self.source_of(job)
        if source is None:
            await interaction.edit_original_response(content=tr(loc, SOURCE_GONE))
            return
        again = dataclasses.replace(defaults, seed=random.randint(0, SEED_MAX))
        # One job per click on this video, however often it arrives (a double click, two moderators):
        # the origin allows one unfinished job from this button at a time.
        message_id = interaction.message.id if interaction.message else 0
        origin = f"again:{job.id}:{message_id}"
        await self.animate.start(interaction, again, source, channel, origin=origin, spoiler=job.spoiler)

    def job_channel(self, job: Job) -> PostableChannel | None:
        """New jobs go to the original job's channel (the click usually comes from its thread)."""
        channel = self.bot.get_channel(job.channel_id)
        return channel if isinstance(channel, POSTABLE) else None

    async def source_of(self, job: Job) -> ImageSource | None:
        """The normalised image hosted on the job's status message, with a freshly signed URL."""
        attachment = await self.bot.engine.hosted_image(job)
        return None if attachment is None else ImageSource.from_attachment(attachment)

    # ------------------------------------------------------------------ message command

    async def animate_message(
        self, interaction: discord.Interaction[AnimateBot], message: discord.Message
    ) -> None:
        attachment = first_image(message)
        if attachment is None:
            await interaction.response.send_message(
                tr(
                    interaction.locale,
                    "That message has no image attachment. Use it on a message with a picture.",
                ),
                ephemeral=True,
            )
            return
        source = ImageSource.from_attachment(attachment)

        async def load() -> ImageSource:
            return source

        modal = AnimateModal(
            self,
            title=N_("Animate this image"),
            defaults=GenerationSpec(prompt=""),
            load_source=load,
            channel=None,
            locale=interaction.locale,
            origin=f"menu:{message.id}",
            # A picture posted as a spoiler stays one when animated (the server may force it anyway).
            spoiler=attachment.is_spoiler(),
        )
        await interaction.response.send_modal(modal)


def first_image(message: discord.Message) -> discord.Attachment | None:
    for attachment in message.attachments:
        content_type = (attachment.content_type or "").lower()
        if content_type.startswith("image/") or attachment.filename.lower().endswith(IMAGE_SUFFIXES):
            return attachment
    return None


def details_embed(job: Job, locale: LocaleLike = None) -> discord.Embed:
    """A finished job's settings, for whoever clicked Details (in their language). The image note is
    stored in the job's language."""
    loc = locale
    embed = discord.Embed(
        title=tr(loc, "Job #{id}", id=job.id),
        description=ui.clip(job.prompt, 2000),
        colour=discord.Colour.blurple(),
    )
    if job.negative_prompt:
        embed.add_field(
            name=tr(loc, "Negative prompt"), value=ui.clip(job.negative_prompt, 1000), inline=False
        )
    embed.add_field(name=tr(loc, "Resolution"), value=job.resolution)
    embed.add_field(name=tr(loc, "Template"), value=job.template or tr(loc, "none"))
    embed.add_field(
        name=tr(loc, "Seed"),
        value=str(job.seed) if job.seed is not None else tr(loc, "random (RunComfy does not report it)"),
    )
    embed.add_field(name=tr(loc, "Magic prompt"), value=ui.on_off(loc, job.prompt_extend))
    embed.add_field(name=tr(loc, "Cost"), value=ui.credits(loc, job.cost))
    embed.add_field(name=tr(loc, "Spoiler"), value=ui.on_off(loc, job.spoiler))
    embed.add_field(name=tr(loc, "Request id"), value=f"`{job.request_id or '—'}`", inline=False)
    if job.submitted_at:
        embed.add_field(name=tr(loc, "Submitted"), value=ui.ts(job.submitted_at, "f"))
    if job.submitted_at and job.finished_at:
        embed.add_field(name=tr(loc, "Took"), value=ui.duration(job.finished_at - job.submitted_at))
    if job.image_note:
        embed.add_field(name=tr(loc, "Image"), value=ui.clip(job.image_note, 1000), inline=False)
    embed.set_footer(text=ui.backend_label(loc))
    return embed


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Remix(bot))
