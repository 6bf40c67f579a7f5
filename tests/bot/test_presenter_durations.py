"""The ETA's and the poll schedule's durations: a burst of jobs reads them once, not once per job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from bot.engine import _common as c
from bot.engine._presenter import Presenter
from bot.engine._scheduler import Tasks
from storage.jobs import Job


@dataclass
class CountingStats:
    """StatsRepository.recent_durations, slow enough that a burst overlaps one read."""

    by_guild: dict[int | None, list[float]]
    calls: list[tuple[str, int | None]] = field(default_factory=list)

    async def recent_durations(self, resolution: str, guild_id: int | None) -> list[float]:
        self.calls.append((resolution, guild_id))
        await asyncio.sleep(0.01)
        return self.by_guild.get(guild_id, [])


@dataclass
class FakeContext:
    stats: CountingStats


def job(guild_id: int) -> Job:
    return cast(Job, type("J", (), {"guild_id": guild_id, "resolution": "480P"})())


async def test_a_burst_of_jobs_reads_the_durations_once_per_guild_and_resolution() -> None:
    bot_wide = [40.0 + i for i in range(c.ETA_MIN_SAMPLES)]
    stats = CountingStats({1: [30.0] * c.ETA_MIN_SAMPLES, None: bot_wide})
    presenter = Presenter(cast(Any, FakeContext(stats)), cast(Tasks, None))
    got = await asyncio.gather(*(presenter.durations(job(g)) for g in [1] * 50 + [2] * 50))
    assert got[:50] == [(30.0,) * c.ETA_MIN_SAMPLES] * 50
    assert got[50:] == [tuple(bot_wide)] * 50  # guild 2 has too few of its own: bot-wide
    # Guild 1 once; guild 2 once, then its bot-wide fallback once: three reads for 100 jobs.
    assert sorted(stats.calls, key=str) == sorted([("480P", 1), ("480P", 2), ("480P", None)], key=str)
    stats.calls.clear()
    assert await presenter.durations(job(1)) == (30.0,) * c.ETA_MIN_SAMPLES
    assert stats.calls == []  # cached for a minute
