"""`python -m bot` / `animate-bot`: load settings, configure logging, run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING

import discord

from bot.settings import Settings, SettingsError, load_settings
from storage.db import StorageError

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # discord.py's own INFO chatter about gateway sessions is useful; its DEBUG is not.
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))


class DatabaseUnusable(Exception):
    """DATABASE_PATH cannot be opened or migrated: a configuration error, found before logging in."""


async def run(settings: Settings) -> None:
    from bot.client import AnimateBot

    bot = AnimateBot(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(sig, stop.set)

    async with bot:
        # Before logging in: a bad DATABASE_PATH fails at once instead of after Discord answered.
        try:
            await bot.open_storage()
        except StorageError as exc:
            raise DatabaseUnusable(str(exc)) from None
        runner = asyncio.create_task(start(bot, settings.discord_token.get_secret_value(), stop))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("Signal received; stopping")
        stopper.cancel()
        await bot.close()
        if runner in done:
            runner.result()  # re-raise a start-up failure
        else:
            await asyncio.gather(runner, return_exceptions=True)


async def start(bot: AnimateBot, token: str, stop: asyncio.Event) -> None:
    """discord.py's `Client.start`, but a Discord unreachable at start-up is waited for."""
    if await bot.login_retrying(token, stop):
        await bot.connect(reconnect=True)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        asyncio.run(run(settings))
    except discord.LoginFailure:
        print("Discord rejected DISCORD_TOKEN: check the bot token in the developer portal.", file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:  # pragma: no cover - we request none
        print("Discord refused the gateway intents.", file=sys.stderr)
        return 1
    except discord.HTTPException as exc:  # a refusal other than a bad token: retrying won't help
        print(f"Discord refused the bot at start-up: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnusable as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
