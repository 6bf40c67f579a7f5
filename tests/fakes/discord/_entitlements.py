"""Premium Apps: SKUs, entitlements (purchases, refunds, server subscriptions), their events and routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ._common import DiscordError, _json_response, _Request
from ._state import FakeState

SKU_DURABLE, SKU_CONSUMABLE, SKU_SUBSCRIPTION = 2, 3, 5
ENT_PURCHASE, ENT_TEST_MODE_PURCHASE, ENT_APPLICATION_SUBSCRIPTION = 1, 4, 8


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true")


class EntitlementsMixin(FakeState):
    """What a member buys: `add_sku`, `purchase`, `refund`, `subscribe_guild`, `update_entitlement`."""

    # ---------------------------------------------------------------------------------------------------
    # Test-facing API
    # ---------------------------------------------------------------------------------------------------

    def add_sku(self, name: str, sku_type: int = SKU_CONSUMABLE, *, sku_id: int | None = None) -> int:
        """A SKU of the application (type 2 durable, 3 consumable, 5 subscription); returns its id."""
        sid = sku_id if sku_id is not None else self._snowflake()
        self.skus[sid] = {
            "id": str(sid),
            "type": sku_type,
            "application_id": str(self.application_id),
            "name": name,
            "slug": name.lower().replace(" ", "-"),
            "flags": 1 << 2 if sku_type == SKU_CONSUMABLE else 1 << 7,
        }
        return sid

    async def purchase(
        self, user: str | int, sku_id: int, *, test_mode: bool = False, dispatch: bool = True
    ) -> dict[str, Any]:
        """A member buys `sku_id`: a new entitlement, ENTITLEMENT_CREATE dispatched (if a bot is connected
        and `dispatch`), and carried in that member's later interactions until consumed or deleted."""
        if sku_id not in self.skus:
            raise KeyError(f"unknown SKU {sku_id}; add it with add_sku")
        ent = self._new_entitlement(
            sku_id, ENT_TEST_MODE_PURCHASE if test_mode else ENT_PURCHASE, user_id=self._resolve_user(user)
        )
        if dispatch:
            await self._entitlement_event("ENTITLEMENT_CREATE", ent)
        return self.entitlement_payload(ent["id"])

    async def subscribe_guild(
        self, guild_id: int, sku_id: int, *, user: str | int = "owner", ends_at: float | None = None
    ) -> dict[str, Any]:
        """A member subscribes a server to `sku_id` (type 8, with `guild_id`); ENTITLEMENT_CREATE."""
        ent = self._new_entitlement(
            sku_id, ENT_APPLICATION_SUBSCRIPTION, user_id=self._resolve_user(user), guild_id=guild_id
        )
        ent["ends_at"] = ends_at
        await self._entitlement_event("ENTITLEMENT_CREATE", ent)
        return self.entitlement_payload(ent["id"])

    async def update_entitlement(self, entitlement_id: int, **changes: Any) -> dict[str, Any]:
        """Change an entitlement (e.g. `ends_at=` epoch seconds) and dispatch ENTITLEMENT_UPDATE."""
        ent = self.entitlements[entitlement_id]
        ent.update(changes)
        await self._entitlement_event("ENTITLEMENT_UPDATE", ent)
        return self.entitlement_payload(entitlement_id)

    async def refund(self, entitlement_id: int, *, dispatch: bool = True) -> dict[str, Any]:
        """Discord refunds a purchase: the entitlement is deleted and ENTITLEMENT_DELETE dispatched."""
        ent = self.entitlements[entitlement_id]
        ent["deleted"] = True
        if dispatch:
            await self._entitlement_event("ENTITLEMENT_DELETE", ent)
        return self.entitlement_payload(entitlement_id)

    def entitlement_payload(self, entitlement_id: int) -> dict[str, Any]:
        ent = self.entitlements[entitlement_id]
        out: dict[str, Any] = {
            "id": str(ent["id"]),
            "sku_id": str(ent["sku_id"]),
            "application_id": str(self.application_id),
            "user_id": None if ent["user_id"] is None else str(ent["user_id"]),
            "type": ent["type"],
            "deleted": ent["deleted"],
            "starts_at": None,
            "ends_at": _iso(ent["ends_at"]),
            "gift_code_flags": 0,
        }
        if ent["guild_id"] is not None:
            out["guild_id"] = str(ent["guild_id"])
        if self.skus[ent["sku_id"]]["type"] == SKU_CONSUMABLE:
            out["consumed"] = ent["consumed"]
        return out

    def _interaction_entitlements(self, user_id: int, guild_id: int | None) -> list[dict[str, Any]]:
        """What an interaction carries: the user's (and the server's) live, unconsumed entitlements."""
        if not self.entitlements_in_interactions:
            return []
        return [
            self.entitlement_payload(ent["id"])
            for ent in self.entitlements.values()
            if self._live(ent)
            and not ent["consumed"]
            and (ent["user_id"] == user_id if ent["guild_id"] is None else ent["guild_id"] == guild_id)
        ]

    # ---------------------------------------------------------------------------------------------------
    # Internals
    # ---------------------------------------------------------------------------------------------------

    def _new_entitlement(
        self, sku_id: int, ent_type: int, *, user_id: int | None, guild_id: int | None = None
    ) -> dict[str, Any]:
        eid = self._snowflake()
        ent = {
            "id": eid,
            "sku_id": sku_id,
            "user_id": user_id,
            "guild_id": guild_id,
            "type": ent_type,
            "deleted": False,
            "consumed": False,
            "ends_at": None,
            "consume_calls": 0,
        }
        self.entitlements[eid] = ent
        return ent

    @staticmethod
    def _live(ent: dict[str, Any]) -> bool:
        ends = ent["ends_at"]
        return not ent["deleted"] and (ends is None or ends > datetime.now(UTC).timestamp())

    async def _entitlement_event(self, event: str, ent: dict[str, Any]) -> None:
        if self.connected:
            await self.dispatch(event, self.entitlement_payload(ent["id"]))

    def _app(self, app_id: str) -> None:
        if int(app_id) != self.application_id:
            raise DiscordError(404, 10002, "Unknown Application")

    # ---------------------------------------------------------------------------------------------------
    # Routes
    # ---------------------------------------------------------------------------------------------------

    async def _h_list_skus(self, req: _Request, app_id: str) -> web.Response:
        self._app(app_id)
        return _json_response(list(self.skus.values()))

    async def _h_list_entitlements(self, req: _Request, app_id: str) -> web.Response:
        self._app(app_id)
        q = req.query
        try:
            limit = int(q.get("limit", 100))
            skus = {int(s) for s in q["sku_ids"].split(",") if s} if q.get("sku_ids") else None
            user_id = int(q["user_id"]) if q.get("user_id") else None
            guild_id = int(q["guild_id"]) if q.get("guild_id") else None
            before = int(q["before"]) if q.get("before") else None
            after = int(q["after"]) if q.get("after") else None
        except ValueError:
            raise DiscordError(400, 50035, "Invalid Form Body") from None
        if not 1 <= limit <= 100:
            raise DiscordError(400, 50035, "Invalid Form Body")
        found = []
        for eid in sorted(self.entitlements):
            ent = self.entitlements[eid]
            if skus is not None and ent["sku_id"] not in skus:
                continue
            if user_id is not None and ent["user_id"] != user_id:
                continue
            if guild_id is not None and ent["guild_id"] != guild_id:
                continue
            if _flag(q.get("exclude_deleted"), True) and ent["deleted"]:
                continue
            if _flag(q.get("exclude_ended"), False) and not ent["deleted"] and not self._live(ent):
                continue
            if (before is not None and eid >= before) or (after is not None and eid <= after):
                continue
            found.append(eid)
        page = found[-limit:] if before is not None else found[:limit]
        return _json_response([self.entitlement_payload(eid) for eid in page])

    async def _h_consume_entitlement(self, req: _Request, app_id: str, eid: str) -> web.Response:
        self._app(app_id)
        ent = self.entitlements.get(int(eid))
        if ent is None:
            raise DiscordError(404, 10069, "Unknown Entitlement")
        ent["consume_calls"] += 1
        if self.skus[ent["sku_id"]]["type"] != SKU_CONSUMABLE:
            raise DiscordError(400, 40074, "This entitlement is not consumable")
        if ent["consumed"] and self.reconsume_error is not None:
            status, code, message = self.reconsume_error
            raise DiscordError(status, code, message)
        ent["consumed"] = True
        return web.Response(status=204)
