"""`python -m bot` / `animate-bot`: load settings, configure logging, run until SIGINT/SIGTERM.

`python -m bot check` / `animate-bot check` runs the preflight check instead (bot/check.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

import discord

from bot import logs
from bot.settings import Settings, SettingsError, load_settings
from storage.db import StorageError

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)


USAGE = """usage: animate-bot [run | check | migrate-to-postgres --from FILE [--to URL]]

  run                   start the bot (the default)
  check                 preflight: settings, database, both tokens, and the invite URL
  migrate-to-postgres   copy a SQLite database into an empty PostgreSQL one (DATABASE_URL, or --to)
"""


def setup_logging(level: str, fmt: str = "plain", settings: Settings | None = None) -> None:
    """Plain or JSON lines on stderr; both tokens are redacted from every record."""
    secrets = [] if settings is None else [settings.discord_token.get_secret_value(), settings.runcomfy_token]
    logs.configure(level, fmt, secrets)


# The cyclic garbage collector stops the event loop for a pass over every tracked object. With
# thousands of jobs in flight nearly every object that lives across a few awaits (requests, tasks,
# answers) used to reach the oldest generation, which made a full pass -- about a second with 10,000
# jobs -- run every few seconds: a third of the process' CPU, and the longest stalls of its loop.
# What exists once the bot is set up (modules, settings, caches) is frozen out of every pass, and
# full passes are made ten times rarer. The young generation keeps Python's default: at 50,000 it
# let the cyclic garbage of a burst of photo commands (image buffers, upload copies) pile up --
# measured, 100 photos at once: 445 MiB peak against 224 MiB with the default.
GC_THRESHOLDS = (700, 10, 100)


def tune_gc() -> None:
    """Collector settings for a long-running bot; call once the bot is built and its storage open."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        tune_gc()
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


_GATEWAY_CLOSED = {
    4010: "Discord refused the shard (4010 invalid shard): check SHARD_COUNT and SHARD_IDS.",
    4011: "Discord requires more shards (4011 sharding required): raise SHARD_COUNT on every process, "
    "or unset it to use Discord's recommended count.",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["migrate-to-postgres"]:
        from bot.migrate import main as migrate_main

        return migrate_main(args[1:])
    if args in ([], ["run"]):
        return run_bot()
    if args == ["check"]:
        from bot.check import main as check_main

        return check_main()
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    print(USAGE, end="", file=sys.stderr)
    return 2


def run_bot() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, settings)
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
    except discord.ConnectionClosed as exc:  # a close code discord.py does not reconnect after
        print(
            _GATEWAY_CLOSED.get(exc.code, f"Discord closed the gateway (code {exc.code})."), file=sys.stderr
        )
        return 1
    except StorageError as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
