"""PostgreSQL through an asyncpg pool, behind the same API as SQLite (storage/db.py).

The repositories' SQL is written once with `?` placeholders; here each statement text is translated
to asyncpg's `$1, $2, ...` once and cached. Rows are asyncpg Records (`row["col"]` and `row[0]`, like
aiosqlite.Row). Booleans are sent as integers, as SQLite stores them, so both backends read back the
same values. Every acquire and query has a timeout; connection and server failures become
StorageError with plain words and never the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from storage.db import (
    Database,
    Dialect,
    Params,
    Row,
    StorageError,
    Transaction,
    check_version,
    load_migrations,
    lock_key,
    split_sql,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to open one connection
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a free pooled connection
QUERY_TIMEOUT = 30.0  # seconds any one statement may take
POOL_MAX_SIZE = 10
# Held (per session) while migrating, so processes starting together apply each migration once.
_MIGRATION_LOCK = lock_key("schema_migrations")


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """`?` placeholders -> `$1, $2, ...`, leaving string literals, quoted names and comments alone."""
    out: list[str] = []
    n = 0
    i = 0
    length = len(sql)
    while i < length:
        ch = sql[i]
        if ch in "'\"":
            end = sql.find(ch, i + 1)
            # A doubled quote inside a literal just restarts the scan at the next quote.
            end = length - 1 if end == -1 else end
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = length if end == -1 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = length if end == -1 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def _returning_id(sql: str) -> str:
    return translate(sql.rstrip().rstrip(";")) + " RETURNING id"


def _args(params: Params) -> list[Any]:
    if isinstance(params, dict):
        raise TypeError("named parameters are not portable; use ? placeholders")
    # SQLite stores booleans as 0/1 and the schema's flag columns are integers.
    return [int(p) if isinstance(p, bool) else p for p in params]


def _count(status: str) -> int:
    """asyncpg's status string ("UPDATE 3", "INSERT 0 1", "DELETE 0") -> rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def redact(url: str) -> str:
    """postgresql://user@host:port/db -- the URL without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{unquote(parts.username)}@" if parts.username else ""
        return f"PostgreSQL at {user}{host}{port}{parts.path or ''}"
    except ValueError:
        return "PostgreSQL (unparsable DATABASE_URL)"


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


class _Errors:
    """Maps driver failures to StorageError with a message an admin can act on."""

    def __init__(self, where: str, password: str | None) -> None:
        self.where = where
        self._password = password

    def clean(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @contextmanager
    def plain(self) -> Iterator[None]:
        try:
            yield
        except asyncpg.IntegrityConstraintViolationError:
            # Like SQLite's IntegrityError: a programming error or an expected conflict, not an outage.
            raise
        except TimeoutError as exc:
            raise StorageError(f"the database ({self.where}) did not answer in time") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StorageError(self.clean(f"database error: {exc}")) from exc


class PostgresTransaction(Transaction):
    unique_violation = (asyncpg.UniqueViolationError,)

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._locked = False

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _count(await self._conn.execute(translate(sql), *_args(params)))

    async def insert(self, sql: str, params: Params = ()) -> int:
        return int(await self._conn.fetchval(_returning_id(sql), *_args(params)))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(translate(sql), *_args(params))
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.fetch(translate(sql), *_args(params)))

    async def copy_records(
        self, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
    ) -> None:
        """PostgreSQL only (bot/migrate.py): bulk-load rows with COPY."""
        await self._conn.copy_records_to_table(
            table, records=records, columns=list(columns), timeout=QUERY_TIMEOUT
        )

    async def lock(self, *keys: int) -> None:
        if self._locked:
            # Two separate lock calls could take keys out of order and deadlock with another process.
            raise RuntimeError("Transaction.lock may be called once per transaction")
        self._locked = True
        for key in sorted(set(keys)):
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", key)


class PostgresDatabase(Database):
    """A connection pool for the bot's life; each call or transaction borrows one connection."""

    dialect: Dialect = "postgres"

    def __init__(self, pool: Any, where: str, password: str | None) -> None:
        self._pool = pool
        self.where = where
        self._errors = _Errors(where, password)

    @classmethod
    async def open(cls, url: str, *, max_size: int = POOL_MAX_SIZE) -> PostgresDatabase:  # type: ignore[override]
        where = redact(url)
        errors = _Errors(where, _password(url))
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT, command_timeout=QUERY_TIMEOUT
            )
        except TimeoutError:
            message = f"cannot connect to {where}: no answer within {CONNECT_TIMEOUT:.0f} s"
            raise StorageError(message) from None
        except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(errors.clean(f"cannot connect to {where}: {exc}")) from None
        db = cls(pool, where, _password(url))
        try:
            await db.migrate()
        except BaseException:
            await pool.close()
            raise
        log.info("Database: %s", where)
        return db

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        with self._errors.plain():
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn

    async def migrate(self, target: int | None = None) -> int:
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                # Checked first: even IF NOT EXISTS is refused on a read-only connection.
                if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                    await conn.execute(
                        "CREATE TABLE schema_migrations ("
                        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                        " applied_at DOUBLE PRECISION NOT NULL)"
                    )
                current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
                migrations = load_migrations("postgres")
                check_version(current, len(migrations))
                for version, name, sql in migrations[current:target]:
                    log.info("Applying database migration %s", name)
                    async with conn.transaction():
                        for statement in split_sql(sql):
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                            version,
                            name,
                            time.time(),
                        )
                    current = version
            finally:
                if not conn.is_closed():
                    await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
            return current

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=ACQUIRE_TIMEOUT)
        except TimeoutError:
            log.warning("PostgreSQL connections did not close in time; terminating them")
            self._pool.terminate()

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._connection() as conn:
            return _count(await conn.execute(translate(sql), *_args(params)))

    async def insert(self, sql: str, params: Params = ()) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(_returning_id(sql), *_args(params)))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._connection() as conn:
            row: Row | None = await conn.fetchrow(translate(sql), *_args(params))
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._connection() as conn:
            return list(await conn.fetch(translate(sql), *_args(params)))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """READ COMMITTED, like every PostgreSQL default; `tx.lock` serialises what must be serial."""
        async with self._connection() as conn, conn.transaction():
            yield PostgresTransaction(conn)
