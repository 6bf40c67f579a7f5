"""Who may administer /animate in a guild: Manage Server, Administrator or the configured admin role.

The check runs before a command's body and raises instead of answering, so every refusal takes the
tree's one error path (bot.client.AnimateBot.on_app_command_error) and reads the same. The guild
config it loaded is kept on the interaction for the command (`admin_config`): one read, as before.
Public (no underscore) because admin-only commands of other cogs use it too (`admin_only`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from bot import policy
from bot.errors import CommandRefused
from bot.i18n import Msg
from storage.guilds import GuildConfig

if TYPE_CHECKING:
    from bot.client import AnimateBot

T = TypeVar("T")

_CONFIG_KEY = "animate_admin_config"


class AdminRequired(CommandRefused):
    """The caller may not administer /animate here; the message says who may."""

    def __init__(self, admin_role_id: int | None) -> None:
        if admin_role_id:
            message = Msg(
                "Only members with the Manage Server permission or the <@&{role}> role can do that.",
                role=admin_role_id,
            )
        else:
            message = Msg("Only members with the Manage Server permission can do that.")
        super().__init__(message)
        self.admin_role_id = admin_role_id


def is_admin_here(interaction: discord.Interaction[AnimateBot], config: GuildConfig) -> bool:
    return policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config)


async def ensure_admin(interaction: discord.Interaction[AnimateBot]) -> GuildConfig:
    """The guild's config if the caller is an admin here (also kept for `admin_config`); raises a
    check failure the tree's error handler renders otherwise."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    try:
        config = await interaction.client.store.guilds.get(interaction.guild_id)
    except Exception as exc:
        # A check runs outside the command's own error wrapping: wrap it the same way, so a database
        # failure reads as one (and anything else as "went wrong") instead of a silent dead command.
        command = interaction.command
        if command is None:
            raise
        raise app_commands.CommandInvokeError(command, exc) from exc
    if not is_admin_here(interaction, config):
        raise AdminRequired(config.admin_role_id)
    interaction.extras[_CONFIG_KEY] = config
    return config


def admin_config(interaction: discord.Interaction[AnimateBot]) -> GuildConfig:
    """The guild config the admin check loaded for this interaction."""
    config = interaction.extras.get(_CONFIG_KEY)
    if not isinstance(config, GuildConfig):
        raise RuntimeError("admin_config() used by a command the admin check did not run for")
    return config


async def _admin_predicate(interaction: discord.Interaction[Any]) -> bool:
    await ensure_admin(interaction)
    return True


def admin_only() -> Callable[[T], T]:
    """The admin check as a decorator, for admin-only commands outside /animate-admin."""
    return app_commands.check(_admin_predicate)
