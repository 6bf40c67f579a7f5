"""FakeDiscord, composed from one mixin per seam, and patched_discord."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import yarl
from aiohttp import web

from ._common import (
    API_VERSION,
    MIB,
    Perm,
)
from ._entitlements import EntitlementsMixin
from ._gateway import GatewayMixin
from ._interactions import InteractionsMixin
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
    EntitlementsMixin,
):
    """In-process fake Discord.  See the module docstring and tests/fakes/README.md."""

    def __init__(self, token: str = "test-discord-token", *, port: int = 0) -> None:
        super().__init__(token, port=port)

        # Identity
        self.application_id = self._snowflake()
        self.bot_user = {
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
        self.guild_id = self.add_guild("Fake Guild", owner="owner")
        self.role_ids = {
            "everyone": self.guild_id,
            "bot": self.guilds[self.guild_id]["bot_role_id"],
            "moderator": self.add_role("Moderator", Perm.MANAGE_MESSAGES),
            "admin": self.add_role("Admin", Perm.MANAGE_GUILD),
        }
        self.channel_id = self.add_channel("animate", topic="Animate images")
        self.other_channel_id = self.add_channel("general")
        self.add_member("alice")
        self.add_member("bob")
        self.add_member("mod", roles=["moderator"])
        self.add_member("admin", roles=["admin"])

        self._build_routes()

    # ---------------------------------------------------------------------------------------------------
    # Routes: the one place that sees every seam's handlers
    # ---------------------------------------------------------------------------------------------------

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
        r(r"/applications/(\d+)/skus", get=self._h_list_skus)
        r(r"/applications/(\d+)/entitlements", get=self._h_list_entitlements)
        r(r"/applications/(\d+)/entitlements/(\d+)/consume", post=self._h_consume_entitlement)
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
