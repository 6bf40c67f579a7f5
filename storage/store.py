"""The one way to reach storage: every repository, built once over one database handle.

`AnimateBot.open_storage()` builds the store at start-up and every consumer (cogs, admission, the
engine, metrics) takes its repositories from it, so there is one object graph: one GuildRepository and
so one guild-config cache, invalidated by every write that goes through it.
"""

from __future__ import annotations

from pathlib import Path

from storage.db import Database, open_database
from storage.guilds import GuildRepository
from storage.jobs import JobRepository
from storage.prefs import PrefsRepository
from storage.premium import PremiumRepository
from storage.quota import QuotaRepository
from storage.stats import StatsRepository


class Store:
    """The repositories over one open database. Build it once per process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.jobs = JobRepository(db)
        self.quota = QuotaRepository(db)
        self.guilds = GuildRepository(db)
        self.prefs = PrefsRepository(db)
        self.premium = PremiumRepository(db)
        self.stats = StatsRepository(db, self.quota)

    @classmethod
    async def open(cls, path: Path, dsn: str | None = None) -> Store:
        """Open (and migrate) SQLite at `path`, or PostgreSQL at `dsn` when it is given."""
        return cls(await open_database(path, dsn))

    async def close(self) -> None:
        await self.db.close()
