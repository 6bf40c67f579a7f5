"""The job engine: submits jobs, polls every in-flight job from one scheduler, delivers videos.

Every state change goes through SQLite first (compare-and-set on the job's state), so a restart picks
up exactly where the last process stopped and two racing actors (a poll and a cancel click) cannot
both win. Nothing here ever re-sends a submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import io
import itertools
import logging
import re
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import discord

from bot import ui
from bot.i18n import Msg, render, tr
from bot.media import MediaError, NormalizedImage, download_capped, fit_video
from bot.runcomfy import (
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    RunComfyAuthError,
    RunComfyBalanceError,
    RunComfyError,
    RunComfyModelError,
    RunComfyNotFoundError,
    RunComfyValidationError,
    Submission,
    SubmitOutcomeUnknown,
)
from bot.settings import Settings
from storage.jobs import Job, JobRepository, JobState
from storage.quota import QuotaRepository
from storage.stats import recent_durations

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Output videos above this are not downloaded at all (a 5 s clip is a few MB; this is a safety cap).
MAX_VIDEO_DOWNLOAD = 200 * 1024 * 1024
ACTIVE = (JobState.QUEUED, JobState.RUNNING)
# Older jobs get their image URL re-signed before submit (Discord's attachment URLs expire).
IMAGE_URL_MAX_AGE = 3600.0
# A finished video that could not be posted for this long is sent by DM with a refund instead.
DELIVERY_TIMEOUT = 3600.0
ETA_MIN_SAMPLES = 3  # fewer finished jobs than this say too little to promise a time


class VideoBackend(Protocol):
    """What the engine needs from a generator: RunComfyClient, or the local PreviewBackend."""

    async def submit(self, params: GenerationParams) -> Submission: ...
    async def status(self, request_id: str) -> JobStatus: ...
    async def result(self, request_id: str) -> JobResult: ...
    async def cancel(self, request_id: str) -> CancelResult: ...


@dataclass(frozen=True, slots=True)
class LaunchResult:
    ok: bool
    message: str  # what to tell the requester (ephemeral); a bot.i18n.Msg, rendered in their language
    job: Job | None = None


class JobEngine:
    def __init__(
        self,
        *,
        client: discord.Client,
        settings: Settings,
        jobs: JobRepository,
        quota: QuotaRepository,
        runcomfy: VideoBackend,
        session: aiohttp.ClientSession,
    ) -> None:
        self.client = client
        self.settings = settings
        self.jobs = jobs
        self.quota = quota
        self.runcomfy = runcomfy
        self.session = session
        self._heap: list[tuple[float, int, int]] = []
        self._due: dict[int, float] = {}
        self._seq = itertools.count()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._last_edit: dict[int, float] = {}
        self._edit_pending: set[int] = set()
        self._limit = asyncio.Semaphore(32)  # RunComfy calls in flight at once
        self._encoders = asyncio.Semaphore(2)  # video re-encodes at once (CPU and memory heavy)
        self._closing = False
        self.accepting = True  # False once shutting down: new commands are turned away, uncharged
        self._eta_cache: dict[tuple[int, str], tuple[float, float | None]] = {}
        self._channel_next: dict[int, float] = {}  # earliest next routine edit per channel
        self._edit_locks: dict[int, asyncio.Lock] = {}
        self._reconciled: set[int] = set()  # jobs whose earlier delivery attempt was checked
        self._launches: set[asyncio.Task[Any]] = set()
        # Set when the backend serves outputs itself (the preview backend): url, max_bytes -> bytes.
        self._fetch_output: Callable[[str, int], Awaitable[bytes]] | None = getattr(
            runcomfy, "fetch_output", None
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume every unfinished job from SQLite; never resubmit anything."""
        resumed = 0
        for job in await self.jobs.unfinished():
            if job.state is JobState.PENDING:
                # The process stopped between reserving credits and RunComfy confirming the submit.
                # Re-sending could create a second paid job, so the job ends here, refunded.
                await self._fail(
                    job,
                    Msg(
                        "The bot restarted before RunComfy confirmed this job, so it was not started. "
                        "Please run /animate again."
                    ),
                )
                continue
            self.schedule(job.id, 0.0)
            resumed += 1
        if resumed:
            log.info("Resumed %d unfinished job(s)", resumed)
        self._runner = asyncio.create_task(self._run(), name="job-engine")

    async def stop(self) -> None:
        """Stop polling; unfinished jobs stay in SQLite and resume on the next start.

        Launches in progress get a short grace period first: a submit cut off mid-flight has an
        unknown outcome and would have to be refunded on restart.
        """
        self.accepting = False
        launches = [t for t in self._launches if not t.done()]
        if launches:
            log.info("Waiting up to %.0f s for %d submission(s)", self.settings.shutdown_grace, len(launches))
            await asyncio.wait(launches, timeout=self.settings.shutdown_grace)
        self._closing = True
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def schedule(self, job_id: int, delay: float) -> None:
        due = time.monotonic() + max(0.0, delay)
        current = self._due.get(job_id)
        if current is not None and current <= due:
            return
        self._due[job_id] = due
        heapq.heappush(self._heap, (due, next(self._seq), job_id))
        self._wake.set()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Job task %s crashed", task.get_name(), exc_info=task.exception())

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, _, job_id = heapq.heappop(self._heap)
                if self._due.get(job_id) != due:
                    continue  # superseded by an earlier schedule
                del self._due[job_id]
                if job_id in self._busy:
                    continue  # the running step reschedules it
                self._busy.add(job_id)
                self._spawn(self._step_guarded(job_id), f"job-{job_id}")
            timeout = self._heap[0][0] - now if self._heap else None
            self._wake.clear()
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives just as the event
            # is set (it returns the result instead), and stop() would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def poll_interval(self, job: Job) -> float:
        """Poll often while a job is young, then back off towards the cap: cheap for long jobs,
        prompt delivery for short ones. Overdue jobs are only checked now and then."""
        if job.overdue_notified_at is not None:
            return self.settings.overdue_poll_interval
        elapsed = time.time() - (job.submitted_at or job.created_at)
        wanted = elapsed * self.settings.poll_backoff_ratio
        return min(self.settings.poll_max_interval, max(self.settings.poll_first_delay, wanted))

    # ------------------------------------------------------------------ launching

    async def launch(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable, *, make_thread: bool = True
    ) -> LaunchResult:
        """Post the status message (hosting the image), submit to RunComfy, open the thread.

        The job row already exists with its credits reserved; every failure path here refunds them.
        """
        failure = await self.post_status(job, image, channel)
        if failure is not None:
            await self._fail(job, failure.message, present=job.status_message_id is not None)
            return failure
        return await self.submit(job, make_thread=make_thread)

    async def post_status(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> LaunchResult | None:
        """Post the status message with the normalised image attached; its CDN URL becomes `img_url`.

        Returns None on success (the job's status_message_id and image_url are then set), else why not.
        """
        view = ui.status_view(job) or discord.ui.View(timeout=None)
        try:
            message = await channel.send(
                embed=ui.status_embed(job),
                file=discord.File(io.BytesIO(image.data), filename=image.filename),
                allowed_mentions=ui.NO_MENTIONS,
                view=view,
            )
        except discord.HTTPException as exc:
            log.warning("Job %s: could not post the status message: %s", job.id, exc)
            return LaunchResult(
                False,
                Msg(
                    "I couldn't post in this channel (I need Send Messages, Embed Links and Attach Files "
                    "here). Nothing was charged."
                ),
            )
        img_url = message.attachments[0].url if message.attachments else None
        await self.jobs.update(job.id, status_message_id=message.id, image_url=img_url)
        job.status_message_id, job.image_url = message.id, img_url
        if img_url is None:
            return LaunchResult(False, Msg("Discord did not keep the image I uploaded. Please try again."))
        return None

    async def submit(self, job: Job, *, make_thread: bool = True) -> LaunchResult:
        """Submit a job whose status message is posted and whose credits are reserved (state pending).

        Once RunComfy accepted it, the job is polled whatever else fails here (thread, status edit).
        """
        assert job.image_url is not None and job.status_message_id is not None
        if not self.accepting:
            await self._fail(job, _RESTARTING)
            return LaunchResult(
                False, Msg("The bot is restarting — please try again in a minute. Nothing was charged.")
            )
        task = asyncio.current_task()
        if task is not None:  # shutdown waits for submits in flight (see stop)
            self._launches.add(task)
            task.add_done_callback(self._launches.discard)
        if time.time() - job.created_at > IMAGE_URL_MAX_AGE:
            # A request that waited for approval: Discord's signed attachment URL may have expired.
            await self._refresh_image_url(job)
        params = GenerationParams(
            prompt=job.prompt,
            img_url=job.image_url,
            negative_prompt=job.negative_prompt,
            resolution=job.resolution,
            template=job.template,
            seed=job.seed,
            prompt_extend=job.prompt_extend,
        )
        try:
            submission = await self.runcomfy.submit(params)
        except RunComfyError as exc:
            reason, advice = _submit_failure(exc)
            log.warning("Job %s: submit failed: %s", job.id, exc)
            await self._fail(job, reason)
            return LaunchResult(False, Msg("{advice} You were not charged.", advice=advice))

        now = time.time()
        moved = await self.jobs.update(
            job.id,
            expect=(JobState.PENDING,),
            request_id=submission.request_id,
            state=JobState.QUEUED,
            submitted_at=now,
        )
        if not moved:  # pragma: no cover - nothing else moves a pending job
            log.error("Job %s changed state during submit", job.id)
        log.info("Job %s submitted as %s", job.id, submission.request_id)
        self.schedule(job.id, self.settings.poll_first_delay)

        thread_id: int | None = None
        fresh = job
        try:
            if make_thread:
                thread_id = await self._open_thread(job)
            fresh = await self.jobs.get(job.id) or job
            self._emit(fresh, "submitted")
            await self.present(fresh, force=True)
        except Exception:
            # RunComfy has the job and polling is scheduled: a Discord or disk hiccup here must not
            # make the requester think it failed.
            log.exception("Job %s: follow-up after submit failed; the job runs on", job.id)
        if thread_id:
            text = Msg("Your video is on its way — follow it in <#{thread}>.", thread=thread_id)
        else:
            text = Msg("Your video is on its way — follow it in this channel.")
        return LaunchResult(True, text, fresh)

    async def _open_thread(self, job: Job) -> int | None:
        try:
            thread = await self._status_message(job).create_thread(
                name=ui.thread_name(job.prompt, job.locale), auto_archive_duration=1440
            )
        except discord.HTTPException as exc:
            # Without a thread the video goes to the channel itself; the job still runs.
            log.warning("Job %s: could not create a thread: %s", job.id, exc)
            return None
        await self.jobs.update(job.id, thread_id=thread.id)
        return thread.id

    async def hosted_image(self, job: Job) -> discord.Attachment | None:
        """The normalised image on the job's status message, with a freshly signed URL (Discord's
        attachment URLs expire); None if the message or the image is gone."""
        if job.status_message_id is None or not job.status_has_image:
            return None
        try:
            message = await self._status_message(job).fetch()
        except discord.HTTPException as exc:
            log.info("Job %s: status message unavailable: %s", job.id, exc)
            return None
        wanted = ui.image_filename(job)
        return next((a for a in message.attachments if a.filename == wanted), None)

    async def _refresh_image_url(self, job: Job) -> None:
        attachment = await self.hosted_image(job)
        if attachment is not None:
            job.image_url = attachment.url
            await self.jobs.update(job.id, image_url=attachment.url)

    def _status_message(self, job: Job) -> discord.PartialMessage:
        assert job.status_message_id is not None
        channel_id = job.status_channel_id or job.channel_id
        channel = self.client.get_partial_messageable(channel_id, guild_id=job.guild_id)
        return channel.get_partial_message(job.status_message_id)

    def _emit(self, job: Job, event: str, actor_id: int | None = None) -> None:
        """Tell listening cogs (audit log, stats, notifications) about a job event: `on_job_event`."""
        self.client.dispatch("job_event", job, event, actor_id)

    # ------------------------------------------------------------------ polling

    async def _step_guarded(self, job_id: int) -> None:
        try:
            async with self._limit:
                await self._step(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Job %s: unexpected error while polling; retrying later", job_id)
            self.schedule(job_id, self.settings.poll_max_interval)
        finally:
            self._busy.discard(job_id)

    async def _step(self, job_id: int) -> None:
        job = await self.jobs.get(job_id)
        if job is None or job.state.finished or job.state is JobState.PENDING:
            return
        if job.state is JobState.DELIVERING:
            if time.time() - (job.finished_at or job.created_at) > DELIVERY_TIMEOUT:
                log.warning("Job %s: could not post the video for an hour; sending the link by DM", job.id)
                await self._undeliverable(job)
            else:
                await self._deliver(job)
            return
        assert job.request_id is not None
        age = time.time() - (job.submitted_at or job.created_at)
        if age > self.settings.job_hard_timeout:
            await self._give_up(job)
            return
        overdue = age > self.settings.job_timeout and job.overdue_notified_at is None
        if overdue and await self._overdue(job):
            return
        status = await self._read(job, self.runcomfy.status, "status check")
        if status is None:
            return
        await self.jobs.count_polls(job.id)

        if status.status == "in_queue":
            if job.state is not JobState.QUEUED or job.queue_position != status.queue_position:
                await self.jobs.update(job.id, expect=ACTIVE, queue_position=status.queue_position)
                await self._present_id(job.id)
        elif status.status == "in_progress":
            if job.state is JobState.QUEUED:
                await self._mark_running(job)
        elif status.status == "completed":
            await self._collect(job)
            return
        elif status.status == "cancelled":
            await self._cancelled(job, Msg("RunComfy cancelled the job."))
            return
        else:
            log.warning("Job %s: unknown status %r; still waiting", job.id, status.status)
        self.schedule(job.id, self.poll_interval(job))

    async def _overdue(self, job: Job) -> bool:
        """Past `job_timeout`: a queued job is cancelled (nobody waits 30 minutes for a queue); a
        running one is left to finish, the requester is told, and polling slows down until
        `job_hard_timeout`. Returns True if the job ended."""
        assert job.request_id is not None
        minutes = int(self.settings.job_timeout // 60)
        if job.state is JobState.QUEUED:
            try:
                result = await self.runcomfy.cancel(job.request_id)
            except RunComfyError as exc:
                log.info("Job %s: cancel of an overdue queued job failed: %s", job.id, exc)
            else:
                reason = Msg("RunComfy did not start it within {minutes} minutes.", minutes=minutes)
                if result.cancelled:
                    # If a user's Cancel won the race, the job has ended already: say nothing more.
                    if await self._cancelled(job, reason):
                        await self._notify_thread(
                            job,
                            tr(
                                job.locale,
                                "<@{user}> RunComfy did not start this job within {minutes} minutes, so I "
                                "cancelled it. Your credits were refunded — please try again later.",
                                user=job.user_id,
                                minutes=minutes,
                            ),
                        )
                    return True
        await self.jobs.update(job.id, overdue_notified_at=time.time())
        hours = self.settings.job_hard_timeout / 3600
        await self._notify_thread(
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

    async def _mark_running(self, job: Job) -> None:
        if await self.jobs.update(
            job.id,
            expect=(JobState.QUEUED,),
            state=JobState.RUNNING,
            started_at=time.time(),
            queue_position=None,
        ):
            self._emit(job, "started")
            await self._present_id(job.id, force=True)  # grey out Cancel promptly

    async def _read(self, job: Job, call: Callable[[str], Awaitable[_T]], what: str) -> _T | None:
        """One RunComfy read for a job. None if it failed: a job RunComfy forgot is failed and
        refunded; anything else (outage, rate limit, garbage) is retried at the next poll."""
        assert job.request_id is not None
        try:
            return await call(job.request_id)
        except RunComfyNotFoundError:
            await self._fail(job, _EXPIRED)
        except RunComfyError as exc:
            log.warning("Job %s: %s failed (%s); will retry", job.id, what, exc)
            self.schedule(job.id, self.settings.poll_max_interval)
        return None

    async def _collect(self, job: Job) -> None:
        result = await self._read(job, self.runcomfy.result, "result fetch")
        if result is None:
            return
        if result.status == "succeeded":
            if not result.video_urls:
                await self._fail(job, Msg("RunComfy finished but returned no video."))
                return
            if await self.jobs.update(
                job.id,
                expect=ACTIVE,
                state=JobState.DELIVERING,
                result_url=result.video_urls[0],
                finished_at=time.time(),
                queue_position=None,
            ):
                fresh = await self.jobs.get(job.id)
                assert fresh is not None
                # The video first; the "uploading" edit must not hold it up behind a rate limit.
                self._spawn(self.present(fresh, force=True), f"present-{job.id}")
                await self._deliver(fresh)
        elif result.status == "failed":
            await self._fail(
                job,
                Msg(
                    "RunComfy could not generate the video: {reason}",
                    reason=result.error or Msg("no reason given"),
                ),
            )
        elif result.status == "cancelled":
            await self._cancelled(job, Msg("RunComfy cancelled the job."))
        else:
            # /status said completed but /result is not final yet: keep polling.
            self.schedule(job.id, self.poll_interval(job))

    async def _give_up(self, job: Job) -> None:
        assert job.request_id is not None
        hours = self.settings.job_hard_timeout / 3600
        log.warning("Job %s: no result after %g hours; giving up", job.id, hours)
        try:
            await self.runcomfy.cancel(job.request_id)
        except RunComfyError as exc:
            log.info("Job %s: cancel after timeout failed: %s", job.id, exc)
        await self._fail(job, Msg("RunComfy did not finish within {hours:g} hours.", hours=hours))

    # ------------------------------------------------------------------ delivery

    async def _deliver(self, job: Job) -> None:
        """Post the finished video exactly once, even across crashes.

        `delivery_started_at` is written before the upload; if a previous process got that far, the
        thread is searched for the video first (a crash can land between Discord posting it and us
        recording that), and only posted if it is not there.
        """
        if job.delivery_started_at is not None and job.id not in self._reconciled:
            found = await self._find_delivery(job)
            self._reconciled.add(job.id)
            if found is not None:
                log.info("Job %s: found the video posted before a restart", job.id)
                await self._delivered(job, *found)
                return
        self._reconciled.add(job.id)
        content, video = await self._prepare_delivery(job)
        await self.jobs.update(job.id, delivery_started_at=time.time())
        await self._post_delivery(job, content, video)

    async def _prepare_delivery(self, job: Job) -> tuple[str, bytes | None]:
        """The message and the video bytes to upload (None: post RunComfy's link instead)."""
        assert job.result_url is not None
        link = f"<{job.result_url}>"
        marker = _delivery_marker(job.id)
        loc, user = job.locale, job.user_id
        if self._fetch_output is not None and job.result_url.startswith("preview://"):
            fetch = self._fetch_output(job.result_url, MAX_VIDEO_DOWNLOAD)
        else:
            fetch = download_capped(self.session, job.result_url, max_bytes=MAX_VIDEO_DOWNLOAD, timeout=120)
        try:
            data = await fetch
        except MediaError as exc:
            log.warning("Job %s: video download failed: %s", job.id, exc)
            return (
                tr(
                    loc,
                    "<@{user}> your video is ready, but I couldn't download it to post here. "
                    "Here is RunComfy's link (it may expire soon, so save it): {link} · {marker}",
                    user=user,
                    link=link,
                    marker=marker,
                ),
                None,
            )
        if ui.is_preview():
            ready = tr(
                loc,
                "<@{user}> your preview is ready (a local zoom/pan, not an AI video)! · {marker}",
                user=user,
                marker=marker,
            )
        else:
            ready = tr(loc, "<@{user}> your video is ready! 🎬 · {marker}", user=user, marker=marker)
        if len(data) <= job.upload_limit:
            return ready, data
        try:
            async with self._encoders:  # each re-encode holds a whole video in memory
                fitted = await asyncio.to_thread(fit_video, data, job.upload_limit)
        except MediaError as exc:
            log.warning("Job %s: could not fit the video into %d bytes: %s", job.id, job.upload_limit, exc)
            return (
                tr(
                    loc,
                    "<@{user}> your video is ready but too large to upload here. "
                    "Download it from RunComfy (the link may expire soon): {link} · {marker}",
                    user=user,
                    link=link,
                    marker=marker,
                ),
                None,
            )
        compressed = tr(
            loc, "Compressed to fit Discord's upload limit — full quality: {link} (may expire)", link=link
        )
        return f"{ready}\n{compressed}", fitted.data

    async def _post_delivery(self, job: Job, content: str, video: bytes | None) -> None:
        mentions = _requester_only(job)
        targets = [t for t in (job.thread_id, job.channel_id) if t is not None]
        for target_id in targets:
            target = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            while True:
                try:
                    view = ui.result_view(job)
                    if video is not None:
                        file = discord.File(io.BytesIO(video), filename=f"animate-{job.id}.mp4")
                        message = await target.send(
                            content=content, file=file, view=view, allowed_mentions=mentions
                        )
                    else:
                        message = await target.send(content=content, view=view, allowed_mentions=mentions)
                except discord.HTTPException as exc:
                    refused = 400 <= exc.status < 500 and exc.status != 429
                    if video is not None and refused and exc.status not in (403, 404):
                        # Too large (413) or otherwise refused with the file: the link still works.
                        video = None
                        content = tr(
                            job.locale,
                            "<@{user}> your video is ready but Discord refused the upload. Download "
                            "it from RunComfy (the link may expire soon): <{link}> · {marker}",
                            user=job.user_id,
                            link=job.result_url,
                            marker=_delivery_marker(job.id),
                        )
                        continue
                    if refused:
                        # Thread deleted or closed to us, or a request Discord will never accept:
                        # fall back to the channel, then to a DM.
                        log.warning("Job %s: cannot post in %s (%s)", job.id, target_id, exc.status)
                        break
                    # Discord trouble (5xx, network): the whole delivery is retried, up to DELIVERY_TIMEOUT.
                    log.warning("Job %s: could not post the video (%s); will retry", job.id, exc)
                    self.schedule(job.id, self.settings.poll_max_interval)
                    return
                await self._delivered(job, target_id, message.id)
                return
        await self._undeliverable(job)

    async def _delivered(self, job: Job, channel_id: int, message_id: int) -> None:
        self._reconciled.discard(job.id)
        if await self.jobs.update(
            job.id,
            expect=(JobState.DELIVERING,),
            state=JobState.DELIVERED,
            delivery_channel_id=channel_id,
            delivery_message_id=message_id,
        ):
            log.info("Job %s delivered", job.id)
            fresh = await self.jobs.get(job.id)
            self._emit(fresh or job, "delivered")
            await self._present_id(job.id, force=True)

    async def _undeliverable(self, job: Job) -> None:
        """Neither the thread nor the channel takes our messages (removed from the server, permissions
        revoked): send the link privately and refund -- the requester did not get what they paid for."""
        try:
            user = self.client.get_user(job.user_id) or await self.client.fetch_user(job.user_id)
            await user.send(
                tr(
                    job.locale,
                    "Your /animate video (job #{id}) is ready, but I can no longer post in that server's "
                    "channel. Here is the link (it may expire soon): <{link}>\n"
                    "Your credits were refunded.",
                    id=job.id,
                    link=job.result_url,
                ),
                allowed_mentions=ui.NO_MENTIONS,
            )
        except discord.HTTPException as exc:
            log.info("Job %s: could not DM the requester either: %s", job.id, exc)
        await self._fail(job, Msg("I could not post the video in this channel (missing access)."))

    async def _find_delivery(self, job: Job) -> tuple[int, int] | None:
        """(channel id, message id) of a message of ours that already carries this job's video, if any."""
        me = self.client.user
        if me is None:
            return None
        marker = re.compile(rf"\bjob #{job.id}\b")
        filename = f"animate-{job.id}.mp4"
        for target_id in (job.thread_id, job.channel_id):
            if target_id is None:
                continue
            channel = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            try:
                async for message in channel.history(limit=50):
                    if message.author.id != me.id:
                        continue
                    if marker.search(message.content) or any(
                        a.filename == filename for a in message.attachments
                    ):
                        return target_id, message.id
            except discord.HTTPException as exc:
                log.info("Job %s: could not read %s to reconcile: %s", job.id, target_id, exc)
        return None

    def _target(self, job: Job) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.thread_id or job.channel_id, guild_id=job.guild_id)

    # ------------------------------------------------------------------ endings

    async def abandon(self, job_id: int, reason: str) -> None:
        """End a job that never reached RunComfy (an unexpected error mid-launch), refunding it.

        Reasons (here and in `_fail`, `_cancelled`) are stored, and shown publicly, in the job's
        language: pass a bot.i18n.Msg."""
        job = await self.jobs.get(job_id)
        if job is not None and job.state is JobState.PENDING and job.request_id is None:
            await self._fail(job, reason)

    async def _fail(self, job: Job, reason: str, *, present: bool = True) -> bool:
        ended = await self.quota.end_job(
            job.id,
            JobState.FAILED,
            expect=(JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING),
            refund=True,
            reason="failed",
            error=render(reason, job.locale),
        )
        if ended:
            self._reconciled.discard(job.id)
            log.info("Job %s failed: %s", job.id, reason)
            self._emit(await self.jobs.get(job.id) or job, "failed")
            if present:
                await self._present_id(job.id, force=True)
                await self._notify_thread(
                    job,
                    tr(
                        job.locale,
                        "<@{user}> sorry, this job failed: {reason} Your credits were refunded.",
                        user=job.user_id,
                        reason=render(reason, job.locale),
                    ),
                )
        return ended

    async def _cancelled(self, job: Job, reason: str, actor_id: int | None = None) -> bool:
        ended = await self.quota.end_job(
            job.id,
            JobState.CANCELLED,
            expect=ACTIVE,
            refund=True,
            reason="cancelled",
            error=render(reason, job.locale),
        )
        if ended:
            self._emit(await self.jobs.get(job.id) or job, "cancelled", actor_id)
            await self._present_id(job.id, force=True)
        return ended

    async def _notify_thread(self, job: Job, content: str) -> None:
        if job.thread_id is None:
            return
        try:
            await self._target(job).send(content=content, allowed_mentions=_requester_only(job))
        except discord.HTTPException as exc:
            log.info("Job %s: could not post in its thread: %s", job.id, exc)

    # ------------------------------------------------------------------ cancel button

    async def handle_cancel_click(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        job = await ui.job_for_button(interaction, job_id)
        if job is None:
            return
        is_requester = interaction.user.id == job.user_id
        if not is_requester and not interaction.permissions.manage_messages:
            await interaction.response.send_message(
                tr(
                    interaction.locale,
                    "Only the person who started this job, or a moderator with Manage Messages, "
                    "can cancel it.",
                ),
                ephemeral=True,
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.cancel(job, by_user_id=interaction.user.id)
        await interaction.followup.send(
            render(text, interaction.locale), ephemeral=True, allowed_mentions=ui.NO_MENTIONS
        )

    async def cancel(self, job: Job, *, by_user_id: int) -> str:
        """Cancel a queued job; the answer for whoever clicked is a bot.i18n.Msg."""
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
                return Msg("This job has already cancelled.")
            case JobState.PENDING:
                return Msg("This job is still being submitted — try again in a few seconds.")
            case JobState.RUNNING:
                return _NOT_CANCELLABLE
        assert job.request_id is not None
        try:
            result = await self.runcomfy.cancel(job.request_id)
        except RunComfyNotFoundError:
            await self._fail(job, _EXPIRED)
            return Msg("RunComfy no longer knows this job, so it was closed and your credits refunded.")
        except RunComfyError as exc:
            log.warning("Job %s: cancel failed: %s", job.id, exc)
            return Msg("I couldn't reach RunComfy to cancel the job. Please try again in a moment.")
        if result.cancelled:
            await self._cancelled(job, Msg("Cancelled by <@{user}>.", user=by_user_id), by_user_id)
            if by_user_id == job.user_id:
                return Msg("Cancelled. Your {credits} went back.", credits=_credits(job.cost))
            return Msg(
                "Cancelled. <@{user}>'s {credits} went back.", user=job.user_id, credits=_credits(job.cost)
            )
        await self._mark_running(job)
        return _NOT_CANCELLABLE

    # ------------------------------------------------------------------ status message

    async def _present_id(self, job_id: int, *, force: bool = False) -> None:
        job = await self.jobs.get(job_id)
        if job is not None:
            await self.present(job, force=force)

    async def present(self, job: Job, *, force: bool = False) -> None:
        """Edit the status message. Routine edits are coalesced to one per message per
        `status_edit_interval` and spaced `channel_edit_interval` apart within a channel (all status
        messages of a channel share Discord's rate limit); forced edits -- state changes -- go at once.

        Edits of one message run one at a time and each re-reads the job, so the last edit always
        shows the newest state, whatever order they were asked for in.
        """
        if job.status_message_id is None or self._closing:
            return
        channel_id = job.status_channel_id or job.channel_id
        now = time.monotonic()
        if not force:
            wait = max(
                self._last_edit.get(job.id, -1e9) + self.settings.status_edit_interval - now,
                self._channel_next.get(channel_id, 0.0) - now,
            )
            if wait > 0:
                if job.id not in self._edit_pending:
                    self._edit_pending.add(job.id)
                    self._spawn(self._delayed_present(job.id, wait), f"present-{job.id}")
                return
        self._last_edit[job.id] = now
        self._channel_next[channel_id] = max(now, self._channel_next.get(channel_id, 0.0)) + (
            self.settings.channel_edit_interval
        )
        lock = self._edit_locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            fresh = await self.jobs.get(job.id) or job
            if fresh.status_message_id is None:
                return
            await self._edit_status(fresh)
        if fresh.state.finished:
            self._last_edit.pop(job.id, None)
            self._edit_locks.pop(job.id, None)

    async def _edit_status(self, job: Job) -> None:
        eta = await self.eta(job)
        try:
            await self._status_message(job).edit(
                embed=ui.status_embed(job, eta=eta), view=ui.status_view(job), allowed_mentions=ui.NO_MENTIONS
            )
        except discord.NotFound as exc:
            if exc.code == 10008:  # Unknown Message: someone deleted it
                await self._repost_status(job)
            else:
                log.warning("Job %s: status message unreachable: %s", job.id, exc)
        except discord.HTTPException as exc:
            log.warning("Job %s: could not update the status message: %s", job.id, exc)

    async def eta(self, job: Job) -> float | None:
        """Expected finish: submit time plus the median of the guild's recent jobs at this resolution
        (bot-wide while the guild has fewer than a few). Cached for a minute per guild/resolution."""
        if job.state not in ACTIVE or job.submitted_at is None:
            return None
        key = (job.guild_id, job.resolution)
        cached = self._eta_cache.get(key)
        now = time.monotonic()
        if cached is None or now - cached[0] > 60:
            took = await recent_durations(self.jobs.db, job.resolution, job.guild_id)
            if len(took) < ETA_MIN_SAMPLES:
                took = await recent_durations(self.jobs.db, job.resolution, None)
            median = statistics.median(took) if len(took) >= ETA_MIN_SAMPLES else None
            cached = (now, median)
            self._eta_cache[key] = cached
        return None if cached[1] is None else job.submitted_at + cached[1]

    async def _repost_status(self, job: Job) -> None:
        """The status message was deleted: post a fresh one (in the thread if there is one) so the
        requester keeps their progress and Cancel button. The source image went with the original."""
        job.status_has_image = False
        view = ui.status_view(job) or discord.ui.View(timeout=None)
        for target_id in dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None):
            target = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            try:
                message = await target.send(
                    embed=ui.status_embed(job), view=view, allowed_mentions=ui.NO_MENTIONS
                )
            except discord.HTTPException as exc:
                log.info("Job %s: could not re-post the status in %s: %s", job.id, target_id, exc)
                continue
            # The message's own channel is where it is edited from now on.
            await self.jobs.update(
                job.id, status_message_id=message.id, status_channel_id=target_id, status_has_image=False
            )
            log.info("Job %s: status message was deleted; re-posted in %s", job.id, target_id)
            return

    async def _delayed_present(self, job_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._edit_pending.discard(job_id)
        await self._present_id(job_id)  # not forced: waits again if its channel is still busy


_NOT_CANCELLABLE = Msg(
    "This job is already generating, so it can't be cancelled — RunComfy bills a job once it starts, "
    "so it will run to the end and the video will still be posted."
)
_EXPIRED = Msg("RunComfy no longer knows this job (it may have expired).")
_RESTARTING = Msg("The bot was shutting down, so this job was not started.")


def _credits(n: int) -> Msg:
    return Msg("{n} credit", n=n) if n == 1 else Msg("{n} credits", n=n)


def _submit_failure(exc: RunComfyError) -> tuple[Msg, Msg]:
    """(reason stored on the job, advice for the requester)."""
    if isinstance(exc, SubmitOutcomeUnknown):
        return (
            Msg("RunComfy did not confirm the job."),
            Msg("RunComfy didn't confirm the job (it may be overloaded), so I did not start it."),
        )
    if isinstance(exc, RunComfyBalanceError):
        return (
            Msg("The RunComfy account is out of balance."),
            Msg("The bot's RunComfy account is out of credit — please tell a server admin."),
        )
    if isinstance(exc, RunComfyAuthError):
        log.error("RunComfy rejected RUNCOMFY_API_TOKEN: %s", exc)
        return (
            Msg("RunComfy refused the bot's API token."),
            Msg("RunComfy refused the bot's API token – please tell a server admin."),
        )
    if isinstance(exc, RunComfyModelError):
        log.error("RunComfy does not know RUNCOMFY_MODEL: %s", exc)
        return (
            Msg("RunComfy does not know the configured model."),
            Msg("The bot is set up with a model RunComfy does not know – please tell a server admin."),
        )
    if isinstance(exc, RunComfyValidationError):
        return (
            Msg("RunComfy rejected the request: {detail}", detail=str(exc)),
            Msg("RunComfy rejected the request: {detail}.", detail=str(exc)),
        )
    return (
        Msg("RunComfy is unavailable."),
        Msg("RunComfy is unavailable right now. Please try again in a few minutes."),
    )


def _delivery_marker(job_id: int) -> str:
    """Tags every delivery so a restarted bot can recognise one it posted before a crash."""
    return f"job #{job_id}"


def _requester_only(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])
