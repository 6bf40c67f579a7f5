"""Per-guild configuration: quotas, channels, moderation. Every read and write is keyed by guild_id.

The hot path (/animate, buttons) reads a guild's whole configuration on every request, so it is cached
in memory; every write goes through this repository and drops that guild's cache entry. Per-user rows
(overrides, bans) are looked up one at a time, so a 50,000-member guild never loads them all.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from storage.db import Database
from storage.singleflight import SingleFlight

PeriodKind = Literal["day", "week"]
BlockKind = Literal["word", "regex"]


@dataclass(frozen=True, slots=True)
class BlockEntry:
    id: int
    kind: BlockKind
    pattern: str


@dataclass(frozen=True, slots=True)
class Ban:
    user_id: int
    reason: str | None
    banned_by: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class GuildConfig:
    """A guild's settings; None means "the bot-wide default" (or "off" for optional limits)."""

    guild_id: int
    allowance: int | None = None
    period: PeriodKind = "day"
    reset_hour: int = 0
    cost_480p: int | None = None
    cost_1080p: int | None = None
    max_concurrent: int | None = None
    cooldown_seconds: int = 0
    daily_budget: int | None = None
    unlimited_role_id: int | None = None
    admin_role_id: int | None = None
    moderator_role_id: int | None = None
    approval_required: bool = False
    require_age_restricted: bool = False
    audit_channel_id: int | None = None
    force_spoiler: bool = False  # every job's images and video are posted as spoilers
    role_allowances: dict[int, int] = field(default_factory=dict)
    channels: frozenset[int] = frozenset()
    blocklist: tuple[BlockEntry, ...] = ()


# Columns of guild_settings that `update` may set, with their Python types.
SETTING_COLUMNS: dict[str, type] = {
    "allowance": int,
    "period": str,
    "reset_hour": int,
    "cost_480p": int,
    "cost_1080p": int,
    "max_concurrent": int,
    "cooldown_seconds": int,
    "daily_budget": int,
    "unlimited_role_id": int,
    "admin_role_id": int,
    "moderator_role_id": int,
    "approval_required": bool,
    "require_age_restricted": bool,
    "audit_channel_id": int,
    "force_spoiler": bool,
}
_NOT_NULL = {
    "period",
    "reset_hour",
    "cooldown_seconds",
    "approval_required",
    "require_age_restricted",
    "force_spoiler",
}


class GuildRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[int, GuildConfig] = {}
        # Bumped by every change: a read that overlapped a change is not cached (it may be stale).
        self._version: dict[int, int] = {}
        self._loads: SingleFlight[tuple[int, int], GuildConfig] = SingleFlight()

    def _invalidate(self, guild_id: int) -> None:
        self._cache.pop(guild_id, None)
        self._version[guild_id] = self._version.get(guild_id, 0) + 1

    async def get(self, guild_id: int) -> GuildConfig:
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        # A burst of commands misses a cold cache all at once: they share one load. A load started
        # before a change is not joined after it (the key holds the version).
        version = self._version.get(guild_id, 0)
        return await self._loads.run((guild_id, version), functools.partial(self._load, guild_id, version))

    async def _load(self, guild_id: int, version: int) -> GuildConfig:
        row = await self.db.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        values: dict[str, Any] = {}
        if row is not None:
            for name, kind in SETTING_COLUMNS.items():
                value = row[name]
                values[name] = bool(value) if kind is bool and value is not None else value
        roles = await self.db.fetchall(
            "SELECT role_id, allowance FROM guild_role_allowances WHERE guild_id = ?", (guild_id,)
        )
        channels = await self.db.fetchall(
            "SELECT channel_id FROM guild_channels WHERE guild_id = ?", (guild_id,)
        )
        blocks = await self.db.fetchall(
            "SELECT id, kind, pattern FROM guild_blocklist WHERE guild_id = ? ORDER BY id", (guild_id,)
        )
        config = GuildConfig(
            guild_id=guild_id,
            **values,
            role_allowances={int(r["role_id"]): int(r["allowance"]) for r in roles},
            channels=frozenset(int(r["channel_id"]) for r in channels),
            blocklist=tuple(BlockEntry(int(r["id"]), r["kind"], str(r["pattern"])) for r in blocks),
        )
        if self._version.get(guild_id, 0) == version:
            self._cache[guild_id] = config
        return config

    async def update(self, guild_id: int, actor_id: int | None, **changes: Any) -> GuildConfig:
        """Set guild settings (None resets an optional one to its default); returns the new config."""
        bad = set(changes) - set(SETTING_COLUMNS)
        if bad:
            raise ValueError(f"unknown guild settings {sorted(bad)}")
        for name, value in changes.items():
            if value is None and name in _NOT_NULL:
                raise ValueError(f"{name} cannot be empty")
        names = list(changes)
        values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        now = time.time()
        columns = ", ".join(["guild_id", *names, "updated_at", "updated_by"])
        marks = ", ".join("?" for _ in range(len(names) + 3))
        updates = ", ".join(f"{n} = excluded.{n}" for n in [*names, "updated_at", "updated_by"])
        async with self.db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO guild_settings ({columns}) VALUES ({marks})"
                f" ON CONFLICT (guild_id) DO UPDATE SET {updates}",
                [guild_id, *values, now, actor_id],
            )
        self._invalidate(guild_id)
        return await self.get(guild_id)

    async def set_role_allowance(self, guild_id: int, role_id: int, allowance: int | None) -> None:
        if allowance is None:
            await self.db.execute(
                "DELETE FROM guild_role_allowances WHERE guild_id = ? AND role_id = ?", (guild_id, role_id)
            )
        else:
            await self.db.execute(
                "INSERT INTO guild_role_allowances (guild_id, role_id, allowance) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, role_id) DO UPDATE SET allowance = excluded.allowance",
                (guild_id, role_id, allowance),
            )
        self._invalidate(guild_id)

    async def user_override(self, guild_id: int, user_id: int) -> int | None:
        row = await self.db.fetchone(
            "SELECT allowance FROM guild_user_overrides WHERE guild_id = ? AND user_id = ?",
            (guild_id, user_id),
        )
        return None if row is None else int(row["allowance"])

    async def set_user_override(self, guild_id: int, user_id: int, allowance: int | None) -> None:
        if allowance is None:
            await self.db.execute(
                "DELETE FROM guild_user_overrides WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
        else:
            await self.db.execute(
                "INSERT INTO guild_user_overrides (guild_id, user_id, allowance) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, user_id) DO UPDATE SET allowance = excluded.allowance",
                (guild_id, user_id, allowance),
            )

    async def user_overrides(self, guild_id: int, limit: int = 20) -> tuple[list[tuple[int, int]], int]:
        """(up to `limit` (user_id, allowance) pairs, total count) for display."""
        rows = await self.db.fetchall(
            "SELECT user_id, allowance FROM guild_user_overrides WHERE guild_id = ? ORDER BY user_id LIMIT ?",
            (guild_id, limit),
        )
        total = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM guild_user_overrides WHERE guild_id = ?", (guild_id,)
        )
        return [(int(r["user_id"]), int(r["allowance"])) for r in rows], int(total["n"]) if total else 0

    async def set_channel(self, guild_id: int, channel_id: int, allowed: bool) -> bool:
        """Add or remove a channel from the allow-list; returns whether anything changed."""
        if allowed:
            changed = await self.db.execute(
                "INSERT INTO guild_channels (guild_id, channel_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (guild_id, channel_id),
            )
        else:
            changed = await self.db.execute(
                "DELETE FROM guild_channels WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
            )
        self._invalidate(guild_id)
        return changed > 0

    async def clear_channels(self, guild_id: int) -> int:
        changed = await self.db.execute("DELETE FROM guild_channels WHERE guild_id = ?", (guild_id,))
        self._invalidate(guild_id)
        return changed

    async def add_block(self, guild_id: int, kind: BlockKind, pattern: str, actor_id: int | None) -> bool:
        changed = await self.db.execute(
            "INSERT INTO guild_blocklist (guild_id, kind, pattern, added_by, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (guild_id, kind, pattern, actor_id, time.time()),
        )
        self._invalidate(guild_id)
        return changed > 0

    async def remove_block(self, guild_id: int, pattern: str) -> int:
        changed = await self.db.execute(
            "DELETE FROM guild_blocklist WHERE guild_id = ? AND pattern = ?", (guild_id, pattern)
        )
        self._invalidate(guild_id)
        return changed

    async def ban(self, guild_id: int, user_id: int, reason: str | None, actor_id: int | None) -> None:
        await self.db.execute(
            "INSERT INTO guild_bans (guild_id, user_id, reason, banned_by, created_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason,"
            " banned_by = excluded.banned_by, created_at = excluded.created_at",
            (guild_id, user_id, reason, actor_id, time.time()),
        )

    async def unban(self, guild_id: int, user_id: int) -> bool:
        changed = await self.db.execute(
            "DELETE FROM guild_bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return changed > 0

    async def get_ban(self, guild_id: int, user_id: int) -> Ban | None:
        row = await self.db.fetchone(
            "SELECT user_id, reason, banned_by, created_at FROM guild_bans"
            " WHERE guild_id = ? AND user_id = ?",
            (guild_id, user_id),
        )
        if row is None:
            return None
        banned_by = row["banned_by"]
        return Ban(
            int(row["user_id"]),
            row["reason"],
            None if banned_by is None else int(banned_by),
            row["created_at"],
        )

    async def ban_count(self, guild_id: int) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM guild_bans WHERE guild_id = ?", (guild_id,))
        return int(row["n"]) if row else 0
