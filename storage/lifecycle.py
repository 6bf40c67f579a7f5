"""A job's lifecycle: its states, the moves allowed between them, and the one place that makes a move.

Every state change of a job goes through `move` (inside a transaction), reached from
`JobRepository.transition` or from the charging transactions in `storage.quota`. The source states
a move may start from come from `TRANSITIONS`, so no caller names them; the compare-and-set makes two
racing actors (a poll and a cancel click) unable to both win, and a refund is written in the same
transaction as the move that earns it.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from storage.db import Transaction

if TYPE_CHECKING:
    from storage.db import Database


class JobState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # approval mode: posted, not charged, not submitted
    PENDING = "pending"  # credits reserved, submit not confirmed yet
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"  # RunComfy succeeded; the video still has to reach Discord
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # approval mode: a moderator said no; never charged

    @property
    def finished(self) -> bool:
        return self in FINISHED


class JobEvent(StrEnum):
    """What `client.dispatch("job_event", job, event, actor_id)` reports; the values are the wire names
    the audit log, notifications and metrics have always used."""

    REQUESTED = "requested"  # posted for approval
    APPROVED = "approved"
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    STARTED = "started"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobState
# Every allowed move. A state missing from a value's set cannot be reached from the key; finished
# states have no way out.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.AWAITING_APPROVAL: frozenset({S.PENDING, S.REJECTED, S.CANCELLED, S.FAILED}),
    S.PENDING: frozenset({S.QUEUED, S.FAILED}),
    S.QUEUED: frozenset({S.RUNNING, S.DELIVERING, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.DELIVERING, S.FAILED, S.CANCELLED}),
    S.DELIVERING: frozenset({S.DELIVERED, S.FAILED}),
    S.DELIVERED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}

# The named groups; each means exactly one set.
INITIAL = frozenset({S.PENDING, S.AWAITING_APPROVAL})  # what a new job row may start as
FINISHED = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
# Charged and not yet ended: what the engine resumes after a restart.
UNFINISHED = frozenset({S.PENDING, S.QUEUED, S.RUNNING, S.DELIVERING})
# Counts against a member's concurrency limit and holds its origin (a click) busy (migration 0007).
OPEN = frozenset({S.AWAITING_APPROVAL, *UNFINISHED})
# Held under a lease by one process while it works on them (migration 0008); a finished job drops it.
LEASED = frozenset({S.QUEUED, S.RUNNING, S.DELIVERING})
POLLED = frozenset({S.QUEUED, S.RUNNING})  # RunComfy has it and has not answered yet: polled
# What the Cancel button (and RunComfy's own cancel) can end: RunComfy has it, nothing is posted yet.
CANCELLABLE = POLLED

# Columns a move may set along with the state.
_MOVE_COLUMNS = frozenset(
    {
        "request_id",
        "poll_count",
        "queue_position",
        "error",
        "result_url",
        "delivery_message_id",
        "delivery_channel_id",
        "delivery_started_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "thread_id",
        "lease_owner",
        "lease_expires_at",
    }
)


class IllegalTransition(ValueError):
    """A move the table does not allow from any state (a programming error, not a race)."""


def sources(to: JobState, within: JobState | frozenset[JobState] | None = None) -> tuple[JobState, ...]:
    """The states a job may move to `to` from (in declaration order), narrowed to `within` when the
    caller only means to move a job it saw in those states (e.g. withdrawing a request: only while it
    awaits approval, never once it runs)."""
    found = tuple(s for s, targets in TRANSITIONS.items() if to in targets)
    if within is not None:
        wanted = frozenset({within}) if isinstance(within, JobState) else within
        outside = wanted.difference(found)
        if outside:
            raise IllegalTransition(f"{sorted(s.value for s in outside)} cannot move to {to.value}")
        found = tuple(s for s in found if s in wanted)
    if not found:
        raise IllegalTransition(f"no state may move to {to.value}")
    return found


async def move(
    tx: Transaction | Database,
    job_id: int,
    to: JobState,
    *,
    within: JobState | frozenset[JobState] | None = None,
    refund: bool = False,
    reason: str | None = None,
    now: float | None = None,
    **changes: Any,
) -> bool:
    """Move a job to `to` if the table allows it from its current state (compare-and-set); with
    `refund`, also refund its charge into the charge's period, in the same transaction.

    Returns False if the job is in no state `to` may be reached from (someone else moved it first).
    `within` narrows the source states (see `sources`).
    A finished state also records `finished_at` unless it is already set. The ledger's unique index
    makes a second refund for the same job impossible. `tx` may be the database itself when there is
    no refund: the move is then one statement, atomic on its own.
    """
    bad = set(changes) - _MOVE_COLUMNS
    if bad:
        raise ValueError(f"cannot set {sorted(bad)} when moving a job")
    if refund and not isinstance(tx, Transaction):
        raise TypeError("a move with a refund needs a transaction: the move and the refund go together")
    starts = sources(to, within)
    now = time.time() if now is None else now
    sets = ["state = ?", "updated_at = ?"]
    params: list[Any] = [to.value, now]
    if to.finished and "finished_at" not in changes:
        sets.append("finished_at = COALESCE(finished_at, ?)")
        params.append(now)
    if to.finished:
        # Nobody works on a finished job: the lease goes in the same write (no separate release).
        sets.append("lease_owner = NULL")
        sets.append("lease_expires_at = NULL")
        # The interaction token (migration 0011) is a credential: it goes when the job ends.
        sets.append("interaction_token = NULL")
    for name, value in changes.items():
        sets.append(f"{name} = ?")
        params.append(value)
    marks = ", ".join("?" for _ in starts)
    changed = await tx.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state IN ({marks})",
        [*params, job_id, *(s.value for s in starts)],
    )
    if changed != 1:
        return False
    if refund:
        assert isinstance(tx, Transaction)  # checked above, before anything was written
        await refund_charge(tx, job_id, reason, now)
    return True


async def refund_charge(tx: Transaction, job_id: int, reason: str | None, now: float) -> bool:
    """Refund a job's charge into the charge's period, purchased credits back to the purchased balance
    (the charge's `purchased`); a job never charged has nothing to refund.
    Only `move` calls it (a refund belongs to the transition that earns it); the ledger's unique
    index turns a second refund for the same job into a no-op. Returns True (it ran)."""
    await tx.execute(
        "INSERT INTO quota_ledger"
        " (guild_id, user_id, job_id, period, credits, kind, reason, created_at, purchased)"
        " SELECT guild_id, user_id, job_id, period, -credits, 'refund', ?, ?, -purchased"
        " FROM quota_ledger WHERE job_id = ? AND kind = 'charge' ON CONFLICT DO NOTHING",
        (reason, now, job_id),
    )
    return True
