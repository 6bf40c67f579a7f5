"""Selling credits through Discord (Premium Apps, README "Selling credits"): the store buttons, and
turning Discord's entitlements into plain values for storage (storage/premium.py).

The cog (cogs/premium.py) grants, consumes and revokes; admission and /quota only ask this module what
to show. Without PREMIUM_SKUS none of it shows: `store_view` answers None.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import discord

from bot.i18n import N_
from storage.premium import Entitlement

if TYPE_CHECKING:
    from bot.settings import Settings
    from storage.premium import PremiumRepository

# Discord fits at most five buttons in a row (settings allow at most five packs).
MAX_PACKS = 5
# Discord's largest page of GET /applications/{app}/entitlements.
ENTITLEMENT_PAGE = 100
# Under a refusal for lack of credits, above the store buttons.
OFFER = N_("Need more? Buy a credit pack below: purchased credits work in every server and never expire.")


def store_view(sku_ids: Iterable[int]) -> discord.ui.View | None:
    """One premium button (style 6, Discord draws its label and price) per configured pack; None when
    nothing is for sale."""
    skus = list(sku_ids)[:MAX_PACKS]
    if not skus:
        return None
    # No timeout: premium buttons are not dispatched to the bot, so nothing waits on the view.
    view = discord.ui.View(timeout=None)
    for sku in skus:
        view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=sku))
    return view


def from_discord(ent: discord.Entitlement) -> Entitlement:
    """discord.py's entitlement as the plain value storage keeps (a remote payload: nothing assumed)."""
    return Entitlement(
        id=ent.id,
        sku_id=ent.sku_id,
        user_id=ent.user_id,
        guild_id=ent.guild_id,
        deleted=bool(ent.deleted),
        consumed=bool(ent.consumed),
        ends_at=ent.ends_at.timestamp() if ent.ends_at is not None else None,
        type=_entitlement_type(ent.type.value if ent.type is not None else None),
    )


def from_payload(raw: object) -> Entitlement | None:
    """An entitlement from a REST payload (GET /applications/{app}/entitlements), or None when it is
    not one: a remote body, so every field is checked, nothing assumed."""
    if not isinstance(raw, dict):
        return None
    eid, sku = _snowflake(raw.get("id")), _snowflake(raw.get("sku_id"))
    if eid is None or sku is None:
        return None
    ends_at: float | None = None
    if isinstance(raw.get("ends_at"), str):
        try:
            ends_at = datetime.fromisoformat(raw["ends_at"]).timestamp()
        except ValueError:
            ends_at = None
    return Entitlement(
        id=eid,
        sku_id=sku,
        user_id=_snowflake(raw.get("user_id")),
        guild_id=_snowflake(raw.get("guild_id")),
        deleted=raw.get("deleted") is True,
        consumed=raw.get("consumed") is True,
        ends_at=ends_at,
        type=_entitlement_type(raw.get("type")),
    )


def _snowflake(value: object) -> int | None:
    """A Discord id (a positive 64-bit signed integer, as Discord and the database store it), or None."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isdigit() and 0 < len(text) <= 20):
        return None
    number = int(text)
    return number if 0 < number < 2**63 else None


def _entitlement_type(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def guild_allowance(settings: Settings) -> int | None:
    """The daily allowance a server subscription gives (PREMIUM_GUILD_SKU), or None."""
    return None if settings.premium_guild_sku is None else settings.premium_guild_sku[1]


class EntitlementSink(Protocol):
    """cogs/premium.py's `Premium`, as /quota uses it (bot.premium on the client)."""

    async def absorb(self, interaction: discord.Interaction[Any]) -> None:
        """Grant what the interaction's `entitlements` carry and the bot has not granted yet."""
        ...


Boost = Callable[[int], Awaitable[int | None]]


def subscription_boost(settings: Settings, premium: PremiumRepository) -> Boost | None:
    """Admission's `boost`: a subscribed server's daily allowance (None without PREMIUM_GUILD_SKU)."""
    allowance = guild_allowance(settings)
    if allowance is None:
        return None

    async def boost(guild_id: int) -> int | None:
        return allowance if await premium.guild_subscribed(guild_id) else None

    return boost
