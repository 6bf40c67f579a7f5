"""`python -m bot migrate-to-postgres --from data/animate.db [--to postgresql://...]`

Copies every table of a SQLite database (jobs, ledger, settings, bans, blocklists, prefs, meta) into an
empty PostgreSQL database, in one transaction: the target's schema is migrated first, a target with
any row is refused, identity sequences continue after the highest id SQLite ever handed out, and
per-table row counts and an order-independent checksum of every row are compared before commit.
Nothing is written unless everything verified. The SQLite file is brought to the current schema first
(as the bot would at start-up); stop the bot before migrating. Exit status 0 on success, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.db import StorageError
from storage.postgres import PostgresDatabase, PostgresTransaction, redact
from storage.sqlite import SQLiteDatabase

log = logging.getLogger(__name__)

_CHUNK = 5000  # rows read from SQLite and sent to PostgreSQL at a time
_MASK = (1 << 64) - 1


class MigrationError(Exception):
    """The copy was refused or failed; nothing was written. The message says why."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    rows: int


class _Target(BaseSettings):
    """Only DATABASE_URL, from the environment or .env, like the bot reads it."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")
    database_url: SecretStr | None = None


def _tables_in_dependency_order(tables: dict[str, set[str]]) -> list[str]:
    """`tables` maps a table to the tables its foreign keys reference; parents come first."""
    ordered: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done or name not in tables:
            return
        if name in path:
            raise MigrationError(f"foreign keys form a cycle through {name}")
        for parent in sorted(tables[name]):
            if parent != name:
                visit(parent, (*path, name))
        done.add(name)
        ordered.append(name)

    for name in sorted(tables):
        visit(name, ())
    return ordered


def _converter(pg_type: str, table: str, column: str) -> Callable[[Any, int], Any]:
    """SQLite is loosely typed; asyncpg is not. Convert each value to the target column's type."""

    def convert(value: Any, rowid: int) -> Any:
        if value is None:
            return None
        try:
            if pg_type in ("bigint", "integer", "smallint"):
                if isinstance(value, float) and value.is_integer():
                    return int(value)
                if isinstance(value, int):
                    return value
            elif pg_type in ("double precision", "real", "numeric"):
                if isinstance(value, int | float):
                    return float(value)
            elif pg_type == "text":
                if isinstance(value, str):
                    return value
            else:
                raise MigrationError(f"{table}.{column} has a type the copy does not know ({pg_type})")
        except OverflowError:
            pass
        raise MigrationError(
            f"{table} row {rowid}: {column} holds {type(value).__name__} {value!r}, not {pg_type}"
        )

    return convert


def _row_hash(values: Sequence[Any]) -> int:
    digest = hashlib.blake2b(repr(tuple(values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


async def migrate_to_postgres(source: Path, url: str, say: Callable[[str], None] = print) -> list[TableCopy]:
    """Copy `source` into the empty PostgreSQL database at `url`; raises MigrationError or StorageError."""
    if not await asyncio.to_thread(source.is_file):
        raise MigrationError(f"there is no SQLite database at {source}")
    sqlite = await SQLiteDatabase.open(source)
    try:
        pg = await PostgresDatabase.open(url, max_size=2)
        try:
            return await _copy(sqlite, pg, say)
        finally:
            await pg.close()
    finally:
        await sqlite.close()


async def _source_tables(sqlite: SQLiteDatabase) -> tuple[list[str], dict[str, int]]:
    """The SQLite tables, parents before children, and their AUTOINCREMENT high-water marks."""
    names = [
        str(r["name"])
        for r in await sqlite.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " AND name != 'schema_migrations'"
        )
    ]
    parents = {
        name: {str(r["table"]) for r in await sqlite.fetchall(f'PRAGMA foreign_key_list("{name}")')}
        for name in names
    }
    # AUTOINCREMENT's high-water marks: ids of deleted rows must not be handed out again either.
    sequences: dict[str, int] = {}
    if await sqlite.fetchone("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"):
        sequences = {
            str(r["name"]): int(r["seq"])
            for r in await sqlite.fetchall("SELECT name, seq FROM sqlite_sequence")
        }
    return _tables_in_dependency_order(parents), sequences


async def _prepare_target(tx: PostgresTransaction, order: list[str]) -> dict[str, dict[str, str]]:
    """PostgreSQL's column types per table, once every table exists, is locked and is empty."""
    target: dict[str, dict[str, str]] = {}
    for row in await tx.fetchall(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
    ):
        target.setdefault(str(row["table_name"]), {})[str(row["column_name"])] = str(row["data_type"])
    missing = [name for name in order if name not in target]
    if missing:
        raise MigrationError(f"the target schema has no table {', '.join(missing)}")
    # Nobody else may write while we check emptiness and copy.
    await tx.execute("LOCK TABLE " + ", ".join(f'"{n}"' for n in order) + " IN ACCESS EXCLUSIVE MODE")
    busy = [name for name in order if await tx.fetchone(f'SELECT 1 FROM "{name}" LIMIT 1')]
    if busy:
        raise MigrationError(
            f"the target database is not empty ({', '.join(busy)} already have rows); nothing was copied."
            " Migrate into a new, empty database."
        )
    return target


async def _copy_rows(
    sqlite: SQLiteDatabase, tx: PostgresTransaction, name: str, columns: list[str], types: dict[str, str]
) -> tuple[int, int]:
    """Copy one table in rowid chunks; returns (rows, checksum) of what was read."""
    convert = [_converter(types[c], name, c) for c in columns]
    select = ", ".join(f'"{c}"' for c in columns)
    count, checksum, last = 0, 0, None
    while True:
        where = "" if last is None else " WHERE rowid > ?"
        rows = await sqlite.fetchall(
            f'SELECT rowid AS "__rowid", {select} FROM "{name}"{where} ORDER BY rowid LIMIT ?',
            (_CHUNK,) if last is None else (last, _CHUNK),
        )
        if not rows:
            return count, checksum
        last = int(rows[-1][0])
        records = []
        for r in rows:
            rowid = int(r[0])
            record = tuple(fn(r[i + 1], rowid) for i, fn in enumerate(convert))
            checksum = (checksum + _row_hash(record)) & _MASK
            records.append(record)
        await tx.copy_records(name, columns, records)
        count += len(records)


async def _continue_ids(tx: PostgresTransaction, name: str, sequence_mark: int) -> None:
    """Continue after the highest id SQLite ever used, so an id is never handed out twice."""
    highest = await tx.fetchone(f'SELECT MAX(id) AS m FROM "{name}"')
    top = max(int(highest["m"]) if highest and highest["m"] is not None else 0, sequence_mark)
    sequence = await tx.fetchone("SELECT pg_get_serial_sequence(?, 'id') AS s", (name,))
    if top > 0 and sequence is not None and sequence["s"] is not None:
        await tx.execute("SELECT setval(pg_get_serial_sequence(?, 'id'), ?, true)", (name, top))


async def _verify(tx: PostgresTransaction, name: str, columns: list[str], count: int, checksum: int) -> None:
    """Check what PostgreSQL now holds against what was read, before committing."""
    select = ", ".join(f'"{c}"' for c in columns)
    back_count, back_sum = 0, 0
    for r in await tx.fetchall(f'SELECT {select} FROM "{name}"'):
        back_count += 1
        back_sum = (back_sum + _row_hash([r[i] for i in range(len(columns))])) & _MASK
    if back_count != count or back_sum != checksum:
        raise MigrationError(
            f"{name}: verification failed (SQLite {count} rows, PostgreSQL {back_count}"
            f"{'' if back_sum == checksum else ', contents differ'}); nothing was copied"
        )


async def _copy(sqlite: SQLiteDatabase, pg: PostgresDatabase, say: Callable[[str], None]) -> list[TableCopy]:
    order, sequences = await _source_tables(sqlite)
    copied: list[TableCopy] = []
    async with pg.transaction() as tx:
        assert isinstance(tx, PostgresTransaction)
        target = await _prepare_target(tx, order)
        for name in order:
            columns = [str(r["name"]) for r in await sqlite.fetchall(f'PRAGMA table_info("{name}")')]
            if set(columns) != set(target[name]):
                raise MigrationError(
                    f"{name}: the SQLite columns {sorted(columns)} differ"
                    f" from PostgreSQL's {sorted(target[name])}"
                )
            count, checksum = await _copy_rows(sqlite, tx, name, columns, target[name])
            if target[name].get("id") == "bigint":
                await _continue_ids(tx, name, sequences.get(name, 0))
            await _verify(tx, name, columns, count, checksum)
            say(f"  {name}: {count} rows copied and verified")
            copied.append(TableCopy(name, count))
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(argv))


async def main_async(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot migrate-to-postgres",
        description="Copy the bot's SQLite database into an empty PostgreSQL database.",
    )
    parser.add_argument("--from", dest="source", type=Path, required=True, help="the SQLite file")
    parser.add_argument(
        "--to", dest="target", help="postgresql://user:pass@host:5432/db (default: DATABASE_URL)"
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    url: str | None = args.target
    if not url:
        configured = (await asyncio.to_thread(_Target)).database_url
        url = configured.get_secret_value() if configured else None
    if not url or not url.startswith(("postgresql://", "postgres://")):
        print(
            "Give the target as --to postgresql://user:pass@host:5432/db or set DATABASE_URL.",
            file=sys.stderr,
        )
        return 1
    print(f"Copying {args.source} into {redact(url)}")
    try:
        copied = await migrate_to_postgres(args.source, url)
    except (MigrationError, StorageError) as exc:
        print(f"Migration failed: {exc}", file=sys.stderr)
        return 1
    total = sum(t.rows for t in copied)
    print(f"Done: {total} rows in {len(copied)} tables. Set DATABASE_URL to use PostgreSQL from now on.")
    return 0
