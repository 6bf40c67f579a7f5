"""/quota: how many credits the caller has left and when they reset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import ui
from storage.quota import daily_period

if TYPE_CHECKING:
    from bot.client import AnimateBot


class Quota(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description="See how many /animate credits you have left")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction[AnimateBot]) -> None:
        assert interaction.guild_id is not None
        settings = self.bot.settings
        standing = await self.bot.quota.standing(
            interaction.guild_id, interaction.user.id, settings.daily_quota, daily_period()
        )
        embed = discord.Embed(title="Your /animate credits", colour=discord.Colour.blurple())
        embed.add_field(name="Left today", value=f"**{standing.remaining}** of {standing.limit}")
        embed.add_field(name="Resets", value=ui.ts(standing.period.resets_at.timestamp()))
        embed.add_field(
            name="Prices", value=f"480P: {settings.cost_480p} · 1080P: {settings.cost_1080p}", inline=False
        )
        embed.set_footer(text="Failed and cancelled jobs are refunded automatically.")
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Quota(bot))
