"""`/animate-admin channels …`: the channel allow-list and the age restriction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l

from bot.i18n import Msg
from cogs.admin._base import SettingsGroup
from cogs.admin.checks import admin_config

if TYPE_CHECKING:
    from bot.client import AnimateBot


class ChannelsGroup(SettingsGroup, name="channels", description=_l("Where /animate may be used")):
    @app_commands.command(
        name="allow", description=_l("Allow /animate in a channel (then only in allowed ones)")
    )
    @app_commands.describe(channel=_l("The channel (its threads are included)"))
    async def channels_allow(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = admin_config(interaction)
        if channel.guild.id != config.guild_id:
            await self.refuse(interaction, Msg("That channel isn't in this server."))
            return
        await self.guilds.set_channel(config.guild_id, channel.id, True)
        new = await self.guilds.get(config.guild_id)
        await self.changed(
            interaction,
            Msg(
                "/animate is allowed in {channel}. Allowed channels: {channels}.",
                channel=channel.mention,
                channels=", ".join(f"<#{c}>" for c in sorted(new.channels)),
            ),
        )

    @app_commands.command(name="remove", description=_l("Remove a channel from the allow-list"))
    @app_commands.describe(channel=_l("The channel"))
    async def channels_remove(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = admin_config(interaction)
        if not await self.guilds.set_channel(config.guild_id, channel.id, False):
            await self.refuse(
                interaction, Msg("{channel} wasn't on the allow-list.", channel=channel.mention)
            )
            return
        new = await self.guilds.get(config.guild_id)
        rest = ", ".join(f"<#{c}>" for c in sorted(new.channels))
        await self.changed(
            interaction,
            Msg("Removed {channel}. Allowed channels: {channels}.", channel=channel.mention, channels=rest)
            if rest
            else Msg(
                "Removed {channel}. The list is empty: /animate works everywhere.", channel=channel.mention
            ),
        )

    @app_commands.command(name="clear", description=_l("Allow /animate in every channel again"))
    async def channels_clear(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = admin_config(interaction)
        await self.guilds.clear_channels(config.guild_id)
        await self.changed(interaction, Msg("Channel allow-list cleared: /animate works in every channel."))

    @app_commands.command(
        name="age-restricted", description=_l("Only run /animate in age-restricted channels")
    )
    @app_commands.describe(required=_l("On: /animate refuses to run outside age-restricted (NSFW) channels"))
    async def channels_age(self, interaction: discord.Interaction[AnimateBot], required: bool) -> None:
        config = admin_config(interaction)
        await self.guilds.update(config.guild_id, interaction.user.id, require_age_restricted=required)
        await self.changed(
            interaction,
            Msg("/animate now only runs in age-restricted channels.")
            if required
            else Msg("/animate no longer requires age-restricted channels."),
        )
