"""Per-user preferences (opt-in DM when a job finishes)."""

from __future__ import annotations

import time

from storage.db import Database


class PrefsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def dm_on_finish(self, user_id: int) -> bool:
        row = await self.db.fetchone("SELECT dm_on_finish FROM user_prefs WHERE user_id = ?", (user_id,))
        return bool(row and row["dm_on_finish"])

    async def set_dm_on_finish(self, user_id: int, enabled: bool) -> None:
        await self.db.execute(
            "INSERT INTO user_prefs (user_id, dm_on_finish, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET dm_on_finish = excluded.dm_on_finish,"
            " updated_at = excluded.updated_at",
            (user_id, int(enabled), time.time()),
        )
