"""Jobs: what was asked, where it is shown, and how far it got."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import aiosqlite

from storage.db import Database, Transaction
from storage.spec import GenerationSpec, Resolution


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
        return self in (JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED)


UNFINISHED = (JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING)


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

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Job:
        values: dict[str, Any] = {f.name: row[f.name] for f in fields(cls)}
        values["state"] = JobState(values["state"])
        values["prompt_extend"] = bool(values["prompt_extend"])
        values["resolution"] = Resolution(values["resolution"])
        values["status_has_image"] = bool(values["status_has_image"])
        return cls(**values)

    @property
    def spec(self) -> GenerationSpec:
        """What this job generates."""
        return GenerationSpec.from_columns(self)


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

    @classmethod
    def from_spec(cls, spec: GenerationSpec, **rest: Any) -> NewJob:
        """A new job generating `spec`; `rest` are the other fields."""
        return cls(**spec.columns(), **rest)

    @property
    def spec(self) -> GenerationSpec:
        return GenerationSpec.from_columns(self)


# Columns callers may change through `update`; anything else is a programming error.
_UPDATABLE = frozenset(
    {
        "status_message_id",
        "thread_id",
        "image_url",
        "image_note",
        "request_id",
        "state",
        "queue_position",
        "error",
        "result_url",
        "delivery_message_id",
        "delivery_started_at",
        "overdue_notified_at",
        "status_has_image",
        "status_channel_id",
        "delivery_channel_id",
        "submitted_at",
        "started_at",
        "finished_at",
    }
)


class JobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def insert(tx: Transaction, new: NewJob, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = await tx.execute(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, negative_prompt, resolution, template,"
            " seed, prompt_extend, cost, upload_limit, state, created_at, updated_at, locale, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                JobState.PENDING.value,
                now,
                now,
                new.locale,
                new.origin,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

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

    async def recent_for_user(self, guild_id: int, user_id: int, limit: int = 10) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def update(self, job_id: int, *, expect: tuple[JobState, ...] = (), **changes: Any) -> bool:
        """Set columns; with `expect`, only if the job is still in one of those states (compare-and-set).

        Returns whether the row changed, so two racing transitions (a cancel click and a poll) cannot
        both win.
        """
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        sets = [f"{name} = ?" for name in changes]
        params: list[Any] = [v.value if isinstance(v, JobState) else v for v in changes.values()]
        sets.append("updated_at = ?")
        params.append(time.time())
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?"
        params.append(job_id)
        if expect:
            sql += f" AND state IN ({', '.join('?' for _ in expect)})"
            params.extend(s.value for s in expect)
        return await self.db.execute(sql, params) == 1

    async def count_polls(self, job_id: int) -> None:
        await self.db.execute("UPDATE jobs SET poll_count = poll_count + 1 WHERE id = ?", (job_id,))
