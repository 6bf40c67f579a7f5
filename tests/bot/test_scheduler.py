"""The engine's scheduler, driven by a fake clock: due order, earliest schedule wins, no doubled steps."""

from __future__ import annotations

import asyncio

import pytest

from bot.engine._scheduler import Scheduler, Tasks


class FakeClock:
    """Time moves only when the test says so; a waiting scheduler wakes when it does."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._tick = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        self._tick.clear()
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._tick.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def advance(self, seconds: float) -> None:
        self.t += seconds
        self._tick.set()
        await settle()


async def settle() -> None:
    for _ in range(20):  # let the loop and the steps it spawned run
        await asyncio.sleep(0)


class Recorder:
    def __init__(self) -> None:
        self.ran: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def step(self, job_id: int) -> None:
        self.ran.append(job_id)
        gate = self.gates.get(job_id)
        if gate is not None:
            await gate.wait()


@pytest.fixture
async def setup() -> tuple[Scheduler, FakeClock, Recorder, Tasks]:
    clock, rec, tasks = FakeClock(), Recorder(), Tasks()
    scheduler = Scheduler(rec.step, tasks, clock)
    scheduler.start()
    await settle()
    return scheduler, clock, rec, tasks


async def test_jobs_run_in_due_order_and_only_when_due(
    setup: tuple[Scheduler, FakeClock, Recorder, Tasks],
) -> None:
    scheduler, clock, rec, _ = setup
    scheduler.schedule(1, 30)
    scheduler.schedule(2, 10)
    scheduler.schedule(3, 20)
    await settle()
    assert rec.ran == []
    await clock.advance(10)
    assert rec.ran == [2]
    await clock.advance(15)
    assert rec.ran == [2, 3]
    await clock.advance(5)
    assert rec.ran == [2, 3, 1]
    await scheduler.stop()


async def test_rescheduling_earlier_wins_and_later_is_ignored(
    setup: tuple[Scheduler, FakeClock, Recorder, Tasks],
) -> None:
    scheduler, clock, rec, _ = setup
    scheduler.schedule(1, 60)
    scheduler.schedule(1, 5)  # earlier: wins
    scheduler.schedule(1, 120)  # later: ignored while an earlier one is pending
    assert scheduler.due_at(1) == clock.now() + 5
    await clock.advance(5)
    assert rec.ran == [1]
    await clock.advance(200)
    assert rec.ran == [1]  # the superseded entries never run
    await scheduler.stop()


async def test_a_busy_job_is_not_stepped_twice(setup: tuple[Scheduler, FakeClock, Recorder, Tasks]) -> None:
    scheduler, clock, rec, _ = setup
    rec.gates[7] = asyncio.Event()
    scheduler.schedule(7, 0)
    await settle()
    assert rec.ran == [7] and 7 in scheduler.busy
    scheduler.schedule(7, 1)  # due while the first step still runs: skipped
    await clock.advance(1)
    assert rec.ran == [7]
    rec.gates[7].set()
    await settle()
    assert 7 not in scheduler.busy
    scheduler.schedule(7, 1)  # once it is done, it runs again
    await clock.advance(1)
    assert rec.ran == [7, 7]
    await scheduler.stop()


async def test_stop_cancels_the_loop_and_every_step_in_flight(
    setup: tuple[Scheduler, FakeClock, Recorder, Tasks],
) -> None:
    scheduler, clock, rec, tasks = setup
    rec.gates[1] = asyncio.Event()  # never set: the step would wait forever
    scheduler.schedule(1, 0)
    scheduler.schedule(2, 50)
    await settle()
    assert tasks.running
    await scheduler.stop()
    assert not tasks.running and 1 not in scheduler.busy
    await clock.advance(100)
    assert rec.ran == [1]  # job 2 never ran: the loop is gone


async def test_a_step_that_crashes_is_logged_and_frees_its_job(caplog: pytest.LogCaptureFixture) -> None:
    clock, tasks = FakeClock(), Tasks()

    async def crash(job_id: int) -> None:
        raise RuntimeError(f"step {job_id} broke")

    scheduler = Scheduler(crash, tasks, clock)
    scheduler.start()
    scheduler.schedule(4, 0)
    await settle()
    assert 4 not in scheduler.busy
    assert any("job-4" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    await scheduler.stop()
