"""/animate: parse the command, ask bot.admission whether the request is admitted, launch and reply."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import policy, premium, ui
from bot.admission import (
    NEGATIVE_MAX,
    PROMPT_MAX,
    AdmissionRequest,
    ChannelFacts,
    ImageSource,
    Refused,
    changes_text,
    check_dimensions,
    check_request,
)
from bot.engine import OriginalResponse, Place, place_of_interaction, surface_of
from bot.i18n import LocaleLike, Msg, render, tr, trn
from storage.jobs import JobState
from storage.lifecycle import JobEvent
from storage.spec import GenerationSpec, Resolution

if TYPE_CHECKING:
    from bot.client import AnimateBot
    from bot.media import NormalizedImage
    from bot.quota_rules import Standing
    from storage.jobs import Job

log = logging.getLogger(__name__)

__all__ = [
    "NEGATIVE_MAX",
    "POSTABLE",
    "PROMPT_MAX",
    "TEMPLATES",
    "Animate",
    "ImageSource",
    "PostableChannel",
    "changes_text",
]

TEMPLATES = ("squish", "flying", "carousel", "rotation", "poke", "inflate", "dissolve")


# Channels a job can live in on the channel path (a forum post is a Thread; elsewhere -- DMs, group
# DMs, servers without the bot -- the job lives in the interaction).
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


class Animate(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # The typed accessor other cogs use (cogs/remix.py): no lookup by name.
        self.bot.animate = self

    async def cog_unload(self) -> None:
        if self.bot.animate is self:
            self.bot.animate = None

    @app_commands.command(name="animate", description=_l("Turn an image into a 5-second video with Wan 2.2"))
    # Installable by a server and by a user; runs in servers, the DM with the bot and private channels
    # (where the bot is not a member, the job lives in the interaction: bot/engine/_surface.py).
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    @app_commands.describe(
        image=_l("The still image to animate (JPEG, PNG, WebP or BMP)"),
        prompt=_l("What should happen in the video"),
        negative_prompt=_l("What the video should avoid"),
        resolution=_l("Output resolution (1080P costs more credits)"),
        template=_l("An effect template, e.g. squish, flying, carousel"),
        seed=_l("A fixed seed for reproducible results"),
        prompt_extend=_l("Let the model enrich your prompt (default: on)"),
        spoiler=_l("Post the image and the video as spoilers (default: off)"),
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
        spoiler: bool = False,
    ) -> None:
        # Acknowledge first: everything below may take longer than Discord's 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        spec = GenerationSpec(
            prompt=prompt,
            negative_prompt=negative_prompt,
            resolution=Resolution(resolution),
            template=template,
            seed=seed,
            prompt_extend=prompt_extend,
        )
        # An image the member uploaded as a spoiler stays one, whatever the option says.
        spoiler = spoiler or image.is_spoiler()
        await self.start(interaction, spec, ImageSource.from_attachment(image), spoiler=spoiler)

    async def start(
        self,
        interaction: discord.Interaction[AnimateBot],
        spec: GenerationSpec,
        source: ImageSource,
        channel: PostableChannel | None = None,
        *,
        origin: str | None = None,
        spoiler: bool = False,
    ) -> None:
        """Admit (bot/admission.py), launch and answer one request; the interaction is already deferred
        (ephemeral) and gets the answer. `channel` defaults to the interaction's channel. `origin` names
        the click or form this came from: at most one unfinished job per origin. `spoiler`: the member
        asked for spoilers (the server's setting may force them anyway)."""
        # The requester reads the ephemeral answers in their own language; the job's public messages
        # are in the server's.
        loc = interaction.locale

        async def reply(text: str) -> None:
            await interaction.edit_original_response(
                content=render(text, loc), allowed_mentions=ui.NO_MENTIONS
            )

        place = place_of_interaction(interaction)  # decided once: the channel or the interaction
        target: object = channel if channel is not None else interaction.channel
        if place.in_interaction:
            target = OriginalResponse(interaction)  # the status is this interaction's original response
        request = admission_request(interaction, spec, source, target, origin, place, spoiler=spoiler)
        result = await self.bot.admission.admit(request)
        if isinstance(result, Refused):
            if result.blocked is not None:
                b = result.blocked
                self.bot.dispatch("animate_audit", b.guild_id, b.user_id, b.title, b.details, b.locale)
            store = premium.store_view(self.bot.settings.premium_packs) if result.out_of_credits else None
            if store is None:
                await reply(result.reason)
            else:  # out of credits and packs are for sale: Discord's buy buttons under the refusal
                await interaction.edit_original_response(
                    content=render(result.reason, loc) + "\n" + tr(loc, premium.OFFER),
                    view=store,
                    allowed_mentions=ui.NO_MENTIONS,
                )
            return
        assert isinstance(target, (*POSTABLE, OriginalResponse))
        job, normalised, standing = result.job, result.image, result.standing
        # The credits are reserved: any failure before RunComfy has the job refunds them.
        try:
            if result.awaiting_approval and place.in_interaction:
                # Moderators could not see a request that lives in this (private) interaction.
                refusal = Msg(
                    "This server's moderators approve every request, which needs the bot in the server. "
                    "Ask an admin to add it. Nothing was charged."
                )
                await self._end_unapproved(job, refusal)
                await reply(refusal)
                return
            if result.awaiting_approval:
                await reply(await self.request_approval(job, normalised, target))
                return
            # No thread where the job lives in the interaction: the bot may not post there.
            make_thread = not (result.in_thread or place.in_interaction)
            launched = await self.bot.engine.launch(job, normalised, target, make_thread=make_thread)
        except BaseException:
            await self.bot.engine.abandon(
                job.id, Msg("An internal error stopped this job before it started.")
            )
            raise
        text = render(launched.message, loc)
        if launched.ok and place.in_interaction:
            text = tr(
                loc, "Your video is on its way — this message shows how it goes, and the video follows here."
            )
        if launched.ok:
            text += await self._credits_left(interaction.user.id, standing, loc)
            if normalised.adjusted:
                text += "\n" + tr(
                    loc,
                    "I adjusted your image to fit the model: {changes}.",
                    changes=changes_text(normalised, loc),
                )
        await reply(text)

    async def _credits_left(self, user_id: int, standing: Standing, loc: LocaleLike) -> str:
        """What is left after this job: the period's allowance, and purchased credits when the member
        has some or this job used some (README "Selling credits")."""
        left = standing.remaining
        if left is None:
            return tr(loc, " Your credits are unlimited.")
        when = policy.period_word(standing.period)
        spent = standing.paid_purchased
        # A charge that used purchased credits read the balance left; otherwise ask only when packs
        # are for sale (without PREMIUM_SKUS nothing of it shows).
        if spent:
            purchased = standing.purchased
        elif self.bot.settings.premium_packs:
            purchased = await self.bot.store.premium.balance(user_id)
        else:
            purchased = 0
        if not spent and not purchased:
            return trn(loc, left, " {n} credit left {when}.", " {n} credits left {when}.", when=when)
        if purchased:
            text = trn(
                loc,
                left,
                " {n} credit left {when}, plus {purchased} purchased.",
                " {n} credits left {when}, plus {purchased} purchased.",
                when=when,
                purchased=purchased,
            )
        else:
            text = trn(
                loc,
                left,
                " {n} credit left {when}, and no purchased credits.",
                " {n} credits left {when}, and no purchased credits.",
                when=when,
            )
        if spent:
            text += trn(
                loc, spent, " This job used {n} purchased credit.", " This job used {n} purchased credits."
            )
        return text

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
        self.bot.dispatch("job_event", job, JobEvent.REQUESTED, job.user_id)
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
        # Never charged, and no event: the request was never posted for approval.
        await self.bot.engine.end(
            job, JobState.FAILED, reason, within=JobState.AWAITING_APPROVAL, event=None, refund=False
        )

    # The pre-download checks, kept here for existing callers (they live in bot/admission.py).
    check_request = staticmethod(check_request)
    check_dimensions = staticmethod(check_dimensions)

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


def admission_request(
    interaction: discord.Interaction[AnimateBot],
    spec: GenerationSpec,
    source: ImageSource,
    channel: object,
    origin: str | None,
    place: Place | None = None,
    *,
    spoiler: bool = False,
) -> AdmissionRequest:
    """The plain facts admission decides on, read off the interaction (and the target channel).
    Where the job lives in the interaction (`place`), a server's rules apply only if that server
    installed the bot; elsewhere the requester's user-install allowance does."""
    place = place or place_of_interaction(interaction)
    facts: ChannelFacts | None = None
    if place.in_interaction and interaction.channel_id is not None:
        thread = interaction.channel if isinstance(interaction.channel, discord.Thread) else None
        facts = ChannelFacts(
            id=interaction.channel_id,
            parent_id=thread.parent_id if thread is not None else None,
            nsfw=bool(getattr(interaction.channel, "nsfw", False)),
            in_thread=thread is not None,
        )
    elif isinstance(channel, POSTABLE):
        facts = ChannelFacts(
            id=channel.id,
            parent_id=channel.parent_id if isinstance(channel, discord.Thread) else None,
            nsfw=bool(getattr(channel, "is_nsfw", lambda: False)()),
            in_thread=isinstance(channel, discord.Thread) or channel.type in THREAD_TYPES,
        )
    # Public messages speak the server's language; in a DM or group DM, the requester's.
    locale = interaction.guild_locale or (interaction.locale if place.in_interaction else None)
    return AdmissionRequest(
        guild_id=place.scope,
        user_id=interaction.user.id,
        role_ids=frozenset(policy.role_ids(interaction.user)) if place.server_rules else frozenset(),
        channel=facts,
        permissions=interaction.app_permissions,
        spec=spec,
        source=source,
        upload_limit=interaction.filesize_limit,
        guild_locale=locale.value if locale else None,
        origin=origin,
        spoiler=spoiler,
        interaction=surface_of(interaction, place) if place.in_interaction else None,
    )


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Animate(bot))
