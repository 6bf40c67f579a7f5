"""The embedded default: one SQLite connection, WAL mode, serialised access."""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from storage.db import (
    BACKGROUND,
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
        return await _in_worker(self._conn, _rowcount, sql, params)

    async def insert(self, sql: str, params: Params = ()) -> int:
        return _row_id(await _in_worker(self._conn, _lastrowid, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await _in_worker(self._conn, _one, sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await _in_worker(self._conn, _all, sql, params)

    async def lock(self, *keys: int) -> None:
        # BEGIN IMMEDIATE took the single write lock and the connection lock is held: already serial.
        return None


class PriorityLock:
    """An asyncio lock whose waiters go in two queues: interactive first, then background (see
    `storage.db.BACKGROUND`). The lock is handed straight to the next waiter, so a newcomer never
    overtakes a queue; after `FAIRNESS` hand-offs in a row to interactive waiters one background
    waiter goes, so background work is slowed by a burst of commands but never stopped."""

    FAIRNESS = 4

    def __init__(self) -> None:
        self._locked = False
        self._waiters: tuple[collections.deque[asyncio.Future[None]], ...] = (
            collections.deque(),  # interactive
            collections.deque(),  # background
        )
        self._run = 0  # interactive hand-offs in a row while background work waited

    def locked(self) -> bool:
        return self._locked

    async def __aenter__(self) -> None:
        await self.acquire(background=BACKGROUND.get())

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    async def acquire(self, *, background: bool = False) -> None:
        if not self._locked and not any(self._waiters):
            self._locked = True
            return
        queue = self._waiters[1 if background else 0]
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed the lock just as it was cancelled: pass it on
            elif fut in queue:
                queue.remove(fut)
            raise

    def release(self) -> None:
        urgent, background = self._waiters
        order = (background, urgent) if self._run >= self.FAIRNESS else (urgent, background)
        for queue in order:
            while queue:
                fut = queue.popleft()
                if fut.done():
                    continue  # cancelled while waiting
                self._run = self._run + 1 if queue is urgent and background else 0
                fut.set_result(None)  # still locked: it belongs to that waiter now
                return
        self._locked = False
        self._run = 0


class SQLiteDatabase(Database):
    """One connection for the bot's life.

    aiosqlite runs every statement on one worker thread, but a transaction spans several awaits, and
    with a single connection another coroutine's statement would silently join it. So every access goes
    through one asyncio lock: transactions are atomic and "database is locked" cannot happen in-process.
    With thousands of jobs polling, that lock has a queue: statements of commands and buttons go ahead
    of the engine's background ones (`PriorityLock`).
    """

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = PriorityLock()
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
            return await _in_worker(self._conn, _rowcount, sql, params)

    async def insert(self, sql: str, params: Params = ()) -> int:
        async with self._lock, _plain_errors():
            return _row_id(await _in_worker(self._conn, _lastrowid, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock, _plain_errors():
            return await _in_worker(self._conn, _one, sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock, _plain_errors():
            return await _in_worker(self._conn, _all, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE .. COMMIT, rolled back on any exception."""
        async with self._lock, _plain_errors():
            await _in_worker(self._conn, _rowcount, "BEGIN IMMEDIATE", ())
            try:
                yield SQLiteTransaction(self._conn)
            except BaseException:
                await _in_worker(self._conn, _rowcount, "ROLLBACK", ())
                raise
            await _in_worker(self._conn, _rowcount, "COMMIT", ())


# One statement = one trip to aiosqlite's worker thread. Through aiosqlite's cursor API a fetchone is
# three trips (execute, fetch, close), each a thread hand-off and a wake-up of the event loop; with
# thousands of jobs polling, those trips (not SQLite) were most of the database's CPU, and every trip
# holds the connection lock for one more turn of a busy loop. These run whole on the worker thread.
def _rowcount(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    cur = conn.execute(sql, params)
    try:
        return cur.rowcount
    finally:
        cur.close()


def _lastrowid(conn: sqlite3.Connection, sql: str, params: Params) -> int | None:
    cur = conn.execute(sql, params)
    try:
        return cur.lastrowid
    finally:
        cur.close()


def _one(conn: sqlite3.Connection, sql: str, params: Params) -> Row | None:
    cur = conn.execute(sql, params)
    try:
        row: Row | None = cur.fetchone()
        return row
    finally:
        cur.close()


def _all(conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    cur = conn.execute(sql, params)
    try:
        return list(cur.fetchall())
    finally:
        cur.close()


def _row_id(rowid: int | None) -> int:
    if rowid is None:
        raise StorageError("insert returned no row id")
    return rowid


_T = TypeVar("_T")


async def _in_worker(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection, str, Params], _T], sql: str, params: Params
) -> _T:
    """Run `fn(sqlite3_connection, sql, params)` on the connection's worker thread, in one trip.

    aiosqlite's `_execute` is what its own public helpers (`execute_fetchall`, ...) use; it keeps the
    thread's order, so statements still run in the order they were sent."""
    raw = conn._conn  # the sqlite3.Connection, only ever touched on the worker thread (in fn)
    result: _T = await conn._execute(fn, raw, sql, params)  # type: ignore[no-untyped-call]
    return result


@asynccontextmanager
async def _plain_errors() -> AsyncIterator[None]:
    """Disk full, read-only file, I/O error: one exception type with a message an admin can act on.
    (Integrity errors stay as they are: they are programming errors or expected conflicts.)"""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StorageError(f"database error: {exc}") from exc
