"""What every /animate-admin group shares: the admin check, echoing a change, refusing bad input."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import ui
from bot.i18n import Msg, render, tr
from cogs.admin.checks import ensure_admin
from storage.guilds import GuildConfig, GuildRepository

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)


class SettingsGroup(app_commands.Group):
    """A group of /animate-admin subcommands, each refused to non-admins before it runs.

    discord.py runs the `interaction_check` of a command's own group (its binding) only, so every
    group, the root included, derives from this class."""

    def __init__(self, bot: AnimateBot, *, parent: app_commands.Group | None = None) -> None:
        super().__init__(parent=parent)
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        await ensure_admin(interaction)
        return True

    @property
    def guilds(self) -> GuildRepository:
        return self.bot.store.guilds

    async def changed(self, interaction: discord.Interaction[AnimateBot], summary: str) -> None:
        """Echo a change to the admin (their language) and record it in the audit log (the server's).
        `summary` is a bot.i18n.Msg."""
        assert interaction.guild_id is not None
        log.info("Guild %s: %s changed settings: %s", interaction.guild_id, interaction.user.id, summary)
        await interaction.response.send_message(
            f"✅ {render(summary, interaction.locale)}", ephemeral=True, allowed_mentions=ui.NO_MENTIONS
        )
        guild_locale = interaction.guild_locale
        self.bot.dispatch(
            "animate_audit",
            interaction.guild_id,
            interaction.user.id,
            tr(guild_locale, "Settings changed"),
            render(summary, guild_locale),
            guild_locale,
        )

    async def refuse(self, interaction: discord.Interaction[AnimateBot], text: str) -> None:
        await interaction.response.send_message(
            render(text, interaction.locale), ephemeral=True, allowed_mentions=ui.NO_MENTIONS
        )

    async def roles_are_local(
        self, interaction: discord.Interaction[AnimateBot], config: GuildConfig, *roles: discord.Role | None
    ) -> bool:
        """Every role given belongs to this server; otherwise refuse and return False."""
        if any(role is not None and role.guild.id != config.guild_id for role in roles):
            await self.refuse(interaction, Msg("That role isn't from this server."))
            return False
        return True

    async def set_role(
        self,
        interaction: discord.Interaction[AnimateBot],
        config: GuildConfig,
        field: str,
        role: discord.Role | None,
        when_set: str | None,
        when_cleared: str,
    ) -> None:
        """Set (or, with no role, clear) a one-role setting and echo it back."""
        if not await self.roles_are_local(interaction, config, role):
            return
        await self.guilds.update(config.guild_id, interaction.user.id, **{field: role.id if role else None})
        await self.changed(interaction, when_set if role and when_set else when_cleared)
