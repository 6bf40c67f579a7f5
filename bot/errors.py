"""One answer for every interaction that fails: slash commands, buttons, selects and modals.

discord.py reports a failure in different places: the command tree's `on_error`, a View's or a Modal's
`on_error`, and -- for `DynamicItem`s, which all the bot's persistent buttons are -- nowhere at all (it
only logs them), which leaves the user with "This interaction failed" or a "thinking…" that never ends.
Every one of those paths ends in `report_error`: logged once with the traceback, and answered with a
short, localised, ephemeral message whether the interaction was already acknowledged or not.

`charges` says whether the failed action could have charged credits (a new job, an approval): only
then does the answer say that nothing was charged -- a failed Cancel is about the cancel, not money.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import discord
from discord import app_commands

from bot.i18n import N_, LocaleLike, Msg, render, tr
from storage.db import StorageError

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()

STORAGE_NOTHING_CHARGED = N_(
    "The bot's database is unavailable right now (disk full or read-only?). Nothing was "
    "charged. Please tell a server admin."
)
STORAGE_NOT_DONE = N_(
    "The bot's database is unavailable right now (disk full or read-only?), so that could not be "
    "completed. Please tell a server admin."
)
FAILED_NOTHING_CHARGED = N_("Something went wrong on my side. Nothing was charged; please try again.")
FAILED = N_("Something went wrong on my side — please try again in a moment.")


class CommandRefused(app_commands.CheckFailure):
    """A check refused the command for a reason the caller can fix or should know: the error
    reporter shows `message` (a bot.i18n.Msg) to them, ephemeral, in their language."""

    def __init__(self, message: Msg) -> None:
        super().__init__(str(message))
        self.message = message


def unwrap(error: BaseException) -> BaseException:
    """The exception a command raised, rather than discord.py's CommandInvokeError around it."""
    while isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    return error


def error_text(locale: LocaleLike, error: BaseException, *, charges: bool) -> str:
    """What the user reads about `error` (already unwrapped or not), in their language."""
    error = unwrap(error)
    if isinstance(error, app_commands.CommandOnCooldown):
        return tr(locale, "Slow down — try again in {seconds:.0f} s.", seconds=error.retry_after)
    if isinstance(error, app_commands.NoPrivateMessage):
        return tr(locale, "This command only works in a server.")
    if isinstance(error, CommandRefused):
        return render(error.message, locale)
    if isinstance(error, app_commands.CheckFailure):
        return tr(locale, "You can't use this command here.")
    if isinstance(error, StorageError):
        return tr(locale, STORAGE_NOTHING_CHARGED if charges else STORAGE_NOT_DONE)
    return tr(locale, FAILED_NOTHING_CHARGED if charges else FAILED)


async def report_error(
    interaction: discord.Interaction[Any], error: BaseException, *, action: str, charges: bool = False
) -> None:
    """Log `error` once and tell the user, ephemerally, without a traceback."""
    original = unwrap(error)
    if isinstance(original, app_commands.CheckFailure | app_commands.CommandOnCooldown):
        # Expected refusals, not faults: no traceback.
        log.debug("%s refused for %s: %s", action, interaction.user.id, original)
    elif isinstance(original, StorageError):
        log.error("Database failure in %s: %s", action, original, exc_info=original)
    else:
        log.error("%s failed", action, exc_info=original)
    await tell(interaction, error_text(interaction.locale, original, charges=charges), action=action)


async def tell(interaction: discord.Interaction[Any], text: str, *, action: str) -> bool:
    """Answer ephemerally whatever state the interaction is in; False (and a log line) if Discord
    would not take it, e.g. the interaction expired or its token is used up."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            # Deferred ("thinking…"): the first follow-up replaces the placeholder, as an edit of the
            # original would -- but unlike an edit it cannot overwrite an answer already given. After a
            # button's silent deferral or an earlier answer it is a new ephemeral message.
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as exc:
        log.warning("Could not tell the user about the failure in %s: %s", action, exc)
        return False
    return True


@asynccontextmanager
async def reporting(
    interaction: discord.Interaction[Any], action: str, *, charges: bool = False
) -> AsyncIterator[None]:
    """Run a component callback; an exception is reported to the user instead of escaping.
    (discord.py only logs what a DynamicItem's callback raises.)"""
    try:
        yield
    except Exception as exc:
        await report_error(interaction, exc, action=action, charges=charges)


async def on_app_command_error(
    interaction: discord.Interaction[Any], error: app_commands.AppCommandError
) -> None:
    """The command tree's error handler. Only /animate can charge credits."""
    command = interaction.command
    name = command.qualified_name if command is not None else "an unknown command"
    charges = command is not None and command.qualified_name == "animate"
    await report_error(interaction, error, action=f"/{name}", charges=charges)


class ReportingView(discord.ui.View):
    """A View whose item failures get the common answer (set CHARGES if its items can charge)."""

    CHARGES: ClassVar[bool] = False

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: discord.ui.Item[Any], /
    ) -> None:
        action = getattr(item, "custom_id", None) or type(item).__name__
        await report_error(interaction, error, action=f"component {action}", charges=self.CHARGES)


class ReportingModal(discord.ui.Modal):
    """A Modal whose submit failures get the common answer (set CHARGES if submitting can charge)."""

    CHARGES: ClassVar[bool] = False

    # discord.py's Modal narrows its base's on_error (no item); its own stubs need the same ignore.
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_error(interaction, error, action=f"form {type(self).__name__}", charges=self.CHARGES)
