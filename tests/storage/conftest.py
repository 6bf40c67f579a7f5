"""Every storage test that takes `db` (or `db_target`) runs twice: on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.db import DIALECTS, Database, open_database

# (SQLite path, PostgreSQL URL or None): what open_database needs for this run's backend.
DbTarget = tuple[Path, str | None]


@pytest.fixture(params=DIALECTS)
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DbTarget:
    if request.param == "sqlite":
        return tmp_path / "test.db", None
    url: str = request.getfixturevalue("pg_url")
    return tmp_path / "unused.db", url


@pytest.fixture
async def db(db_target: DbTarget) -> AsyncIterator[Database]:
    database = await open_database(*db_target)
    yield database
    await database.close()
