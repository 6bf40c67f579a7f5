from __future__ import annotations

from typing import Any

import pytest

from storage.db import Database
from storage.guilds import GuildConfig, GuildRepository
from storage.store import Store


async def test_defaults_then_updates_are_cached_and_invalidated(db: Database) -> None:
    repo = GuildRepository(db)
    assert await repo.get(1) == GuildConfig(guild_id=1)
    new = await repo.update(1, 99, allowance=3, period="week", reset_hour=6, approval_required=True)
    assert (new.allowance, new.period, new.reset_hour, new.approval_required) == (3, "week", 6, True)
    assert await repo.get(1) is new  # cached
    await repo.set_role_allowance(1, 500, 10)
    await repo.set_channel(1, 77, True)
    await repo.add_block(1, "word", "gore", 99)
    config = await repo.get(1)
    assert config.role_allowances == {500: 10} and config.channels == {77}
    assert [(e.kind, e.pattern) for e in config.blocklist] == [("word", "gore")]
    assert (await repo.update(1, 99, allowance=None)).allowance is None  # back to the bot default
    with pytest.raises(ValueError):
        await repo.update(1, 99, period=None)
    with pytest.raises(ValueError):
        await repo.update(1, 99, owner_id=2)


async def test_every_setting_is_per_guild(db: Database) -> None:
    repo = GuildRepository(db)
    await repo.update(1, None, allowance=3)
    await repo.set_role_allowance(1, 500, 10)
    await repo.set_user_override(1, 7, 2)
    await repo.ban(1, 7, "spam", None)
    await repo.set_channel(1, 77, True)
    await repo.add_block(1, "regex", "x+y", None)
    assert await repo.get(2) == GuildConfig(guild_id=2)
    assert await repo.user_override(2, 7) is None and await repo.get_ban(2, 7) is None
    assert await repo.user_override(1, 7) == 2
    ban = await repo.get_ban(1, 7)
    assert ban is not None and ban.reason == "spam"
    assert await repo.remove_block(2, "x+y") == 0
    assert await repo.unban(2, 7) is False
    assert len((await repo.get(1)).blocklist) == 1


async def test_overrides_listing_and_removal(db: Database) -> None:
    repo = GuildRepository(db)
    for uid in range(5):
        await repo.set_user_override(1, uid, uid)
    listed, total = await repo.user_overrides(1, limit=2)
    assert listed == [(0, 0), (1, 1)] and total == 5
    await repo.set_user_override(1, 3, None)
    assert await repo.user_override(1, 3) is None
    assert await repo.set_channel(1, 5, False) is False
    assert await repo.add_block(1, "word", "a", None) is True
    assert await repo.add_block(1, "word", "a", None) is False  # already there


async def test_the_store_builds_each_repository_once(db: Database) -> None:
    store = Store(db)
    assert store.guilds is store.guilds and store.jobs.db is store.db is db
    assert store.stats.quota is store.quota  # stats reads spending through the one quota repository


async def test_a_read_overlapping_a_change_is_not_cached(db: Database) -> None:
    """The config is read in several statements; a change landing in between must not be hidden
    behind a stale cached copy."""
    repo = GuildRepository(db)
    original_fetchall = db.fetchall
    changed = False

    async def fetchall_with_a_change_in_between(sql: str, params: object = ()) -> list[Any]:
        nonlocal changed
        if not changed and "guild_role_allowances" in sql:
            changed = True
            await repo.update(1, None, approval_required=True)  # an admin, mid-read
        return await original_fetchall(sql, params)  # type: ignore[arg-type]

    db.fetchall = fetchall_with_a_change_in_between  # type: ignore[method-assign]
    stale = await repo.get(1)
    db.fetchall = original_fetchall  # type: ignore[method-assign]
    assert stale.approval_required is False  # read before the change
    assert (await repo.get(1)).approval_required is True  # ...but not cached
