"""The embedded default: one SQLite connection, WAL mode, serialised access."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from storage.db import (
    Database,
    Dialect,
    Params,
    Row,
    StorageError,
    Transaction,
    check_version,
    load_migrations,
    split_sql,
)

log = logging.getLogger(__name__)


class SQLiteTransaction(Transaction):
    """Statements run inside `SQLiteDatabase.transaction()`; the lock is already held."""

    unique_violation = (sqlite3.IntegrityError,)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(sql, params)
        count = cur.rowcount
        await cur.close()
        return count

    async def insert(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(sql, params)
        rowid = cur.lastrowid
        await cur.close()
        if rowid is None:
            raise StorageError("insert returned no row id")
        return rowid

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cur:
            row: aiosqlite.Row | None = await cur.fetchone()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def lock(self, *keys: int) -> None:
        # BEGIN IMMEDIATE took the single write lock and the connection lock is held: already serial.
        return None


class SQLiteDatabase(Database):
    """One connection for the bot's life.

    aiosqlite runs every statement on one worker thread, but a transaction spans several awaits, and
    with a single connection another coroutine's statement would silently join it. So every access goes
    through one asyncio lock: transactions are atomic and "database is locked" cannot happen in-process.
    """

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self.where = f"SQLite at {path}"

    @classmethod
    async def open(cls, path: Path | str) -> SQLiteDatabase:
        path = Path(path)
        try:
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the database at {path}: {exc}") from None
        conn.row_factory = aiosqlite.Row
        db = cls(conn, path)
        try:
            await db._configure()
            await db.migrate()
        except (OSError, sqlite3.Error) as exc:
            await conn.close()
            raise StorageError(f"cannot use the database at {path}: {exc}") from None
        except BaseException:
            await conn.close()
            raise
        return db

    async def _configure(self) -> None:
        async with self._conn.execute("PRAGMA journal_mode=WAL") as cur:
            row = await cur.fetchone()
        if row is not None and str(row[0]).lower() != "wal" and str(self.path) != ":memory:":
            log.warning("SQLite refused WAL mode (got %s); continuing", row[0])
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        # Another process (e.g. a backup) may hold the file briefly; wait instead of failing.
        await self._conn.execute("PRAGMA busy_timeout=5000")

    async def migrate(self, target: int | None = None) -> int:
        async with self._lock:
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            async with self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
                row = await cur.fetchone()
            current = int(row[0]) if row else 0
            migrations = load_migrations("sqlite")
            check_version(current, len(migrations))
            for version, name, sql in migrations[current:target]:
                log.info("Applying database migration %s", name)
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in split_sql(sql):
                        await self._conn.execute(statement)
                    await self._conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, time.time()),
                    )
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                current = version
            return current

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock, _plain_errors():
            cur = await self._conn.execute(sql, params)
            count = cur.rowcount
            await cur.close()
            return count

    async def insert(self, sql: str, params: Params = ()) -> int:
        async with self._lock, _plain_errors():
            cur = await self._conn.execute(sql, params)
            rowid = cur.lastrowid
            await cur.close()
            if rowid is None:
                raise StorageError("insert returned no row id")
            return rowid

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock, _plain_errors(), self._conn.execute(sql, params) as cur:
            row: aiosqlite.Row | None = await cur.fetchone()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock, _plain_errors(), self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE .. COMMIT, rolled back on any exception."""
        async with self._lock, _plain_errors():
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTransaction(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")


@asynccontextmanager
async def _plain_errors() -> AsyncIterator[None]:
    """Disk full, read-only file, I/O error: one exception type with a message an admin can act on.
    (Integrity errors stay as they are: they are programming errors or expected conflicts.)"""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StorageError(f"database error: {exc}") from exc
