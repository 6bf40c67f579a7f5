"""Why a job could not be started, in words for its requester: Discord's refusal of the status
message, RunComfy's refusal of the submit (see Launcher)."""

from __future__ import annotations

import logging

import discord

from bot.engine import _common as c
from bot.i18n import Msg
from bot.runcomfy import (
    RunComfyAuthError,
    RunComfyBalanceError,
    RunComfyError,
    RunComfyModelError,
    RunComfyValidationError,
    SubmitOutcomeUnknown,
)

log = logging.getLogger(__name__)


def status_refusal(exc: discord.HTTPException, channel: discord.abc.Messageable, locale: str | None) -> Msg:
    """Why the status message could not be posted, as Discord told us (the requester may fix it)."""
    if exc.code == 50001:
        return Msg("I can't see this channel (missing access). Nothing was charged.")
    if exc.code == 50013:
        missing = c.missing_in(channel, file=True, locale=locale)
        if missing:
            return Msg(
                "I couldn't post in this channel because I'm missing these permissions here: "
                "{permissions}. Nothing was charged.",
                permissions=", ".join(missing),
            )
        return Msg(
            "I couldn't post in this channel (I need Send Messages, Embed Links and Attach Files "
            "here). Nothing was charged."
        )
    if exc.code in c.THREAD_CLOSED:
        return Msg("This thread is archived or locked, so I can't post in it. Nothing was charged.")
    if exc.code == 40005 or exc.status == 413:
        return Msg("Discord refused the image as too large for this channel. Nothing was charged.")
    if exc.status == 429:
        return Msg(
            "Discord is rate limiting me right now. Nothing was charged — please try again in a minute."
        )
    log.warning("Discord refused a status message (%s %s): %s", exc.status, exc.code, exc.text)
    return Msg(
        "Discord refused my status message (error {code}). Nothing was charged.",
        code=exc.code or exc.status,
    )


def submit_failure(exc: RunComfyError) -> tuple[Msg, Msg]:
    """(reason stored on the job, advice for the requester)."""
    if isinstance(exc, SubmitOutcomeUnknown):
        return (
            Msg("RunComfy did not confirm the job."),
            Msg("RunComfy didn't confirm the job (it may be overloaded), so I did not start it."),
        )
    if isinstance(exc, RunComfyBalanceError):
        return (
            Msg("The RunComfy account is out of balance."),
            Msg("The bot's RunComfy account is out of credit — please tell a server admin."),
        )
    if isinstance(exc, RunComfyAuthError):
        log.error("RunComfy rejected RUNCOMFY_API_TOKEN: %s", exc)
        return (
            Msg("RunComfy refused the bot's API token."),
            Msg("RunComfy refused the bot's API token – please tell a server admin."),
        )
    if isinstance(exc, RunComfyModelError):
        log.error("RunComfy does not know RUNCOMFY_MODEL: %s", exc)
        return (
            Msg("RunComfy does not know the configured model."),
            Msg("The bot is set up with a model RunComfy does not know – please tell a server admin."),
        )
    if isinstance(exc, RunComfyValidationError):
        return (
            Msg("RunComfy rejected the request: {detail}", detail=str(exc)),
            Msg("RunComfy rejected the request: {detail}.", detail=str(exc)),
        )
    return (
        Msg("RunComfy is unavailable."),
        Msg("RunComfy is unavailable right now. Please try again in a few minutes."),
    )
