"""Issue #12: a poll step reads its job's row once and hands that row on (to the status message,
to the transition it makes); the status message still always ends showing the newest state."""

from __future__ import annotations

import asyncio
from typing import Any

from storage.jobs import Job
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript


async def test_a_poll_step_reads_its_job_once(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    engine = h.running.engine
    jobs = h.running.jobs
    real_get, real_step = jobs.get, engine.poller.step_guarded
    reads: dict[str, int] = {}
    steps = 0

    async def counting_get(job_id: int) -> Job | None:
        task = asyncio.current_task()
        if task is not None and task.get_name() == f"job-{job_id}":
            reads[task.get_name()] = reads.get(task.get_name(), 0) + 1
        return await real_get(job_id)

    async def counting_step(job_id: int) -> None:
        nonlocal steps
        steps += 1
        await real_step(job_id)

    jobs.get = counting_get  # type: ignore[method-assign]
    engine.poller.step_guarded = counting_step  # type: ignore[method-assign]
    # Queued with a falling position (each poll edits the status), then running.
    h.runcomfy.scripts.append(JobScript(queue_seconds=0.6, run_seconds=None, initial_queue_position=4))
    assert "on its way" in await h.reply(await h.animate())
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "running")
    await asyncio.sleep(0.3)  # a few polls while it runs
    await h.discord.wait_for(lambda: job_id not in engine._busy, timeout=5)
    assert steps >= 4
    assert reads[f"job-{job_id}"] == steps  # old engine: up to three reads per step
    assert "Generating" in h.status_text((await h.job(job_id)).status_message_id or 0)


async def test_a_stale_row_never_overwrites_a_newer_status(harness: Harness) -> None:
    """An edit with a row read before a newer edit was shown re-reads it instead."""
    h = harness
    await h.start_bot()
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    assert "on its way" in await h.reply(await h.animate())
    job_id = await h.last_job_id()
    queued = await h.wait_job(job_id, "queued")
    assert queued.status_message_id is not None
    click = await h.discord.click(queued.status_message_id, f"animate:cancel:{job_id}", user="alice")
    await click.wait_followups(1)
    cancelled = await h.wait_job(job_id, "cancelled")
    assert "Cancelled" in h.status_text(cancelled.status_message_id or 0)
    edits_before = len(h.discord.calls_to("PATCH", rf"/messages/{cancelled.status_message_id}$"))
    await h.running.engine.present(queued, force=True)  # the row read while it was queued
    edits: list[Any] = h.discord.calls_to("PATCH", rf"/messages/{cancelled.status_message_id}$")
    assert len(edits) == edits_before + 1
    assert "Cancelled" in h.status_text(cancelled.status_message_id or 0)
