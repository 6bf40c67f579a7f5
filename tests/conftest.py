"""Session-wide fixtures: a real PostgreSQL server (started only if a test asks for it)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import PgServer, PostgresUnavailable, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            # CI installs PostgreSQL (.ci/run); a silent skip there would hide a broken backend.
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(autouse=True)
def _no_database_url_from_the_developer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DATABASE_URL exported in the shell must not send the tests' bots to a real database."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
