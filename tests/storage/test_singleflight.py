"""SingleFlight: concurrent readers of one missing cache entry share one load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.db import BACKGROUND, mark_background
from storage.guilds import GuildRepository
from storage.singleflight import SingleFlight
from storage.sqlite import SQLiteDatabase


async def test_concurrent_runs_of_one_key_share_one_load_and_later_ones_load_again() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    loads = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        mine = loads
        await gate.wait()
        return mine

    readers = [asyncio.create_task(flight.run("k", load)) for _ in range(5)]
    other = asyncio.create_task(flight.run("other", load))
    await asyncio.sleep(0)
    assert len(flight) == 2
    gate.set()
    assert await asyncio.gather(*readers) == [1] * 5  # one load, every reader its answer
    assert await other == 2
    assert loads == 2 and len(flight) == 0
    assert await flight.run("k", load) == 3  # finished: the next run loads afresh


async def test_a_cancelled_reader_does_not_cancel_the_load_and_errors_reach_every_reader() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def load() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(flight.run("k", load))
    second = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first

    async def broken() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("database gone")

    results = await asyncio.gather(*(flight.run("e", broken) for _ in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert len(flight) == 0


async def test_a_load_a_background_task_starts_runs_at_interactive_priority() -> None:
    """A poll (background) starts the ETA's load, a member's command joins it: the command must not
    wait in the background queue of the one SQLite connection (seconds long with 10,000 jobs)."""
    flight: SingleFlight[str, bool] = SingleFlight()
    gate = asyncio.Event()

    async def load() -> bool:
        await gate.wait()
        return BACKGROUND.get()

    async def poll() -> bool:
        mark_background()
        return await flight.run("eta", load)

    background = asyncio.create_task(poll())
    await asyncio.sleep(0)
    command = asyncio.create_task(flight.run("eta", load))
    await asyncio.sleep(0)
    gate.set()
    assert await background is False and await command is False
    assert BACKGROUND.get() is False


async def test_a_burst_of_commands_reads_a_cold_guild_config_once(tmp_path: Path) -> None:
    """100 commands at once all missed the cold cache, and each ran the guild's four reads."""
    db = await SQLiteDatabase.open(tmp_path / "a.db")
    try:
        repo = GuildRepository(db)
        await repo.set_channel(1, 77, True)
        repo._cache.clear()
        statements: list[str] = []
        await db._conn.set_trace_callback(statements.append)
        configs = await asyncio.gather(*(repo.get(1) for _ in range(100)))
        assert len(statements) == 4
        assert all(c is configs[0] for c in configs) and configs[0].channels == {77}
        # A change while a load runs: a read started after it does not join the older load.
        statements.clear()
        repo._cache.clear()
        before = asyncio.create_task(repo.get(1))
        await asyncio.sleep(0)
        await repo.set_channel(1, 78, True)
        after = await repo.get(1)
        await before
        assert after.channels == {77, 78}
    finally:
        await db.close()
