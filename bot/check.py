"""`python -m bot check`: the preflight an admin runs before the first start.

Each line is one check with a mark (✔ passed, ✘ failed, – skipped); the exit status is 0 only when
nothing failed. It never prints a token, and a missing setting is a failed line, not a crash.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import discord

from bot import i18n
from bot.settings import Settings, SettingsError, load_settings
from storage.db import Database, StorageError

# The bot permissions the README asks for: View Channels, Send Messages, Send Messages in Threads,
# Create Public Threads, Embed Links, Attach Files, Read Message History.
INVITE_PERMISSIONS = 309237763072
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=10)
MARKS = {"ok": "✔", "fail": "✘", "skip": "–"}
ASCII_MARKS = {"ok": "[ok]", "fail": "[FAIL]", "skip": "[skip]"}


@dataclass
class Line:
    state: str  # ok | fail | skip
    name: str
    detail: str
    more: tuple[str, ...] = field(default=())  # further lines of the detail, printed below it


def invite_url(application_id: int) -> str:
    """The server install (the `bot` scope makes it one): the bot with its permissions."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}"
    )


def user_install_url(application_id: int) -> str:
    """The user install (README "User install"): the commands only, for the user themselves."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        "&scope=applications.commands&integration_type=1"
    )


async def _get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with session.get(url, headers=headers, timeout=TIMEOUT) as resp:
        raw = await resp.content.read(1024 * 1024)  # an answer is small; never read more than 1 MiB
        try:
            body: Any = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        return resp.status, body


async def check_database(settings: Settings) -> Line:
    try:
        db = await Database.open(settings.database_path)
    except StorageError as exc:
        return Line("fail", "Database", str(exc))
    try:
        row = await db.fetchone("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        version = int(row["v"]) if row is not None else 0
    finally:
        await db.close()
    return Line("ok", "Database", f"{settings.database_path} opened and migrated (schema version {version})")


async def check_discord(session: aiohttp.ClientSession, settings: Settings) -> tuple[Line, Line]:
    """GET /users/@me with the bot token, then the application id for the invite URL."""
    base = discord.http.Route.BASE  # read now: tests point it at a fake Discord
    headers = {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}
    skipped = Line("skip", "Invite URL", "needs an accepted Discord token")
    try:
        status, me = await _get_json(session, f"{base}/users/@me", headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Line("fail", "Discord token", f"could not reach Discord ({type(exc).__name__})"), skipped
    if status == 401:
        return (
            Line("fail", "Discord token", "rejected by Discord: reset the bot token in the developer portal"),
            skipped,
        )
    if status != 200 or not isinstance(me, dict) or "id" not in me:
        return Line("fail", "Discord token", f"unexpected answer from Discord (HTTP {status})"), skipped
    if not me.get("bot"):
        return Line("fail", "Discord token", "this is not a bot account's token"), skipped
    name, user_id = _printable(me.get("username")), _snowflake(me.get("id"))
    token_line = Line("ok", "Discord token", f"accepted: logged in as {name} (id {user_id})")
    app_id = user_id  # a bot's user id is its application id; ask to be sure
    try:
        status, app = await _get_json(session, f"{base}/oauth2/applications/@me", headers)
        if status == 200 and isinstance(app, dict) and _snowflake(app.get("id")):
            app_id = _snowflake(app.get("id"))
    except (aiohttp.ClientError, TimeoutError):
        pass
    if app_id is None:
        return token_line, Line("fail", "Invite URL", "Discord did not say the application id")
    more = (f"user install: {user_install_url(app_id)}",)
    return token_line, Line("ok", "Invite URL", invite_url(app_id), more)


def _snowflake(value: Any) -> int | None:
    text = str(value) if isinstance(value, int | str) else ""
    return int(text) if text.isdigit() and len(text) <= 20 else None


def _printable(value: Any) -> str:
    """A remote name, safe for a terminal: no control characters (escape sequences), bounded."""
    return "".join(ch for ch in str(value)[:100] if ch.isprintable()) or "?"


async def check_runcomfy(session: aiohttp.ClientSession, settings: Settings) -> Line:
    """RunComfy has no "who am I" call, and a submit costs money. So ask for the status of a request
    id that cannot exist: RunComfy authenticates first, so 404 (404001, unknown request) means the
    token was accepted, and 401 / 400004 / 401001 means it was rejected."""
    if settings.backend == "preview":
        return Line("skip", "RunComfy token", "skipped (BACKEND=preview)")
    url = f"{settings.runcomfy_base_url}/requests/{uuid.uuid4()}/status"
    headers = {"Authorization": f"Bearer {settings.runcomfy_token}", "Accept": "application/json"}
    try:
        status, body = await _get_json(session, url, headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Line(
            "fail", "RunComfy token", f"could not reach {settings.runcomfy_base_url} ({type(exc).__name__})"
        )
    code = body.get("error_code") if isinstance(body, dict) else None
    code = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
    if status == 401 or code in (400004, 401001):
        return Line("fail", "RunComfy token", "rejected by RunComfy: check RUNCOMFY_API_TOKEN")
    if status == 404 or code == 404001 or (status == 403 and code in (403001, 403003)):
        return Line("ok", "RunComfy token", f"accepted by {settings.runcomfy_base_url}")
    return Line("fail", "RunComfy token", f"unexpected answer from RunComfy (HTTP {status})")


def check_locales(settings: Settings) -> Line:
    bundled = sorted(i18n.CATALOGS)
    if settings.locales_dir is None:
        return Line("ok", "Languages", "en, " + ", ".join(bundled) + " (LOCALES_DIR not set)")
    problems, extra = [], []
    for path in sorted(settings.locales_dir.glob("*.json")):
        try:
            if not i18n.known_locale(path.stem):
                raise i18n.CatalogError(f"{path.name}: {path.stem!r} is not a Discord locale code")
            i18n.read_catalog(path)
        except i18n.CatalogError as exc:
            problems.append(str(exc))
        else:
            extra.append(path.stem)
    if problems:
        return Line("fail", "Languages", "; ".join(problems))
    return Line(
        "ok", "Languages", f"bundled {', '.join(bundled)}; from LOCALES_DIR: {', '.join(extra) or 'none'}"
    )


async def run_checks(load: Callable[[], Settings] = load_settings) -> list[Line]:
    try:
        settings = load()
    except SettingsError as exc:
        lines = [Line("fail", "Settings", str(exc))]
        lines += [Line("skip", name, "needs valid settings") for name in _LATER]
        return lines
    lines = [Line("ok", "Settings", f"valid (BACKEND={settings.backend})"), check_locales(settings)]
    lines.append(await check_database(settings))
    async with aiohttp.ClientSession(headers={"User-Agent": "animate-bot check"}) as session:
        steps: list[Awaitable[Any]] = [check_discord(session, settings), check_runcomfy(session, settings)]
        discord_lines, runcomfy_line = await asyncio.gather(*steps)
    lines += [*discord_lines, runcomfy_line]
    return lines


_LATER = ("Database", "Discord token", "Invite URL", "RunComfy token")


def render(lines: list[Line], stream: IO[str]) -> None:
    marks = MARKS
    encoding = getattr(stream, "encoding", None)  # None: an in-memory text stream takes anything
    try:
        if encoding:
            "".join(MARKS.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        marks = ASCII_MARKS  # e.g. a C-locale terminal: plain marks rather than a crash
    width = max(len(line.name) for line in lines)
    for line in lines:
        print(f"{marks[line.state]} {line.name.ljust(width)}  {line.detail}", file=stream)
        for extra in line.more:  # aligned under the detail, without a mark of its own
            print(" " * (len(marks[line.state]) + width + 3) + extra, file=stream)
    failed = sum(line.state == "fail" for line in lines)
    if failed:
        print(f"{failed} check(s) failed: fix them and run `python -m bot check` again.", file=stream)
    else:
        print("All checks passed: start the bot with `python -m bot`.", file=stream)


def main(stream: IO[str] | None = None) -> int:
    out = sys.stdout if stream is None else stream
    lines = asyncio.run(run_checks())
    render(lines, out)
    return 1 if any(line.state == "fail" for line in lines) else 0
