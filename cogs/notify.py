"""/animate-notify: opt in to a DM when your job finishes, for users who leave the channel."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import ui
from bot.i18n import tr
from storage.lifecycle import JobEvent

if TYPE_CHECKING:
    from bot.client import AnimateBot
    from storage.jobs import Job

log = logging.getLogger(__name__)


class Notify(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        self.prefs = bot.store.prefs

    @app_commands.command(name="animate-notify", description=_l("Get a DM when your /animate jobs finish"))
    @app_commands.describe(dm=_l("On: I DM you when a job is done or fails. Leave empty to see the setting."))
    async def notify(self, interaction: discord.Interaction[AnimateBot], dm: bool | None = None) -> None:
        loc = interaction.locale
        if dm is None:
            enabled = await self.prefs.dm_on_finish(interaction.user.id)
            if enabled:
                text = tr(loc, "You get a DM when your jobs finish.")
            else:
                text = tr(loc, "You don't get DMs about your jobs.")
            await interaction.response.send_message(
                text + tr(loc, " Change it with `/animate-notify dm:True` or `dm:False`."), ephemeral=True
            )
            return
        await self.prefs.set_dm_on_finish(interaction.user.id, dm)
        if dm:
            text = tr(
                loc,
                "Done — I'll DM you when your jobs finish (make sure DMs from server members are allowed).",
            )
        else:
            text = tr(loc, "Done — no more DMs about your jobs.")
        await interaction.response.send_message(text, ephemeral=True)

    @commands.Cog.listener()
    async def on_job_event(self, job: Job, event: JobEvent, actor_id: int | None) -> None:
        if event not in (JobEvent.DELIVERED, JobEvent.FAILED) or not await self.prefs.dm_on_finish(
            job.user_id
        ):
            return
        if event == JobEvent.FAILED and job.result_url:
            return  # a finished video the bot could not post: the engine already DMed its link
        where = job.delivery_channel_id or job.thread_id or job.channel_id
        loc = job.locale  # the job's language (its error text is stored in it)
        if event == JobEvent.DELIVERED and job.delivery_message_id:
            link = ui.message_link(job.guild_id, where, job.delivery_message_id)
            text = tr(
                loc, "Your video is ready: {link}\n> {prompt}", link=link, prompt=ui.clip(job.prompt, 200)
            )
        else:
            link = ui.message_link(job.guild_id, where)
            text = tr(
                loc,
                "Your /animate job #{id} failed: {reason}\nYour credits were refunded. {link}",
                id=job.id,
                reason=ui.clip(job.error or tr(loc, "unknown error"), 300),
                link=link,
            )
        try:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            await user.send(text, allowed_mentions=ui.NO_MENTIONS)
        except discord.HTTPException as exc:
            # DMs closed: nothing else to do; the thread still has everything.
            log.info("Job %s: could not DM the requester: %s", job.id, exc)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Notify(bot))
