"""A fake Discord (REST API + gateway + CDN) that the real, unmodified discord.py client can log into.

Everything runs on 127.0.0.1 with an aiohttp.web server on an ephemeral port.  Point discord.py at it with
:func:`patched_discord` and drive it from tests with :class:`FakeDiscord` (``slash``, ``click``,
``autocomplete``, ``submit_modal``, ``dispatch`` ...).  Every REST call is recorded; unknown routes are
answered with a Discord-style 404 and collected in ``FakeDiscord.unknown_routes``.

The fake enforces the Discord rules that bots most often get wrong:

* an interaction must be acknowledged within ``ack_deadline`` (3 s) of being dispatched, otherwise the
  callback answers 404 ``{code: 10062, "Unknown interaction"}``;
* a second callback answers 400 ``{code: 40060, "Interaction has already been acknowledged."}``;
* follow-ups before the initial response answer 404 ``{code: 10015, "Unknown Webhook"}``;
* after a deferred (type 5) response the *first* follow-up edits the "thinking..." message and inherits
  its ephemeral flag (what real Discord does);
* message limits (2000 chars content, 10 embeds / 6000 chars, 5 action rows x 5 buttons, unique
  custom_ids, ...) answer 400 ``{code: 50035, "Invalid Form Body"}`` with the nested ``errors`` tree,
  empty messages answer 400 ``{code: 50006}``;
* files larger than ``upload_limit`` (10 MiB) answer 413 ``{code: 40005}``;
* channel permissions (role permissions + overwrites) are computed for the bot: missing
  VIEW_CHANNEL -> 403 50001, missing SEND_MESSAGES / ATTACH_FILES / CREATE_PUBLIC_THREADS -> 403 50013.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import inspect
import io
import json
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "FakeDiscord",
    "FakeInteraction",
    "Intent",
    "Perm",
    "RecordedCall",
    "patched_discord",
    "shard_of",
]

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


class FakeInteraction:
    """An interaction the fake dispatched, and everything the bot answered to it."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any], user_id: int) -> None:
        self._fake = fake
        self.payload = payload
        self.id: int = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.user_id = user_id
        self.channel_id: int = int(payload["channel_id"])
        self.guild_id: int | None = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.dispatched_at: float | None = None
        self.ack_latency: float | None = None
        #: Accepted callbacks:
        #: {"type", "data", "files": [(filename, bytes, content_type)], "latency", "message"}
        self.callbacks: list[dict[str, Any]] = []
        #: Refused callbacks: {"type", "status", "code", "latency"}
        self.rejected_callbacks: list[dict[str, Any]] = []
        #: Snapshots of every message created or edited through the interaction webhook (follow-ups and
        #: @original edits), in order.
        self.followups: list[dict[str, Any]] = []
        self.deleted_message_ids: list[int] = []
        self.original_message_id: int | None = None
        self.source_message_id: int | None = int(payload["message"]["id"]) if payload.get("message") else None
        self._loading = False
        self._webhook_message_ids: set[int] = set()

    def __repr__(self) -> str:
        return (
            f"<FakeInteraction id={self.id} type={self.type} callbacks={[c['type'] for c in self.callbacks]}>"
        )

    @property
    def acked(self) -> bool:
        return bool(self.callbacks)

    @property
    def response_type(self) -> int | None:
        return self.callbacks[0]["type"] if self.callbacks else None

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        """Whether the initial response (message or deferral) is only visible to the invoking user."""
        if not self.callbacks:
            return False
        cb = self.callbacks[0]
        if cb["type"] in (4, 5):
            return bool(int((cb["data"] or {}).get("flags") or 0) & EPHEMERAL)
        if cb["type"] in (6, 7) and self.source_message_id is not None:
            msg = self._fake.get_message(self.source_message_id)
            return bool(msg and int(msg.get("flags", 0)) & EPHEMERAL)
        return False

    @property
    def original_message(self) -> dict[str, Any] | None:
        """The live stored original-response message (None if there is none / it was deleted)."""
        if self.original_message_id is None:
            return None
        return self._fake.get_message(self.original_message_id)

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices the bot answered with (callback type 8)."""
        for cb in self.callbacks:
            if cb["type"] == 8:
                return list((cb["data"] or {}).get("choices") or [])
        return None

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened (callback type 9 data)."""
        for cb in self.callbacks:
            if cb["type"] == 9:
                return cb["data"]
        return None

    async def wait_acked(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the first accepted callback and return it."""
        return await self._fake.wait_for(lambda: self.callbacks[0] if self.callbacks else None, timeout)

    async def wait_response(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the user sees an answer and return it.

        Callback 4/7 -> the message snapshot; 8/9 -> the callback data; 5/6 (deferred) -> the first
        follow-up or @original edit.  Times out if the bot only deferred.
        """

        def ready() -> dict[str, Any] | None:
            if not self.callbacks:
                return None
            cb = self.callbacks[0]
            if cb["type"] in (4, 7):
                return cb["message"]
            if cb["type"] in (8, 9):
                return cb["data"]
            return self.followups[0] if self.followups else None

        return await self._fake.wait_for(ready, timeout)

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` webhook messages/edits were recorded; returns the list."""
        return await self._fake.wait_for(
            lambda: self.followups if len(self.followups) >= count else None, timeout
        )


class _Conn:
    """One gateway websocket connection."""

    def __init__(self, ws: web.WebSocketResponse, query: dict[str, str]) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.info: dict[str, Any] = {
            "query": query,
            "identified": False,
            "resumed": False,
            "close_code": None,
            "heartbeats": 0,
            "shard": None,  # [id, count] once identified
            "events": [],  # (event name, guild id or None) of every DISPATCH sent on this connection
        }

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_str(json.dumps(frame))


class _Session:
    def __init__(self, session_id: str, intents: int, shard: list[int] | None) -> None:
        self.session_id = session_id
        self.intents = intents
        self.shard = shard
        # An IDENTIFY without `shard` is shard 0 of 1: it receives every guild.
        self.shard_id, self.shard_count = (shard[0], shard[1]) if shard is not None else (0, 1)
        self.seq = 0
        self.sent: list[dict[str, Any]] = []
        self.conn: _Conn | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.ws.closed


# --------------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------------

_Handler = Callable[..., Any]


class FakeDiscord:
    """In-process fake Discord.  See the module docstring and tests/fakes/README.md."""

    def __init__(self, token: str = "test-discord-token", *, port: int = 0) -> None:
        self.token = token
        self._bind_port = port  # 0 = any free port; a fixed one lets a test bring Discord up mid-run
        # Tunables
        self.ack_deadline: float = 3.0
        self.upload_limit: int = 10 * MIB
        self.heartbeat_interval_ms: int = 41250
        self.enabled_privileged_intents: int = 0  # what the developer portal allows
        self.dispatch_message_events: bool = True  # MESSAGE_CREATE/UPDATE/DELETE for messages the bot sends
        self.enforce_command_permissions: bool = True  # default_member_permissions / contexts in slash()
        self.response_delay: float = 0.0  # seconds added before every REST answer
        # While True, new gateway connections get HTTP 503 (an outage): hold a bot disconnected.
        self.refuse_gateway: bool = False
        self.refused_gateway_connections: int = 0
        # A create with a nonce seen in the same channel within this many seconds, sent with
        # `enforce_nonce`, returns the message created the first time instead of posting again.
        self.nonce_window: float = 300.0
        # Sharding: what GET /gateway/bot recommends and reports; IDENTIFY with more guilds than this
        # on one shard is closed with 4011 (sharding required).
        self.recommended_shards: int = 1
        self.session_start_limit: dict[str, int] = {
            "total": 1000,
            "remaining": 1000,
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        }
        self.max_guilds_per_shard: int = 2500

        # Records
        self.calls: list[RecordedCall] = []
        self.unknown_routes: list[RecordedCall] = []
        self.cdn_requests: list[str] = []
        # Slow CDN files (see slow_cdn): path -> seconds, and the peak of concurrent requests to them.
        self.cdn_delays: dict[str, float] = {}
        self.cdn_peak: dict[str, int] = {}
        self.cdn_peak_total = 0
        self._cdn_in_flight: dict[str, int] = {}
        self.dispatched: list[dict[str, Any]] = []
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_connections: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []
        self.deleted_messages: list[dict[str, Any]] = []

        # State
        self._last_snowflake = 0
        self.users: dict[int, dict[str, Any]] = {}
        self.user_ids: dict[str, int] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, list[dict[str, Any]]] = {}
        self._message_index: dict[int, dict[str, Any]] = {}
        self._cdn: dict[str, tuple[bytes, str | None]] = {}
        self._uploaded_attachments: dict[int, dict[str, Any]] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self._dm_channels: dict[int, int] = {}
        self.closed_dms: set[int] = set()
        self._faults: list[_Fault] = []
        self._after_store: list[_Fault] = []
        # (channel id, author id, nonce) -> (message id, monotonic time it was created)
        self._nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self._stalls: list[tuple[str, re.Pattern[str], asyncio.Event]] = []

        # Gateway
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None  # the newest session (identified or resumed)
        self._shard_sessions: dict[int, _Session] = {}  # shard id -> its newest session
        self._conns: set[_Conn] = set()
        self._ready = asyncio.Event()

        # Server
        self._runner: web.AppRunner | None = None
        self.port: int = 0
        self.url = ""
        self.api_base = ""
        self.gateway_url = ""

        # Identity
        self.application_id: int = self._snowflake()
        self.bot_user: dict[str, Any] = {
            "id": str(self.application_id),
            "username": "AnimateBot",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
        }
        self.users[self.application_id] = self.bot_user
        self.user_ids["bot"] = self.application_id
        self.add_user("owner")

        # Default guild: #animate and #general, alice/bob plain members, mod (Manage Messages), admin
        # (Manage Guild), owner (guild owner).
        self.guild_id: int = self.add_guild("Fake Guild", owner="owner")
        self.role_ids: dict[str, int] = {
            "everyone": self.guild_id,
            "bot": self.guilds[self.guild_id]["bot_role_id"],
            "moderator": self.add_role("Moderator", Perm.MANAGE_MESSAGES),
            "admin": self.add_role("Admin", Perm.MANAGE_GUILD),
        }
        self.channel_id: int = self.add_channel("animate", topic="Animate images")
        self.other_channel_id: int = self.add_channel("general")
        self.add_member("alice")
        self.add_member("bob")
        self.add_member("mod", roles=["moderator"])
        self.add_member("admin", roles=["admin"])

        self._routes: list[tuple[re.Pattern[str], dict[str, _Handler], bool]] = []
        self._build_routes()

    # ---------------------------------------------------------------------------------------------------
    # Lifecycle
    # ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=512 * MIB)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_route("*", "/api/v{version:\\d+}/{tail:.*}", self._api_handler)
        app.router.add_route("*", "/{tail:.*}", self._cdn_handler)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._bind_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_base = f"{self.url}/api/v{API_VERSION}"
        self.gateway_url = f"ws://127.0.0.1:{self.port}/gateway"

    async def close(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------------------------------------------
    # Generic helpers
    # ---------------------------------------------------------------------------------------------------

    def _snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = max(ms << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 10,
        interval: float = 0.005,
    ) -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(interval)

    async def wait_until_ready(self, timeout: float = 10) -> None:
        """Wait until a bot identified and was sent READY + GUILD_CREATE for every guild."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def calls_to(self, method: str, path_regex: str) -> list[RecordedCall]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if (method in ("*", c.method)) and pattern.search(c.path)]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        retry_after: float | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> _Fault:
        """Make the next ``times`` requests matching ``method`` ("*" = any) and ``path_regex`` (searched in
        the path relative to /api/v10, e.g. r"/channels/\\d+/messages/\\d+$") fail with ``status``."""
        fault = _Fault(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=status,
            body=body,
            retry_after=retry_after,
            remaining=times,
            headers=headers,
        )
        self._faults.append(fault)
        return fault

    def fail_after_store(
        self,
        method: str,
        path_regex: str,
        outcome: int | str = 503,
        *,
        times: int = 1,
        body: Any = None,
        hold: float = 30.0,
    ) -> _Fault:
        """Let the next ``times`` successful requests matching ``method`` and ``path_regex`` take effect
        (the message is stored), then answer badly: ``outcome`` is an HTTP status (answered with a
        Discord-style body or ``body``), ``"drop"`` (the connection is closed without an answer) or
        ``"timeout"`` (no answer for ``hold`` seconds, then the connection is closed).  Requests that
        fail on their own do not use up the fault."""
        if not (isinstance(outcome, int) or outcome in ("drop", "timeout")):
            raise ValueError(f"outcome must be a status, 'drop' or 'timeout', not {outcome!r}")
        fault = _Fault(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=outcome if isinstance(outcome, int) else 0,
            body=body,
            retry_after=None,
            remaining=times,
            headers=None,
            after_store=outcome,
            hold=hold,
        )
        self._after_store.append(fault)
        return fault

    def stall_after(self, method: str, path_regex: str) -> asyncio.Event:
        """Let the next matching request take effect, then hold its response until the returned event is
        set -- the window in which a real client may crash after Discord acted but before it heard back."""
        release = asyncio.Event()
        self._stalls.append((method.upper(), re.compile(path_regex), release))
        return release

    def _resolve_user(self, user: str | int) -> int:
        if isinstance(user, int):
            if user not in self.users:
                raise KeyError(f"unknown user id {user}")
            return user
        try:
            return self.user_ids[user]
        except KeyError:
            raise KeyError(f"unknown user {user!r}; known: {sorted(self.user_ids)}") from None

    def _resolve_role(self, guild_id: int, role: str | int) -> int:
        guild = self.guilds[guild_id]
        if isinstance(role, int):
            if role not in guild["roles"]:
                raise KeyError(f"unknown role id {role}")
            return role
        if role in ("everyone", "@everyone"):
            return guild_id
        for rid, r in guild["roles"].items():
            if r["name"].lower() == role.lower():
                return rid
        if guild_id == self.guild_id and role in getattr(self, "role_ids", {}):
            return self.role_ids[role]
        raise KeyError(f"unknown role {role!r}")

    # ---------------------------------------------------------------------------------------------------
    # World building
    # ---------------------------------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False, global_name: str | None = None) -> int:
        if name in self.user_ids:
            return self.user_ids[name]
        uid = self._snowflake()
        self.users[uid] = {
            "id": str(uid),
            "username": name,
            "global_name": global_name or name.capitalize(),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self.user_ids[name] = uid
        return uid

    def _snowflake_on_shard(self, shard_id: int, shard_count: int) -> int:
        """A fresh snowflake whose guild would live on ``shard_id`` of ``shard_count``: the shard is
        taken from the timestamp bits (``id >> 22``), so move the timestamp up by < count ms."""
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"shard {shard_id} is not one of {shard_count} shards")
        base = self._snowflake()
        ms = base >> 22
        ms += (shard_id - ms) % shard_count
        value = max(base, ms << 22)
        self._last_snowflake = value
        return value

    def add_guild(
        self,
        name: str,
        *,
        owner: str | int = "owner",
        preferred_locale: str = "en-US",
        shard: tuple[int, int] | None = None,
    ) -> int:
        """A guild (only the fake's state); ``shard=(id, count)`` picks an id that lands on that shard."""
        gid = self._snowflake() if shard is None else self._snowflake_on_shard(*shard)
        owner_id = self._resolve_user(owner) if not isinstance(owner, str) else self.add_user(owner)
        self.guilds[gid] = {
            "id": gid,
            "name": name,
            "owner_id": owner_id,
            "preferred_locale": preferred_locale,
            "roles": {},
            "members": {},
            "channel_ids": [],
            "joined_at": _now_iso(),
            "bot_role_id": 0,
        }
        self._add_role_raw(gid, gid, "@everyone", Perm.EVERYONE_DEFAULT)
        bot_role = self._add_role_raw(gid, self._snowflake(), "AnimateBot", Perm.BOT_DEFAULT, managed=True)
        self.guilds[gid]["bot_role_id"] = bot_role
        self.add_member(self.application_id, roles=[bot_role], guild_id=gid)
        self.add_member(owner_id, guild_id=gid)
        return gid

    def set_guild_locale(self, locale: str, guild_id: int | None = None) -> None:
        """The guild's preferred locale (Server Settings > Community > Server Primary Language): sent as
        `preferred_locale` in guild payloads and as `guild_locale` on every interaction from the guild.
        Only changes the fake's state (dispatch GUILD_UPDATE yourself if the bot should see it)."""
        self.guilds[guild_id or self.guild_id]["preferred_locale"] = locale

    def _add_role_raw(self, gid: int, rid: int, name: str, permissions: int, *, managed: bool = False) -> int:
        roles = self.guilds[gid]["roles"]
        role: dict[str, Any] = {
            "id": str(rid),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": len(roles),
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }
        if managed:
            role["tags"] = {"bot_id": str(self.application_id)}
        roles[rid] = role
        return rid

    def add_role(self, name: str, permissions: int, *, guild_id: int | None = None) -> int:
        return self._add_role_raw(guild_id or self.guild_id, self._snowflake(), name, permissions)

    def add_member(
        self,
        user: str | int,
        *,
        roles: Sequence[str | int] = (),
        guild_id: int | None = None,
        nick: str | None = None,
    ) -> int:
        """Add a member (creating the user when ``user`` is an unknown name); returns the user id."""
        gid = guild_id or self.guild_id
        uid = self.add_user(user) if isinstance(user, str) else self._resolve_user(user)
        self.guilds[gid]["members"][uid] = {
            "roles": [self._resolve_role(gid, r) for r in roles],
            "nick": nick,
            "joined_at": _now_iso(),
        }
        return uid

    def add_channel(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        type: int = 0,
        topic: str | None = None,
        overwrites: Sequence[dict[str, Any]] = (),
        parent_id: int | None = None,
        nsfw: bool = False,
        rate_limit_per_user: int = 0,
    ) -> int:
        """Add a guild channel.  ``overwrites`` entries: {"id": role/user name or id, "allow": int,
        "deny": int, "type": 0 role / 1 member (optional when id is a name)}."""
        gid = guild_id or self.guild_id
        cid = self._snowflake()
        guild = self.guilds[gid]
        channel: dict[str, Any] = {
            "id": str(cid),
            "type": type,
            "guild_id": str(gid),
            "name": name,
            "position": len(guild["channel_ids"]),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "parent_id": str(parent_id) if parent_id else None,
            "topic": topic,
            "last_message_id": None,
            "rate_limit_per_user": rate_limit_per_user,
            "flags": 0,
            "last_pin_timestamp": None,
        }
        self.channels[cid] = channel
        guild["channel_ids"].append(cid)
        self._messages[cid] = []
        for ow in overwrites:
            self.set_overwrite(
                cid, ow["id"], allow=ow.get("allow", 0), deny=ow.get("deny", 0), type=ow.get("type")
            )
        return cid

    def set_overwrite(
        self, channel_id: int, target: str | int, *, allow: int = 0, deny: int = 0, type: int | None = None
    ) -> None:
        """Set (replace) a permission overwrite on a channel.  ``target``: role/user name or id."""
        channel = self.channels[channel_id]
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if type is None:
            if isinstance(target, str):
                try:
                    tid, type = self._resolve_role(gid, target), 0
                except KeyError:
                    tid, type = self._resolve_user(target), 1
            else:
                tid, type = target, (0 if target in guild["roles"] else 1)
        else:
            tid = (
                (self._resolve_role(gid, target) if type == 0 else self._resolve_user(target))
                if isinstance(target, str)
                else target
            )
        ows = [o for o in channel["permission_overwrites"] if int(o["id"]) != tid]
        ows.append({"id": str(tid), "type": type, "allow": str(allow), "deny": str(deny)})
        channel["permission_overwrites"] = ows

    def add_thread(
        self,
        parent_id: int,
        name: str,
        *,
        owner: str | int = "alice",
        type: int = 11,
        message_id: int | None = None,
        archived: bool = False,
        locked: bool = False,
    ) -> int:
        """Create a thread (as a user would); dispatch THREAD_CREATE yourself if the bot is connected."""
        thread = self._create_thread(parent_id, name, self._resolve_user(owner), type, 1440, message_id)
        thread["thread_metadata"]["archived"] = archived
        thread["thread_metadata"]["locked"] = locked
        return int(thread["id"])

    async def set_thread_state(
        self, thread_id: int, *, archived: bool | None = None, locked: bool | None = None
    ) -> None:
        """A moderator archives and/or locks a thread (THREAD_UPDATE is dispatched).  Posting in an
        archived, locked thread then answers 400 / 50083; in a locked one 400 / 160005 (unless the bot has
        Manage Threads); an archived, unlocked one is unarchived by the post, as on Discord."""
        thread = self.channels[int(thread_id)]
        meta = thread["thread_metadata"]
        if archived is not None:
            meta["archived"] = archived
            meta["archive_timestamp"] = _now_iso()
        if locked is not None:
            meta["locked"] = locked
        if self.connected:
            await self.dispatch("THREAD_UPDATE", copy.deepcopy(thread))

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN as a user upload (for attachment options); returns the attachment
        object (id, filename, size, url, proxy_url, content_type, width, height, ephemeral)."""
        self._require_started()
        aid = self._snowflake()
        fname = _sanitize_filename(filename)
        path = f"/ephemeral-attachments/{self.channel_id}/{aid}/{fname}"
        self._cdn[path] = (data, content_type)
        if width is None and height is None:
            width, height = _image_size(data, content_type)
        att = {
            "id": str(aid),
            "filename": fname,
            "size": len(data),
            "url": self._cdn_url(path),
            "proxy_url": self._cdn_url(path, proxy=True),
            "content_type": content_type,
            "width": width,
            "height": height,
            "ephemeral": True,
            "flags": 0,
        }
        self._uploaded_attachments[aid] = att
        return copy.deepcopy(att)

    def close_dms(self, user: str | int) -> None:
        """The user blocks DMs: messages to their DM channel answer 403 / 50007."""
        self.closed_dms.add(self._resolve_user(user))

    def dm_channel_id(self, user: str | int) -> int | None:
        return self._dm_channels.get(self._resolve_user(user))

    # ---------------------------------------------------------------------------------------------------
    # Queries
    # ---------------------------------------------------------------------------------------------------

    def messages(
        self, channel_id: int | None = None, *, include_ephemeral: bool = False
    ) -> list[dict[str, Any]]:
        """Live stored messages of a channel (oldest first).  Attachments carry their bytes under "data";
        "allowed_mentions" is what the bot sent.  Ephemeral messages are left out unless asked for."""
        cid = channel_id or self.channel_id
        msgs = self._messages.get(cid, [])
        if include_ephemeral:
            return list(msgs)
        return [m for m in msgs if not int(m.get("flags", 0)) & EPHEMERAL]

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        return self._message_index.get(int(message_id))

    async def user_deletes_message(self, message_id: int) -> None:
        """A moderator deletes a message (MESSAGE_DELETE is dispatched, as Discord does)."""
        msg = self._message_index[int(message_id)]
        self._delete_message(msg)
        await self._announce("MESSAGE_DELETE", msg)

    async def user_deletes_channel(self, channel_id: int) -> None:
        """A moderator deletes a channel or thread: later requests for it answer 404 Unknown Channel."""
        channel = self.channels.pop(int(channel_id))
        event = "THREAD_DELETE" if channel["type"] in THREAD_TYPES else "CHANNEL_DELETE"
        await self.dispatch(event, channel)

    @property
    def threads(self) -> dict[int, dict[str, Any]]:
        return {cid: ch for cid, ch in self.channels.items() if ch["type"] in THREAD_TYPES}

    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """A synced chat-input command by name: commands of ``guild_id`` (default guild when None; pass 0
        for "no guild", e.g. DMs) first, then global ones."""
        gid = self.guild_id if guild_id is None else guild_id
        for cmd in self.guild_commands.get(gid, []):
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    def permissions_for(self, user: str | int, channel_id: int) -> int:
        """Effective permissions of a member in a channel (roles + overwrites, Discord's algorithm)."""
        uid = self._resolve_user(user)
        channel = self.channels[channel_id]
        if channel.get("guild_id") is None:
            return Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES | Perm.READ_MESSAGE_HISTORY | Perm.ATTACH_FILES
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if uid == guild["owner_id"]:
            return Perm.ALL
        member = guild["members"].get(uid)
        if member is None:
            return 0
        base = int(guild["roles"][gid]["permissions"])
        for rid in member["roles"]:
            base |= int(guild["roles"][rid]["permissions"])
        if base & Perm.ADMINISTRATOR:
            return Perm.ALL
        target = channel
        if channel["type"] in THREAD_TYPES:
            target = self.channels[int(channel["parent_id"])]
        ows = {int(o["id"]): o for o in target.get("permission_overwrites", [])}
        perms = base
        if gid in ows:
            perms = (perms & ~int(ows[gid]["deny"])) | int(ows[gid]["allow"])
        allow = deny = 0
        for rid in member["roles"]:
            if rid in ows:
                allow |= int(ows[rid]["allow"])
                deny |= int(ows[rid]["deny"])
        perms = (perms & ~deny) | allow
        if uid in ows and ows[uid]["type"] == 1:
            perms = (perms & ~int(ows[uid]["deny"])) | int(ows[uid]["allow"])
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES and channel["type"] not in THREAD_TYPES:
            perms &= ~(Perm.SEND_TTS_MESSAGES | Perm.MENTION_EVERYONE | Perm.EMBED_LINKS | Perm.ATTACH_FILES)
        return perms

    # ---------------------------------------------------------------------------------------------------
    # Payload builders (public: tests may use them to dispatch events)
    # ---------------------------------------------------------------------------------------------------

    def user_payload(self, user: str | int) -> dict[str, Any]:
        return copy.deepcopy(self.users[self._resolve_user(user)])

    def member_payload(
        self,
        user: str | int,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        with_user: bool = True,
    ) -> dict[str, Any]:
        gid = guild_id or self.guild_id
        uid = self._resolve_user(user)
        member = self.guilds[gid]["members"][uid]
        out: dict[str, Any] = {
            "roles": [str(r) for r in member["roles"]],
            "nick": member["nick"],
            "avatar": None,
            "banner": None,
            "joined_at": member["joined_at"],
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            out["user"] = self.user_payload(uid)
        if channel_id is not None:
            out["permissions"] = str(self.permissions_for(uid, channel_id))
        return out

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        return copy.deepcopy(self.channels[channel_id])

    def guild_payload(self, guild_id: int | None = None, *, full: bool = False) -> dict[str, Any]:
        gid = guild_id or self.guild_id
        g = self.guilds[gid]
        out: dict[str, Any] = {
            "id": str(gid),
            "name": g["name"],
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "owner_id": str(g["owner_id"]),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": copy.deepcopy(list(g["roles"].values())),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "description": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": g.get("preferred_locale", "en-US"),
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        if full:
            channels = [self.channel_payload(c) for c in g["channel_ids"]]
            threads = [
                copy.deepcopy(t)
                for t in self.threads.values()
                if int(t["guild_id"]) == gid and not t["thread_metadata"]["archived"]
            ]
            out.update(
                {
                    "joined_at": g["joined_at"],
                    "large": False,
                    "unavailable": False,
                    "member_count": len(g["members"]),
                    "voice_states": [],
                    "members": [self.member_payload(uid, guild_id=gid) for uid in g["members"]],
                    "channels": channels,
                    "threads": threads,
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                }
            )
        return out

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": copy.deepcopy(self.bot_user),
            "owner": self.user_payload("owner"),
            "team": None,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
            "flags": self._application_flags(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
            "hook": True,
        }

    def _application_flags(self) -> int:
        flags = 0
        if self.enabled_privileged_intents & Intent.GUILD_PRESENCES:
            flags |= 1 << 13
        if self.enabled_privileged_intents & Intent.GUILD_MEMBERS:
            flags |= 1 << 15
        if self.enabled_privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    def _public_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in msg.items() if k not in ("allowed_mentions", "attachments")}
        out["attachments"] = [{k: v for k, v in a.items() if k != "data"} for a in msg["attachments"]]
        return out

    def _stored_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message as reading it back returns it: Discord does not keep the nonce."""
        out = self._public_message(msg)
        out.pop("nonce", None)
        return out

    def _event_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = self._public_message(msg)
        if msg.get("guild_id"):
            author_id = int(msg["author"]["id"])
            gid = int(msg["guild_id"])
            if author_id in self.guilds[gid]["members"]:
                out["member"] = self.member_payload(author_id, guild_id=gid, with_user=False)
        return out

    def _cdn_url(self, path: str, *, proxy: bool = False) -> str:
        now = int(time.time())
        sig = hashlib.sha256(f"{path}{now}".encode()).hexdigest()
        base = f"{self.url}/media" if proxy else self.url
        return f"{base}{quote(path)}?ex={now + 86400:x}&is={now:x}&hm={sig}&"

    def _require_started(self) -> None:
        if not self.url:
            raise RuntimeError("FakeDiscord.start() has not been called")

    # ---------------------------------------------------------------------------------------------------
    # Gateway
    # ---------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.connected

    @property
    def connected_shards(self) -> dict[int, int]:
        """Shard id -> shard count of every shard with a connected session."""
        return {sid: s.shard_count for sid, s in self._shard_sessions.items() if s.connected}

    @staticmethod
    def event_guild_id(event: str, data: dict[str, Any]) -> int | None:
        """The guild an event belongs to (None: not guild-scoped, e.g. a DM interaction)."""
        raw = data.get("id") if event in GUILD_EVENTS else data.get("guild_id")
        return int(raw) if raw is not None else None

    def _sessions_for(self, event: str, data: dict[str, Any]) -> list[_Session]:
        """The connected sessions that receive ``event``: the shard ``(guild_id >> 22) % count`` of
        each session's shard count (shard 0 for events without a guild), as Discord routes them."""
        gid = self.event_guild_id(event, data)
        return [
            s
            for s in self._shard_sessions.values()
            if s.connected and s.shard_id == shard_of(gid, s.shard_count)
        ]

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a DISPATCH (op 0) event to the shard that owns it (see ``_sessions_for``); returns its
        sequence number there."""
        sessions = self._sessions_for(event, data)
        if not sessions:
            gid = self.event_guild_id(event, data)
            where = f" for the shard of guild {gid}" if gid is not None else " on shard 0"
            raise RuntimeError(f"no bot is connected to the fake gateway{where}")
        seq = 0
        for session in sessions:
            seq = await self._session_dispatch(session, event, data)
        return seq

    async def _session_dispatch(self, session: _Session, event: str, data: dict[str, Any]) -> int:
        assert session.conn is not None
        conn = session.conn
        async with conn.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.sent.append(frame)
            self.dispatched.append(frame)
            conn.info["events"].append((event, self.event_guild_id(event, data)))
            await conn.ws.send_str(json.dumps(frame))
            return session.seq

    async def _maybe_dispatch(self, event: str, data: dict[str, Any], intent: int) -> None:
        for session in self._sessions_for(event, data):
            if session.intents & intent:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._session_dispatch(session, event, data)

    async def dispatch_guild_create(self, guild_id: int) -> None:
        await self.dispatch("GUILD_CREATE", self.guild_payload(guild_id, full=True))

    async def remove_guild(self, guild_id: int, *, unavailable: bool = False) -> None:
        """Dispatch GUILD_DELETE (kicked when unavailable is False, outage otherwise)."""
        data: dict[str, Any] = {"id": str(guild_id)}
        if unavailable:
            data["unavailable"] = True
        await self.dispatch("GUILD_DELETE", data)

    def _pick_session(self, shard: int | None) -> _Session | None:
        return self._session if shard is None else self._shard_sessions.get(shard)

    async def request_reconnect(self, *, shard: int | None = None) -> None:
        """Send op 7 RECONNECT (to ``shard``, default the newest session): the client should reconnect
        and RESUME."""
        session = self._pick_session(shard)
        if session is None or session.conn is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        await session.conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, resumable: bool = False, *, shard: int | None = None) -> None:
        session = self._pick_session(shard)
        if session is None or session.conn is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        if not resumable:
            self._sessions.pop(session.session_id, None)
        await session.conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def disconnect_gateway(self, code: int = 4000, *, shard: int | None = None) -> None:
        session = self._pick_session(shard)
        if session is not None and session.conn is not None:
            await session.conn.ws.close(code=code, message=b"fake disconnect")

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_gateway:
            self.refused_gateway_connections += 1
            return web.Response(status=503, text="gateway unavailable (fake outage)")
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        conn = _Conn(ws, dict(request.query))
        self.gateway_connections.append(conn.info)
        self._conns.add(conn)
        session: _Session | None = None
        try:
            # discord.py asks for ?compress=zlib-stream but happily accepts plain-text JSON frames.
            if request.query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Error while decoding payload.")
                return ws
            await conn.send(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    if msg.type is WSMsgType.BINARY:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    continue
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                op = payload.get("op")
                d = payload.get("d")
                if op == 1:
                    conn.info["heartbeats"] += 1
                    await conn.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._handle_identify(conn, session, d or {})
                elif op == 6:
                    session = await self._handle_resume(conn, d or {})
                elif op == 3:
                    self.presence_updates.append(d)
                elif op == 8:
                    await self._handle_request_members(conn, session, d or {})
                elif op == 4:
                    continue
                else:
                    await ws.close(code=4001, message=b"Unknown opcode.")
                    break
        finally:
            self._conns.discard(conn)
            conn.info["close_code"] = ws.close_code
            if session is not None and session.conn is conn:
                session.conn = None
        return ws

    async def _handle_identify(
        self, conn: _Conn, session: _Session | None, d: dict[str, Any]
    ) -> _Session | None:
        if session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return session
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = d.get("intents")
        if not isinstance(intents, int):
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & Intent.PRIVILEGED & ~self.enabled_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard = d.get("shard")
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(type(v) is int for v in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = _Session(secrets.token_hex(16), intents, shard)
        guild_ids = [gid for gid in self.guilds if shard_of(gid, session.shard_count) == session.shard_id]
        if len(guild_ids) > self.max_guilds_per_shard:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return None
        self.identify_payloads.append(d)
        limit = self.session_start_limit
        limit["remaining"] = max(0, limit["remaining"] - 1)
        self._ready.clear()
        session.conn = conn
        self._sessions[session.session_id] = session
        self._session = session
        self._shard_sessions[session.shard_id] = session
        conn.info["identified"] = True
        conn.info["shard"] = [session.shard_id, session.shard_count]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": {**copy.deepcopy(self.bot_user), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ['["fake-discord-gateway",{"micros":0}]'],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._session_dispatch(session, "READY", ready)
        if intents & Intent.GUILDS:
            for gid in guild_ids:
                await self._session_dispatch(session, "GUILD_CREATE", self.guild_payload(gid, full=True))
        self._ready.set()
        return session

    async def _handle_resume(self, conn: _Conn, d: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or d.get("token") != self.token:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return None
        session.conn = conn
        self._session = session
        self._shard_sessions[session.shard_id] = session
        conn.info["resumed"] = True
        conn.info["identified"] = True
        conn.info["shard"] = [session.shard_id, session.shard_count]
        last_seq = d.get("seq") or 0
        async with conn.lock:
            for frame in session.sent:
                if frame["s"] > last_seq:
                    await conn.ws.send_str(json.dumps(frame))
        await self._session_dispatch(session, "RESUMED", {"_trace": ["fake-discord-gateway"]})
        return session

    async def _handle_request_members(self, conn: _Conn, session: _Session | None, d: dict[str, Any]) -> None:
        if session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
            return
        gid = int(d.get("guild_id", 0))
        if gid not in self.guilds:
            return
        members = [self.member_payload(uid, guild_id=gid) for uid in self.guilds[gid]["members"]]
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if int(m["user"]["id"]) in wanted]
        elif d.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(d["query"])]
        chunk: dict[str, Any] = {
            "guild_id": str(gid),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self._session_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    # ---------------------------------------------------------------------------------------------------
    # Driving the bot: interactions and user messages
    # ---------------------------------------------------------------------------------------------------

    def _base_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        user_id: int,
        channel_id: int,
        *,
        locale: str = "en-US",
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(self._snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit,
        }
        gid = channel.get("guild_id")
        if gid is not None:
            gid_int = int(gid)
            ch = self.channel_payload(channel_id)
            ch["permissions"] = str(self.permissions_for(user_id, channel_id))
            guild_locale = self.guilds[gid_int].get("preferred_locale", "en-US")
            payload.update(
                {
                    "guild_id": str(gid_int),
                    "guild": {"id": str(gid_int), "locale": guild_locale, "features": []},
                    "guild_locale": guild_locale,
                    "channel": ch,
                    "member": self.member_payload(user_id, guild_id=gid_int, channel_id=channel_id),
                    "app_permissions": str(self.permissions_for(self.application_id, channel_id)),
                    "authorizing_integration_owners": {"0": str(gid_int)},
                    "context": 0,
                }
            )
        else:
            payload.update(
                {
                    "channel": self.channel_payload(channel_id),
                    "user": self.user_payload(user_id),
                    "app_permissions": str(self.permissions_for(self.application_id, channel_id)),
                    "authorizing_integration_owners": {"0": "0"},
                    "context": 1,
                }
            )
        if message is not None:
            payload["message"] = message
        return payload

    async def _dispatch_interaction(self, payload: dict[str, Any], user_id: int) -> FakeInteraction:
        inter = FakeInteraction(self, payload, user_id)
        self.interactions[inter.id] = inter
        inter.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    def _option_payload(
        self,
        name: str,
        value: Any,
        spec: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
        channel_id: int,
        *,
        check: bool,
    ) -> dict[str, Any]:
        if spec is not None:
            otype = int(spec["type"])
        elif isinstance(value, bool):
            otype = 5
        elif isinstance(value, int):
            otype = 4
        elif isinstance(value, float):
            otype = 10
        elif isinstance(value, dict) and "filename" in value:
            otype = 11
        else:
            otype = 3
        out: dict[str, Any] = {"name": name, "type": otype}
        if otype == 11:
            att = value if isinstance(value, dict) else self._uploaded_attachments.get(int(value))
            if att is None:
                raise ValueError(f"option {name!r}: unknown attachment {value!r} (use fake.add_attachment)")
            out["value"] = str(att["id"])
            resolved.setdefault("attachments", {})[str(att["id"])] = {
                k: v for k, v in att.items() if k != "data"
            }
        elif otype in (6, 9):
            try:
                uid = self._resolve_user(value)
            except KeyError:
                if otype != 9 or guild_id is None:
                    raise
                rid = self._resolve_role(guild_id, value)
                out["value"] = str(rid)
                resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(
                    self.guilds[guild_id]["roles"][rid]
                )
            else:
                out["value"] = str(uid)
                resolved.setdefault("users", {})[str(uid)] = self.user_payload(uid)
                if guild_id is not None and uid in self.guilds[guild_id]["members"]:
                    member = self.member_payload(
                        uid, guild_id=guild_id, channel_id=channel_id, with_user=False
                    )
                    resolved.setdefault("members", {})[str(uid)] = member
        elif otype == 7:
            cid = int(value)
            ch = self.channel_payload(cid)
            ch["permissions"] = str(self.permissions_for(self.application_id, cid))
            out["value"] = str(cid)
            resolved.setdefault("channels", {})[str(cid)] = ch
        elif otype == 8:
            assert guild_id is not None
            rid = self._resolve_role(guild_id, value)
            out["value"] = str(rid)
            resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(self.guilds[guild_id]["roles"][rid])
        elif otype == 4:
            out["value"] = int(value)
        elif otype == 10:
            out["value"] = float(value)
        elif otype == 5:
            out["value"] = bool(value)
        else:
            out["value"] = str(value)
        if check and spec is not None:
            v = out["value"]
            choices = spec.get("choices")
            if choices and v not in [c["value"] for c in choices]:
                raise ValueError(f"option {name!r}: {v!r} is not one of the choices {choices}")
            if otype in (4, 10):
                if spec.get("min_value") is not None and v < spec["min_value"]:
                    raise ValueError(f"option {name!r}: {v} < min_value {spec['min_value']}")
                if spec.get("max_value") is not None and v > spec["max_value"]:
                    raise ValueError(f"option {name!r}: {v} > max_value {spec['max_value']}")
            if otype == 3:
                if spec.get("min_length") is not None and len(v) < spec["min_length"]:
                    raise ValueError(f"option {name!r}: shorter than min_length {spec['min_length']}")
                if spec.get("max_length") is not None and len(v) > spec["max_length"]:
                    raise ValueError(f"option {name!r}: longer than max_length {spec['max_length']}")
        return out

    def _command_data(
        self,
        name: str,
        options: dict[str, Any],
        *,
        user_id: int,
        channel_id: int,
        subcommand: str | None,
        attachments: Iterable[dict[str, Any]],
        focused: str | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        cmd = self.find_command(name, guild_id or 0)
        data: dict[str, Any] = {"name": name, "type": 1}
        specs: list[dict[str, Any]] | None = None
        if cmd is not None:
            data["id"] = cmd["id"]
            if cmd.get("guild_id"):
                data["guild_id"] = cmd["guild_id"]
            specs = cmd.get("options") or []
            if self.enforce_command_permissions:
                self._check_command_visible(cmd, user_id, channel_id)
        else:
            data["id"] = str(self._snowflake())
        chain: list[tuple[str, int]] = []
        if subcommand:
            parts = subcommand.split()
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                spec = None
                if specs is not None:
                    spec = next((o for o in specs if o["name"] == part and o["type"] in (1, 2)), None)
                    if spec is None:
                        raise ValueError(f"/{name} has no subcommand (group) {part!r}")
                chain.append((part, spec["type"] if spec else (1 if last else 2)))
                specs = (spec.get("options") or []) if spec is not None else None
        resolved: dict[str, dict[str, Any]] = {}
        built: list[dict[str, Any]] = []
        check = focused is None
        for opt_name, value in options.items():
            if value is None:
                continue
            spec = None
            if specs is not None:
                spec = next((o for o in specs if o["name"] == opt_name), None)
                if spec is None:
                    raise ValueError(
                        f"/{name}: unknown option {opt_name!r}; synced: {[o['name'] for o in specs]}"
                    )
            if opt_name == focused:
                opt = {
                    "name": opt_name,
                    "type": spec["type"] if spec else 3,
                    "value": str(value),
                    "focused": True,
                }
            else:
                opt = self._option_payload(opt_name, value, spec, resolved, guild_id, channel_id, check=check)
            built.append(opt)
        if focused is not None and focused not in options:
            spec = next((o for o in specs or [] if o["name"] == focused), None)
            built.append({"name": focused, "type": spec["type"] if spec else 3, "value": "", "focused": True})
        if check and specs is not None:
            missing = [o["name"] for o in specs if o.get("required") and o["name"] not in options]
            if missing:
                raise ValueError(f"/{name}: missing required option(s) {missing}")
        for att in attachments:
            resolved.setdefault("attachments", {})[str(att["id"])] = {
                k: v for k, v in att.items() if k != "data"
            }
        for sub_name, sub_type in reversed(chain):
            built = [{"name": sub_name, "type": sub_type, "options": built}]
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        return data

    def _check_command_visible(self, cmd: dict[str, Any], user_id: int, channel_id: int) -> None:
        channel = self.channels[channel_id]
        in_guild = channel.get("guild_id") is not None
        contexts = cmd.get("contexts")
        if contexts is not None and (0 if in_guild else 1) not in contexts:
            raise PermissionError(f"/{cmd['name']} is not available in this context (contexts={contexts})")
        if not in_guild and cmd.get("dm_permission") is False:
            raise PermissionError(f"/{cmd['name']} is not available in DMs")
        required = cmd.get("default_member_permissions")
        if in_guild and required is not None:
            perms = self.permissions_for(user_id, channel_id)
            if int(required) & perms != int(required) and not perms & Perm.ADMINISTRATOR:
                raise PermissionError(
                    f"/{cmd['name']} requires permissions {required}; the Discord client would not show it "
                    f"to this user (set fake.enforce_command_permissions = False to bypass)"
                )

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        attachments: Sequence[dict[str, Any]] = (),
        subcommand: str | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch an APPLICATION_COMMAND (type 2) interaction, as if ``user`` ran ``/name``."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        data = self._command_data(
            name, options or {}, user_id=uid, channel_id=cid, subcommand=subcommand, attachments=attachments
        )
        payload = self._base_interaction(2, data, uid, cid, locale=locale)
        return await self._dispatch_interaction(payload, uid)

    async def message_command(
        self, name: str, message_id: int, *, user: str | int = "alice", locale: str = "en-US"
    ) -> FakeInteraction:
        """Dispatch a MESSAGE context-menu command (application command type 3) on a stored message."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        cid = int(msg["channel_id"])
        channel = self.channels[cid]
        gid = int(channel["guild_id"]) if channel.get("guild_id") else 0
        cmd = next(
            (
                c
                for c in [*self.guild_commands.get(gid, []), *self.global_commands]
                if c["name"] == name and c.get("type") == 3
            ),
            None,
        )
        if cmd is None:
            raise ValueError(f"no message command {name!r} was synced")
        if self.enforce_command_permissions:
            self._check_command_visible(cmd, uid, cid)
        data = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): self._public_message(msg)}},
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload = self._base_interaction(2, data, uid, cid, locale=locale)
        return await self._dispatch_interaction(payload, uid)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) interaction; read ``.choices`` after."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        data = self._command_data(
            name, options, user_id=uid, channel_id=cid, subcommand=subcommand, attachments=(), focused=focused
        )
        payload = self._base_interaction(4, data, uid, cid)
        return await self._dispatch_interaction(payload, uid)

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT (type 3) interaction for a button (or select, with ``values``) of a
        stored message, from a client set to ``locale``.  Raises if the message has no such enabled
        component."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        comp = next(
            (c for c in _iter_components(msg.get("components")) if c.get("custom_id") == custom_id), None
        )
        if comp is None:
            ids = [c.get("custom_id") for c in _iter_components(msg.get("components")) if c.get("custom_id")]
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {ids}")
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; users cannot click it")
        ctype = int(comp["type"])
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        if comp.get("id") is not None:
            data["id"] = comp["id"]
        if ctype in SELECT_TYPES:
            data["values"] = list(values or [])
        cid = channel_id or int(msg["channel_id"])
        payload = self._base_interaction(3, data, uid, cid, locale=locale, message=self._public_message(msg))
        return await self._dispatch_interaction(payload, uid)

    async def click_forged(
        self, message_id: int, custom_id: str, *, user: str | int = "alice", component_type: int = 2
    ) -> FakeInteraction:
        """A component interaction with a custom_id the message does not carry -- what a modified client
        can send. Discord itself does not validate custom_ids, so neither does this."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        payload = self._base_interaction(
            3, data, uid, int(msg["channel_id"]), message=self._public_message(msg)
        )
        return await self._dispatch_interaction(payload, uid)

    async def submit_modal(
        self, source: FakeInteraction, values: dict[str, Any], *, user: str | int | None = None
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to ``source`` (type 5), from the same client (and
        so the same ``locale``).  ``values`` maps input custom_id -> text (or list of values for selects)."""
        modal = source.modal
        if modal is None:
            raise ValueError(f"{source!r} did not answer with a modal")
        uid = self._resolve_user(user) if user is not None else source.user_id

        def convert(comp: dict[str, Any]) -> dict[str, Any] | None:
            ctype = comp.get("type")
            if ctype == 1:
                kids = [c for c in (convert(x) for x in comp.get("components") or []) if c is not None]
                return {"type": 1, "components": kids}
            if ctype == 18:
                inner = convert(comp.get("component") or {})
                out18: dict[str, Any] = {"type": 18, "component": inner}
                if comp.get("id") is not None:
                    out18["id"] = comp["id"]
                return out18
            cid = comp.get("custom_id")
            if cid is None:
                return None
            out: dict[str, Any] = {"type": ctype, "custom_id": cid}
            if comp.get("id") is not None:
                out["id"] = comp["id"]
            if ctype == 4:
                out["value"] = str(values.get(cid, comp.get("value") or ""))
            else:
                val = values.get(cid, [])
                out["values"] = list(val) if isinstance(val, list | tuple) else [val]
            return out

        components = [c for c in (convert(x) for x in modal.get("components") or []) if c is not None]
        data = {"custom_id": modal["custom_id"], "components": components}
        message = None
        if source.type == 3 and source.source_message_id is not None:
            src = self.get_message(source.source_message_id)
            message = self._public_message(src) if src else None
        locale = str(source.payload.get("locale") or "en-US")
        payload = self._base_interaction(5, data, uid, source.channel_id, locale=locale, message=message)
        return await self._dispatch_interaction(payload, uid)

    async def post_user_message(
        self,
        content: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        files: Sequence[tuple[str, bytes, str]] = (),
    ) -> dict[str, Any]:
        """A user posts a message, optionally with files as (filename, data, content_type) (dispatches
        MESSAGE_CREATE; content is blanked like real Discord when the bot lacks the MESSAGE_CONTENT
        intent and is not mentioned)."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        uploads = [_Upload(f"files[{i}]", name, data, ctype) for i, (name, data, ctype) in enumerate(files)]
        payload: dict[str, Any] = {"content": content}
        if uploads:
            payload["attachments"] = [{"id": i, "filename": u.filename} for i, u in enumerate(uploads)]
        msg = self._make_message(cid, payload, uploads, author_id=uid)
        self._store_message(msg)
        event = self._event_message(msg)
        session = self._session
        if session is not None and not session.intents & Intent.MESSAGE_CONTENT:
            mentioned = any(int(u["id"]) == self.application_id for u in msg["mentions"])
            if msg.get("guild_id") and not mentioned:
                event.update(content="", embeds=[], attachments=[], components=[])
        intent = Intent.GUILD_MESSAGES if msg.get("guild_id") else Intent.DIRECT_MESSAGES
        await self._maybe_dispatch("MESSAGE_CREATE", event, intent)
        return msg

    # ---------------------------------------------------------------------------------------------------
    # Messages
    # ---------------------------------------------------------------------------------------------------

    def _validate_embed(self, embed: Any, errors: _FormErrors, path: tuple[Any, ...]) -> int:
        if not isinstance(embed, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            return 0
        total = 0
        for key, limit in (("title", 256), ("description", 4096)):
            value = embed.get(key)
            if value is not None:
                errors.max_len((*path, key), value, limit)
                total += len(str(value))
        for key in ("url",):
            url = embed.get(key)
            if url is not None and not re.match(r"^(https?|attachment)://", str(url)):
                errors.add((*path, key), "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        for key in ("image", "thumbnail"):
            sub = embed.get(key)
            url = sub.get("url") if isinstance(sub, dict) else None
            if url is not None and not re.match(r"^(https?|attachment)://", str(url)):
                errors.add((*path, key, "url"), "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        fields = embed.get("fields") or []
        errors.max_len((*path, "fields"), fields, 25)
        for i, f in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                value = f.get(key)
                if value is None or value == "":
                    errors.add((*path, "fields", i, key), "BASE_TYPE_REQUIRED", "This field is required")
                else:
                    errors.max_len((*path, "fields", i, key), value, limit)
                    total += len(str(value))
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text") is not None:
            errors.max_len((*path, "footer", "text"), footer["text"], 2048)
            total += len(str(footer["text"]))
        author = embed.get("author")
        if isinstance(author, dict) and author.get("name") is not None:
            errors.max_len((*path, "author", "name"), author["name"], 256)
            total += len(str(author["name"]))
        color = embed.get("color")
        if color is not None and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            errors.add((*path, "color"), "NUMBER_TYPE_MAX", "int value should be <= 16777215 and >= 0.")
        return total

    def _validate_interactive(
        self, comp: dict[str, Any], errors: _FormErrors, path: tuple[Any, ...], seen: set[str]
    ) -> None:
        ctype = comp.get("type")
        custom_id = comp.get("custom_id")
        if ctype == 2:
            style = comp.get("style")
            if style not in (1, 2, 3, 4, 5, 6):
                errors.add((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
            if style == 5:
                url = comp.get("url")
                if not url:
                    errors.add((*path, "url"), "BASE_TYPE_REQUIRED", "This field is required")
                elif not re.match(r"^(https?|discord)://[^\s]+$", str(url)):
                    errors.add(
                        (*path, "url"),
                        "URL_TYPE_INVALID_SCHEME",
                        "Scheme must be one of ('http', 'https', 'discord').",
                    )
                else:
                    errors.max_len((*path, "url"), url, 512)
                if custom_id is not None:
                    errors.add(
                        (*path, "custom_id"),
                        "BUTTON_COMPONENT_LINK_CUSTOM_ID",
                        "Link buttons cannot have a custom id",
                    )
            elif style != 6 and not custom_id:
                errors.add((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            if style != 6 and not comp.get("label") and not comp.get("emoji"):
                errors.add(path, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or emoji is required")
            errors.max_len((*path, "label"), comp.get("label"), 80)
        elif ctype in SELECT_TYPES:
            if not custom_id:
                errors.add((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            errors.max_len((*path, "placeholder"), comp.get("placeholder"), 150)
            if ctype == 3:
                opts = comp.get("options") or []
                if not 1 <= len(opts) <= 25:
                    errors.add(
                        (*path, "options"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length."
                    )
                for i, o in enumerate(opts):
                    errors.max_len((*path, "options", i, "label"), o.get("label"), 100)
                    errors.max_len((*path, "options", i, "value"), o.get("value"), 100)
            min_v, max_v = comp.get("min_values", 1), comp.get("max_values", 1)
            if not (0 <= min_v <= 25 and 1 <= max_v <= 25 and min_v <= max_v):
                errors.add((*path, "max_values"), "BASE_TYPE_BAD_INT", "Invalid min_values / max_values.")
        if custom_id is not None:
            errors.max_len((*path, "custom_id"), custom_id, 100)
            if custom_id in seen:
                errors.add(
                    (*path, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)

    def _validate_components(
        self, components: Any, flags: int, errors: _FormErrors, path: tuple[Any, ...]
    ) -> None:
        if not isinstance(components, list):
            errors.add(path, "BASE_TYPE_LIST", "Must be a list.")
            return
        seen: set[str] = set()
        if flags & IS_COMPONENTS_V2:
            comps = list(_iter_components(components))
            if len(comps) > 40:
                errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
            for i, comp in enumerate(comps):
                if comp.get("type") in INTERACTIVE_COMPONENT_TYPES:
                    self._validate_interactive(comp, errors, (*path, i), seen)
            return
        errors.max_len(path, components, 5)
        for i, row in enumerate(components):
            if not isinstance(row, dict) or row.get("type") != 1:
                errors.add(
                    (*path, i, "type"),
                    "UNION_TYPE_CHOICES",
                    'Value of field "type" must be one of (1,) without the IS_COMPONENTS_V2 flag.',
                )
                continue
            kids = row.get("components") or []
            if not 1 <= len(kids) <= 5:
                errors.add(
                    (*path, i, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            if any(k.get("type") in SELECT_TYPES for k in kids) and len(kids) > 1:
                errors.add(
                    (*path, i, "components"),
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
            for j, kid in enumerate(kids):
                self._validate_interactive(kid, errors, (*path, i, "components", j), seen)

    def _validate_message_payload(
        self, payload: dict[str, Any], uploads: Sequence[_Upload], prefix: tuple[Any, ...] = ()
    ) -> None:
        errors = _FormErrors()
        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            errors.add((*prefix, "content"), "STRING_TYPE_CONVERT", "Could not interpret value as string.")
        else:
            errors.max_len((*prefix, "content"), content, 2000)
        embeds = payload.get("embeds")
        if embeds:
            errors.max_len((*prefix, "embeds"), embeds, 10)
            total = sum(self._validate_embed(e, errors, (*prefix, "embeds", i)) for i, e in enumerate(embeds))
            if total > 6000:
                errors.add(
                    (*prefix, "embeds"), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
                )
        flags = int(payload.get("flags") or 0)
        if payload.get("components"):
            self._validate_components(payload["components"], flags, errors, (*prefix, "components"))
        if flags & IS_COMPONENTS_V2 and (content or embeds):
            errors.add(
                (*prefix, "content"),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )
        am = payload.get("allowed_mentions")
        if isinstance(am, dict):
            parse = am.get("parse") or []
            for kind in ("users", "roles"):
                if kind in parse and am.get(kind):
                    errors.add(
                        (*prefix, "allowed_mentions"),
                        "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                        f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                    )
        if len(uploads) > 10:
            errors.add((*prefix, "files"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        errors.raise_if_any()

    def _check_upload_sizes(self, uploads: Sequence[_Upload]) -> None:
        for up in uploads:
            if len(up.data) > self.upload_limit:
                raise DiscordError(413, 40005, "Request entity too large")

    @staticmethod
    def _is_empty(msg: dict[str, Any]) -> bool:
        return not (
            msg.get("content")
            or msg.get("embeds")
            or msg.get("components")
            or msg.get("attachments")
            or msg.get("sticker_items")
            or msg.get("poll")
        )

    def _new_attachment(
        self, channel_id: int, upload: _Upload, spec: dict[str, Any] | None
    ) -> dict[str, Any]:
        aid = self._snowflake()
        fname = _sanitize_filename((spec or {}).get("filename") or upload.filename)
        ctype = _guess_content_type(fname, upload.content_type)
        path = f"/attachments/{channel_id}/{aid}/{fname}"
        self._cdn[path] = (upload.data, ctype)
        width, height = _image_size(upload.data, ctype)
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": fname,
            "size": len(upload.data),
            "url": self._cdn_url(path),
            "proxy_url": self._cdn_url(path, proxy=True),
            "width": width,
            "height": height,
            "flags": 0,
            "data": upload.data,
        }
        if ctype is not None:
            att["content_type"] = ctype
        if spec and spec.get("description"):
            att["description"] = spec["description"]
        if spec and spec.get("title"):
            att["title"] = spec["title"]
        return att

    def _build_attachments(
        self,
        channel_id: int,
        specs: list[dict[str, Any]] | None,
        uploads: Sequence[_Upload],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        by_index: dict[int, _Upload] = {}
        for pos, up in enumerate(uploads):
            idx = up.index
            by_index[idx if idx is not None else pos] = up
        used: set[int] = set()
        result: list[dict[str, Any]] = []
        if specs is None:
            result.extend(existing)
        else:
            existing_by_id = {int(a["id"]): a for a in existing}
            for i, spec in enumerate(specs):
                sid = spec.get("id")
                sid_int = int(sid) if sid is not None and str(sid).isdigit() else None
                if sid_int is not None and sid_int in by_index and sid_int not in existing_by_id:
                    result.append(self._new_attachment(channel_id, by_index[sid_int], spec))
                    used.add(sid_int)
                elif sid_int is not None and sid_int in existing_by_id:
                    kept = existing_by_id[sid_int]
                    if spec.get("description") is not None:
                        kept = {**kept, "description": spec["description"]}
                    result.append(kept)
                else:
                    errors = _FormErrors()
                    errors.add(("attachments", i, "id"), "ATTACHMENT_NOT_FOUND", "Unknown attachment")
                    errors.raise_if_any()
        for idx, up in sorted(by_index.items()):
            if idx not in used:
                result.append(self._new_attachment(channel_id, up, None))
        return result

    def _compute_mentions(self, msg: dict[str, Any]) -> None:
        content = msg.get("content") or ""
        am = msg.get("allowed_mentions")
        if am is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: set[int] = set()
            allowed_roles: set[int] = set()
        else:
            parse = set(am.get("parse") or [])
            allowed_users = {int(u) for u in am.get("users") or []}
            allowed_roles = {int(r) for r in am.get("roles") or []}
        mentions: list[dict[str, Any]] = []
        for raw in dict.fromkeys(int(x) for x in re.findall(r"<@!?(\d+)>", content)):
            if raw in self.users and ("users" in parse or raw in allowed_users):
                mentions.append(self.user_payload(raw))
        ref = msg.get("referenced_message")
        if ref and (am is None or am.get("replied_user", True)):
            ref_author = int(ref["author"]["id"])
            if ref_author not in [int(u["id"]) for u in mentions] and ref_author in self.users:
                mentions.append(self.user_payload(ref_author))
        roles = [
            str(r)
            for r in dict.fromkeys(int(x) for x in re.findall(r"<@&(\d+)>", content))
            if "roles" in parse or r in allowed_roles
        ]
        everyone = bool(re.search(r"@(everyone|here)", content)) and "everyone" in parse
        if everyone and msg.get("guild_id"):
            author = int(msg["author"]["id"])
            everyone = bool(self.permissions_for(author, int(msg["channel_id"])) & Perm.MENTION_EVERYONE)
        msg["mentions"] = mentions
        msg["mention_roles"] = roles
        msg["mention_everyone"] = everyone

    def _make_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        uploads: Sequence[_Upload],
        *,
        author_id: int | None = None,
        msg_type: int = 0,
        webhook: bool = False,
        ephemeral: bool = False,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        mid = message_id or self._snowflake()
        flags = int(payload.get("flags") or 0) & (SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2)
        if ephemeral:
            flags |= EPHEMERAL
        embeds = copy.deepcopy(payload.get("embeds") or [])
        for e in embeds:
            e.setdefault("type", "rich")
            e.setdefault("content_scan_version", 0)
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "type": msg_type,
            "content": payload.get("content") or "",
            "author": self.user_payload(author_id or self.application_id),
            "attachments": [],
            "embeds": embeds,
            "components": copy.deepcopy(payload.get("components") or []),
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": bool(payload.get("tts")),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "flags": flags,
            "reactions": [],
            "allowed_mentions": copy.deepcopy(payload.get("allowed_mentions")),
        }
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        if payload.get("nonce") is not None:
            msg["nonce"] = payload["nonce"]
        if payload.get("sticker_ids"):
            msg["sticker_items"] = [
                {"id": str(s), "name": "sticker", "format_type": 1} for s in payload["sticker_ids"]
            ]
        if payload.get("poll"):
            msg["poll"] = copy.deepcopy(payload["poll"])
        if webhook:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
        ref = payload.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id"):
            target = self.get_message(int(ref["message_id"]))
            if target is None:
                if ref.get("fail_if_not_exists", True):
                    errors = _FormErrors()
                    errors.add(("message_reference",), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                    errors.raise_if_any()
            else:
                msg["message_reference"] = {
                    "type": ref.get("type", 0),
                    "message_id": target["id"],
                    "channel_id": target["channel_id"],
                    "guild_id": target.get("guild_id"),
                }
                msg["referenced_message"] = self._public_message(target)
                if msg_type == 0:
                    msg["type"] = 19
        msg["attachments"] = self._build_attachments(channel_id, payload.get("attachments"), uploads, [])
        self._compute_mentions(msg)
        if self._is_empty(msg):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        return msg

    def _edited(
        self, msg: dict[str, Any], payload: dict[str, Any], uploads: Sequence[_Upload]
    ) -> dict[str, Any]:
        """Return a new dict: ``msg`` with ``payload`` applied (PATCH semantics)."""
        new = dict(msg)
        if "content" in payload:
            new["content"] = payload["content"] or ""
        if "embeds" in payload:
            embeds = copy.deepcopy(payload["embeds"] or [])
            for e in embeds:
                e.setdefault("type", "rich")
            new["embeds"] = embeds
        if "components" in payload:
            new["components"] = copy.deepcopy(payload["components"] or [])
        if "allowed_mentions" in payload:
            new["allowed_mentions"] = copy.deepcopy(payload["allowed_mentions"])
        if payload.get("flags") is not None:
            sent = int(payload["flags"])
            keep = int(msg["flags"]) & ~(SUPPRESS_EMBEDS | IS_COMPONENTS_V2)
            new["flags"] = keep | (sent & (SUPPRESS_EMBEDS | IS_COMPONENTS_V2))
        if "attachments" in payload or uploads:
            new["attachments"] = self._build_attachments(
                int(msg["channel_id"]), payload.get("attachments"), uploads, list(msg["attachments"])
            )
        new["edited_timestamp"] = _now_iso()
        self._compute_mentions(new)
        if self._is_empty(new):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        return new

    def _store_message(self, msg: dict[str, Any]) -> None:
        cid = int(msg["channel_id"])
        self._messages.setdefault(cid, []).append(msg)
        self._message_index[int(msg["id"])] = msg
        if not int(msg["flags"]) & EPHEMERAL:
            channel = self.channels.get(cid)
            if channel is not None:
                channel["last_message_id"] = msg["id"]
                if channel["type"] in THREAD_TYPES:
                    channel["message_count"] += 1
                    channel["total_message_sent"] += 1

    def _delete_message(self, msg: dict[str, Any]) -> None:
        cid = int(msg["channel_id"])
        with contextlib.suppress(ValueError):
            self._messages.get(cid, []).remove(msg)
        self._message_index.pop(int(msg["id"]), None)
        self.deleted_messages.append(msg)

    def _message_intent(self, msg: dict[str, Any]) -> int:
        return Intent.GUILD_MESSAGES if msg.get("guild_id") else Intent.DIRECT_MESSAGES

    async def _announce(self, event: str, msg: dict[str, Any]) -> None:
        if not self.dispatch_message_events or int(msg["flags"]) & EPHEMERAL:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id"):
                data["guild_id"] = msg["guild_id"]
        else:
            data = self._event_message(msg)
        await self._maybe_dispatch(event, data, self._message_intent(msg))

    # ---------------------------------------------------------------------------------------------------
    # Threads
    # ---------------------------------------------------------------------------------------------------

    def _create_thread(
        self,
        parent_id: int,
        name: str,
        owner_id: int,
        ttype: int,
        auto_archive: int,
        message_id: int | None,
        invitable: bool = True,
        rate_limit: int = 0,
    ) -> dict[str, Any]:
        parent = self.channels[parent_id]
        tid = message_id or self._snowflake()
        now = _now_iso()
        thread: dict[str, Any] = {
            "id": str(tid),
            "type": ttype,
            "guild_id": parent["guild_id"],
            "parent_id": str(parent_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": rate_limit,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }
        if ttype == 12:
            thread["thread_metadata"]["invitable"] = invitable
        self.channels[tid] = thread
        self._messages[tid] = []
        if message_id is not None:
            starter = self.get_message(message_id)
            if starter is not None:
                starter["flags"] = int(starter["flags"]) | HAS_THREAD
                starter["thread"] = copy.deepcopy(thread)
        return thread

    # ---------------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ---------------------------------------------------------------------------------------------------

    def _route(self, pattern: str, auth: bool = True, **methods: _Handler) -> None:
        self._routes.append((re.compile(pattern), {m.upper(): h for m, h in methods.items()}, auth))

    def _build_routes(self) -> None:
        r = self._route
        r(r"/users/@me", get=self._h_get_me)
        r(r"/users/@me/channels", post=self._h_create_dm)
        r(r"/users/(\d+)", get=self._h_get_user)
        r(r"/gateway", auth=False, get=self._h_gateway)
        r(r"/gateway/bot", get=self._h_gateway_bot)
        r(r"/oauth2/applications/@me", get=self._h_application)
        r(r"/applications/@me", get=self._h_application)
        r(
            r"/applications/(\d+)/commands",
            get=self._h_list_commands,
            put=self._h_put_commands,
            post=self._h_post_command,
        )
        r(
            r"/applications/(\d+)/commands/(\d+)",
            get=self._h_get_command,
            patch=self._h_patch_command,
            delete=self._h_delete_command,
        )
        r(
            r"/applications/(\d+)/guilds/(\d+)/commands",
            get=self._h_list_commands,
            put=self._h_put_commands,
            post=self._h_post_command,
        )
        r(
            r"/applications/(\d+)/guilds/(\d+)/commands/(\d+)",
            get=self._h_get_command,
            patch=self._h_patch_command,
            delete=self._h_delete_command,
        )
        r(r"/channels/(\d+)", get=self._h_get_channel)
        r(r"/channels/(\d+)/typing", post=self._h_typing)
        r(r"/channels/(\d+)/messages", get=self._h_list_messages, post=self._h_create_message)
        r(
            r"/channels/(\d+)/messages/(\d+)",
            get=self._h_get_message,
            patch=self._h_edit_message,
            delete=self._h_delete_message,
        )
        r(
            r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me",
            put=self._h_add_reaction,
            delete=self._h_remove_reaction,
        )
        r(r"/channels/(\d+)/messages/(\d+)/threads", post=self._h_thread_from_message)
        r(r"/channels/(\d+)/threads", post=self._h_thread_without_message)
        r(r"/guilds/(\d+)", get=self._h_get_guild)
        r(r"/guilds/(\d+)/channels", get=self._h_guild_channels)
        r(r"/guilds/(\d+)/roles", get=self._h_guild_roles)
        r(r"/guilds/(\d+)/members/(\d+)", get=self._h_get_member)
        r(r"/interactions/(\d+)/([^/]+)/callback", auth=False, post=self._h_callback)
        r(r"/webhooks/(\d+)/([^/]+)", auth=False, post=self._h_webhook_execute)
        r(
            r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)",
            auth=False,
            get=self._h_webhook_get,
            patch=self._h_webhook_edit,
            delete=self._h_webhook_delete,
        )

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_Upload]]:
        uploads: list[_Upload] = []
        body: Any = None
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part is None or not hasattr(part, "read"):
                    continue
                data = bytes(await part.read(decode=False))  # type: ignore[union-attr]
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(data.decode("utf-8"))
                else:
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    uploads.append(_Upload(name, part.filename or "unknown", data, ctype))  # type: ignore[union-attr]
        elif request.body_exists:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
        return body, uploads

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    def _take_after_store(self, method: str, path: str) -> _Fault | None:
        for fault in self._after_store:
            if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    async def _answer_after_store(self, request: web.Request, fault: _Fault, path: str) -> web.StreamResponse:
        """The request took effect; now answer it the way a failing Discord edge would."""
        if fault.after_store == "timeout":
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(fault.hold)
        if fault.after_store in ("drop", "timeout"):
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection go away, unanswered
            raise asyncio.CancelledError  # aiohttp drops the handler quietly
        return self._fault_response(fault, path)

    def _fault_response(self, fault: _Fault, path: str) -> web.Response:
        headers = dict(fault.headers or {})
        if fault.status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1.0
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": False,
            }
            headers = {
                "Retry-After": str(max(1, int(retry + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": hashlib.md5(path.encode()).hexdigest(),
                "X-RateLimit-Scope": "user",
                # discord.py treats a 429 *without* a Via header as a Cloudflare ban and raises instead of
                # sleeping and retrying.
                "Via": "1.1 google",
                **headers,
            }
            return _json_response(body, 429, headers)
        if fault.body is not None:
            return _json_response(fault.body, fault.status, headers)
        defaults = {
            400: (0, "400: Bad Request"),
            401: (0, "401: Unauthorized"),
            403: (50013, "Missing Permissions"),
            500: (0, "500: Internal Server Error"),
            502: (0, "502: Bad Gateway"),
            503: (0, "503: Service Unavailable"),
        }
        if fault.status == 404:
            if "/messages" in path:
                code, message = 10008, "Unknown Message"
            elif path.startswith("/channels"):
                code, message = 10003, "Unknown Channel"
            elif path.startswith("/interactions"):
                code, message = 10062, "Unknown interaction"
            elif path.startswith("/webhooks"):
                code, message = 10015, "Unknown Webhook"
            else:
                code, message = 0, "404: Not Found"
        else:
            code, message = defaults.get(fault.status, (0, f"{fault.status}: Error"))
        return _json_response({"message": message, "code": code}, fault.status, headers)

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        prefix = f"/api/v{request.match_info['version']}"
        path = request.path[len(prefix) :] or "/"
        method = request.method.upper()
        call = RecordedCall(method=method, path=path, query=dict(request.query), json=None, files=[])
        call.reason = request.headers.get("X-Audit-Log-Reason")
        call.authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        self.calls.append(call)
        try:
            body, uploads = await self._read_body(request)
        except DiscordError as exc:
            call.status = exc.status
            return _json_response(exc.body(), exc.status)
        call.json = body
        call.files = [(u.filename, u.data, u.content_type) for u in uploads]
        if self.response_delay:
            await asyncio.sleep(self.response_delay)

        if request.match_info["version"] != str(API_VERSION):
            self.unknown_routes.append(call)
            call.status = 404
            return _json_response({"message": "404: Not Found", "code": 0}, 404)

        handler: _Handler | None = None
        groups: tuple[str, ...] = ()
        needs_auth = True
        path_matched = False
        for pattern, methods, auth in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            path_matched = True
            if method in methods:
                handler, groups, needs_auth = methods[method], m.groups(), auth
                break
        if handler is None:
            self.unknown_routes.append(call)
            status, message = (405, "405: Method Not Allowed") if path_matched else (404, "404: Not Found")
            call.status = status
            return _json_response({"message": message, "code": 0}, status)
        if needs_auth and not call.authorized:
            call.status = 401
            return _json_response({"message": "401: Unauthorized", "code": 0}, 401)
        fault = self._take_fault(method, path)
        if fault is not None:
            resp = self._fault_response(fault, path)
            call.status = resp.status
            return resp
        req = _Request(method, path, call.query, body, uploads, call)
        try:
            resp = await handler(req, *groups)
        except DiscordError as exc:
            resp = _json_response(exc.body(), exc.status, exc.headers)
        call.status = resp.status
        if resp.status < 300:
            after = self._take_after_store(method, path)
            if after is not None:
                call.status = after.status
                return await self._answer_after_store(request, after, path)
        for stall in self._stalls:
            if stall[0] in ("*", method) and stall[1].search(path):
                self._stalls.remove(stall)
                await stall[2].wait()
                break
        return resp

    def slow_cdn(self, attachment: dict[str, Any], delay: float) -> str:
        """Answer requests for this attachment after `delay` seconds, recording how many were in flight
        at once (`cdn_peak[path]`, and `cdn_peak_total` over all slow files). Returns the CDN path."""
        path = yarl.URL(attachment["url"]).path
        self.cdn_delays[path] = delay
        return path

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.cdn_requests.append(path)
        if path.startswith("/media/"):
            path = path[len("/media") :]
        entry = self._cdn.get(path)
        if entry is None or request.method not in ("GET", "HEAD"):
            return web.Response(status=404, text="Not Found")
        data, ctype = entry
        delay = self.cdn_delays.get(path)
        if delay is not None:
            self._cdn_in_flight[path] = self._cdn_in_flight.get(path, 0) + 1
            self.cdn_peak[path] = max(self.cdn_peak.get(path, 0), self._cdn_in_flight[path])
            self.cdn_peak_total = max(self.cdn_peak_total, sum(self._cdn_in_flight.values()))
            try:
                await asyncio.sleep(delay)
            finally:
                self._cdn_in_flight[path] -= 1
        return web.Response(body=data, headers={"Content-Type": ctype or "application/octet-stream"})

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: users, gateway, application, commands
    # ---------------------------------------------------------------------------------------------------

    async def _h_get_me(self, req: _Request) -> web.Response:
        return _json_response({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _h_get_user(self, req: _Request, uid: str) -> web.Response:
        if int(uid) not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        return _json_response(self.user_payload(int(uid)))

    async def _h_gateway(self, req: _Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _h_gateway_bot(self, req: _Request) -> web.Response:
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": dict(self.session_start_limit),
            }
        )

    async def _h_application(self, req: _Request) -> web.Response:
        return _json_response(self.application_payload())

    def _command_list(self, app_id: str, guild_id: str | None = None) -> list[dict[str, Any]]:
        if int(app_id) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if guild_id is None:
            return self.global_commands
        if int(guild_id) not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(guild_id), [])

    def _validate_command(self, cmd: Any, errors: _FormErrors, path: tuple[Any, ...]) -> None:
        if not isinstance(cmd, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            return
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            errors.add((*path, "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        elif ctype == 1 and (not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower()):
            errors.add((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        self._validate_localizations(cmd, errors, path, slash=ctype == 1)
        if ctype == 1:
            desc = cmd.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                errors.add(
                    (*path, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            self._validate_options(cmd.get("options") or [], errors, (*path, "options"))

    def _validate_localizations(
        self,
        obj: dict[str, Any],
        errors: _FormErrors,
        path: tuple[Any, ...],
        *,
        slash: bool,
        max_name: int = 32,
    ) -> None:
        """`name_localizations` / `description_localizations`: known locales, and the same rules as the
        field itself (names of slash commands and options: lower-case, no spaces; 1-32 / 1-100 chars)."""
        for key, limit in (("name_localizations", max_name), ("description_localizations", 100)):
            values = obj.get(key)
            if values is None:
                continue
            if not isinstance(values, dict):
                errors.add((*path, key), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            for locale, text in values.items():
                if locale not in DISCORD_LOCALES:
                    errors.add(
                        (*path, key, locale), "BASE_TYPE_CHOICES", f"Value must be one of {DISCORD_LOCALES}."
                    )
                elif not isinstance(text, str) or not 1 <= len(text) <= limit:
                    errors.add(
                        (*path, key, locale),
                        "BASE_TYPE_BAD_LENGTH",
                        f"Must be between 1 and {limit} in length.",
                    )
                elif (
                    key == "name_localizations" and slash and not re.fullmatch(r"[-_\w]{1,32}", text.lower())
                ):
                    errors.add(
                        (*path, key, locale), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                    )

    def _validate_options(
        self, options: list[dict[str, Any]], errors: _FormErrors, path: tuple[Any, ...]
    ) -> None:
        errors.max_len(path, options, 25)
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            name = opt.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                errors.add((*path, i, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            if name in names:
                errors.add(
                    (*path, i, "name"),
                    "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                    "Option name already exists",
                )
            names.add(str(name))
            desc = opt.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                errors.add(
                    (*path, i, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            self._validate_localizations(opt, errors, (*path, i), slash=True)
            if opt.get("type") in (1, 2):
                self._validate_options(opt.get("options") or [], errors, (*path, i, "options"))
                continue
            if opt.get("required"):
                if seen_optional:
                    errors.add(
                        (*path, i, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                seen_optional = True
            choices = opt.get("choices") or []
            errors.max_len((*path, i, "choices"), choices, 25)
            for j, choice in enumerate(choices):
                if isinstance(choice, dict):
                    self._validate_localizations(
                        choice, errors, (*path, i, "choices", j), slash=False, max_name=100
                    )
            if choices and opt.get("autocomplete"):
                errors.add(
                    (*path, i, "autocomplete"),
                    "AUTOCOMPLETE_AND_CHOICES",
                    "Cannot use both autocomplete and choices",
                )

    def _normalize_command(
        self, cmd: dict[str, Any], guild_id: str | None, existing: list[dict[str, Any]]
    ) -> dict:
        ctype = cmd.get("type", 1)
        prior = next((c for c in existing if c["name"] == cmd["name"] and c.get("type", 1) == ctype), None)
        out = copy.deepcopy(cmd)
        out["id"] = prior["id"] if prior else str(self._snowflake())
        out["application_id"] = str(self.application_id)
        out["version"] = str(self._snowflake())
        out["type"] = ctype
        out.setdefault("description", "")
        out.setdefault("default_member_permissions", None)
        out.setdefault("nsfw", False)
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        else:
            out.setdefault("contexts", None)
            out.setdefault("integration_types", [0])
        return out

    async def _h_list_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        return _json_response(copy.deepcopy(self._command_list(app_id, guild_id)))

    async def _h_put_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        current = self._command_list(app_id, guild_id)
        body = req.json
        if not isinstance(body, list):
            raise DiscordError(
                400, 50035, "Invalid Form Body", errors={"_errors": [{"code": "BASE_TYPE_LIST"}]}
            )
        errors = _FormErrors()
        errors.max_len((), body, 100)
        seen: set[tuple[str, int]] = set()
        for i, cmd in enumerate(body):
            self._validate_command(cmd, errors, (i,))
            if isinstance(cmd, dict):
                key = (str(cmd.get("name")), int(cmd.get("type", 1)))
                if key in seen:
                    errors.add(
                        (i, "name"),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        f"Application command names must be unique: {key[0]}",
                    )
                seen.add(key)
        errors.raise_if_any()
        new = [self._normalize_command(c, guild_id, current) for c in body]
        current[:] = new
        return _json_response(copy.deepcopy(new))

    async def _h_post_command(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        current = self._command_list(app_id, guild_id)
        errors = _FormErrors()
        self._validate_command(req.json, errors, ())
        errors.raise_if_any()
        cmd = self._normalize_command(req.json, guild_id, current)
        existed = any(c["id"] == cmd["id"] for c in current)
        current[:] = [c for c in current if c["id"] != cmd["id"]] + [cmd]
        return _json_response(copy.deepcopy(cmd), 200 if existed else 201)

    def _find_command_by_id(self, app_id: str, args: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict]:
        guild_id, cmd_id = (args[0], args[1]) if len(args) == 2 else (None, args[0])
        current = self._command_list(app_id, guild_id)
        for cmd in current:
            if cmd["id"] == cmd_id:
                return current, cmd
        raise DiscordError(404, 10063, "Unknown application command")

    async def _h_get_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        _, cmd = self._find_command_by_id(app_id, args)
        return _json_response(copy.deepcopy(cmd))

    async def _h_patch_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        _, cmd = self._find_command_by_id(app_id, args)
        merged = {**cmd, **(req.json or {})}
        errors = _FormErrors()
        self._validate_command(merged, errors, ())
        errors.raise_if_any()
        cmd.update(req.json or {})
        cmd["version"] = str(self._snowflake())
        return _json_response(copy.deepcopy(cmd))

    async def _h_delete_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        current, cmd = self._find_command_by_id(app_id, args)
        current.remove(cmd)
        return web.Response(status=204)

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: channels, messages, threads, guilds, DMs
    # ---------------------------------------------------------------------------------------------------

    def _channel(self, channel_id: str | int) -> dict[str, Any]:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        if channel.get("guild_id") is not None and not self.permissions_for(
            self.application_id, int(channel_id)
        ):
            raise DiscordError(403, 50001, "Missing Access")
        return channel

    def _require(self, channel_id: int, perm: int) -> None:
        if self.channels[channel_id].get("guild_id") is None:
            return
        if self.permissions_for(self.application_id, channel_id) & perm != perm:
            raise DiscordError(403, 50013, "Missing Permissions")

    def _channel_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        msg = self.get_message(int(message_id))
        if msg is None or msg["channel_id"] != str(int(channel_id)) or int(msg["flags"]) & EPHEMERAL:
            raise DiscordError(404, 10008, "Unknown Message")
        return msg

    async def _h_get_channel(self, req: _Request, cid: str) -> web.Response:
        return _json_response(copy.deepcopy(self._channel(cid)))

    async def _h_typing(self, req: _Request, cid: str) -> web.Response:
        self._channel(cid)
        return web.Response(status=204)

    async def _h_list_messages(self, req: _Request, cid: str) -> web.Response:
        self._channel(cid)
        if not self.permissions_for(
            self.application_id, int(cid)
        ) & Perm.READ_MESSAGE_HISTORY and self.channels[int(cid)].get("guild_id"):
            return _json_response([])
        try:
            limit = int(req.query.get("limit", 50))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            errors = _FormErrors()
            errors.add(("limit",), "NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")
            errors.raise_if_any()
        msgs = sorted(self.messages(int(cid)), key=lambda m: int(m["id"]), reverse=True)
        if "before" in req.query:
            msgs = [m for m in msgs if int(m["id"]) < int(req.query["before"])]
        if "after" in req.query:
            after = int(req.query["after"])
            msgs = sorted((m for m in msgs if int(m["id"]) > after), key=lambda m: int(m["id"]))[:limit]
            msgs.reverse()
        if "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in msgs if int(m["id"]) <= around][: (limit + 1) // 2]
            newer = [m for m in msgs if int(m["id"]) > around][-(limit // 2) :] if limit // 2 else []
            msgs = newer + older
        return _json_response([self._stored_message(m) for m in msgs[:limit]])

    async def _h_create_message(self, req: _Request, cid: str) -> web.Response:
        channel = self._channel(cid)
        channel_id = int(cid)
        if channel["type"] == 1:
            recipient = int(channel["recipients"][0]["id"])
            if recipient in self.closed_dms:
                raise DiscordError(403, 50007, "Cannot send messages to this user")
        elif channel["type"] in THREAD_TYPES:
            self._require(channel_id, Perm.SEND_MESSAGES_IN_THREADS)
            meta = channel["thread_metadata"]
            moderator = self.permissions_for(self.application_id, channel_id) & Perm.MANAGE_THREADS
            if meta.get("archived") and meta.get("locked") and not moderator:
                raise DiscordError(400, 50083, "Operation cannot be performed on an archived thread.")
            if meta.get("locked") and not moderator:
                raise DiscordError(400, 160005, "Thread is locked")
            if meta.get("archived"):
                meta["archived"] = False  # sending unarchives a thread that is not locked
        else:
            self._require(channel_id, Perm.SEND_MESSAGES)
        if req.uploads:
            self._require(channel_id, Perm.ATTACH_FILES)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        nonce = payload.get("nonce")
        key = (channel_id, self.application_id, str(nonce))
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get(key)
            if seen is not None and time.monotonic() - seen[1] <= self.nonce_window:
                existing = self.get_message(seen[0])
                if existing is not None:
                    return _json_response(self._public_message(existing))
        msg = self._make_message(channel_id, payload, req.uploads)
        self._store_message(msg)
        if nonce is not None:
            self._nonces[key] = (int(msg["id"]), time.monotonic())
        await self._announce("MESSAGE_CREATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_get_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        self._require(int(cid), Perm.READ_MESSAGE_HISTORY)
        return _json_response(self._stored_message(self._channel_message(cid, mid)))

    async def _h_edit_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        payload = req.json or {}
        if int(msg["author"]["id"]) != self.application_id:
            if set(payload) - {"flags"}:
                raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
            self._require(int(cid), Perm.MANAGE_MESSAGES)
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        new = self._edited(msg, payload, req.uploads)
        msg.clear()
        msg.update(new)
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_delete_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        if int(msg["author"]["id"]) != self.application_id:
            self._require(int(cid), Perm.MANAGE_MESSAGES)
        self._delete_message(msg)
        await self._announce("MESSAGE_DELETE", msg)
        return web.Response(status=204)

    async def _h_add_reaction(self, req: _Request, cid: str, mid: str, emoji: str) -> web.Response:
        self._channel(cid)
        self._require(int(cid), Perm.ADD_REACTIONS | Perm.READ_MESSAGE_HISTORY)
        msg = self._channel_message(cid, mid)
        name, _, eid = emoji.partition(":")
        for reaction in msg["reactions"]:
            if reaction["emoji"]["name"] == name:
                if not reaction["me"]:
                    reaction["me"] = True
                    reaction["count"] += 1
                break
        else:
            msg["reactions"].append(
                {"emoji": {"id": eid or None, "name": name}, "count": 1, "me": True, "burst_colors": []}
            )
        return web.Response(status=204)

    async def _h_remove_reaction(self, req: _Request, cid: str, mid: str, emoji: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        name = emoji.partition(":")[0]
        for reaction in list(msg["reactions"]):
            if reaction["emoji"]["name"] == name and reaction["me"]:
                reaction["me"] = False
                reaction["count"] -= 1
                if reaction["count"] <= 0:
                    msg["reactions"].remove(reaction)
        return web.Response(status=204)

    def _validate_thread_body(self, body: dict[str, Any]) -> tuple[str, int]:
        errors = _FormErrors()
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            errors.add(("name",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        auto = body.get("auto_archive_duration") or 4320
        if auto not in (60, 1440, 4320, 10080):
            errors.add(
                ("auto_archive_duration",),
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            )
        errors.raise_if_any()
        return str(name), int(auto)

    async def _h_thread_from_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        channel = self._channel(cid)
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        msg = self._channel_message(cid, mid)
        self._require(int(cid), Perm.CREATE_PUBLIC_THREADS)
        if int(msg["flags"]) & HAS_THREAD or int(mid) in self.channels:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        body = req.json or {}
        name, auto = self._validate_thread_body(body)
        thread = self._create_thread(
            int(cid),
            name,
            self.application_id,
            11 if channel["type"] == 0 else 10,
            auto,
            int(mid),
            rate_limit=int(body.get("rate_limit_per_user") or 0),
        )
        await self._maybe_dispatch(
            "THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True}, Intent.GUILDS
        )
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(copy.deepcopy(thread), 201)

    async def _h_thread_without_message(self, req: _Request, cid: str) -> web.Response:
        channel = self._channel(cid)
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        body = req.json or {}
        ttype = int(body.get("type") or 12)
        if ttype not in (10, 11, 12):
            raise DiscordError(
                400, 50035, "Invalid Form Body", errors={"type": {"_errors": [{"code": "BASE_TYPE_CHOICES"}]}}
            )
        self._require(int(cid), Perm.CREATE_PRIVATE_THREADS if ttype == 12 else Perm.CREATE_PUBLIC_THREADS)
        name, auto = self._validate_thread_body(body)
        thread = self._create_thread(
            int(cid),
            name,
            self.application_id,
            ttype,
            auto,
            None,
            invitable=bool(body.get("invitable", True)),
            rate_limit=int(body.get("rate_limit_per_user") or 0),
        )
        await self._maybe_dispatch(
            "THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True}, Intent.GUILDS
        )
        return _json_response(copy.deepcopy(thread), 201)

    def _guild(self, gid: str) -> int:
        if int(gid) not in self.guilds:
            raise DiscordError(404, 10004, "Unknown Guild")
        return int(gid)

    async def _h_get_guild(self, req: _Request, gid: str) -> web.Response:
        payload = self.guild_payload(self._guild(gid))
        if req.query.get("with_counts") in ("1", "true", "True"):
            payload["approximate_member_count"] = len(self.guilds[int(gid)]["members"])
            payload["approximate_presence_count"] = 0
        return _json_response(payload)

    async def _h_guild_channels(self, req: _Request, gid: str) -> web.Response:
        g = self.guilds[self._guild(gid)]
        return _json_response([self.channel_payload(c) for c in g["channel_ids"]])

    async def _h_guild_roles(self, req: _Request, gid: str) -> web.Response:
        g = self.guilds[self._guild(gid)]
        return _json_response(copy.deepcopy(list(g["roles"].values())))

    async def _h_get_member(self, req: _Request, gid: str, uid: str) -> web.Response:
        guild_id = self._guild(gid)
        if int(uid) not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        if int(uid) not in self.guilds[guild_id]["members"]:
            raise DiscordError(404, 10007, "Unknown Member")
        return _json_response(self.member_payload(int(uid), guild_id=guild_id))

    async def _h_create_dm(self, req: _Request) -> web.Response:
        body = req.json or {}
        try:
            uid = int(body.get("recipient_id"))
        except (TypeError, ValueError):
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors={"recipient_id": {"_errors": [{"code": "BASE_TYPE_REQUIRED"}]}},
            ) from None
        if uid not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        cid = self._dm_channels.get(uid)
        if cid is None:
            cid = self._snowflake()
            self.channels[cid] = {
                "id": str(cid),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.user_payload(uid)],
            }
            self._messages[cid] = []
            self._dm_channels[uid] = cid
        return _json_response(self.channel_payload(cid))

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: interaction callback and webhooks
    # ---------------------------------------------------------------------------------------------------

    def _interaction_metadata(self, inter: FakeInteraction) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "user": self.user_payload(inter.user_id),
            "authorizing_integration_owners": copy.deepcopy(
                inter.payload.get("authorizing_integration_owners", {})
            ),
        }
        if inter.type == 2:
            meta["name"] = inter.payload["data"]["name"]
            meta["command_type"] = 1
        if inter.source_message_id is not None:
            meta["interacted_message_id"] = str(inter.source_message_id)
        if inter.original_message_id is not None:
            meta["original_response_message_id"] = str(inter.original_message_id)
        return meta

    def _response_message(
        self,
        inter: FakeInteraction,
        data: dict[str, Any],
        uploads: Sequence[_Upload],
        *,
        loading: bool = False,
    ) -> dict[str, Any]:
        ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
        if loading:
            # The "<bot> is thinking..." placeholder: empty, flagged LOADING.
            mid = self._snowflake()
            msg = {
                "id": str(mid),
                "channel_id": str(inter.channel_id),
                "type": 20 if inter.type == 2 else 0,
                "content": "",
                "author": self.user_payload(self.application_id),
                "attachments": [],
                "embeds": [],
                "components": [],
                "mentions": [],
                "mention_roles": [],
                "mention_everyone": False,
                "pinned": False,
                "tts": False,
                "timestamp": _now_iso(),
                "edited_timestamp": None,
                "flags": LOADING | (EPHEMERAL if ephemeral else 0),
                "reactions": [],
                "allowed_mentions": None,
                "webhook_id": str(self.application_id),
                "application_id": str(self.application_id),
            }
            if inter.guild_id:
                msg["guild_id"] = str(inter.guild_id)
        else:
            msg = self._make_message(
                inter.channel_id,
                data,
                uploads,
                webhook=True,
                ephemeral=ephemeral,
                msg_type=20 if inter.type == 2 else 0,
            )
        msg["interaction_metadata"] = self._interaction_metadata(inter)
        if inter.type == 2:
            msg["interaction"] = {
                "id": str(inter.id),
                "type": 2,
                "name": inter.payload["data"]["name"],
                "user": self.user_payload(inter.user_id),
            }
        return msg

    async def _h_callback(self, req: _Request, iid: str, token: str) -> web.Response:
        inter = self.interactions.get(int(iid))
        if inter is None or inter.token != token:
            raise DiscordError(404, 10062, "Unknown interaction")
        body = req.json if isinstance(req.json, dict) else {}
        rtype = body.get("type")
        latency = time.monotonic() - (inter.dispatched_at or 0.0)
        if inter.callbacks:
            inter.rejected_callbacks.append({"type": rtype, "status": 400, "code": 40060, "latency": latency})
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if latency > self.ack_deadline:
            inter.rejected_callbacks.append({"type": rtype, "status": 404, "code": 10062, "latency": latency})
            raise DiscordError(404, 10062, "Unknown interaction")
        allowed = {
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5, 6, 7} if inter.source_message_id else {4, 5},
        }
        if rtype not in allowed.get(inter.type, set()):
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors={
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                "message": f"Interaction response type {rtype} is not valid for "
                                f"interaction type {inter.type}",
                            }
                        ]
                    }
                },
            )
        data = body.get("data") or {}
        record: dict[str, Any] = {
            "type": rtype,
            "data": copy.deepcopy(data),
            "files": [(u.filename, u.data, u.content_type) for u in req.uploads],
            "latency": latency,
            "message": None,
        }
        msg: dict[str, Any] | None = None
        events: list[tuple[str, dict[str, Any]]] = []
        if rtype == 4:
            self._check_upload_sizes(req.uploads)
            self._validate_message_payload(data, req.uploads, ("data",))
            msg = self._response_message(inter, data, req.uploads)
            self._store_message(msg)
            inter.original_message_id = int(msg["id"])
            events.append(("MESSAGE_CREATE", msg))
        elif rtype == 5:
            msg = self._response_message(inter, data, [], loading=True)
            self._store_message(msg)
            inter.original_message_id = int(msg["id"])
            inter._loading = True
            events.append(("MESSAGE_CREATE", msg))
        elif rtype in (6, 7):
            assert inter.source_message_id is not None
            src = self.get_message(inter.source_message_id)
            if src is None:
                raise DiscordError(404, 10008, "Unknown Message")
            if rtype == 7:
                self._check_upload_sizes(req.uploads)
                self._validate_message_payload(data, req.uploads, ("data",))
                new = self._edited(src, data, req.uploads)
                src.clear()
                src.update(new)
                events.append(("MESSAGE_UPDATE", src))
            msg = src
            inter.original_message_id = int(src["id"])
        elif rtype == 8:
            errors = _FormErrors()
            choices = data.get("choices")
            if not isinstance(choices, list):
                errors.add(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")
            else:
                errors.max_len(("data", "choices"), choices, 25)
                for i, c in enumerate(choices):
                    if not isinstance(c.get("name"), str) or not 1 <= len(c["name"]) <= 100:
                        errors.add(
                            ("data", "choices", i, "name"),
                            "BASE_TYPE_BAD_LENGTH",
                            "Must be between 1 and 100 in length.",
                        )
                    errors.max_len(("data", "choices", i, "value"), c.get("value"), 100)
            errors.raise_if_any()
        elif rtype == 9:
            errors = _FormErrors()
            if not data.get("custom_id"):
                errors.add(("data", "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            errors.max_len(("data", "custom_id"), data.get("custom_id"), 100)
            title = data.get("title")
            if not isinstance(title, str) or not 1 <= len(title) <= 45:
                errors.add(("data", "title"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            comps = data.get("components") or []
            if not 1 <= len(comps) <= 5:
                errors.add(
                    ("data", "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            errors.raise_if_any()
        if msg is not None:
            record["message"] = copy.deepcopy(msg)
        inter.callbacks.append(record)
        inter.ack_latency = latency
        for event, m in events:
            await self._announce(event, m)
        if req.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        ephemeral = bool(msg and int(msg["flags"]) & EPHEMERAL)
        interaction_obj: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": ephemeral,
        }
        resource: dict[str, Any] = {"type": rtype}
        if msg is not None:
            interaction_obj["response_message_id"] = msg["id"]
            resource["message"] = self._public_message(msg)
        return _json_response({"interaction": interaction_obj, "resource": resource})

    def _webhook_interaction(self, app_id: str, token: str) -> FakeInteraction:
        if int(app_id) == self.application_id:
            for inter in self.interactions.values():
                if inter.token == token:
                    if not inter.callbacks:
                        break  # no initial response yet -> the webhook does not exist yet
                    return inter
        raise DiscordError(404, 10015, "Unknown Webhook")

    def _webhook_message(self, inter: FakeInteraction, which: str) -> dict[str, Any]:
        if which == "@original":
            mid = inter.original_message_id
        else:
            mid = int(which)
            if mid not in inter._webhook_message_ids and mid != inter.original_message_id:
                mid = None
        msg = self.get_message(mid) if mid is not None else None
        if msg is None:
            raise DiscordError(404, 10008, "Unknown Message")
        return msg

    async def _h_webhook_execute(self, req: _Request, app_id: str, token: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        wait = req.query.get("wait", "false").lower() in ("1", "true")
        original = inter.original_message
        if inter._loading and original is not None:
            # Real Discord: the first follow-up after a deferred (type 5) response replaces the "thinking"
            # message and keeps the deferral's ephemeral state.
            eph = int(original["flags"]) & EPHEMERAL
            edit = {k: v for k, v in payload.items() if k != "flags"}
            edit.setdefault("content", payload.get("content"))
            edit["flags"] = int(payload.get("flags") or 0)
            new = self._edited(original, edit, req.uploads)
            new["flags"] = (int(new["flags"]) & ~(LOADING | EPHEMERAL)) | eph
            new["edited_timestamp"] = None
            original.clear()
            original.update(new)
            inter._loading = False
            msg = original
            await self._announce("MESSAGE_UPDATE", msg)
        else:
            ephemeral = bool(int(payload.get("flags") or 0) & EPHEMERAL)
            msg = self._make_message(
                inter.channel_id, payload, req.uploads, webhook=True, ephemeral=ephemeral
            )
            msg["interaction_metadata"] = self._interaction_metadata(inter)
            self._store_message(msg)
            await self._announce("MESSAGE_CREATE", msg)
        inter._webhook_message_ids.add(int(msg["id"]))
        inter.followups.append(copy.deepcopy(msg))
        if not wait:
            return web.Response(status=204)
        return _json_response(self._public_message(msg))

    async def _h_webhook_get(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        return _json_response(self._public_message(self._webhook_message(inter, which)))

    async def _h_webhook_edit(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        msg = self._webhook_message(inter, which)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        new = self._edited(msg, payload, req.uploads)
        if int(msg["flags"]) & LOADING:
            new["flags"] = int(new["flags"]) & ~LOADING
            if int(msg["id"]) == inter.original_message_id:
                inter._loading = False
        msg.clear()
        msg.update(new)
        inter.followups.append(copy.deepcopy(msg))
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_webhook_delete(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        msg = self._webhook_message(inter, which)
        self._delete_message(msg)
        inter.deleted_message_ids.append(int(msg["id"]))
        await self._announce("MESSAGE_DELETE", msg)
        return web.Response(status=204)


# --------------------------------------------------------------------------------------------------------
# discord.py wiring
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point discord.py's REST base, gateway and CDN base at ``fake`` (restored on exit)."""
    import discord.asset
    import discord.gateway
    import discord.http

    fake._require_started()
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    old_asset = discord.asset.Asset.BASE
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    discord.asset.Asset.BASE = fake.url
    try:
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
        discord.asset.Asset.BASE = old_asset
