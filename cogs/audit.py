"""The audit log: a compact embed in the guild's audit channel for every job event and admin change.

Sources: the engine's `job_event` (submitted, delivered, failed, cancelled, ...), the approval flow's
(requested, approved, rejected) and `animate_audit` (admin changes, blocked prompts). Posting is
best-effort: a missing channel or permission is logged, never raised.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import ui
from bot.i18n import N_, LocaleLike, tr
from storage.jobs import Job
from storage.lifecycle import JobEvent

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)

# event -> (title, colour); events not listed here (e.g. "started") are not audited. Titles are English
# templates, shown in the job's language.
JOB_EVENTS: dict[JobEvent, tuple[str, discord.Colour]] = {
    JobEvent.REQUESTED: (N_("📝 Requested — awaiting approval"), discord.Colour.orange()),
    JobEvent.APPROVED: (N_("👍 Approved"), discord.Colour.green()),
    JobEvent.REJECTED: (N_("⛔ Rejected"), discord.Colour.dark_red()),
    JobEvent.SUBMITTED: (N_("🚀 Submitted"), discord.Colour.blurple()),
    JobEvent.DELIVERED: (N_("✅ Delivered"), discord.Colour.green()),
    JobEvent.FAILED: (N_("❌ Failed"), discord.Colour.red()),
    JobEvent.CANCELLED: (N_("🚫 Cancelled"), discord.Colour.dark_grey()),
}
_KNOWN = frozenset(e.value for e in JobEvent)


def job_embed(
    job: Job, event: JobEvent | str, actor_id: int | None, now: float | None = None
) -> discord.Embed | None:
    look = JOB_EVENTS.get(JobEvent(event)) if event in _KNOWN else None
    if look is None:
        return None
    title, colour = look
    loc = job.locale
    embed = discord.Embed(
        title=tr(loc, "{event} · job #{id}", event=tr(loc, title), id=job.id),
        description=ui.clip(job.prompt, 200),
        colour=colour,
        timestamp=datetime.fromtimestamp(time.time() if now is None else now, tz=UTC),
    )
    embed.add_field(name=tr(loc, "Requester"), value=f"<@{job.user_id}>")
    if actor_id is not None and (actor_id != job.user_id or event in (JobEvent.APPROVED, JobEvent.REJECTED)):
        embed.add_field(name=tr(loc, "By"), value=f"<@{actor_id}>")
    embed.add_field(name=tr(loc, "Cost"), value=f"{job.cost} ({job.resolution})")
    where = f"<#{job.channel_id}>"
    if job.status_message_id is not None:
        url = ui.message_link(job.guild_id, job.channel_id, job.status_message_id)
        where += " · " + tr(loc, "[status message]({url})", url=url)
    embed.add_field(name=tr(loc, "Where"), value=where, inline=False)
    if event in (JobEvent.FAILED, JobEvent.CANCELLED, JobEvent.REJECTED) and job.error:
        embed.add_field(name=tr(loc, "Reason"), value=ui.clip(job.error, 300), inline=False)
    return embed


class Audit(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    async def post(self, guild_id: int, embed: discord.Embed) -> None:
        config = await self.bot.store.guilds.get(guild_id)
        if config.audit_channel_id is None:
            return
        channel = self.bot.get_partial_messageable(config.audit_channel_id, guild_id=guild_id)
        try:
            await channel.send(embed=embed, allowed_mentions=ui.NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning(
                "Guild %s: could not post to the audit channel %s: %s", guild_id, config.audit_channel_id, exc
            )

    @commands.Cog.listener()
    async def on_job_event(self, job: Job, event: JobEvent, actor_id: int | None) -> None:
        embed = job_embed(job, event, actor_id)
        if embed is not None:
            await self.post(job.guild_id, embed)

    @commands.Cog.listener()
    async def on_animate_audit(
        self, guild_id: int, actor_id: int | None, title: str, details: str, locale: LocaleLike = None
    ) -> None:
        """Admin changes and moderation events: `bot.dispatch("animate_audit", guild, actor, title, text,
        locale)`; title and text already in the server's language (`locale`, interaction.guild_locale)."""
        embed = discord.Embed(
            title=ui.clip(title, 200),
            description=ui.clip(details, 2000),
            colour=discord.Colour.dark_teal(),
            timestamp=discord.utils.utcnow(),
        )
        if actor_id is not None:
            embed.add_field(name=tr(locale, "By"), value=f"<@{actor_id}>")
        await self.post(guild_id, embed)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Audit(bot))
