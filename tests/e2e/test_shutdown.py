"""Stopping the bot always finishes, however busy the job scheduler is at that moment."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Harness


async def test_stop_finishes_when_a_job_is_scheduled_at_the_same_moment(harness: Harness) -> None:
    # The scheduler sleeps on an event that schedule() sets. On Python 3.11 asyncio.wait_for returns
    # the event's result instead of raising when the cancel from stop() arrives just after the event
    # was set, so the scheduler loop lived on and stop() (and the test suite's teardown) waited forever.
    h = harness
    await h.start_bot()
    engine = h.running.engine
    # No such jobs; due in an hour. The first makes the scheduler wait with a timeout (without one,
    # wait_for awaits the event directly and the race cannot happen).
    engine.schedule(10**9, 3600.0)
    await asyncio.sleep(0.05)
    engine.schedule(10**9 + 1, 3600.0)  # wakes the scheduler ...
    await asyncio.sleep(0)  # ... its wait on the event completes first ...
    async with asyncio.timeout(5):
        await engine.stop()  # ... and stop() cancels the scheduler in the same moment
    await h.stop_bot()
