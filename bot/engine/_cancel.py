"""The Cancel button's effect: ask RunComfy to cancel a queued job, and say who got their credits back.

The click itself (who may cancel, the ephemeral answer) is handled by the button, in bot/ui.py.
"""

from __future__ import annotations

import asyncio
import logging

from bot.engine import _common as c
from bot.engine._endings import EXPIRED, Endings
from bot.engine._poller import Poller
from bot.engine._scheduler import Scheduler
from bot.i18n import Msg
from bot.runcomfy import RunComfyError, RunComfyNotFoundError
from storage.jobs import Job
from storage.lifecycle import JobState

log = logging.getLogger(__name__)

NOT_CANCELLABLE = Msg(
    "This job is already generating, so it can't be cancelled — RunComfy bills a job once it starts, "
    "so it will run to the end and the video will still be posted."
)


class Canceller:
    def __init__(self, ctx: c.Context, endings: Endings, poller: Poller, scheduler: Scheduler) -> None:
        self.ctx = ctx
        self.endings = endings
        self.poller = poller
        self.scheduler = scheduler
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, clicks holding or waiting

    async def cancel(self, job: Job, *, by_user_id: int) -> str:
        """Cancel a queued job; the answer for whoever clicked is a bot.i18n.Msg.

        Clicks on one job take turns (one RunComfy cancel at a time), each re-reads the job, and only
        the click whose compare-and-set ended it says the credits went back; across processes the
        compare-and-set alone decides."""
        lock, users = self._locks.get(job.id, (asyncio.Lock(), 0))
        self._locks[job.id] = (lock, users + 1)
        try:
            async with lock:
                fresh = await self.ctx.jobs.get(job.id) or job
                return await self._cancel_once(fresh, by_user_id)
        finally:
            lock, users = self._locks[job.id]
            if users <= 1:
                del self._locks[job.id]
            else:
                self._locks[job.id] = (lock, users - 1)

    @staticmethod
    def cannot_cancel(job: Job) -> str | None:
        """Why a job in this state cannot be cancelled (a bot.i18n.Msg), or None if it is queued."""
        match job.state:
            case JobState.AWAITING_APPROVAL:
                return Msg("This request hasn't been approved yet — withdraw it with its own Cancel button.")
            case JobState.REJECTED:
                return Msg("This request was rejected, so there is nothing to cancel.")
            case JobState.DELIVERED | JobState.DELIVERING:
                return Msg("This job has already finished.")
            case JobState.FAILED:
                return Msg("This job has already failed.")
            case JobState.CANCELLED:
                return Msg("This job has already been cancelled.")
            case JobState.PENDING:
                return Msg("This job is still being submitted — try again in a few seconds.")
            case JobState.RUNNING:
                return NOT_CANCELLABLE
        return None

    async def _after_lost_race(self, job: Job) -> str:
        """Someone else ended or moved the job first: describe where it is now."""
        fresh = await self.ctx.jobs.get(job.id) or job
        return self.cannot_cancel(fresh) or Msg("I couldn't cancel the job. Please try again in a moment.")

    async def _cancel_once(self, job: Job, by_user_id: int) -> str:
        refusal = self.cannot_cancel(job)
        if refusal is not None:
            return refusal
        assert job.request_id is not None
        # While RunComfy is asked, a poll that sees the cancellation leaves ending the job to this
        # click (see `Endings.cancelled`), so the click that cancelled is the one that says so.
        self.endings.cancelling.add(job.id)
        try:
            try:
                result = await self.ctx.runcomfy.cancel(job.request_id)
            except RunComfyNotFoundError:
                if not await self.endings.fail(job, EXPIRED):
                    return await self._after_lost_race(job)
                return Msg("RunComfy no longer knows this job, so it was closed and your credits refunded.")
            except RunComfyError as exc:
                log.warning("Job %s: cancel failed: %s", job.id, exc)
                return Msg("I couldn't reach RunComfy to cancel the job. Please try again in a moment.")
            if result.cancelled:
                reason = Msg("Cancelled by <@{user}>.", user=by_user_id)
                if not await self.endings.cancelled(job, reason, by_user_id, by_click=True):
                    return await self._after_lost_race(job)
                if by_user_id == job.user_id:
                    return Msg("Cancelled. Your {credits} went back.", credits=_credits(job.cost))
                return Msg(
                    "Cancelled. <@{user}>'s {credits} went back.",
                    user=job.user_id,
                    credits=_credits(job.cost),
                )
            await self.poller.mark_running(job)
            return NOT_CANCELLABLE
        finally:
            self.endings.cancelling.discard(job.id)
            if job.id in self.endings.stood_back:
                self.endings.stood_back.discard(job.id)
                self.scheduler.schedule(job.id, 0.0)  # the poll that stood back did not reschedule itself


def _credits(n: int) -> Msg:
    return Msg.plural(n, "{n} credit", "{n} credits")
