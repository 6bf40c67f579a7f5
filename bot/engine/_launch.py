"""Starting a job: post its status message (hosting the image), submit it to RunComfy once, record
the submission (retrying a refused write, never the submit), open its thread. Also the sweep that
ends jobs stuck before RunComfy confirmed them, and orphan recovery after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import discord

from bot import metrics, ui
from bot.engine import _common as c
from bot.engine._endings import Endings
from bot.engine._leases import DIED_MID_SUBMIT, Leases
from bot.engine._presenter import Presenter
from bot.engine._refusals import status_refusal, submit_failure
from bot.engine._scheduler import Scheduler, Tasks
from bot.i18n import Msg, tr
from bot.logs import bind
from bot.media import NormalizedImage
from bot.media.buffers import UploadBody
from bot.runcomfy import GenerationParams, RunComfyError
from storage.db import StorageError
from storage.jobs import Job
from storage.lifecycle import JobEvent, JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaunchResult:
    ok: bool
    message: str  # what to tell the requester (ephemeral); a bot.i18n.Msg, rendered in their language
    job: Job | None = None


class Launcher:
    def __init__(
        self,
        ctx: c.Context,
        tasks: Tasks,
        presenter: Presenter,
        endings: Endings,
        scheduler: Scheduler,
        leases: Leases,
    ) -> None:
        self.ctx = ctx
        self.leases = leases
        self.tasks = tasks
        self.presenter = presenter
        self.endings = endings
        self.scheduler = scheduler
        self.accepting = True  # False once shutting down: new commands are turned away, uncharged
        self.launches: set[asyncio.Task[Any]] = set()
        self._flushing: set[int] = set()  # unrecorded submissions being written right now

    async def resume(self) -> int:
        """At start-up: end jobs whose submit was never confirmed (refunded, never resubmitted); claim
        and schedule every other unfinished job nobody else holds. Returns how many were resumed."""
        if self.ctx.jobs.db.dialect == "sqlite":
            # One process per SQLite file: every lease and every pending job is from an earlier start
            # of this bot, so everything resumes at once, as before leases existed.
            await self.ctx.jobs.forget_leases()
            dead = [job for job in await self.ctx.jobs.unfinished() if job.state is JobState.PENDING]
        else:
            # Shared database: a pending job may be mid-submit in a live process. Only those whose
            # process is gone (lease expired) end now; unleased ones are left to the pending sweep.
            dead = await self.ctx.jobs.expired_pending(time.time())
        for job in dead:
            # The process stopped between reserving credits and RunComfy confirming the submit.
            # Re-sending could create a second paid job, so the job ends here, refunded.
            if job.status_message_id is None:
                await self.recover_status(job)  # it may have died right after posting it
            await self.endings.fail(job, DIED_MID_SUBMIT)
        return len(await self.leases.claim())

    async def flush_all(self) -> None:
        """At shutdown: a last attempt at every unrecorded submission."""
        for job_id in list(self.ctx.unrecorded):
            # Last chance: a restart would otherwise refund a job RunComfy is running.
            if not await self.flush_record(job_id):
                log.error(
                    "Job %s: stopping with RunComfy request %s still unrecorded; the next start will "
                    "refund the job although RunComfy may deliver it -- reconcile it by hand",
                    job_id,
                    self.ctx.unrecorded[job_id]["request_id"],
                )

    async def sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(c.PENDING_SWEEP_INTERVAL)
            try:
                await self.sweep_pending()
            except StorageError as exc:
                log.warning("Pending-job sweep failed: %s", exc)
            except Exception:
                log.exception("Pending-job sweep failed")

    async def sweep_pending(self) -> int:
        """End jobs stuck in `pending` while running (a crashed task, a submit whose refund could not
        be written, another process that died mid-submit): refund them and tell the requester. Never
        resubmits. Submissions RunComfy accepted but the database refused are retried first, never
        ended. Returns how many jobs were ended."""
        for job_id in list(self.ctx.unrecorded):
            await self.flush_record(job_id)
        # Older than any submit can take: one RunComfy request plus a generous grace.
        cutoff = time.time() - (self.ctx.settings.http_timeout + c.PENDING_GRACE)
        ended = 0
        for job in await self.ctx.jobs.stale_pending(cutoff):
            if job.id in self.ctx.submitting or job.id in self.ctx.unrecorded or job.request_id is not None:
                continue
            if self.leases.submitting_elsewhere(job):
                continue
            log.warning(
                "Job %s: still pending after %.0f s; ending it with a refund",
                job.id,
                time.time() - job.updated_at,
            )
            if not await self.endings.fail(job, NEVER_CONFIRMED):
                continue
            ended += 1
            if job.thread_id is None and job.status_message_id is not None:
                # No thread to post in (it is opened after the submit): the requester hears it here.
                await self.ctx.send_quietly(
                    job,
                    job.channel_id,
                    tr(
                        job.locale,
                        "<@{user}> sorry, job #{id} could not be confirmed with RunComfy, so it was not "
                        "started. Your credits were refunded — please run /animate again.",
                        user=job.user_id,
                        id=job.id,
                    ),
                )
        return ended

    async def launch(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable, *, make_thread: bool = True
    ) -> LaunchResult:
        """Post the status message (hosting the image), submit to RunComfy, open the thread.

        The job row already exists with its credits reserved; every failure path here refunds them.
        """
        bind(job_id=job.id, guild_id=job.guild_id)  # log fields for the rest of this task
        self.ctx.submitting.add(job.id)  # not the pending sweep's business while we are on it
        try:
            failure = await self.post_status(job, image, channel)
            if failure is not None:
                await self.endings.fail(job, failure.message, present=job.status_message_id is not None)
                return failure
            return await self.submit(job, make_thread=make_thread)
        finally:
            self.ctx.submitting.discard(job.id)

    async def post_status(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> LaunchResult | None:
        """Post the status message with the normalised image attached; its CDN URL becomes `img_url`.

        Returns None on success (the job's status_message_id and image_url are then set), else why not.
        """
        message: discord.Message | None = None
        # The expected finish from the start: the post is the only look many jobs show before
        # "Generating" (a short queue is not shown, see Presenter.present).
        embed = ui.status_embed(job, eta=await self._expected(job))
        if job.status_has_image and not job.spoiler:
            # The image attached to this very post, shown from the start (later edits name it by the
            # URL Discord gives it, which ends in the same file name). An embed image cannot be a
            # spoiler, so a spoilered job's image stays only the blurred attachment.
            embed.set_thumbnail(url=f"attachment://{image.filename}")
        for attempt in (1, 2):
            view = ui.status_view(job) or discord.ui.View(timeout=None)
            body = UploadBody(image.data)
            try:
                message = await c.send(
                    channel,
                    nonce=c.nonce("s", job),
                    size=len(image.data),
                    embed=embed,
                    # A spoilered job's image is blurred (and not shown in the embed: ui.status_embed).
                    file=discord.File(body, filename=ui.spoiler_name(image.filename, job.spoiler)),
                    allowed_mentions=ui.NO_MENTIONS,
                    view=view,
                )
                break
            except c.AMBIGUOUS as exc:
                # Discord may have stored it anyway: look for it before posting again (the repeat
                # carries the same nonce, so Discord itself would return the first one for a while).
                log.warning("Job %s: status message unconfirmed (%r); looking for it", job.id, exc)
                with contextlib.suppress(c.Unverifiable):
                    message = await self.ctx.find_status(job, job.channel_id)
                if message is not None:
                    break
                if attempt == 2:
                    return LaunchResult(
                        False,
                        Msg(
                            "Discord didn't confirm my status message (it may be having trouble). "
                            "Nothing was charged — please try again in a minute."
                        ),
                    )
            except discord.HTTPException as exc:
                log.warning("Job %s: could not post the status message: %s", job.id, exc)
                return LaunchResult(False, status_refusal(exc, channel, job.locale))
            finally:
                body.release()  # the upload is over: its bytes need not wait for the collector
        assert message is not None
        img_url = message.attachments[0].url if message.attachments else None
        # The same write makes this process the job's holder: if it dies mid-submit, another one
        # refunds the job once the lease expires (see _leases).
        await self.ctx.jobs.update(
            job.id, status_message_id=message.id, image_url=img_url, **self.leases.lease_columns()
        )
        job.status_message_id, job.image_url = message.id, img_url
        if img_url is None:
            return LaunchResult(False, Msg("Discord did not keep the image I uploaded. Please try again."))
        self.presenter.posted(job, message.id, embed, ui.status_view(job))
        return None

    async def _expected(self, job: Job) -> float | None:
        """When a job submitted now should be done, from recent jobs like it (as its ETA will say)."""
        try:
            took = await self.presenter.durations(job)
        except StorageError as exc:
            log.info("Job %s: no ETA for its status message: %s", job.id, exc)
            return None
        return time.time() + statistics.median(took) if took else None

    async def recover_status(self, job: Job) -> bool | None:
        """A crash between posting the status message and storing its id: find it, so it shows the
        job's end instead of "Submitting…" with a Cancel button nobody can use. True: found and
        stored; False: not there; None: Discord could not be read, or (an approval request) another
        process stored it first -- it alone carries on with it."""
        try:
            message = await self.ctx.find_status(job, job.channel_id)
        except c.Unverifiable as exc:
            log.warning("Job %s: could not look for its status message: %s", job.id, exc)
            return None
        if message is None:
            return False
        img_url = message.attachments[0].url if message.attachments else None
        if job.state == JobState.AWAITING_APPROVAL:
            if not await self.ctx.jobs.store_found_request(job.id, message.id, img_url):
                log.info("Job %s: another process recovered its approval request first", job.id)
                return None
        else:
            await self.ctx.jobs.update(job.id, status_message_id=message.id, image_url=img_url)
        job.status_message_id, job.image_url = message.id, img_url
        log.info("Job %s: found its status message %s posted before a restart", job.id, message.id)
        return True

    async def submit(self, job: Job, *, make_thread: bool = True) -> LaunchResult:
        """Submit a job whose status message is posted and whose credits are reserved (state pending).

        Once RunComfy accepted it, the job is polled whatever else fails here (thread, status edit,
        even the database refusing to record it: see `_record_submission`).
        """
        assert job.image_url is not None and job.status_message_id is not None
        bind(job_id=job.id, guild_id=job.guild_id)
        self.ctx.submitting.add(job.id)
        try:
            return await self._submit(job, make_thread=make_thread)
        finally:
            self.ctx.submitting.discard(job.id)

    async def _submit(self, job: Job, *, make_thread: bool) -> LaunchResult:
        assert job.image_url is not None
        if not self.accepting:
            await self.endings.fail(job, _RESTARTING)
            return LaunchResult(
                False, Msg("The bot is restarting — please try again in a minute. Nothing was charged.")
            )
        task = asyncio.current_task()
        if task is not None:  # shutdown waits for submits in flight (see stop)
            self.launches.add(task)
            task.add_done_callback(self.launches.discard)
        if time.time() - job.created_at > c.IMAGE_URL_MAX_AGE:
            # A request that waited for approval: Discord's signed attachment URL may have expired.
            await self._refresh_image_url(job)
        params = GenerationParams.from_spec(job.spec, job.image_url)
        try:
            submission = await self.ctx.runcomfy.submit(params)
        except RunComfyError as exc:
            metrics.count_submit(exc)
            reason, advice = submit_failure(exc)
            log.warning("Job %s: submit failed: %s", job.id, exc)
            await self.endings.fail(job, reason)
            return LaunchResult(False, Msg("{advice} You were not charged.", advice=advice))
        metrics.count_submit(None)
        bind(request_id=submission.request_id)

        log.info("Job %s submitted as %s", job.id, submission.request_id)
        if await self._record_submission(job, submission.request_id):
            self.scheduler.schedule(job.id, self.ctx.settings.poll_first_delay)

        thread_id: int | None = None
        fresh = job  # as just written (or kept in memory until written): no read after the write
        try:
            if make_thread:
                thread_id = await self._open_thread(job)
            self.ctx.emit(fresh, JobEvent.SUBMITTED)
            # Fresh from its post ("Submitting…"), a routine edit, not a forced one: the requester's
            # answer says it is on its way, and the polls show the queue (at most once per
            # status_edit_interval, see Presenter.present) or the start of generating. A message
            # showing anything else (Approve/Reject buttons, or unknown after a restart) changes now.
            await self.presenter.present(fresh, force=not self.presenter.shows(fresh, JobState.PENDING))
        except Exception:
            # RunComfy has the job and polling is scheduled: a Discord or disk hiccup here must not
            # make the requester think it failed.
            log.exception("Job %s: follow-up after submit failed; the job runs on", job.id)
        if thread_id:
            text = Msg("Your video is on its way — follow it in <#{thread}>.", thread=thread_id)
        else:
            text = Msg("Your video is on its way — follow it in this channel.")
        return LaunchResult(True, text, fresh)

    async def _record_submission(self, job: Job, request_id: str) -> bool:
        """Record that RunComfy accepted the job (pending -> queued). Returns whether it is recorded.

        RunComfy has a paid job now, whatever the database says. If the write fails (disk full,
        read-only, locked), the request id is kept in memory and the write retried in the background;
        polling starts the moment it lands (every poll result is itself a compare-and-set on this
        row, so polling before it exists could record nothing). RunComfy keeps the result meanwhile.
        """
        changes: dict[str, Any] = {
            "request_id": request_id,
            "submitted_at": time.time(),
            **self.leases.lease_columns(),  # polled by this process: held in the same write
        }
        # The job as this process knows it from now on, recorded yet or not.
        job.state, job.request_id, job.submitted_at = JobState.QUEUED, request_id, changes["submitted_at"]
        job.lease_owner, job.lease_expires_at = changes["lease_owner"], changes["lease_expires_at"]
        job.updated_at = time.time()
        try:
            moved = await self.ctx.jobs.transition(job.id, JobState.QUEUED, **changes)
        except StorageError as exc:
            log.warning(
                "Job %s: RunComfy accepted it as %s but the database refused to record it (%s); retrying",
                job.id,
                request_id,
                exc,
            )
            self.ctx.unrecorded[job.id] = changes
            self.tasks.spawn(self._record_later(job.id), f"record-{job.id}")
            return False
        if not moved:  # pragma: no cover - only the pending sweep moves a pending job, and not ours
            log.error(
                "Job %s changed state during submit; RunComfy request %s is orphaned", job.id, request_id
            )
        return True

    async def _record_later(self, job_id: int) -> None:
        """Retry an unrecorded submission with capped exponential backoff and jitter; after
        c.RECORD_RETRY_WINDOW, tell the operator and leave further retries to the pending sweep."""
        started = time.monotonic()
        delay = self.ctx.settings.retry_backoff_base
        while job_id in self.ctx.unrecorded:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if await self.flush_record(job_id):
                return
            if time.monotonic() - started >= c.RECORD_RETRY_WINDOW:
                log.error(
                    "Job %s: RunComfy accepted it as request %s, but the database has refused to record "
                    "that for %.0f s. Still retrying once a minute; if the bot stops first, reconcile "
                    "this request by hand.",
                    job_id,
                    self.ctx.unrecorded[job_id]["request_id"],
                    time.monotonic() - started,
                )
                return
            delay = min(self.ctx.settings.retry_backoff_cap, delay * 2)

    async def flush_record(self, job_id: int) -> bool:
        """One attempt at writing an unrecorded submission; True once it is recorded (or moot)."""
        changes = self.ctx.unrecorded.get(job_id)
        if changes is None:
            return True
        if job_id in self._flushing:
            return False  # the attempt already under way decides
        self._flushing.add(job_id)
        try:
            moved = await self.ctx.jobs.transition(job_id, JobState.QUEUED, **changes)
        except StorageError as exc:
            log.info("Job %s: recording the submission failed again: %s", job_id, exc)
            return False
        finally:
            self._flushing.discard(job_id)
        del self.ctx.unrecorded[job_id]
        if not moved:  # pragma: no cover - nothing else ends a job kept here
            log.error("Job %s left pending before request %s was recorded", job_id, changes["request_id"])
            return True
        log.info("Job %s: recorded RunComfy request %s after all", job_id, changes["request_id"])
        self.scheduler.schedule(job_id, 0.0)
        await self.presenter.refresh(job_id, force=True)
        return True

    async def _open_thread(self, job: Job) -> int | None:
        try:
            thread = await self.ctx.status_message(job).create_thread(
                name=ui.thread_name(job.prompt, job.locale), auto_archive_duration=1440
            )
        except discord.HTTPException as exc:
            # Without a thread the video goes to the channel itself; the job still runs.
            log.warning("Job %s: could not create a thread: %s", job.id, exc)
            return None
        job.thread_id = thread.id
        pending = self.ctx.unrecorded.get(job.id)
        if pending is not None:
            pending["thread_id"] = thread.id  # written together with the submission
            return thread.id
        await self.ctx.jobs.update(job.id, thread_id=thread.id)
        return thread.id

    async def hosted_image(self, job: Job) -> discord.Attachment | None:
        """The normalised image on the job's status message, with a freshly signed URL (Discord's
        attachment URLs expire); None if the message or the image is gone."""
        if job.status_message_id is None or not job.status_has_image:
            return None
        try:
            message = await self.ctx.status_message(job).fetch()
        except discord.HTTPException as exc:
            log.info("Job %s: status message unavailable: %s", job.id, exc)
            return None
        wanted = ui.image_filename(job)
        return next((a for a in message.attachments if a.filename == wanted), None)

    async def _refresh_image_url(self, job: Job) -> None:
        attachment = await self.hosted_image(job)
        if attachment is not None:
            job.image_url = attachment.url
            await self.ctx.jobs.update(job.id, image_url=attachment.url)


NEVER_CONFIRMED = Msg("RunComfy never confirmed this job, so it was not started. Please run /animate again.")
_RESTARTING = Msg("The bot was shutting down, so this job was not started.")
