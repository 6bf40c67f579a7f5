"""/quota [member]: a member's credits, limits and when they reset (admins may look up anyone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy, ui
from storage.guilds import guild_repository

if TYPE_CHECKING:
    from bot.client import AnimateBot


class Quota(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description="See how many /animate credits you have left")
    @app_commands.guild_only()
    @app_commands.describe(member="Admins: look up another member")
    async def quota(
        self, interaction: discord.Interaction[AnimateBot], member: discord.Member | None = None
    ) -> None:
        assert interaction.guild_id is not None
        guilds = guild_repository(self.bot.db)
        config = await guilds.get(interaction.guild_id)
        target: discord.abc.User = interaction.user
        if member is not None and member.id != interaction.user.id:
            if not policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
                await interaction.response.send_message(
                    "Only admins can look up someone else's credits. Use /quota on its own for yours.",
                    ephemeral=True,
                )
                return
            target = member
        settings = self.bot.settings
        override = await guilds.user_override(config.guild_id, target.id)
        allowance = policy.resolve_allowance(config, policy.role_ids(target), override, settings.daily_quota)
        period = policy.current_period(config)
        standing = await self.bot.quota.standing(config.guild_id, target.id, allowance.credits, period)
        mine = target.id == interaction.user.id
        embed = discord.Embed(
            title="Your /animate credits" if mine else f"/animate credits of {target.display_name}",
            colour=discord.Colour.blurple(),
        )
        label = f"Left {policy.period_word(period)}"
        if standing.remaining is None:
            embed.add_field(name=label, value="**unlimited**")
        else:
            granted = f" (+{standing.granted} granted)" if standing.granted else ""
            embed.add_field(name=label, value=f"**{standing.remaining}** of {standing.limit}{granted}")
        embed.add_field(name="Resets", value=ui.ts(period.resets_at.timestamp()))
        embed.add_field(
            name="Prices",
            value=f"480P: {policy.cost_of(config, '480P', settings.cost_480p, settings.cost_1080p)} · "
            f"1080P: {policy.cost_of(config, '1080P', settings.cost_480p, settings.cost_1080p)}",
            inline=False,
        )
        limits = []
        if config.max_concurrent:
            limits.append(f"{config.max_concurrent} job(s) at a time")
        if config.cooldown_seconds and not allowance.unlimited:
            limits.append(f"{config.cooldown_seconds} s between requests")
        if config.approval_required:
            limits.append("jobs need a moderator's approval")
        if limits:
            embed.add_field(name="Limits", value="; ".join(limits), inline=False)
        ban = await guilds.get_ban(config.guild_id, target.id)
        if ban is not None:
            embed.add_field(
                name="Blocked", value="An admin has blocked /animate for this member.", inline=False
            )
        embed.add_field(name="Allowance from", value=allowance.source, inline=False)
        embed.set_footer(text="Failed and cancelled jobs are refunded automatically.")
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=ui.NO_MENTIONS)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Quota(bot))
