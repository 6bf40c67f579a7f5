"""/quota [member]: a member's credits, limits and when they reset (admins may look up anyone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import policy, premium, ui
from bot.i18n import render, tr

if TYPE_CHECKING:
    from bot.client import AnimateBot


class Quota(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description=_l("See how many /animate credits you have left"))
    @app_commands.guild_only()
    @app_commands.describe(member=_l("Admins: look up another member"))
    async def quota(
        self, interaction: discord.Interaction[AnimateBot], member: discord.Member | None = None
    ) -> None:
        assert interaction.guild_id is not None
        loc = interaction.locale
        guilds = self.bot.store.guilds
        config = await guilds.get(interaction.guild_id)
        target: discord.abc.User = interaction.user
        if member is not None and member.id != interaction.user.id:
            if not policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
                await interaction.response.send_message(
                    tr(
                        loc,
                        "Only admins can look up someone else's credits. Use /quota on its own for yours.",
                    ),
                    ephemeral=True,
                )
                return
            target = member
        admission = self.bot.admission
        allowance = await admission.allowance(config, target.id, policy.role_ids(target))
        period = policy.current_period(config)
        standing = await self.bot.store.quota.standing(config.guild_id, target.id, allowance.credits, period)
        mine = target.id == interaction.user.id
        embed = discord.Embed(
            title=tr(loc, "Your /animate credits")
            if mine
            else tr(loc, "/animate credits of {name}", name=target.display_name),
            colour=discord.Colour.blurple(),
        )
        label = tr(loc, "Left {when}", when=policy.period_word(period))
        if standing.remaining is None:
            embed.add_field(name=label, value=tr(loc, "**unlimited**"))
        else:
            if standing.granted:
                value = tr(
                    loc,
                    "**{remaining}** of {limit} (+{granted} granted)",
                    remaining=standing.remaining,
                    limit=standing.limit,
                    granted=standing.granted,
                )
            else:
                value = tr(
                    loc, "**{remaining}** of {limit}", remaining=standing.remaining, limit=standing.limit
                )
            embed.add_field(name=label, value=value)
        embed.add_field(name=tr(loc, "Resets"), value=ui.ts(period.resets_at.timestamp()))
        embed.add_field(
            name=tr(loc, "Prices"),
            value=f"480P: {admission.price(config, '480P')} · 1080P: {admission.price(config, '1080P')}",
            inline=False,
        )
        limits = []
        if config.max_concurrent:
            limits.append(tr(loc, "{n} job(s) at a time", n=config.max_concurrent))
        if config.cooldown_seconds and not allowance.unlimited:
            limits.append(tr(loc, "{seconds} s between requests", seconds=config.cooldown_seconds))
        if config.approval_required:
            limits.append(tr(loc, "jobs need a moderator's approval"))
        if limits:
            embed.add_field(name=tr(loc, "Limits"), value="; ".join(limits), inline=False)
        ban = await guilds.get_ban(config.guild_id, target.id)
        if ban is not None:
            embed.add_field(
                name=tr(loc, "Blocked"),
                value=tr(loc, "An admin has blocked /animate for this member."),
                inline=False,
            )
        embed.add_field(name=tr(loc, "Allowance from"), value=render(allowance.source, loc), inline=False)
        embed.set_footer(text=tr(loc, "Failed and cancelled jobs are refunded automatically."))
        store = premium.store_view(self.bot.settings.premium_packs)
        if store is None:
            await interaction.response.send_message(
                embed=embed, ephemeral=True, allowed_mentions=ui.NO_MENTIONS
            )
            return
        if self.bot.premium is not None:  # a pack this interaction carries counts right away
            await self.bot.premium.absorb(interaction)
        purchased = await self.bot.store.premium.balance(target.id)
        embed.insert_field_at(
            1,
            name=tr(loc, "Purchased credits"),
            value=tr(loc, "**{n}** (never expire, used after the allowance)", n=purchased),
        )
        await interaction.response.send_message(
            embed=embed, view=store, ephemeral=True, allowed_mentions=ui.NO_MENTIONS
        )


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Quota(bot))
