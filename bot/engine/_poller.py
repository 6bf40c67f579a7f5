"""Asking RunComfy how each job is doing, and acting on the answer: the polling state machine.

One step per due job (see `Scheduler`): one read of the job's row, one RunComfy read, then at most
one transition. Unknown status words keep the job polled until the normal deadline; overdue jobs are
cancelled (queued) or watched more slowly (running) until the hard timeout gives up on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from bot import metrics
from bot.engine import _common as c
from bot.engine._delivery import Delivery
from bot.engine._endings import EXPIRED, Endings
from bot.engine._poll_schedule import DENSE_MIN_INTERVAL, EXTRA_CALLS, History, PollSchedule, finish_time
from bot.engine._presenter import Presenter
from bot.engine._scheduler import Scheduler, Tasks
from bot.i18n import Msg, tr
from bot.logs import bind
from bot.runcomfy import JobResult, JobStatus, Phase, RunComfyError, RunComfyNotFoundError
from storage.jobs import Job
from storage.lifecycle import JobEvent, JobState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
_T = TypeVar("_T")

UPLOADING_SHOWN_AFTER = 10.0  # seconds an upload may take before the status says "uploading" (one edit)
__all__ = ["DENSE_MIN_INTERVAL", "History", "PollSchedule", "Poller"]  # the schedule's home: _poll_schedule


class Poller:
    def __init__(
        self,
        ctx: c.Context,
        tasks: Tasks,
        presenter: Presenter,
        endings: Endings,
        delivery: Delivery,
        scheduler: Scheduler,
    ) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self.presenter = presenter
        self.endings = endings
        self.delivery = delivery
        self.scheduler = scheduler
        self._limit = asyncio.Semaphore(32)  # RunComfy calls in flight at once
        self._unknown_word: dict[int, str] = {}  # job id -> the unknown status word its last poll saw
        self._unknown_warned: set[int] = set()  # jobs whose unknown word was logged (once per job)
        self._polls: dict[int, int] = {}  # job id -> polls not yet written to its row
        self._unfinished_at: dict[int, float] = {}  # job id -> when a poll last saw it unfinished
        self._cold: set[int] = set()  # jobs a step saw without history: planned as if still without

    @property
    def schedule(self) -> PollSchedule:
        settings = self.ctx.settings
        return PollSchedule(
            first_delay=settings.poll_first_delay,
            max_interval=settings.poll_max_interval,
            backoff_ratio=settings.poll_backoff_ratio,
            status_interval=settings.status_edit_interval,
        )

    def poll_interval(self, job: Job) -> float:
        """The schedule without history: often while a job is young, then back off towards the cap.
        Overdue jobs are only checked now and then."""
        if job.overdue_notified_at is not None:
            return self.ctx.settings.overdue_poll_interval
        return self.schedule.baseline(time.time() - (job.submitted_at or job.created_at))

    async def history(self, job: Job) -> History | None:
        """Where comparable jobs finished lately (the ETA's data), if there are enough of them."""
        return History.of(await self.presenter.durations(job))

    async def next_delay(self, job: Job, history: History | None) -> float:
        """Poll where completion is likely: see `PollSchedule.delay`."""
        if job.overdue_notified_at is not None:
            return self.ctx.settings.overdue_poll_interval
        age = time.time() - (job.submitted_at or job.created_at)
        polls = job.poll_count + self._polls.get(job.id, 0)
        extra = 0 if job.id in self._cold else EXTRA_CALLS
        return self.schedule.delay(
            age, history, queued=job.state is JobState.QUEUED, polls=polls, extra=extra
        )

    async def step_guarded(self, job_id: int) -> None:
        bind(job_id=job_id)  # each step runs in its own task
        try:
            async with self._limit:
                await self.step(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Job %s: unexpected error while polling; retrying later", job_id)
            self.scheduler.schedule(job_id, self.ctx.settings.poll_max_interval)

    async def step(self, job_id: int) -> None:
        job = await self.ctx.jobs.get(job_id)
        if job is None or job.state.finished or job.state is JobState.PENDING:
            self._polls.pop(job_id, None)  # ended elsewhere (a Cancel click): nothing left to write
            self._unfinished_at.pop(job_id, None)
            self._cold.discard(job_id)
            return
        if job.lease_owner is not None and job.lease_owner != self.ctx.owner:
            return  # another process holds it now (see _leases): its steps are that process's
        bind(guild_id=job.guild_id, request_id=job.request_id)
        if job.state is JobState.DELIVERING:
            if time.time() - (job.finished_at or job.created_at) > c.DELIVERY_TIMEOUT:
                log.warning("Job %s: could not post the video for an hour; sending the link by DM", job.id)
                await self.delivery.undeliverable(job)
            else:
                await self.delivery.deliver(job)
            return
        assert job.request_id is not None
        age = time.time() - (job.submitted_at or job.created_at)
        if age > self.ctx.settings.job_hard_timeout:
            await self._give_up(job)
            return
        # After an unknown word the job is neither queued nor running as far as we know: the deadline
        # is decided by the next read (below), not by the queued/running overdue rules.
        overdue = (
            age > self.ctx.settings.job_timeout
            and job.overdue_notified_at is None
            and job.id not in self._unknown_word
        )
        if overdue and await self._overdue(job):
            return
        history = await self.history(job)
        if history is None:
            self._cold.add(job.id)
        if history is not None and job.state is JobState.RUNNING and job.id not in self._unknown_word:
            # Nothing left to show but the outcome: /result alone answers "still running" while
            # unfinished, and carries the video when done -- one call instead of /status + /result.
            # Without history, /status, as the schedule without history does.
            result = await self._read(job, self.ctx.runcomfy.result, "result fetch")
            if result is None:
                return
            self._count_poll(job, result.phase)
            if await self._on_result(job, result, None):
                return
        else:
            status = await self._read(job, self.ctx.runcomfy.status, "status check")
            if status is None:
                return
            self._count_poll(job, status.phase)
            if await self._on_status(job, status, age):
                return
        self.scheduler.schedule(job.id, await self.next_delay(job, history))

    def _count_poll(self, job: Job, phase: Phase) -> None:
        # Counted in memory; written with the job's next state change (no write per poll).
        self._polls[job.id] = self._polls.get(job.id, 0) + 1
        if phase in (Phase.QUEUED, Phase.RUNNING):
            self._unfinished_at[job.id] = time.time()
        metrics.count_poll(phase.value)

    def _poll_count(self, job: Job) -> dict[str, Any]:
        """The job's poll count, for the next write of its row (then forgotten here)."""
        n = self._polls.pop(job.id, 0)
        return {"poll_count": job.poll_count + n} if n else {}

    async def _flush_polls(self, job: Job) -> None:
        """Before an ending that writes no poll count itself (failure, cancel)."""
        self._unfinished_at.pop(job.id, None)
        self._cold.discard(job.id)
        n = self._polls.pop(job.id, 0)
        if n:
            await self.ctx.jobs.count_polls(job.id, n)

    async def _on_status(self, job: Job, status: JobStatus, age: float) -> bool:
        """Act on what /status said; True if the job needs no further poll from this step."""
        phase = status.phase
        if phase is not Phase.UNKNOWN:
            self._unknown_word.pop(job.id, None)
        if phase is Phase.QUEUED:
            # The position is shown, not stored: it changes with nearly every poll, and a restart
            # learns it again from the next one.
            await self.presenter.show_queue(job, status.queue_position)
        elif phase is Phase.RUNNING:
            if job.state is JobState.QUEUED:
                await self.mark_running(job)
        elif phase in (Phase.SUCCEEDED, Phase.FAILED):
            # /result decides: a failed run may say "completed" on /status, and it holds the reason.
            await self._collect(job, status)
            return True
        elif phase is Phase.CANCELLED:
            await self._flush_polls(job)
            await self.endings.cancelled(job, Msg("RunComfy cancelled the job."))
            return True
        elif await self._unknown(job, status.status, "status", age):
            return True
        return False

    async def _unknown(self, job: Job, word: str, endpoint: str, age: float) -> bool:
        """RunComfy said a word we don't know: keep polling (warning once per job), but only until the
        normal deadline -- never for JOB_HARD_TIMEOUT hours. Returns True if the job ended."""
        self._unknown_word[job.id] = word
        if job.id not in self._unknown_warned:
            self._unknown_warned.add(job.id)
            log.warning(
                "Job %s: RunComfy /%s reported an unknown status %r; still waiting", job.id, endpoint, word
            )
        if age <= self.ctx.settings.job_timeout:
            return False
        assert job.request_id is not None
        log.warning("Job %s: RunComfy still says %r after the deadline; giving up", job.id, word)
        try:  # if it is really still queued, this keeps it from being billed
            await self.ctx.runcomfy.cancel(job.request_id)
        except RunComfyError as exc:
            log.info("Job %s: cancel after an unknown status failed: %s", job.id, exc)
        minutes = int(self.ctx.settings.job_timeout // 60)
        await self._flush_polls(job)
        await self.endings.fail(
            job,
            Msg(
                "RunComfy reported a state the bot does not understand ({word}) for over {minutes} minutes.",
                word=_word(word),
                minutes=minutes,
            ),
        )
        self._forget_unknown(job.id)
        return True

    def _forget_unknown(self, job_id: int) -> None:
        self._unknown_word.pop(job_id, None)
        self._unknown_warned.discard(job_id)

    async def _overdue(self, job: Job) -> bool:
        """Past `job_timeout`: a queued job is cancelled (nobody waits 30 minutes for a queue); a
        running one is left to finish, the requester is told, and polling slows down until
        `job_hard_timeout`. Returns True if the job ended."""
        assert job.request_id is not None
        settings = self.ctx.settings
        minutes = int(settings.job_timeout // 60)
        if job.state is JobState.QUEUED:
            try:
                result = await self.ctx.runcomfy.cancel(job.request_id)
            except RunComfyError as exc:
                log.info("Job %s: cancel of an overdue queued job failed: %s", job.id, exc)
            else:
                if result.cancelled:
                    await self._flush_polls(job)
                    # If a user's Cancel won the race, the job has ended already: say nothing more.
                    await self.endings.cancelled(
                        job,
                        Msg("RunComfy did not start it within {minutes} minutes.", minutes=minutes),
                        notice=tr(
                            job.locale,
                            "<@{user}> RunComfy did not start this job within {minutes} minutes, so I "
                            "cancelled it. Your credits were refunded — please try again later.",
                            user=job.user_id,
                            minutes=minutes,
                        ),
                    )
                    return True
        await self.ctx.jobs.update(job.id, overdue_notified_at=time.time())
        hours = settings.job_hard_timeout / 3600
        await self.endings.notify_thread(
            job,
            tr(
                job.locale,
                "<@{user}> this is taking unusually long (over {minutes} minutes). I'll keep checking "
                "every few minutes for up to {hours:g} hours and post the video here if it arrives; if it "
                "never does, your credits will be refunded.",
                user=job.user_id,
                minutes=minutes,
                hours=hours,
            ),
        )
        log.warning("Job %s: overdue after %d minutes; slowing down polling", job.id, minutes)
        return False

    async def mark_running(self, job: Job) -> None:
        started = time.time()
        polls = self._poll_count(job)
        if await self.ctx.jobs.transition(
            job.id, JobState.RUNNING, started_at=started, queue_position=None, **polls
        ):
            job.state, job.started_at, job.queue_position = JobState.RUNNING, started, None
            job.updated_at = started
            job.poll_count = polls.get("poll_count", job.poll_count)
            self.ctx.emit(job, JobEvent.STARTED)
            await self.presenter.present(job, force=True)  # grey out Cancel promptly

    async def _read(self, job: Job, call: Callable[[str], Awaitable[_T]], what: str) -> _T | None:
        """One RunComfy read for a job. None if it failed: a job RunComfy forgot is failed and
        refunded; anything else (outage, rate limit, garbage) is retried at the next poll."""
        assert job.request_id is not None
        try:
            return await call(job.request_id)
        except RunComfyNotFoundError:
            self._forget_unknown(job.id)
            await self._flush_polls(job)
            await self.endings.fail(job, EXPIRED)
        except RunComfyError as exc:
            log.warning("Job %s: %s failed (%s); will retry", job.id, what, exc)
            self.scheduler.schedule(job.id, self.ctx.settings.poll_max_interval)
        return None

    async def _collect(self, job: Job, status: JobStatus) -> None:
        """/status says the job ended (succeeded or failed): /result decides how, and says why."""
        result = await self._read(job, self.ctx.runcomfy.result, "result fetch")
        if result is None:
            return
        if not await self._on_result(job, result, status):
            self.scheduler.schedule(job.id, await self.next_delay(job, await self.history(job)))

    async def _on_result(self, job: Job, result: JobResult, status: JobStatus | None) -> bool:
        """Act on what /result said (after /status, or polled alone); True if the job needs no
        further poll from this step."""
        phase = result.phase
        if phase is not Phase.UNKNOWN:
            self._unknown_word.pop(job.id, None)
        if phase is Phase.SUCCEEDED:
            self._forget_unknown(job.id)
            now = time.time()
            finished = self._finished_at(job, result, now)
            polls = self._poll_count(job)
            if await self.ctx.jobs.transition(
                job.id,
                JobState.DELIVERING,
                result_url=result.video_urls[0],
                finished_at=finished,
                queue_position=None,
                delivery_started_at=now,  # the first upload's mark, in the same write (_delivery)
                **polls,
            ):
                # The row as just written: no second read (the columns moved are all known here).
                job.state, job.result_url = JobState.DELIVERING, result.video_urls[0]
                job.finished_at, job.queue_position, job.updated_at = finished, None, now
                job.delivery_started_at = now
                self.ctx.reconciled.add(job.id)  # moved just now: no earlier upload to look for
                self.presenter.finished(job)  # its duration is history now (cold peers learn from it)
                job.poll_count = polls.get("poll_count", job.poll_count)
                # The video first; "uploading" is shown only if the upload takes a while (usually the
                # video is there before anyone could read it, and "Done" follows at once).
                self.tasks.spawn(
                    self.presenter.show_if_still(job.id, JobState.DELIVERING, UPLOADING_SHOWN_AFTER),
                    f"present-{job.id}",
                )
                await self.delivery.deliver(job)
            return True
        if phase is Phase.FAILED:
            self._forget_unknown(job.id)
            await self._flush_polls(job)
            if result.no_video:
                await self.endings.fail(job, Msg("RunComfy finished but returned no video."))
            else:
                await self.endings.fail(job, _generation_failed(result.error))
            return True
        if phase is Phase.CANCELLED:
            self._forget_unknown(job.id)
            await self._flush_polls(job)
            await self.endings.cancelled(job, Msg("RunComfy cancelled the job."))
            return True
        if status is not None and status.phase is Phase.FAILED:
            # /status says failed and /result has no verdict (yet): failure on either endpoint counts.
            self._forget_unknown(job.id)
            await self._flush_polls(job)
            await self.endings.fail(job, _generation_failed(status.error))
            return True
        if phase is Phase.UNKNOWN:
            age = time.time() - (job.submitted_at or job.created_at)
            if await self._unknown(job, result.status, "result", age):
                return True
        # Not final yet (/status said completed but /result lags, or /result polled alone): keep polling.
        return False

    def _finished_at(self, job: Job, result: JobResult, now: float) -> float:
        seen = self._unfinished_at.pop(job.id, None)
        self._cold.discard(job.id)
        return finish_time(result.finished_at, seen, job.submitted_at or job.created_at, now)

    async def _give_up(self, job: Job) -> None:
        assert job.request_id is not None
        hours = self.ctx.settings.job_hard_timeout / 3600
        log.warning("Job %s: no result after %g hours; giving up", job.id, hours)
        try:
            await self.ctx.runcomfy.cancel(job.request_id)
        except RunComfyError as exc:
            log.info("Job %s: cancel after timeout failed: %s", job.id, exc)
        await self._flush_polls(job)
        await self.endings.fail(job, Msg("RunComfy did not finish within {hours:g} hours.", hours=hours))


def _generation_failed(error: str | None) -> Msg:
    return Msg("RunComfy could not generate the video: {reason}", reason=error or Msg("no reason given"))


def _word(word: str) -> str:
    """A remote status word, made safe to show: short, and unable to break out of the code span."""
    cleaned = "".join(ch for ch in word if ch.isprintable() and ch not in "`<>@")[:40]
    return f"`{cleaned}`" if cleaned else "—"
