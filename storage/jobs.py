"""Jobs: what was asked, where it is shown, and how far it got."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field, fields
from typing import Any

from storage import lifecycle
from storage.db import Database, Row, Transaction
from storage.lifecycle import LEASED, UNFINISHED, JobState
from storage.spec import GenerationSpec, Resolution

__all__ = ["UNFINISHED", "InteractionSurface", "Job", "JobRepository", "JobState", "NewJob"]


@dataclass(slots=True)
class Job:
    id: int
    guild_id: int
    channel_id: int
    user_id: int
    status_message_id: int | None
    thread_id: int | None
    # The GenerationSpec's fields, one column each (`spec` gives them as one value).
    prompt: str
    negative_prompt: str | None
    resolution: Resolution
    template: str | None
    seed: int | None
    prompt_extend: bool
    image_url: str | None
    image_note: str | None
    cost: int
    upload_limit: int
    request_id: str | None
    state: JobState
    queue_position: int | None
    error: str | None
    result_url: str | None
    delivery_message_id: int | None
    poll_count: int
    delivery_started_at: float | None
    overdue_notified_at: float | None
    status_has_image: bool
    status_channel_id: int | None
    created_at: float
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    locale: str | None  # language of the job's public messages (the server's, at creation); None: English
    delivery_channel_id: int | None
    # The process working on it and until when (migration 0008); None when nobody holds it.
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    # Its images and video are posted as spoilers (migration 0009): asked for, or forced by the server.
    spoiler: bool = False
    # Where it lives (migration 0011): None = a channel message; "interaction" = the interaction's
    # original response and follow-ups, with the application id, token (None once ended or rejected),
    # its expiry (epoch seconds) and Discord's interaction context (0 server, 1 bot DM, 2 private).
    surface: str | None = None
    interaction_app_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_expires_at: float | None = None
    interaction_context: int | None = None

    @classmethod
    def from_row(cls, row: Row) -> Job:
        if isinstance(row, sqlite3.Row):
            # sqlite3.Row finds a column by name by scanning the names: one pass for all 40 instead.
            row = dict(zip(row.keys(), row, strict=True))
        values: dict[str, Any] = {name: row[name] for name in _JOB_COLUMNS}
        values["state"] = JobState(values["state"])
        values["prompt_extend"] = bool(values["prompt_extend"])
        values["resolution"] = Resolution(values["resolution"])
        values["status_has_image"] = bool(values["status_has_image"])
        values["spoiler"] = bool(values["spoiler"])
        return cls(**values)

    @property
    def spec(self) -> GenerationSpec:
        """What this job generates."""
        return GenerationSpec.from_columns(self)

    @property
    def in_interaction(self) -> bool:
        """The job lives in its interaction (status = original response, video = follow-up)."""
        return self.surface == "interaction"


_JOB_COLUMNS = tuple(f.name for f in fields(Job))  # what `Job.from_row` reads, in order


@dataclass(frozen=True, slots=True)
class NewJob:
    guild_id: int
    channel_id: int
    user_id: int
    prompt: str
    negative_prompt: str | None
    resolution: str
    template: str | None
    seed: int | None
    prompt_extend: bool
    cost: int
    upload_limit: int
    locale: str | None = None  # the server's Discord locale (interaction.guild_locale), e.g. "de"
    # What started it, when one click may arrive twice (see migration 0007): one unfinished job per origin.
    origin: str | None = None
    spoiler: bool = False  # post its images and video as spoilers
    # A job living in the interaction (migration 0011); None for a channel message.
    interaction: InteractionSurface | None = None
    # How the image was adjusted for the model, shown on the status message: written by the INSERT
    # itself (known before the job is reserved), never by a write of its own.
    image_note: str | None = None
    # The creating process's lease (migration 0008), written by the INSERT of a pending job: another
    # process's pending sweep leaves the job to it while it lives, however long it queues.
    lease_owner: str | None = None
    lease_expires_at: float | None = None

    @classmethod
    def from_spec(cls, spec: GenerationSpec, **rest: Any) -> NewJob:
        """A new job generating `spec`; `rest` are the other fields."""
        return cls(**spec.columns(), **rest)

    @property
    def spec(self) -> GenerationSpec:
        return GenerationSpec.from_columns(self)


@dataclass(frozen=True, slots=True)
class InteractionSurface:
    """What a job needs to live in its interaction: the webhook's application id and token, when the
    token expires (epoch seconds) and Discord's interaction context."""

    app_id: int
    token: str = field(repr=False)  # a credential: never in a repr or a log line
    expires_at: float
    context: int | None


# Columns callers may change through `update`; anything else is a programming error. The state is
# not among them: it changes only through `transition` (storage.lifecycle).
_UPDATABLE = frozenset(
    {
        "status_message_id",
        "thread_id",
        "image_url",
        "image_note",
        "queue_position",
        "delivery_started_at",
        "overdue_notified_at",
        "status_has_image",
        "status_channel_id",
        "poll_count",
        "lease_owner",
        "lease_expires_at",
        "interaction_token",
        "delivery_message_id",  # a follow-up's placeholder, before the video is attached to it
    }
)


class JobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def insert(
        tx: Transaction, new: NewJob, now: float | None = None, *, state: JobState = JobState.PENDING
    ) -> int:
        if state not in lifecycle.INITIAL:
            raise lifecycle.IllegalTransition(f"a job cannot start as {state.value}")
        now = time.time() if now is None else now
        surface = new.interaction
        held = (new.lease_owner, new.lease_expires_at)  # only a pending job: it is being submitted
        return await tx.insert(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, negative_prompt, resolution, template,"
            " seed, prompt_extend, cost, upload_limit, state, created_at, updated_at, locale, origin,"
            " spoiler, surface, interaction_app_id, interaction_token, interaction_expires_at,"
            " interaction_context, image_note, lease_owner, lease_expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.guild_id,
                new.channel_id,
                new.user_id,
                new.prompt,
                new.negative_prompt,
                new.resolution,
                new.template,
                new.seed,
                int(new.prompt_extend),
                new.cost,
                new.upload_limit,
                state.value,
                now,
                now,
                new.locale,
                new.origin,
                int(new.spoiler),
                "interaction" if surface is not None else None,
                surface.app_id if surface is not None else None,
                surface.token if surface is not None else None,
                surface.expires_at if surface is not None else None,
                surface.context if surface is not None else None,
                new.image_note,
                *(held if state is JobState.PENDING else (None, None)),
            ),
        )

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Job.from_row(row)

    async def unfinished(self) -> list[Job]:
        marks = ", ".join("?" for _ in UNFINISHED)
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", [s.value for s in UNFINISHED]
        )
        return [Job.from_row(r) for r in rows]

    async def stale_pending(self, updated_before: float, limit: int = 100) -> list[Job]:
        """Jobs still `pending` (submit outcome never recorded) untouched since `updated_before`.

        Served by the partial index on unfinished states, so the periodic sweep stays cheap."""
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE state = ? AND updated_at < ? ORDER BY id LIMIT ?",
            (JobState.PENDING.value, updated_before, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def unposted_requests(self, updated_before: float, limit: int = 100) -> list[Job]:
        """Jobs awaiting approval whose post was never stored (a crash between posting and storing
        it), untouched since `updated_before`: approval mode's orphan recovery at start-up."""
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE state = ? AND status_message_id IS NULL AND updated_at < ?"
            " ORDER BY id LIMIT ?",
            (JobState.AWAITING_APPROVAL.value, updated_before, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def store_found_request(self, job_id: int, message_id: int, image_url: str | None) -> bool:
        """Store the post found for an orphaned approval request -- only if it is still awaiting
        approval with no post stored: of two processes recovering it at once, one wins (True)."""
        changed = await self.db.execute(
            "UPDATE jobs SET status_message_id = ?, image_url = ?, updated_at = ?"
            " WHERE id = ? AND state = ? AND status_message_id IS NULL",
            (message_id, image_url, time.time(), job_id, JobState.AWAITING_APPROVAL.value),
        )
        return changed == 1

    async def recent_for_user(self, guild_id: int, user_id: int, limit: int = 10) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def transition(
        self,
        job_id: int,
        to: JobState,
        *,
        within: JobState | frozenset[JobState] | None = None,
        refund: bool = False,
        reason: str | None = None,
        **changes: Any,
    ) -> bool:
        """Move a job to `to` along `lifecycle.TRANSITIONS` (compare-and-set), with any refund in the
        same transaction. Returns whether this call moved it, so of two racing actors (a cancel click
        and a poll) exactly one wins."""
        if not refund:
            # A move without a refund is one compare-and-set UPDATE, atomic on its own: no BEGIN and
            # COMMIT around it (two round trips fewer per state change, four state changes a job).
            return await lifecycle.move(self.db, job_id, to, within=within, reason=reason, **changes)
        async with self.db.transaction() as tx:
            return await lifecycle.move(
                tx, job_id, to, within=within, refund=refund, reason=reason, **changes
            )

    async def update(
        self, job_id: int, *, only_in: frozenset[JobState] | None = None, **changes: Any
    ) -> bool:
        """Set columns other than the state; with `only_in`, only while the job is in one of those
        states (so a late poll does not touch a job that ended meanwhile). Returns whether the row changed.
        """
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        sets = [f"{name} = ?" for name in changes]
        params: list[Any] = list(changes.values())
        sets.append("updated_at = ?")
        params.append(time.time())
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?"
        params.append(job_id)
        if only_in:
            sql += f" AND state IN ({', '.join('?' for _ in only_in)})"
            params.extend(s.value for s in sorted(only_in))
        return await self.db.execute(sql, params) == 1

    # ------------------------------------------------------------------ leases (migration 0008)

    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int = 100) -> list[Job]:
        """Take up to `limit` leased-state jobs nobody holds (lease NULL or expired) for `owner`, until
        `now + lease_seconds`; returns them. Atomic across processes: on PostgreSQL the rows are picked
        `FOR UPDATE SKIP LOCKED`, so two claimers at once get disjoint sets; SQLite has one writer.
        Pending jobs are not claimed here (see `expired_pending`)."""
        marks = ", ".join("?" for _ in LEASED)
        pick = (
            f"SELECT id FROM jobs WHERE state IN ({marks})"
            " AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?)"
            " ORDER BY id LIMIT ?"
        )
        if self.db.dialect == "postgres":
            pick += " FOR UPDATE SKIP LOCKED"
        states = [s.value for s in sorted(LEASED)]
        async with self.db.transaction() as tx:
            # Read first: nearly every beat finds nothing to take, and a read is no write. The rows
            # read stay ours until the UPDATE (SQLite: one writer; PostgreSQL: locked by the pick).
            ids = [int(r["id"]) for r in await tx.fetchall(pick, [*states, now, limit])]
            if not ids:
                return []
            chosen = ", ".join("?" for _ in ids)
            rows = await tx.fetchall(
                f"UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id IN ({chosen})"
                f" AND state IN ({marks}) RETURNING *",
                [owner, now + lease_seconds, *ids, *states],
            )
        return sorted((Job.from_row(r) for r in rows), key=lambda job: job.id)

    async def renew(self, owner: str, now: float, lease_seconds: float) -> int:
        """Extend every lease `owner` holds, in one statement; returns how many."""
        return await self.db.execute(
            "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ?", (now + lease_seconds, owner)
        )

    async def release(self, owner: str, job_ids: list[int] | None = None) -> int:
        """Give up `owner`'s leases (all of them, or those of `job_ids`), so another process may claim
        them at once (a rolling restart hands over without waiting for expiry)."""
        sql = "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?"
        params: list[Any] = [owner]
        if job_ids is not None:
            if not job_ids:
                return 0
            sql += f" AND id IN ({', '.join('?' for _ in job_ids)})"
            params.extend(job_ids)
        return await self.db.execute(sql, params)

    async def forget_leases(self) -> int:
        """Drop every lease: for a database only one process uses (SQLite), whose leases all belong
        to an earlier start of it, so a restart resumes at once instead of after their expiry."""
        return await self.db.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL"
        )

    async def expired_pending(self, now: float, limit: int = 100) -> list[Job]:
        """Pending jobs whose lease expired: their process died mid-submit. Never resubmitted; the
        caller ends them with a refund (the compare-and-set decides between racing processes)."""
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE state = ? AND lease_owner IS NOT NULL AND lease_expires_at < ?"
            " ORDER BY id LIMIT ?",
            (JobState.PENDING.value, now, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def count_polls(self, job_id: int, n: int = 1) -> None:
        """Add `n` polls to the job's count. The engine counts polls in memory and writes them with
        the job's next state change; this is for an ending that writes no count itself."""
        await self.db.execute("UPDATE jobs SET poll_count = poll_count + ? WHERE id = ?", (n, job_id))
