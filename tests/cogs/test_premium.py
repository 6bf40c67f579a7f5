"""cogs.premium pieces without a bot: which entitlements grant, and the handled-ids memory."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.quota_rules import Limits
from cogs import premium as premium_module
from cogs.premium import Premium
from storage.db import open_database
from storage.premium import Entitlement, PremiumRepository
from storage.quota import QuotaRepository
from tests.ledger import daily_period
from tests.storage.test_quota import new_job

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


async def test_a_refund_is_audited_in_a_server_the_bot_is_in_never_the_user_install_scope(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    premium, _, db = await cog(tmp_path)
    joined = {66: SimpleNamespace(id=66, preferred_locale=None)}
    audits: list[tuple[Any, ...]] = []
    premium.bot.get_guild = joined.get
    premium.bot.dispatch = lambda *args: audits.append(args)
    premium.bot.store.guilds = SimpleNamespace(get=_no_audit_channel)
    try:
        quota = QuotaRepository(db)
        for guild_id in (
            66,
            55,
            0,
        ):  # the latest job is a user-install one, before it one where the bot is not
            await quota.reserve_job(new_job(user_id=USER, guild_id=guild_id), Limits(9, daily_period()))
        ent = Entitlement(1_300_000_000_000_000_003, PACK_SKU, USER, None, type=1)
        await premium.handle(ent, seen_guild_id=0)
        caplog.set_level(logging.INFO, logger="cogs.premium")
        await premium.handle(dataclasses.replace(ent, deleted=True), seen_guild_id=55)
        [(name, guild_id, *_)] = audits
        assert (name, guild_id) == ("animate_audit", 66)
        assert "guild 66 has no audit channel" in caplog.text
        # Only servers the bot is not in: nowhere to audit, and the log says so.
        del joined[66]
        other = Entitlement(1_300_000_000_000_000_004, PACK_SKU, USER, None, type=1)
        await premium.handle(other)
        await premium.handle(dataclasses.replace(other, deleted=True))
        assert len(audits) == 1 and f"no server of user {USER} to audit it in" in caplog.text
    finally:
        await db.close()


async def _no_audit_channel(guild_id: int) -> Any:
    return SimpleNamespace(audit_channel_id=None)


async def test_the_memory_of_handled_entitlements_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(premium_module, "MAX_KNOWN", 3)
    premium, repo, db = await cog(tmp_path)
    try:
        ents = [Entitlement(1_300_000_000_000_000_100 + i, GUILD_SKU, USER, 55, type=6) for i in range(5)]
        for ent in ents:
            await premium.handle(ent)
        assert [key[0] for key in premium._known] == [e.id for e in ents[2:]]
        await premium.handle(ents[2])  # a repeat is the most recent again
        assert [key[0] for key in premium._known] == [ents[3].id, ents[4].id, ents[2].id]
        # What was forgotten is only handled again: a grant still happens once (the unique key).
        pack = Entitlement(1_300_000_000_000_000_200, PACK_SKU, USER, None, type=1)
        await premium.handle(pack)
        premium._known.clear()
        await premium.handle(pack)
        assert await repo.balance(USER) == 10
    finally:
        await db.close()
