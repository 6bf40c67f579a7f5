"""cogs.premium pieces without a bot: which entitlements grant, and the handled-ids memory."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cogs.premium import Premium
from storage.db import open_database
from storage.premium import Entitlement, PremiumRepository

PACK_SKU, GUILD_SKU, USER = 1_200_000_000_000_000_001, 1_200_000_000_000_000_002, 7


async def cog(tmp_path: Path) -> tuple[Premium, PremiumRepository, Any]:
    db = await open_database(tmp_path / "t.db", None)
    repo = PremiumRepository(db)
    settings = SimpleNamespace(premium_packs={PACK_SKU: 10}, premium_guild_sku=(GUILD_SKU, 20))
    bot: Any = SimpleNamespace(settings=settings, store=SimpleNamespace(premium=repo))
    premium = Premium(bot)
    premium.consumable[PACK_SKU] = False  # nothing to consume: no Discord here
    return premium, repo, db


@pytest.mark.parametrize(
    ("ent_type", "grants"), [(1, True), (4, True), (8, False), (3, False), (6, False), (None, False)]
)
async def test_only_a_purchase_grants_a_pack(tmp_path: Path, ent_type: int | None, grants: bool) -> None:
    premium, repo, db = await cog(tmp_path)
    try:
        await premium.handle(Entitlement(1_300_000_000_000_000_001, PACK_SKU, USER, None, type=ent_type))
        assert await repo.balance(USER) == (10 if grants else 0)
    finally:
        await db.close()


@pytest.mark.parametrize(("ent_type", "counts"), [(8, True), (4, True), (1, True), (6, False), (3, False)])
async def test_a_server_subscription_counts_only_when_paid_for(
    tmp_path: Path, ent_type: int, counts: bool
) -> None:
    premium, repo, db = await cog(tmp_path)
    try:
        await premium.handle(Entitlement(1_300_000_000_000_000_002, GUILD_SKU, USER, 55, type=ent_type))
        assert await repo.guild_subscribed(55) is counts
    finally:
        await db.close()
