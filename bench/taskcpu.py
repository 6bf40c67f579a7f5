"""Opt-in (``BENCH_TASKCPU=path``): the event loop thread's CPU, attributed to what each asyncio handle ran.

cProfile inflates the many cheap calls of an asyncio program and hides where a task's time goes
between two awaits. This times every ``Handle._run`` with ``time.thread_time()`` instead and adds it
to the task the handle stepped -- named by its top coroutine, then the innermost coroutines it is
awaiting once the step is over (where it stopped: ``BENCH_TASKCPU_DEPTH``, default 3; 0 for the top
only) -- or to the callback's name. The table, busiest first, goes to ``path`` (``path-naive`` for
the naive bot's run). It costs two clock reads per handle, so its figures are not results.
"""

from __future__ import annotations

import asyncio
import os
import time
from asyncio import events
from collections import defaultdict
from typing import Any

ROWS = 60  # lines written, busiest first


class HandleCPU:
    """Patches ``asyncio.events.Handle._run`` between ``start`` and ``stop`` (one at a time)."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.handles: defaultdict[str, int] = defaultdict(int)
        self._original: Any = None

    def name(self, handle: events.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        task = getattr(callback, "__self__", None)
        if not isinstance(task, asyncio.Task):
            return "cb:" + getattr(callback, "__qualname__", type(callback).__name__)
        coro = task.get_coro()
        top = getattr(coro, "__qualname__", type(coro).__name__)
        if self.depth <= 0:
            return "task:" + top
        chain: list[str] = []
        awaited: Any = coro
        while awaited is not None:
            qualname = getattr(awaited, "__qualname__", None)
            if qualname:
                chain.append(qualname)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        return "task:" + top + " > " + " > ".join(chain[-self.depth :])

    def start(self) -> None:
        if self._original is not None:
            raise RuntimeError("HandleCPU is already started")
        original = self._original = events.Handle._run
        seconds, handles, name = self.seconds, self.handles, self.name

        def timed(handle: events.Handle) -> None:
            started = time.thread_time()
            try:
                original(handle)
            finally:
                key = name(handle)  # after the step: the awaits it stopped at
                seconds[key] += time.thread_time() - started
                handles[key] += 1

        events.Handle._run = timed  # type: ignore[method-assign]

    def stop(self) -> None:
        if self._original is not None:
            events.Handle._run = self._original  # type: ignore[method-assign]
            self._original = None

    def table(self, rows: int = ROWS) -> str:
        total = sum(self.seconds.values())
        lines = [f"total {total:.3f} s of the loop thread in {sum(self.handles.values())} handles"]
        for key, spent in sorted(self.seconds.items(), key=lambda kv: -kv[1])[:rows]:
            share = 100 * spent / total if total else 0.0
            lines.append(f"{spent:8.3f} {share:5.1f}% {self.handles[key]:8d} {key}")
        return "\n".join(lines) + "\n"


def start_taskcpu() -> HandleCPU | None:
    if not os.environ.get("BENCH_TASKCPU"):
        return None
    meter = HandleCPU(depth=int(os.environ.get("BENCH_TASKCPU_DEPTH", "3")))
    meter.start()
    return meter


def stop_taskcpu(meter: HandleCPU | None, naive: bool = False) -> None:
    if meter is not None:
        meter.stop()
        # The naive run follows the bot's in the same bench run: its own file, or it would overwrite.
        with open(os.environ["BENCH_TASKCPU"] + ("-naive" if naive else ""), "w") as out:
            out.write(meter.table())
