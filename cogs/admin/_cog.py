"""The admin cog and the `/animate-admin` root group: show, admin-role and audit-channel.

Every subcommand is hidden from non-admins by Discord (`default_permissions=manage_guild`) *and*
re-checked by the bot before it runs (cogs.admin.checks: Manage Server, Administrator or the
configured admin role), because a server can override command visibility. Every change is echoed
back (ephemeral, in the admin's language) and written to the audit log (in the server's language).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import ui
from bot.i18n import Msg
from cogs.admin._base import SettingsGroup
from cogs.admin._channels import ChannelsGroup
from cogs.admin._embed import config_embed
from cogs.admin._moderation import ModerationGroup
from cogs.admin._quota import QuotaGroup
from cogs.admin.checks import admin_config

if TYPE_CHECKING:
    from bot.client import AnimateBot


class AdminGroup(
    SettingsGroup,
    name="animate-admin",
    description=_l("Configure /animate for this server (admins only)"),
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),
):
    def __init__(self, bot: AnimateBot) -> None:
        super().__init__(bot)
        own = self.commands  # show, admin-role, audit-channel
        for command in own:
            self.remove_command(command.name)
        self.quota = QuotaGroup(bot, parent=self)
        self.channels = ChannelsGroup(bot, parent=self)
        self.moderation = ModerationGroup(bot, parent=self)
        # Subgroups first, as before the split: the synced payload, and so the command fingerprint
        # that decides whether to re-sync, stays the same.
        for command in own:
            self.add_command(command)

    @app_commands.command(name="show", description=_l("Show this server's whole /animate configuration"))
    async def show(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = admin_config(interaction)
        embed = await config_embed(self.bot.store, self.bot.settings, config, interaction.locale)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=ui.NO_MENTIONS)

    @app_commands.command(
        name="admin-role", description=_l("Let a role use /animate-admin (leave empty to clear)")
    )
    @app_commands.describe(role=_l("Members with this role may change these settings"))
    async def admin_role(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        await self.set_role(
            interaction,
            admin_config(interaction),
            "admin_role_id",
            role,
            Msg("Admin role set to {role}.", role=role.mention) if role else None,
            Msg("Admin role cleared (Manage Server only)."),
        )

    @app_commands.command(name="audit-channel", description=_l("Log every job and admin change to a channel"))
    @app_commands.describe(channel=_l("The audit-log channel (leave empty to turn the audit log off)"))
    async def audit_channel(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel | None = None
    ) -> None:
        config = admin_config(interaction)
        if channel is not None:
            if channel.guild.id != config.guild_id:
                await self.refuse(interaction, Msg("That channel isn't in this server."))
                return
            perms = channel.permissions_for(channel.guild.me)
            if not (perms.view_channel and perms.send_messages and perms.embed_links):
                await self.refuse(
                    interaction,
                    Msg(
                        "I can't post in {channel}: I need View Channel, Send Messages and Embed Links "
                        "there.",
                        channel=channel.mention,
                    ),
                )
                return
        await self.guilds.update(
            config.guild_id, interaction.user.id, audit_channel_id=channel.id if channel else None
        )
        await self.changed(
            interaction,
            Msg("Audit log goes to {channel}.", channel=channel.mention)
            if channel
            else Msg("Audit log turned off."),
        )


class Admin(commands.Cog):
    """Owns the `/animate-admin` tree; the groups hold the commands."""

    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        self.group = AdminGroup(bot)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)
