"""Issue #13: the durations the poll schedule (and the ETA) learn from are RunComfy's, not the bot's
own polling lag added to them (which made each generation of jobs poll later than the one before)."""

from __future__ import annotations

import asyncio

import pytest

from bot.engine import _presenter as presenter_module
from bot.engine._poll_schedule import POLL_MIN_SAMPLES
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript


async def test_a_finished_jobs_duration_is_when_runcomfy_finished_not_when_the_bot_looked(
    harness: Harness,
) -> None:
    h = harness
    # RunComfy is done 0.05 s after the submit; the bot first looks 0.6 s after it.
    await h.start_bot(poll_first_delay=0.6)
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.0, run_seconds=0.05))
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    assert job.submitted_at is not None and job.finished_at is not None and job.request_id is not None
    assert h.runcomfy.jobs[job.request_id].finished_at is not None
    assert job.updated_at - job.submitted_at >= 0.6  # it was seen late ...
    assert job.finished_at - job.submitted_at < 0.3  # ... but recorded as RunComfy finished it
    # The recent durations (ETA and poll schedule) are that time.
    took = await h.running.store.stats.recent_durations(job.resolution, job.guild_id)
    assert len(took) == 1 and took[0] < 0.3


async def test_a_job_started_without_history_learns_from_its_peers_as_they_finish(harness: Harness) -> None:
    """Issue #13, cold: a job whose first polls found no history anywhere is not planned on that
    "nothing" for another minute (the ETA's cache time): each peer finishing at its resolution, while
    its server has fewer than POLL_MIN_SAMPLES durations of its own, makes the next step read them
    again -- and a peer counts once RunComfy is done with it, not once its upload is."""
    h = harness
    await h.start_bot()
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.0, run_seconds=None))  # runs until advanced
    await h.reply(await h.animate("a long one"))
    long_job = await h.wait_job(1, "running")
    poller = h.running.engine.poller
    assert await poller.history(long_job) is None  # nothing finished anywhere yet
    # Its peers in the same server finish meanwhile; their uploads take a while (slow video fetch).
    h.runcomfy.fail_next("video", 0, delay=3.0, times=POLL_MIN_SAMPLES)
    for n in range(POLL_MIN_SAMPLES):
        h.discord.add_member(f"user{n}")
        h.runcomfy.scripts.append(JobScript(queue_seconds=0.0, run_seconds=0.1))
        await h.reply(await h.animate(f"short {n}", user=f"user{n}"))

    for _ in range(50):  # within 2.5 s (the peers' uploads take 3 s; the old cache held a minute)
        history = await poller.history(long_job)
        if history is not None:
            break
        await asyncio.sleep(0.05)
    assert history is not None and len(history.samples) == POLL_MIN_SAMPLES
    peers = [await h.job(2 + n) for n in range(POLL_MIN_SAMPLES)]
    assert all(p.state.value == "delivering" for p in peers)  # none posted yet

    # From then on the long job is planned on that history: /result alone while it runs.
    def calls() -> list[str | None]:
        rid = long_job.request_id or "-"
        return [r.endpoint for r in h.runcomfy.requests if rid in r.path]

    seen = len(calls())
    await h.discord.wait_for(lambda: len(calls()) >= seen + 4, timeout=10)
    assert set(calls()[seen + 1 :]) == {"result"}  # (the step in flight may still have asked /status)
    h.runcomfy.advance(long_job.request_id or "")
    for job_id in range(1, 2 + POLL_MIN_SAMPLES):
        await h.wait_job(job_id, "delivered")


async def test_a_burst_of_finishing_peers_costs_one_read_of_the_durations(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")  # nothing polls any more: every read below is ours
    presenter, stats = h.running.engine.presenter, h.running.store.stats
    reads: list[int | None] = []
    original = stats.recent_durations

    async def counting(resolution: str, guild_id: int | None, limit: int = 50) -> list[float]:
        reads.append(guild_id)
        return await original(resolution, guild_id, limit)

    monkeypatch.setattr(stats, "recent_durations", counting)
    monkeypatch.setattr(presenter_module, "REREAD_AFTER_FINISH", 0.2)
    h.running.engine._eta_cache.clear()
    assert await presenter.durations(job) == ()
    assert reads == [job.guild_id, None]  # the server's, then bot-wide (too few of its own)
    for _ in range(3):  # peers at this resolution finish in a burst
        presenter.finished(job)
    assert await presenter.durations(job) == () and len(reads) == 2  # read just now: not again yet
    await asyncio.sleep(0.25)
    await presenter.durations(job)
    await presenter.durations(job)
    assert len(reads) == 4  # once after the burst, not once per step
