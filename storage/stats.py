"""Read-only numbers for /animate-stats; every query is limited to one guild."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from storage.db import Database
from storage.quota import QuotaRepository

_MEDIAN_SAMPLE = 2000  # the most recent delivered jobs; plenty for a median


@dataclass(frozen=True, slots=True)
class GuildStats:
    since: float
    by_state: dict[str, int]
    spent: int  # credits charged and not refunded
    median_seconds: float | None  # submit -> RunComfy finished, over delivered jobs
    top_users: list[tuple[int, int]]  # (user_id, credits)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


class StatsRepository:
    """Read-only figures over jobs and the ledger; spending comes from the quota repository."""

    def __init__(self, db: Database, quota: QuotaRepository) -> None:
        self.db = db
        self.quota = quota

    async def guild_stats(self, guild_id: int, since: float) -> GuildStats:
        rows = await self.db.fetchall(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE guild_id = ? AND created_at >= ? GROUP BY state",
            (guild_id, since),
        )
        by_state = {str(r["state"]): int(r["n"]) for r in rows}
        spent = await self.quota.guild_spent(guild_id, since, time.time() + 1)
        durations = await self.db.fetchall(
            "SELECT finished_at - submitted_at AS took FROM jobs WHERE guild_id = ? AND state = 'delivered'"
            " AND created_at >= ? AND submitted_at IS NOT NULL AND finished_at IS NOT NULL"
            " ORDER BY id DESC LIMIT ?",
            (guild_id, since, _MEDIAN_SAMPLE),
        )
        took = [float(r["took"]) for r in durations if r["took"] is not None]
        top = await self.db.fetchall(
            "SELECT c.user_id, SUM(c.credits) AS credits FROM quota_ledger c"
            " WHERE c.guild_id = ? AND c.kind = 'charge' AND c.created_at >= ?"
            " AND NOT EXISTS (SELECT 1 FROM quota_ledger r WHERE r.job_id = c.job_id AND r.kind = 'refund')"
            " GROUP BY c.user_id ORDER BY credits DESC, c.user_id LIMIT 5",
            (guild_id, since),
        )
        return GuildStats(
            since=since,
            by_state=by_state,
            spent=spent,
            median_seconds=statistics.median(took) if took else None,
            top_users=[(int(r["user_id"]), int(r["credits"])) for r in top],
        )

    async def unfinished_by_state(self) -> dict[str, int]:
        """Jobs in flight per state (the partial index on unfinished jobs keeps this cheap)."""
        rows = await self.db.fetchall(
            "SELECT state, COUNT(*) AS n FROM jobs"
            " WHERE state IN ('pending', 'queued', 'running', 'delivering') GROUP BY state"
        )
        return {str(row["state"]): int(row["n"]) for row in rows}

    async def ledger_high_water(self) -> int:
        """The newest ledger row's id (0 for an empty ledger)."""
        row = await self.db.fetchone("SELECT COALESCE(MAX(id), 0) AS id FROM quota_ledger")
        return int(row["id"]) if row is not None else 0

    async def ledger_totals_after(self, cursor: int) -> list[tuple[str, int, int]]:
        """(kind, credits, last id) of the charges and refunds after ledger row `cursor`."""
        rows = await self.db.fetchall(
            "SELECT kind, COALESCE(SUM(credits), 0) AS credits, MAX(id) AS last FROM quota_ledger"
            " WHERE id > ? AND kind IN ('charge', 'refund') GROUP BY kind",
            (cursor,),
        )
        return [(str(r["kind"]), int(r["credits"]), int(r["last"])) for r in rows]

    async def recent_durations(self, resolution: str, guild_id: int | None, limit: int = 50) -> list[float]:
        """Seconds from submit to RunComfy finishing, for the latest delivered jobs at this resolution
        (in one guild, or bot-wide with guild_id None), and those being delivered: RunComfy's part is
        done and its duration known, whatever the upload takes. The ETA on status messages is their
        median; the poll schedule plans with them."""
        where = (
            "state IN ('delivering', 'delivered') AND resolution = ?"
            " AND submitted_at IS NOT NULL AND finished_at IS NOT NULL"
        )
        params: list[object] = [resolution]
        if guild_id is not None:
            where += " AND guild_id = ?"
            params.append(guild_id)
        rows = await self.db.fetchall(
            f"SELECT finished_at - submitted_at AS took FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [float(r["took"]) for r in rows if r["took"] is not None and r["took"] >= 0]
