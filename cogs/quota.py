"""/quota [member]: a member's credits, limits and when they reset (admins may look up anyone).

Installable by a server and by a user (README "User install"): in a server that added the bot it shows
that server's allowance; in a DM, a group DM or a server without the bot it shows the member's
user-install allowance (USER_INSTALL_DAILY_QUOTA), the one /animate spends there."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import policy, premium, ui
from bot.engine import place_of_interaction
from bot.i18n import LocaleLike, Msg, render, tr

if TYPE_CHECKING:
    from bot.client import AnimateBot
    from storage.guilds import GuildConfig

# Where the allowance comes from, in the user-install scope (no admin rule applies there).
USER_INSTALL_SOURCE = Msg(
    "your user-install allowance, the same in every DM, group DM and server that did not add the bot"
)


class Quota(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description=_l("See how many /animate credits you have left"))
    # Like /animate: installable by a user too, so its allowance can be read wherever it is spent.
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    @app_commands.describe(member=_l("Admins: look up another member"))
    async def quota(
        self,
        interaction: discord.Interaction[AnimateBot],
        # A User too: outside a server the option resolves to one (refused below, never a traceback).
        member: discord.Member | discord.User | None = None,
    ) -> None:
        loc = interaction.locale
        place = place_of_interaction(interaction)  # whose allowance: a server's, or the user install's
        config = await self.bot.store.guilds.get(place.scope)
        target: discord.abc.User = interaction.user
        if member is not None and member.id != interaction.user.id:
            refusal = self._lookup_refusal(interaction, config, place.server_rules)
            if refusal is not None:
                await interaction.response.send_message(render(refusal, loc), ephemeral=True)
                return
            target = member
        embed = await self._embed(config, target, target.id == interaction.user.id, place.server_rules, loc)
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

    @staticmethod
    def _lookup_refusal(
        interaction: discord.Interaction[AnimateBot], config: GuildConfig, server_rules: bool
    ) -> Msg | None:
        """Why the invoker may not look up someone else here, or None."""
        if not server_rules:  # no admins outside a server that added the bot
            return Msg(
                "Looking up another member's credits works only in a server that added the bot, "
                "for its admins. Use /quota on its own for yours."
            )
        if not policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
            return Msg("Only admins can look up someone else's credits. Use /quota on its own for yours.")
        return None

    async def _embed(
        self, config: GuildConfig, target: discord.abc.User, mine: bool, server_rules: bool, loc: LocaleLike
    ) -> discord.Embed:
        guilds, admission = self.bot.store.guilds, self.bot.admission
        # Outside a server's rules no role counts (admission reads none there either).
        roles = policy.role_ids(target) if server_rules else set()
        allowance = await admission.allowance(config, target.id, roles)
        period = policy.current_period(config)
        standing = await self.bot.store.quota.standing(config.guild_id, target.id, allowance.credits, period)
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
        if server_rules and await guilds.get_ban(config.guild_id, target.id) is not None:
            embed.add_field(
                name=tr(loc, "Blocked"),
                value=tr(loc, "An admin has blocked /animate for this member."),
                inline=False,
            )
        source = allowance.source if server_rules else USER_INSTALL_SOURCE
        embed.add_field(name=tr(loc, "Allowance from"), value=render(source, loc), inline=False)
        embed.set_footer(text=tr(loc, "Failed and cancelled jobs are refunded automatically."))
        return embed


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Quota(bot))
