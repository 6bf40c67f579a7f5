"""/jobs (a member's recent jobs) and /animate-stats (a guild's numbers, admins only)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import ui
from bot.engine import GUILD_CONTEXT, place_of_interaction
from bot.i18n import N_, LocaleLike, tr, trn
from bot.quota_rules import USER_INSTALL_SCOPE
from cogs.admin.checks import admin_config, admin_only
from storage.jobs import Job, JobState

if TYPE_CHECKING:
    from bot.client import AnimateBot

# English labels; shown with tr(locale, label).
STATE_LABELS = {
    JobState.AWAITING_APPROVAL: N_("⏸️ awaiting approval"),
    JobState.PENDING: N_("⏳ submitting"),
    JobState.QUEUED: N_("🕒 queued"),
    JobState.RUNNING: N_("🎞️ generating"),
    JobState.DELIVERING: N_("📦 uploading"),
    JobState.DELIVERED: N_("✅ delivered"),
    JobState.FAILED: N_("❌ failed"),
    JobState.CANCELLED: N_("🚫 cancelled"),
    JobState.REJECTED: N_("⛔ rejected"),
}


def job_line(job: Job, locale: LocaleLike = None) -> str:
    if job.thread_id:
        link = f" · <#{job.thread_id}>"
    elif job.in_interaction:
        link = _video_link(job, locale)
    elif job.status_message_id:
        url = ui.message_link(job.guild_id, job.channel_id, job.status_message_id)
        link = " · " + tr(locale, "[status]({url})", url=url)
    else:
        link = ""
    prompt = ui.clip(" ".join(job.prompt.split()), 60).replace("`", "'")
    state = tr(locale, STATE_LABELS[job.state])
    return f"**#{job.id}** {state} · {ui.ts(job.created_at)}{link}\n`{prompt}`"


def _video_link(job: Job, locale: LocaleLike) -> str:
    """A job that lived in its interaction: its status was a reply only the requester saw (no link
    reaches it), so the link is to the delivered video, where there is a place to name -- a DM (the
    bot's, a group DM, or the DM the video was sent to after the token expired) or a server whose id
    the job kept. A server that did not add the bot is not kept (the user-install scope): no link."""
    if job.delivery_message_id is None or job.delivery_channel_id is None:
        return ""
    by_dm = job.delivery_channel_id != job.channel_id
    if by_dm or job.interaction_context not in (None, GUILD_CONTEXT):
        where = "@me"
    elif job.guild_id != USER_INSTALL_SCOPE:
        where = str(job.guild_id)
    else:
        return ""
    url = f"https://discord.com/channels/{where}/{job.delivery_channel_id}/{job.delivery_message_id}"
    return " · " + tr(locale, "[video]({url})", url=url)


class History(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @app_commands.command(name="jobs", description=_l("Your recent /animate jobs here"))
    # Like /animate: installable by a user too, listing the jobs of that install's scope.
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def jobs(self, interaction: discord.Interaction[AnimateBot]) -> None:
        loc = interaction.locale
        # A server's jobs where its rules apply; elsewhere those of the user install (every DM, group
        # DM and server without the bot share that one scope, as they share its allowance).
        place = place_of_interaction(interaction)
        recent = await self.bot.store.jobs.recent_for_user(place.scope, interaction.user.id, limit=10)
        if not recent:
            empty = (
                tr(loc, "You haven't run /animate on this server yet.")
                if place.server_rules
                else tr(
                    loc,
                    "You haven't run /animate with your user install yet "
                    "(in DMs, group DMs or servers that did not add the bot).",
                )
            )
            await interaction.response.send_message(empty, ephemeral=True)
            return
        embed = discord.Embed(
            title=tr(loc, "Your recent /animate jobs")
            if place.server_rules
            else tr(loc, "Your recent /animate jobs with your user install"),
            description="\n".join(job_line(j, loc) for j in recent),
            colour=discord.Colour.blurple(),
        )
        embed.set_footer(text=tr(loc, "The 10 most recent, newest first."))
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=ui.NO_MENTIONS)

    @app_commands.command(name="animate-stats", description=_l("/animate numbers for this server (admins)"))
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @admin_only()
    @app_commands.describe(days=_l("How many days back to count (default 30)"))
    async def stats(
        self, interaction: discord.Interaction[AnimateBot], days: app_commands.Range[int, 1, 3650] = 30
    ) -> None:
        config = admin_config(interaction)
        loc = interaction.locale
        since = time.time() - days * 86_400
        stats = await self.bot.store.stats.guild_stats(config.guild_id, since)
        embed = discord.Embed(
            title=trn(
                loc,
                days,
                "📊 /animate on this server — last {n} day",
                "📊 /animate on this server — last {n} days",
            ),
            colour=discord.Colour.blurple(),
        )
        states = "\n".join(
            f"{tr(loc, STATE_LABELS[s])}: {stats.by_state[s.value]}"
            for s in JobState
            if stats.by_state.get(s.value)
        )
        embed.add_field(
            name=tr(loc, "Jobs ({total})", total=stats.total), value=states or tr(loc, "none"), inline=False
        )
        embed.add_field(name=tr(loc, "Credits spent"), value=str(stats.spent))
        embed.add_field(
            name=tr(loc, "Median time to video"),
            value="—" if stats.median_seconds is None else ui.duration(stats.median_seconds, nearest=True),
        )
        if stats.top_users:
            embed.add_field(
                name=tr(loc, "Top members by credits"),
                value="\n".join(f"<@{u}>: {c}" for u, c in stats.top_users),
                inline=False,
            )
        embed.set_footer(
            text=tr(loc, "Refunded credits are not counted; time to video runs from submit to upload.")
        )
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=ui.NO_MENTIONS)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(History(bot))
