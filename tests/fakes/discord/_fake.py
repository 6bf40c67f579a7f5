"""FakeDiscord, composed from one mixin per seam, and patched_discord."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import yarl
from aiohttp import web

from ._common import (
    API_VERSION,
    DISCORD_EPOCH_MS,
    MIB,
    Perm,
    RecordedCall,
    _Fault,
    _Handler,
)
from ._gateway import GatewayMixin, _Conn, _Session
from ._interactions import FakeInteraction, InteractionsMixin
from ._messages import MessagesMixin
from ._payloads import PayloadsMixin
from ._rest import RestMixin
from ._validation import ValidationMixin
from ._webhooks import WebhooksMixin
from ._world import WorldMixin


class FakeDiscord(
    WorldMixin,
    PayloadsMixin,
    GatewayMixin,
    InteractionsMixin,
    ValidationMixin,
    MessagesMixin,
    RestMixin,
    WebhooksMixin,
):
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
