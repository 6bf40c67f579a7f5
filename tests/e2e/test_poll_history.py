"""Issue #13: the durations the poll schedule (and the ETA) learn from are RunComfy's, not the bot's
own polling lag added to them (which made each generation of jobs poll later than the one before)."""

from __future__ import annotations

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
