"""Constants, permission and intent bits, small helpers, Discord errors and the records the fake keeps."""

from __future__ import annotations

import io
import json
import mimetypes
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

API_VERSION = 10
DISCORD_EPOCH_MS = 1420070400000
MIB = 1024 * 1024

# Message flags
SUPPRESS_EMBEDS = 1 << 2
HAS_THREAD = 1 << 5
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
# Attachment flags: Discord marks an attachment uploaded as SPOILER_<name> (the name is kept as sent).
ATTACHMENT_IS_SPOILER = 1 << 3


def _attachment_flags(filename: str) -> int:
    return ATTACHMENT_IS_SPOILER if filename.startswith("SPOILER_") else 0


INTERACTIVE_COMPONENT_TYPES = {2, 3, 5, 6, 7, 8}
# The locales Discord accepts in `*_localizations` (and sends as `locale` / `guild_locale`).
DISCORD_LOCALES = (
    "id",
    "da",
    "de",
    "en-GB",
    "en-US",
    "es-ES",
    "es-419",
    "fr",
    "hr",
    "it",
    "lt",
    "hu",
    "nl",
    "no",
    "pl",
    "pt-BR",
    "ro",
    "fi",
    "sv-SE",
    "vi",
    "tr",
    "cs",
    "el",
    "bg",
    "ru",
    "uk",
    "hi",
    "th",
    "zh-CN",
    "ja",
    "zh-TW",
    "ko",
)
SELECT_TYPES = {3, 5, 6, 7, 8}
THREAD_TYPES = {10, 11, 12}
# Events whose payload *is* a guild (its id is the guild id); others carry `guild_id`.
GUILD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; events without a guild (DMs) go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


class Perm:
    """Discord permission bits (the subset the fake uses, plus a few common ones)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    USE_EXTERNAL_STICKERS = 1 << 37
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | CONNECT
        | SPEAK
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | CREATE_PRIVATE_THREADS
        | USE_EXTERNAL_STICKERS
        | SEND_MESSAGES_IN_THREADS
    )
    BOT_DEFAULT = (
        VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | ADD_REACTIONS
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | SEND_MESSAGES_IN_THREADS
    )


class Intent:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15
    GUILD_PRESENCES = 1 << 8
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


# --------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py only parses JSON when the Content-Type is *exactly* "application/json" (no charset).
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


def _iter_components(components: Iterable[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    for comp in components or ():
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _iter_components(comp.get("components"))
        for key in ("accessory", "component"):
            child = comp.get(key)
            if isinstance(child, dict):
                yield from _iter_components([child])


def _sanitize_filename(name: str) -> str:
    # Discord rewrites attachment filenames: spaces become underscores and exotic characters are dropped.
    name = name.replace(" ", "_")
    name = re.sub(r"[^A-Za-z0-9._\-]", "", name)
    return name or "unknown"


def _guess_content_type(filename: str, sent: str | None) -> str | None:
    guessed, _ = mimetypes.guess_type(filename)
    ctype = guessed or (sent if sent and sent != "application/octet-stream" else None)
    if ctype and ctype.startswith("text/") and "charset" not in ctype:
        ctype += "; charset=utf-8"
    return ctype


def _image_size(data: bytes, content_type: str | None) -> tuple[int | None, int | None]:
    if not content_type or not content_type.startswith("image/"):
        return None, None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return int(img.size[0]), int(img.size[1])
    except Exception:
        return None, None


class DiscordError(Exception):
    """Raised inside route handlers; turned into a Discord-style JSON error response."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        return out


class _FormErrors:
    """Builds Discord's nested ``errors`` tree for 400 / 50035 Invalid Form Body."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: Sequence[str | int], code: str, message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_len(self, path: Sequence[str | int], value: Any, limit: int) -> None:
        if isinstance(value, str | list) and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.tree:
            raise DiscordError(400, 50035, "Invalid Form Body", errors=self.tree)


# --------------------------------------------------------------------------------------------------------
# Test-facing records
# --------------------------------------------------------------------------------------------------------


@dataclass
class RecordedCall:
    """One REST request as received by the fake.  ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes, str]]
    reason: str | None = None
    authorized: bool = False
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Upload:
    field: str
    filename: str
    data: bytes
    content_type: str

    @property
    def index(self) -> int | None:
        m = re.fullmatch(r"files\[(\d+)\]", self.field) or re.fullmatch(r"file(\d*)", self.field)
        if m is None:
            return None
        return int(m.group(1) or 0)


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    uploads: list[_Upload]
    call: RecordedCall


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    retry_after: float | None
    remaining: int
    headers: dict[str, str] | None
    hits: int = 0
    # fail_after_store: the request takes effect, then the answer is `status` (int), or "drop" (the
    # connection is closed unanswered) or "timeout" (no answer for `hold` seconds, then closed).
    after_store: int | str | None = None
    hold: float = 0.0


_Handler = Callable[..., Any]
