"""Test-only views of the credit ledger (production code reads it through QuotaRepository's checks)."""

from __future__ import annotations

from bot.quota_rules import Period, period_for
from storage.quota import QuotaRepository


def daily_period(now: float | None = None) -> Period:
    """The bot-wide default period: UTC days."""
    return period_for("day", 0, now)


async def job_ledger(quota: QuotaRepository, job_id: int) -> list[tuple[str, int]]:
    """A job's ledger rows, oldest first: [(kind, credits), ...]."""
    rows = await quota.db.fetchall(
        "SELECT kind, credits FROM quota_ledger WHERE job_id = ? ORDER BY id", (job_id,)
    )
    return [(str(r["kind"]), int(r["credits"])) for r in rows]
