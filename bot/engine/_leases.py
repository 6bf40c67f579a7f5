"""Which process works on which job: leases (storage migration 0008), renewed while this process lives.

Every unfinished job RunComfy has is held by one process at a time under a lease (owner, expiry).
This process renews all of its leases in one statement every `LEASE_SECONDS / 3` and, in the same
beat, claims jobs whose lease expired (their process died or stopped) and schedules them at once. A
step first checks the row it reads anyway: a job another process holds now is dropped here. At stop
the leases are released, so a rolling restart hands its jobs over without waiting for expiry.

Pending jobs are never claimed: one whose lease expired was mid-submit in a dead process, and is
ended with a refund, never resubmitted (exactly as a single process does at start-up).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from bot.engine import _common as c
from bot.engine._endings import Endings
from bot.engine._scheduler import Scheduler
from bot.i18n import Msg
from storage.db import StorageError
from storage.jobs import Job

log = logging.getLogger(__name__)

CLAIM_BATCH = 100  # jobs per claiming statement; a start-up takes batches until none is left

DIED_MID_SUBMIT = Msg(
    "The bot restarted before RunComfy confirmed this job, so it was not started. Please run /animate again."
)


class Leases:
    def __init__(self, ctx: c.Context, scheduler: Scheduler, endings: Endings) -> None:
        self.ctx = ctx
        self.scheduler = scheduler
        self.endings = endings

    @property
    def owner(self) -> str:
        return self.ctx.owner

    @property
    def seconds(self) -> float:
        return self.ctx.settings.lease_seconds

    def held_elsewhere(self, job: Job) -> bool:
        """True if another process holds the job now: its step here must drop it. (A job nobody
        holds, e.g. written by hand or released, is worked on by whoever has it scheduled.)"""
        return job.lease_owner is not None and job.lease_owner != self.owner

    def submitting_elsewhere(self, job: Job) -> bool:
        """A pending job another live process holds (its lease runs): that process is submitting it,
        perhaps queued behind its REST share for minutes, so the pending sweep here leaves it alone.
        Should that process die, its lease expires and `end_dead_submits` refunds the job."""
        return self.held_elsewhere(job) and (job.lease_expires_at or 0.0) > time.time()

    def lease_columns(self) -> dict[str, Any]:
        """The columns that make this process a job's holder, written with a write that happens anyway
        (the submission's record), so a new job costs no extra write."""
        return {"lease_owner": self.owner, "lease_expires_at": time.time() + self.seconds}

    async def claim(self) -> list[Job]:
        """Take every job nobody holds any more and schedule it now; returns them."""
        taken: list[Job] = []
        while True:
            batch = await self.ctx.jobs.claim(self.owner, time.time(), self.seconds, CLAIM_BATCH)
            for job in batch:
                self.scheduler.schedule(job.id, 0.0)
            taken.extend(batch)
            if len(batch) < CLAIM_BATCH:
                break
        if taken:
            log.info("Took over %d job(s): %s", len(taken), ", ".join(str(j.id) for j in taken[:20]))
        return taken

    async def end_dead_submits(self) -> int:
        """Refund pending jobs whose submitting process died (their lease expired); never resubmit."""
        ended = 0
        for job in await self.ctx.jobs.expired_pending(time.time()):
            if job.id in self.ctx.submitting or job.id in self.ctx.unrecorded:
                continue  # ours, and still on it
            if await self.endings.fail(job, DIED_MID_SUBMIT):
                log.warning(
                    "Job %s: its process died mid-submit (lease of %s expired); refunded",
                    job.id,
                    job.lease_owner,
                )
                ended += 1
        return ended

    async def beat(self) -> None:
        """One renewal and one claim round (the loop's body)."""
        await self.ctx.jobs.renew(self.owner, time.time(), self.seconds)
        await self.claim()
        await self.end_dead_submits()

    async def loop(self) -> None:
        while True:
            # Jitter, so processes started together do not claim in lockstep.
            await asyncio.sleep(self.seconds / 3 * random.uniform(0.8, 1.0))
            try:
                await self.beat()
            except StorageError as exc:
                log.warning("Lease renewal failed (retrying in %.0f s): %s", self.seconds / 3, exc)
            except Exception:
                log.exception("Lease renewal failed")

    async def release(self) -> None:
        """At stop: hand every job of ours to whichever process claims next."""
        try:
            released = await self.ctx.jobs.release(self.owner)
        except StorageError as exc:
            log.warning("Could not release job leases (they expire in %.0f s): %s", self.seconds, exc)
            return
        if released:
            log.info("Released %d job lease(s)", released)
