"""Credits: atomic reservation with the job row, exactly-once refunds, per-period usage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.db import Database
from storage.jobs import JobRepository, JobState, NewJob


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # e.g. "2026-11-30"
    resets_at: datetime  # UTC


def daily_period(now: float | None = None) -> Period:
    """Quota periods are UTC days."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return Period(key=start.date().isoformat(), resets_at=start + timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Standing:
    limit: int
    used: int
    period: Period

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class QuotaExceeded(Exception):
    def __init__(self, standing: Standing, cost: int) -> None:
        super().__init__(f"quota exceeded: {standing.used}/{standing.limit} used, job costs {cost}")
        self.standing = standing
        self.cost = cost


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def standing(self, guild_id: int, user_id: int, limit: int, period: Period) -> Standing:
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(credits), 0) AS used FROM quota_ledger"
            " WHERE guild_id = ? AND user_id = ? AND period = ?",
            (guild_id, user_id, period.key),
        )
        return Standing(limit=limit, used=int(row["used"]) if row else 0, period=period)

    async def reserve_job(self, new: NewJob, limit: int, period: Period) -> tuple[int, Standing]:
        """Create the job row and charge its cost in one transaction, or raise QuotaExceeded.

        The check and the charge share one transaction under the database lock, so concurrent
        commands from one user can never overspend.
        """
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT COALESCE(SUM(credits), 0) AS used FROM quota_ledger"
                " WHERE guild_id = ? AND user_id = ? AND period = ?",
                (new.guild_id, new.user_id, period.key),
            )
            used = int(row["used"]) if row else 0
            before = Standing(limit=limit, used=used, period=period)
            if used + new.cost > limit:
                raise QuotaExceeded(before, new.cost)
            now = time.time()
            job_id = await JobRepository.insert(tx, new, now)
            await tx.execute(
                "INSERT INTO quota_ledger (guild_id, user_id, job_id, period, credits, kind, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'charge', ?)",
                (new.guild_id, new.user_id, job_id, period.key, new.cost, now),
            )
        return job_id, Standing(limit=limit, used=used + new.cost, period=period)

    async def end_job(
        self,
        job_id: int,
        state: JobState,
        *,
        expect: tuple[JobState, ...],
        refund: bool,
        reason: str | None = None,
        **changes: Any,
    ) -> bool:
        """Move a job to a final state and, if asked, refund its charge -- both or neither.

        The refund goes into the period of the original charge, and the ledger's unique index makes a
        second refund for the same job impossible. Returns False if the job had already left `expect`.
        """
        async with self.db.transaction() as tx:
            sets = ["state = ?", "updated_at = ?", "finished_at = COALESCE(finished_at, ?)"]
            now = time.time()
            params: list[Any] = [state.value, now, now]
            for name, value in changes.items():
                if name not in {"error", "result_url", "queue_position", "delivery_message_id"}:
                    raise ValueError(f"cannot set {name} when ending a job")
                sets.append(f"{name} = ?")
                params.append(value)
            marks = ", ".join("?" for _ in expect)
            cur = await tx.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state IN ({marks})",
                [*params, job_id, *(s.value for s in expect)],
            )
            if cur.rowcount != 1:
                return False
            if refund:
                await tx.execute(
                    "INSERT OR IGNORE INTO quota_ledger"
                    " (guild_id, user_id, job_id, period, credits, kind, reason, created_at)"
                    " SELECT guild_id, user_id, job_id, period, -credits, 'refund', ?, ?"
                    " FROM quota_ledger WHERE job_id = ? AND kind = 'charge'",
                    (reason, now, job_id),
                )
        return True

    async def job_ledger(self, job_id: int) -> list[tuple[str, int]]:
        rows = await self.db.fetchall(
            "SELECT kind, credits FROM quota_ledger WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [(str(r["kind"]), int(r["credits"])) for r in rows]
