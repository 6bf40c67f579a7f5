"""When each job is looked at next: one heap of due times, one wake-up event, one task per step.

The clock is injected (`Clock`), so the scheduler can be driven by a fake clock in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from storage.db import mark_background

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        """Return when `event` is set or `timeout` seconds (of this clock) have passed."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives just as the event
        # is set (it returns the result instead), and stop() would wait for this loop forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class Tasks:
    """Background tasks of the engine: kept referenced, crashes logged, all cancelled at stop.

    Their database statements are background work (storage.db.BACKGROUND): a member's command or
    button waiting on the database goes ahead of them."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        context = contextvars.copy_context()
        context.run(mark_background)
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name, context=context)
        self.running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Job task %s crashed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self, *extra: asyncio.Task[Any] | None) -> None:
        tasks = [t for t in (*extra, *self.running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()


class Scheduler:
    """Runs `step(job_id)` for each job when it is due, never two steps of one job at once.

    `schedule` keeps the earliest of two due times; a job that is due while its step still runs is
    skipped (the step reschedules it when it needs to).
    """

    def __init__(
        self, step: Callable[[int], Awaitable[None]], tasks: Tasks, clock: Clock | None = None
    ) -> None:
        self._step = step
        self._tasks = tasks
        self.clock: Clock = clock or MonotonicClock()
        self._heap: list[tuple[float, int, int]] = []
        self._due: dict[int, float] = {}
        self._seq = itertools.count()
        self.busy: set[int] = set()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def schedule(self, job_id: int, delay: float) -> None:
        due = self.clock.now() + max(0.0, delay)
        current = self._due.get(job_id)
        if current is not None and current <= due:
            return
        self._due[job_id] = due
        heapq.heappush(self._heap, (due, next(self._seq), job_id))
        self._wake.set()

    def due_at(self, job_id: int) -> float | None:
        return self._due.get(job_id)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="job-engine")

    async def stop(self) -> None:
        """Stop the loop and every step in flight (`Tasks.cancel_all` does the rest)."""
        await self._tasks.cancel_all(self._runner)
        self._runner = None

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, _, job_id = heapq.heappop(self._heap)
                if self._due.get(job_id) != due:
                    continue  # superseded by an earlier schedule
                del self._due[job_id]
                if job_id in self.busy:
                    continue  # the running step reschedules it
                self.busy.add(job_id)
                self._tasks.spawn(self._guarded(job_id), f"job-{job_id}")
            timeout = self._heap[0][0] - now if self._heap else None
            self._wake.clear()
            await self.clock.wait(self._wake, timeout)

    async def _guarded(self, job_id: int) -> None:
        try:
            await self._step(job_id)
        finally:
            self.busy.discard(job_id)
