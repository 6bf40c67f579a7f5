"""How a job ends: the one `end` function (transition with its refund, event, status refresh and
thread notice), and the failure and cancellation endings built on it."""

from __future__ import annotations

import logging

import discord

from bot import ui
from bot.engine import _common as c
from bot.engine._presenter import Presenter
from bot.i18n import Msg, render, tr
from bot.ratelimit import deadline
from storage.jobs import Job
from storage.lifecycle import CANCELLABLE, UNFINISHED, JobEvent, JobState

log = logging.getLogger(__name__)

EXPIRED = Msg("RunComfy no longer knows this job (it may have expired).")


class Endings:
    def __init__(self, ctx: c.Context, presenter: Presenter) -> None:
        self.ctx = ctx
        self.presenter = presenter
        self.cancelling: set[int] = set()  # a Cancel click is talking to RunComfy about these jobs
        self.stood_back: set[int] = set()  # polls that left a cancellation to the click under way

    async def end(
        self,
        job: Job,
        to: JobState,
        reason: str,
        *,
        within: JobState | frozenset[JobState],
        event: JobEvent | None,
        actor_id: int | None = None,
        refund: bool = True,
        present: bool = True,
        notice: str | None = None,
    ) -> bool:
        """End `job` in state `to` (only from `within`), storing `reason` (a bot.i18n.Msg, shown
        publicly in the job's language), refunding its charge if `refund` -- all in one transaction --
        then emit `event`, refresh the status message and post `notice` in the job's thread.
        Returns False, doing nothing else, if the job had already moved on."""
        # The same write clears an interaction token; the status edit after it still needs it.
        self.ctx.tokens.of(job)
        ended = await self.ctx.jobs.transition(
            job.id,
            to,
            within=within,
            refund=refund,
            reason=to.value if refund else None,
            error=render(reason, job.locale),
        )
        if not ended:
            return False
        self.ctx.reconciled.discard(job.id)
        log.info("Job %s %s: %s", job.id, to.value, reason)
        fresh = await self.ctx.jobs.get(job.id) or job
        if event is not None:
            self.ctx.emit(fresh, event, actor_id)
        if present:
            await self.presenter.present(fresh, force=True)
            if notice is not None:
                await self.notify_thread(job, notice)
        return True

    async def fail(self, job: Job, reason: str, *, present: bool = True) -> bool:
        """Fail an unfinished job, refunded; the requester hears why in its thread."""
        notice = tr(
            job.locale,
            "<@{user}> sorry, this job failed: {reason} Your credits were refunded.",
            user=job.user_id,
            reason=render(reason, job.locale),
        )
        return await self.end(
            job,
            JobState.FAILED,
            reason,
            within=UNFINISHED,
            event=JobEvent.FAILED,
            present=present,
            notice=notice,
        )

    async def cancelled(
        self,
        job: Job,
        reason: str,
        actor_id: int | None = None,
        *,
        by_click: bool = False,
        notice: str | None = None,
    ) -> bool:
        """RunComfy cancelled the job (on our request or its own): end it, refunded."""
        if job.id in self.cancelling and not by_click:
            # A Cancel click asked RunComfy and will end the job itself (the poll saw its effect).
            self.stood_back.add(job.id)
            return False
        return await self.end(
            job,
            JobState.CANCELLED,
            reason,
            within=CANCELLABLE,
            event=JobEvent.CANCELLED,
            actor_id=actor_id,
            notice=notice,
        )

    async def abandon(self, job_id: int, reason: str) -> None:
        """End a job that never reached RunComfy (an unexpected error mid-launch), refunding it."""
        job = await self.ctx.jobs.get(job_id)
        if job is not None and job.state is JobState.PENDING and job.request_id is None:
            await self.fail(job, reason)

    async def notify_thread(self, job: Job, content: str) -> None:
        """Tell the requester in the job's thread; in the channel if the thread is closed or gone."""
        if job.thread_id is None:
            return
        content = ui.clip(content, c.MAX_CONTENT)  # a reason from RunComfy can be of any length
        for target_id in (job.thread_id, job.channel_id):
            target = self.ctx.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            try:
                async with deadline(c.POST_TIMEOUT):
                    await target.send(content=content, allowed_mentions=c.requester_only(job))
                return
            except discord.HTTPException as exc:
                log.info("Job %s: could not post in %s: %s", job.id, target_id, exc)
                if not (exc.code in c.THREAD_CLOSED or exc.code == 10003):
                    return
            except c.AMBIGUOUS as exc:
                log.info("Job %s: posting in %s went unanswered: %r", job.id, target_id, exc)
                return
