"""Spoilers (migration 0009): a job remembers it, a server may force it; on both backends."""

from __future__ import annotations

import pytest

from storage.db import Database
from storage.guilds import GuildRepository
from storage.jobs import JobRepository, NewJob
from storage.spec import GenerationSpec


def new_job(*, spoiler: bool) -> NewJob:
    return NewJob.from_spec(
        GenerationSpec(prompt="a cat"),
        guild_id=1,
        channel_id=2,
        user_id=3,
        cost=1,
        upload_limit=1 << 20,
        spoiler=spoiler,
    )


async def test_a_job_remembers_whether_it_is_a_spoiler(db: Database) -> None:
    jobs = JobRepository(db)
    async with db.transaction() as tx:
        plain = await JobRepository.insert(tx, new_job(spoiler=False))
        hidden = await JobRepository.insert(tx, new_job(spoiler=True))
    read = [await jobs.get(plain), await jobs.get(hidden)]
    assert [job.spoiler if job else None for job in read] == [False, True]
    assert all(type(job.spoiler) is bool for job in read if job)
    # Every reader of job rows sees it (a restarted process resumes from `unfinished`).
    assert [job.spoiler for job in await jobs.unfinished()] == [False, True]


async def test_forced_spoilers_are_a_per_guild_setting(db: Database) -> None:
    repo = GuildRepository(db)
    assert (await repo.get(1)).force_spoiler is False
    assert (await repo.update(1, 99, force_spoiler=True)).force_spoiler is True
    assert (await GuildRepository(db).get(1)).force_spoiler is True  # stored, not just cached
    assert (await repo.get(2)).force_spoiler is False
    assert (await repo.update(1, 99, force_spoiler=False)).force_spoiler is False
    with pytest.raises(ValueError):
        await repo.update(1, 99, force_spoiler=None)
