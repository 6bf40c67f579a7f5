"""Credits sold through Discord (Premium Apps): entitlements, granted once, consumed, revoked.

Table premium_entitlements (migration 0010) holds one row per entitlement the bot has seen, keyed by
Discord's entitlement id: the unique key makes a grant idempotent, so the ENTITLEMENT_CREATE event,
an interaction carrying the same entitlement and the start-up reconciliation grant it exactly once,
in any order, from any process. A member's purchased balance is user-wide:

    balance = SUM(credits - taken_back) of their 'credits' rows - SUM(quota_ledger.purchased)

(charges add what they took from purchased credits, refunds subtract it again). Every change to it
(grant, revoke, and the charge in storage.quota) runs under the user's lock, `user_lock`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from storage.db import Database, Row, Transaction, lock_key
from storage.lifecycle import FINISHED

Kind = Literal["credits", "guild"]


def user_lock(user_id: int) -> int:
    """The lock every change to a user's purchased balance takes (see Transaction.lock)."""
    return lock_key("quota-user", user_id)


async def purchased_balance(tx: Transaction | Database, user_id: int) -> int:
    """A user's purchased credits left (never below 0)."""
    return max(0, await _raw_balance(tx, user_id))


async def _raw_balance(tx: Transaction | Database, user_id: int) -> int:
    """The balance as stored: below 0 while a refunded pack's credits are still held by running jobs."""
    row = await tx.fetchone(
        "SELECT (SELECT COALESCE(SUM(credits - taken_back), 0) FROM premium_entitlements"
        "  WHERE user_id = ? AND kind = 'credits')"
        " - (SELECT COALESCE(SUM(purchased), 0) FROM quota_ledger WHERE user_id = ? AND purchased != 0)"
        " AS balance",
        (user_id, user_id),
    )
    return int(row["balance"]) if row else 0


async def held_purchased(tx: Transaction | Database, user_id: int) -> int:
    """Purchased credits charged to jobs that have not ended and were not refunded: not spent yet,
    since a failed or cancelled job gives them back (storage.lifecycle.refund_charge)."""
    marks = ", ".join("?" for _ in FINISHED)
    row = await tx.fetchone(
        "SELECT COALESCE(SUM(c.purchased), 0) AS held FROM quota_ledger c JOIN jobs j ON j.id = c.job_id"
        " WHERE c.user_id = ? AND c.kind = 'charge' AND c.purchased > 0"
        f" AND j.state NOT IN ({marks}) AND NOT EXISTS"
        " (SELECT 1 FROM quota_ledger r WHERE r.job_id = c.job_id AND r.kind = 'refund')",
        (user_id, *(s.value for s in sorted(FINISHED))),
    )
    return int(row["held"]) if row else 0


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What the bot needs of a Discord entitlement (built from discord.py's or a REST payload)."""

    id: int
    sku_id: int
    user_id: int | None
    guild_id: int | None
    deleted: bool = False
    consumed: bool = False
    ends_at: float | None = None  # epoch seconds; None = does not end
    # Discord's entitlement type (1 purchase, 4 test-mode purchase, 8 application subscription, ...);
    # None when the payload had none. Not part of the identity: it says how it was bought, not which.
    type: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Record:
    """A stored entitlement."""

    id: int
    sku_id: int
    kind: Kind
    user_id: int | None
    guild_id: int | None
    seen_guild_id: int | None
    credits: int
    consumable: bool
    consumed: bool
    revoked: bool
    taken_back: int

    @classmethod
    def from_row(cls, row: Row) -> Record:
        def opt(name: str) -> int | None:
            return None if row[name] is None else int(row[name])

        return cls(
            id=int(row["id"]),
            sku_id=int(row["sku_id"]),
            kind="guild" if row["kind"] == "guild" else "credits",
            user_id=opt("user_id"),
            guild_id=opt("guild_id"),
            seen_guild_id=opt("seen_guild_id"),
            credits=int(row["credits"]),
            consumable=bool(row["consumable"]),
            consumed=row["consumed_at"] is not None,
            revoked=row["revoked_at"] is not None,
            taken_back=int(row["taken_back"]),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """A refunded pack: what it granted and what was taken back of it (the rest was already spent)."""

    record: Record
    taken_back: int


_COLUMNS = (
    "id, sku_id, kind, user_id, guild_id, seen_guild_id, credits, consumable, consumed_at, revoked_at,"
    " taken_back"
)


class PremiumRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, entitlement_id: int) -> Record | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM premium_entitlements WHERE id = ?", (entitlement_id,)
        )
        return None if row is None else Record.from_row(row)

    async def balance(self, user_id: int) -> int:
        return await purchased_balance(self.db, user_id)

    async def grant(
        self, ent: Entitlement, credits: int, *, consumable: bool, seen_guild_id: int | None = None
    ) -> bool:
        """Grant a pack's `credits` to its user, once per entitlement id: True if this call granted it,
        False if it was already seen (by this or another process). An entitlement first seen deleted
        is recorded as revoked with nothing granted, so it never grants later."""
        if ent.user_id is None:
            raise ValueError("a credit pack belongs to a user")
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.lock(user_lock(ent.user_id))
            changed = await tx.execute(
                "INSERT INTO premium_entitlements (id, sku_id, kind, user_id, guild_id, seen_guild_id,"
                " credits, consumable, ends_at, consumed_at, revoked_at, created_at)"
                " VALUES (?, ?, 'credits', ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    ent.id,
                    ent.sku_id,
                    ent.user_id,
                    ent.guild_id,
                    seen_guild_id,
                    0 if ent.deleted else credits,
                    int(consumable),
                    ent.ends_at,
                    now if ent.consumed else None,
                    now if ent.deleted else None,
                    now,
                ),
            )
        return changed == 1 and not ent.deleted

    async def revoke(self, ent: Entitlement) -> Revocation | None:
        """Take back what is still unspent of a refunded pack -- min(granted, balance + held) -- once.
        Credits held by unfinished jobs count as unspent: the raw balance may go below 0 for them, so a
        later refund of such a job pays off that debt instead of handing the credits back. None if it
        was revoked before; an entitlement never seen is recorded revoked (nothing to take back)."""
        # Whose pack it is comes from the stored grant (a delete payload may not name the user).
        stored = await self.get(ent.id)
        user_id = stored.user_id if stored is not None else ent.user_id
        now = time.time()
        if user_id is None:
            if await self._record_revoked(ent, None, now, self.db):
                return None  # never seen, nobody named: nothing granted, and now it never will be
            stored = await self.get(ent.id)  # granted meanwhile
            user_id = None if stored is None else stored.user_id
            if user_id is None:
                return None
        async with self.db.transaction() as tx:
            await tx.lock(user_lock(user_id))
            row = await tx.fetchone(f"SELECT {_COLUMNS} FROM premium_entitlements WHERE id = ?", (ent.id,))
            if row is None:
                await self._record_revoked(ent, user_id, now, tx)
                return None
            record = Record.from_row(row)
            if record.revoked or record.kind != "credits":
                return None
            held = await held_purchased(tx, user_id)
            take = min(record.credits, max(0, await _raw_balance(tx, user_id) + held))
            await tx.execute(
                "UPDATE premium_entitlements SET revoked_at = ?, taken_back = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (now, take, ent.id),
            )
        return Revocation(record, take)

    @staticmethod
    async def _record_revoked(
        ent: Entitlement, user_id: int | None, now: float, tx: Transaction | Database
    ) -> bool:
        """Store a never-seen entitlement as revoked with nothing granted; False if it exists."""
        changed = await tx.execute(
            "INSERT INTO premium_entitlements (id, sku_id, kind, user_id, guild_id, credits,"
            " consumable, revoked_at, created_at) VALUES (?, ?, 'credits', ?, ?, 0, 0, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (ent.id, ent.sku_id, user_id, ent.guild_id, now, now),
        )
        return changed == 1

    async def mark_consumed(self, entitlement_id: int) -> None:
        await self.db.execute(
            "UPDATE premium_entitlements SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL",
            (time.time(), entitlement_id),
        )

    async def unconsumed(self, limit: int = 100) -> list[Record]:
        """Granted consumables Discord has not been told about yet (oldest first): the consume sweep's."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM premium_entitlements WHERE consumable = 1 AND consumed_at IS NULL"
            " AND revoked_at IS NULL ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return [Record.from_row(r) for r in rows]

    async def record_subscription(self, ent: Entitlement) -> None:
        """A server subscription: stored, or its end and deletion updated (ENTITLEMENT_UPDATE/DELETE)."""
        if ent.guild_id is None:
            raise ValueError("a server subscription belongs to a guild")
        now = time.time()
        await self.db.execute(
            "INSERT INTO premium_entitlements (id, sku_id, kind, user_id, guild_id, credits, consumable,"
            " ends_at, revoked_at, created_at) VALUES (?, ?, 'guild', ?, ?, 0, 0, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET ends_at = excluded.ends_at,"
            " revoked_at = COALESCE(premium_entitlements.revoked_at, excluded.revoked_at)",
            (ent.id, ent.sku_id, ent.user_id, ent.guild_id, ent.ends_at, now if ent.deleted else None, now),
        )

    async def guild_subscribed(self, guild_id: int, now: float | None = None) -> bool:
        """Whether the server has a subscription that is not deleted and has not ended."""
        row = await self.db.fetchone(
            "SELECT 1 AS yes FROM premium_entitlements WHERE kind = 'guild' AND guild_id = ?"
            " AND revoked_at IS NULL AND (ends_at IS NULL OR ends_at > ?) LIMIT 1",
            (guild_id, time.time() if now is None else now),
        )
        return row is not None

    async def recent_guilds(self, user_id: int, limit: int = 20) -> list[int]:
        """The servers a member asked for jobs in, most recent first (not the user-install scope, 0):
        where a refund without a server is audited, the first of them the bot is still in."""
        rows = await self.db.fetchall(
            "SELECT guild_id, MAX(created_at) AS latest FROM jobs WHERE user_id = ? AND guild_id != 0"
            " GROUP BY guild_id ORDER BY latest DESC LIMIT ?",
            (user_id, limit),
        )
        return [int(r["guild_id"]) for r in rows]
