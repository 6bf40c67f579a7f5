"""One load per key at a time: concurrent readers of the same missing cache entry share one load.

A burst of commands (100 photos at once) all miss a cold cache in the same instant; without this each
ran the same reads (a guild's four settings queries, the ETA's durations), one database round trip
apiece. The load runs as its own task, so a reader that is cancelled (an interaction that timed out)
does not cancel it for the others; its outcome, value or exception, goes to every reader waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from storage.db import BACKGROUND

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """`load()`'s result; while a load of `key` is running, that one's instead of a new one."""
        task = self._running.get(key)
        if task is None:
            # Interactive priority whoever starts it: a member's command that joins a load a poll
            # began must not wait behind the engine's queue of background statements (storage.db
            # BACKGROUND; with 10,000 jobs polling that queue is seconds long). One load per key.
            context = contextvars.copy_context()
            context.run(BACKGROUND.set, False)
            task = asyncio.get_running_loop().create_task(load(), context=context)
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: readers that went away must not leave a "never retrieved"
