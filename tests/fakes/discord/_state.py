"""The state every seam of the fake shares: tunables, records, world, gateway sessions, server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._common import (
    DISCORD_EPOCH_MS,
    MIB,
    RecordedCall,
    _Fault,
    _FormErrors,
    _Handler,
    _Upload,
)

if TYPE_CHECKING:
    from ._gateway import _Conn, _Session
    from ._interactions import FakeInteraction


class FakeState:
    """What every mixin of FakeDiscord reads and writes (set up here, the default world in FakeDiscord)."""

    # Identity and the default world: set by FakeDiscord.__init__ once the world is built.
    application_id: int
    bot_user: dict[str, Any]
    guild_id: int
    role_ids: dict[str, int]
    channel_id: int
    other_channel_id: int

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
        # Premium Apps (_entitlements.py): SKUs and entitlements by id; what a second consume of a
        # consumed entitlement answers ((status, code, message); None = 204 again).
        self.skus: dict[int, dict[str, Any]] = {}
        self.entitlements: dict[int, dict[str, Any]] = {}
        self.reconsume_error: tuple[int, int, str] | None = None
        self.entitlements_in_interactions: bool = True  # False: like Discord's bug, none carried

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

        self._routes: list[tuple[re.Pattern[str], dict[str, _Handler], bool]] = []

    def _snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = max(ms << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    if TYPE_CHECKING:
        # What one seam calls on another; the mixins named below implement them (mypy checks the match).
        # _gateway
        async def _maybe_dispatch(self, event: str, data: dict[str, Any], intent: int) -> None: ...
        @property
        def connected(self) -> bool: ...
        async def dispatch(self, event: str, data: dict[str, Any]) -> int: ...
        # _messages
        async def _announce(self, event: str, msg: dict[str, Any]) -> None: ...
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
        ) -> dict[str, Any]: ...
        def _delete_message(self, msg: dict[str, Any]) -> None: ...
        def _edited(
            self, msg: dict[str, Any], payload: dict[str, Any], uploads: Sequence[_Upload]
        ) -> dict[str, Any]: ...
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
        ) -> dict[str, Any]: ...
        def _store_message(self, msg: dict[str, Any]) -> None: ...
        # _payloads
        def _application_flags(self) -> int: ...
        def _cdn_url(self, path: str, *, proxy: bool = False) -> str: ...
        def _event_message(self, msg: dict[str, Any]) -> dict[str, Any]: ...
        def _public_message(self, msg: dict[str, Any]) -> dict[str, Any]: ...
        def _require_started(self) -> None: ...
        def _stored_message(self, msg: dict[str, Any]) -> dict[str, Any]: ...
        def application_payload(self) -> dict[str, Any]: ...
        def channel_payload(self, channel_id: int) -> dict[str, Any]: ...
        def guild_payload(self, guild_id: int | None = None, *, full: bool = False) -> dict[str, Any]: ...
        def member_payload(
            self,
            user: str | int,
            *,
            guild_id: int | None = None,
            channel_id: int | None = None,
            with_user: bool = True,
        ) -> dict[str, Any]: ...
        def user_payload(self, user: str | int) -> dict[str, Any]: ...
        # _validation
        def _check_upload_sizes(self, uploads: Sequence[_Upload]) -> None: ...
        @staticmethod
        def _is_empty(msg: dict[str, Any]) -> bool: ...
        def _normalize_command(
            self, cmd: dict[str, Any], guild_id: str | None, existing: list[dict[str, Any]]
        ) -> dict[str, Any]: ...
        def _validate_command(self, cmd: Any, errors: _FormErrors, path: tuple[Any, ...]) -> None: ...
        def _validate_message_payload(
            self, payload: dict[str, Any], uploads: Sequence[_Upload], prefix: tuple[Any, ...] = ()
        ) -> None: ...
        # _world
        def open_dm(self, user: str | int) -> int: ...
        def bot_is_member(self, channel_id: int) -> bool: ...
        def _resolve_role(self, guild_id: int, role: str | int) -> int: ...
        def _resolve_user(self, user: str | int) -> int: ...
        def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None: ...
        def get_message(self, message_id: int) -> dict[str, Any] | None: ...
        def messages(
            self, channel_id: int | None = None, *, include_ephemeral: bool = False
        ) -> list[dict[str, Any]]: ...
        def permissions_for(self, user: str | int, channel_id: int) -> int: ...
        @property
        def threads(self) -> dict[int, dict[str, Any]]: ...
        # _entitlements
        def _interaction_entitlements(self, user_id: int, guild_id: int | None) -> list[dict[str, Any]]: ...
        # _fake
        async def wait_for(
            self, predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.005
        ) -> Any: ...
