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
import random
import re
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import discord

from bot import metrics, ui
from bot.fetch import OutputFetcher, check_video
from bot.i18n import N_, Msg, render, tr
from bot.logs import bind
from bot.media import MediaError, NormalizedImage, fit_video
from bot.runcomfy import (
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    Phase,
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
from storage.db import StorageError
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
MAX_CONTENT = 2000  # Discord's limit for a message's content
MAX_SHOWN_LINK = 4000  # longer links fit nowhere (an embed description holds 4096 characters)
# One message post may take this long, plus the upload at a pessimistic rate; discord.py itself
# would wait five minutes (aiohttp's default) before giving up on a silent Discord.
POST_TIMEOUT = 60.0
UPLOAD_RATE_FLOOR = 256 * 1024  # bytes per second
# Our earlier post is looked for, oldest first, from this long before its attempt started (clocks
# differ a little), reading at most RECONCILE_LIMIT messages per channel.
RECONCILE_MARGIN = 60.0
RECONCILE_LIMIT = 500
# A post that failed like this may still have been stored by Discord: look before sending again.
AMBIGUOUS = (discord.DiscordServerError, aiohttp.ClientError, OSError, TimeoutError)
THREAD_CLOSED = (50083, 160005)  # archived and locked thread; locked thread
# RunComfy accepted a job but the database refused to record it: retry the write with backoff for about
# this long, then log an ERROR for the operator (the pending sweep keeps retrying once a minute).
RECORD_RETRY_WINDOW = 60.0
# How often jobs stuck in `pending` are looked for while running, and how much longer than one
# RunComfy request a submit may take before a pending job nobody here is submitting is ended.
PENDING_SWEEP_INTERVAL = 60.0
PENDING_GRACE = 60.0


class VideoBackend(Protocol):
    """What the engine needs from a generator: RunComfyClient, or the local PreviewBackend."""

    async def submit(self, params: GenerationParams) -> Submission: ...
    async def status(self, request_id: str) -> JobStatus: ...
    async def result(self, request_id: str) -> JobResult: ...
    async def cancel(self, request_id: str) -> CancelResult: ...


class _Unverifiable(Exception):
    """Discord could not be read (5xx, network), so whether a message of ours is there is unknown."""


@dataclass(slots=True)
class _Outgoing:
    """A video delivery as it will be posted. Changed in place when Discord refuses a form of it."""

    content: str
    video: bytes | None = None
    link: str | None = None  # shown in an embed: it did not fit into the content
    plain: bool = False  # no buttons and no embed (Discord refused the full form)


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
        outputs: OutputFetcher,
    ) -> None:
        self.client = client
        self.settings = settings
        self.jobs = jobs
        self.quota = quota
        self.runcomfy = runcomfy
        self.session = session
        self.outputs = outputs  # output videos are fetched through this (SSRF-safe); the bot closes it
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
        self._unknown_word: dict[int, str] = {}  # job id -> the unknown status word its last poll saw
        self._unknown_warned: set[int] = set()  # jobs whose unknown word was logged (once per job)
        self._launches: set[asyncio.Task[Any]] = set()
        self._submitting: set[int] = set()  # jobs this process is launching or submitting right now
        # Accepted by RunComfy, but the database refused the write: the columns still to record. The
        # request id lives here until the write lands, so a paid job is never forgotten or refunded.
        self._unrecorded: dict[int, dict[str, Any]] = {}
        self._cancel_locks: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, clicks holding or waiting
        self._cancelling: set[int] = set()  # a Cancel click is talking to RunComfy about these jobs
        self._flushing: set[int] = set()  # unrecorded submissions being written right now
        self._stood_back: set[int] = set()  # polls that left a cancellation to the click under way
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
                if job.status_message_id is None:
                    await self._recover_status(job)  # it may have died right after posting it
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
        self._spawn(self._sweep_loop(), "pending-sweep")

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
        for job_id in list(self._unrecorded):
            # Last chance: a restart would otherwise refund a job RunComfy is running.
            if not await self._flush_record(job_id):
                log.error(
                    "Job %s: stopping with RunComfy request %s still unrecorded; the next start will "
                    "refund the job although RunComfy may deliver it -- reconcile it by hand",
                    job_id,
                    self._unrecorded[job_id]["request_id"],
                )

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def poll_interval(self, job: Job) -> float:
        """Poll often while a job is young, then back off towards the cap: cheap for long jobs,
        prompt delivery for short ones. Overdue jobs are only checked now and then."""
        if job.overdue_notified_at is not None:
            return self.settings.overdue_poll_interval
        elapsed = time.time() - (job.submitted_at or job.created_at)
        wanted = elapsed * self.settings.poll_backoff_ratio
        return min(self.settings.poll_max_interval, max(self.settings.poll_first_delay, wanted))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(PENDING_SWEEP_INTERVAL)
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
        for job_id in list(self._unrecorded):
            await self._flush_record(job_id)
        # Older than any submit can take: one RunComfy request plus a generous grace.
        cutoff = time.time() - (self.settings.http_timeout + PENDING_GRACE)
        ended = 0
        for job in await self.jobs.stale_pending(cutoff):
            if job.id in self._submitting or job.id in self._unrecorded or job.request_id is not None:
                continue
            log.warning(
                "Job %s: still pending after %.0f s; ending it with a refund",
                job.id,
                time.time() - job.updated_at,
            )
            if not await self._fail(job, _NEVER_CONFIRMED):
                continue
            ended += 1
            if job.thread_id is None and job.status_message_id is not None:
                # No thread to post in (it is opened after the submit): the requester hears it here.
                await self._send_quietly(
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

    async def _send_quietly(self, job: Job, channel_id: int, content: str) -> None:
        channel = self.client.get_partial_messageable(channel_id, guild_id=job.guild_id)
        try:
            await channel.send(content=content, allowed_mentions=_requester_only(job))
        except discord.HTTPException as exc:
            log.info("Job %s: could not post in %s: %s", job.id, channel_id, exc)

    # ------------------------------------------------------------------ launching

    async def launch(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable, *, make_thread: bool = True
    ) -> LaunchResult:
        """Post the status message (hosting the image), submit to RunComfy, open the thread.

        The job row already exists with its credits reserved; every failure path here refunds them.
        """
        bind(job_id=job.id, guild_id=job.guild_id)  # log fields for the rest of this task
        self._submitting.add(job.id)  # not the pending sweep's business while we are on it
        try:
            failure = await self.post_status(job, image, channel)
            if failure is not None:
                await self._fail(job, failure.message, present=job.status_message_id is not None)
                return failure
            return await self.submit(job, make_thread=make_thread)
        finally:
            self._submitting.discard(job.id)

    async def post_status(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> LaunchResult | None:
        """Post the status message with the normalised image attached; its CDN URL becomes `img_url`.

        Returns None on success (the job's status_message_id and image_url are then set), else why not.
        """
        message: discord.Message | None = None
        for attempt in (1, 2):
            view = ui.status_view(job) or discord.ui.View(timeout=None)
            try:
                message = await self._send(
                    channel,
                    nonce=_nonce("s", job),
                    size=len(image.data),
                    embed=ui.status_embed(job),
                    file=discord.File(io.BytesIO(image.data), filename=image.filename),
                    allowed_mentions=ui.NO_MENTIONS,
                    view=view,
                )
                break
            except AMBIGUOUS as exc:
                # Discord may have stored it anyway: look for it before posting again (the repeat
                # carries the same nonce, so Discord itself would return the first one for a while).
                log.warning("Job %s: status message unconfirmed (%r); looking for it", job.id, exc)
                with contextlib.suppress(_Unverifiable):
                    message = await self._find_status(job, job.channel_id)
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
                return LaunchResult(False, self._status_refusal(exc, channel, job.locale))
        assert message is not None
        img_url = message.attachments[0].url if message.attachments else None
        await self.jobs.update(job.id, status_message_id=message.id, image_url=img_url)
        job.status_message_id, job.image_url = message.id, img_url
        if img_url is None:
            return LaunchResult(False, Msg("Discord did not keep the image I uploaded. Please try again."))
        return None

    async def _send(
        self, target: discord.abc.Messageable, *, nonce: str, size: int = 0, **fields: Any
    ) -> discord.Message:
        """Post a message with a deterministic nonce and a deadline. discord.py sends `enforce_nonce`
        with it, so a repeat within Discord's window returns the first message instead of a copy."""
        timeout = POST_TIMEOUT + size / UPLOAD_RATE_FLOOR
        return await asyncio.wait_for(target.send(nonce=nonce, **fields), timeout)

    def _status_refusal(
        self, exc: discord.HTTPException, channel: discord.abc.Messageable, locale: str | None
    ) -> Msg:
        """Why the status message could not be posted, as Discord told us (the requester may fix it)."""
        if exc.code == 50001:
            return Msg("I can't see this channel (missing access). Nothing was charged.")
        if exc.code == 50013:
            missing = _missing_in(channel, file=True, locale=locale)
            if missing:
                return Msg(
                    "I couldn't post in this channel because I'm missing these permissions here: "
                    "{permissions}. Nothing was charged.",
                    permissions=", ".join(missing),
                )
            return Msg(
                "I couldn't post in this channel (I need Send Messages, Embed Links and Attach Files "
                "here). Nothing was charged."
            )
        if exc.code in THREAD_CLOSED:
            return Msg("This thread is archived or locked, so I can't post in it. Nothing was charged.")
        if exc.code == 40005 or exc.status == 413:
            return Msg("Discord refused the image as too large for this channel. Nothing was charged.")
        if exc.status == 429:
            return Msg(
                "Discord is rate limiting me right now. Nothing was charged — please try again in a minute."
            )
        log.warning("Discord refused a status message (%s %s): %s", exc.status, exc.code, exc.text)
        return Msg(
            "Discord refused my status message (error {code}). Nothing was charged.",
            code=exc.code or exc.status,
        )

    def _messageable(self, channel_id: int, guild_id: int) -> discord.abc.Messageable:
        """The cached channel or thread (its permissions are known), else a partial one."""
        guild = self.client.get_guild(guild_id)
        channel = guild.get_channel_or_thread(channel_id) if guild is not None else None
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    async def _find_status(
        self, job: Job, where: int, *, besides: int | None = None, since: float | None = None
    ) -> discord.Message | None:
        """Our status message of this job in `where` (other than `besides`), posted after `since`
        (default: when the job was created), found by its buttons' custom_ids or its embed footer
        `Job #N`. Raises _Unverifiable if Discord can't be read."""
        footer = re.compile(rf"#{job.id}(?!\d)")
        custom_id = re.compile(rf"^animate:(cancel|approve|reject|withdraw):{job.id}$")

        def ours(message: discord.Message) -> bool:
            if message.id == besides:
                return False
            if any(
                custom_id.match(getattr(child, "custom_id", None) or "")
                for row in message.components
                for child in getattr(row, "children", ())
            ):
                return True
            return any(footer.search(e.footer.text or "") for e in message.embeds)

        return await self._find_own(job, where, job.created_at if since is None else since, ours)

    async def _find_own(
        self, job: Job, where: int, since: float, ours: Callable[[discord.Message], bool]
    ) -> discord.Message | None:
        """The first message of ours in `where` posted after `since` (epoch seconds) that `ours` accepts.
        A channel we may not read counts as not having it; a failing Discord raises _Unverifiable."""
        me = self.client.user
        if me is None:
            return None
        start = datetime.fromtimestamp(max(0.0, since - RECONCILE_MARGIN), UTC)
        channel = self.client.get_partial_messageable(where, guild_id=job.guild_id)
        try:
            async with asyncio.timeout(POST_TIMEOUT):
                async for message in channel.history(limit=RECONCILE_LIMIT, after=start):
                    if message.author.id == me.id and ours(message):
                        return message
        except AMBIGUOUS as exc:
            raise _Unverifiable(str(exc)) from exc
        except discord.HTTPException as exc:
            log.info("Job %s: could not read %s to reconcile: %s", job.id, where, exc)
        return None

    async def _recover_status(self, job: Job) -> None:
        """A crash between posting the status message and storing its id: find it, so it shows the
        job's end instead of "Submitting…" with a Cancel button nobody can use."""
        try:
            message = await self._find_status(job, job.channel_id)
        except _Unverifiable as exc:
            log.warning("Job %s: could not look for its status message: %s", job.id, exc)
            return
        if message is None:
            return
        img_url = message.attachments[0].url if message.attachments else None
        await self.jobs.update(job.id, status_message_id=message.id, image_url=img_url)
        job.status_message_id, job.image_url = message.id, img_url
        log.info("Job %s: found its status message %s posted before a restart", job.id, message.id)

    async def submit(self, job: Job, *, make_thread: bool = True) -> LaunchResult:
        """Submit a job whose status message is posted and whose credits are reserved (state pending).

        Once RunComfy accepted it, the job is polled whatever else fails here (thread, status edit,
        even the database refusing to record it: see `_record_submission`).
        """
        assert job.image_url is not None and job.status_message_id is not None
        bind(job_id=job.id, guild_id=job.guild_id)
        self._submitting.add(job.id)
        try:
            return await self._submit(job, make_thread=make_thread)
        finally:
            self._submitting.discard(job.id)

    async def _submit(self, job: Job, *, make_thread: bool) -> LaunchResult:
        assert job.image_url is not None
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
        params = GenerationParams.from_spec(job.spec, job.image_url)
        try:
            submission = await self.runcomfy.submit(params)
        except RunComfyError as exc:
            metrics.count_submit(exc)
            reason, advice = _submit_failure(exc)
            log.warning("Job %s: submit failed: %s", job.id, exc)
            await self._fail(job, reason)
            return LaunchResult(False, Msg("{advice} You were not charged.", advice=advice))
        metrics.count_submit(None)
        bind(request_id=submission.request_id)

        log.info("Job %s submitted as %s", job.id, submission.request_id)
        if await self._record_submission(job, submission.request_id):
            self.schedule(job.id, self.settings.poll_first_delay)

        thread_id: int | None = None
        fresh = job
        try:
            if make_thread:
                thread_id = await self._open_thread(job)
            fresh = self._with_unrecorded(await self.jobs.get(job.id) or job)
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

    async def _record_submission(self, job: Job, request_id: str) -> bool:
        """Record that RunComfy accepted the job (pending -> queued). Returns whether it is recorded.

        RunComfy has a paid job now, whatever the database says. If the write fails (disk full,
        read-only, locked), the request id is kept in memory and the write retried in the background;
        polling starts the moment it lands (every poll result is itself a compare-and-set on this
        row, so polling before it exists could record nothing). RunComfy keeps the result meanwhile.
        """
        changes: dict[str, Any] = {
            "request_id": request_id,
            "state": JobState.QUEUED,
            "submitted_at": time.time(),
        }
        try:
            moved = await self.jobs.update(job.id, expect=(JobState.PENDING,), **changes)
        except StorageError as exc:
            log.warning(
                "Job %s: RunComfy accepted it as %s but the database refused to record it (%s); retrying",
                job.id,
                request_id,
                exc,
            )
            self._unrecorded[job.id] = changes
            self._spawn(self._record_later(job.id), f"record-{job.id}")
            return False
        if not moved:  # pragma: no cover - only the pending sweep moves a pending job, and not ours
            log.error(
                "Job %s changed state during submit; RunComfy request %s is orphaned", job.id, request_id
            )
        return True

    async def _record_later(self, job_id: int) -> None:
        """Retry an unrecorded submission with capped exponential backoff and jitter; after
        RECORD_RETRY_WINDOW, tell the operator and leave further retries to the pending sweep."""
        started = time.monotonic()
        delay = self.settings.retry_backoff_base
        while job_id in self._unrecorded:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if await self._flush_record(job_id):
                return
            if time.monotonic() - started >= RECORD_RETRY_WINDOW:
                log.error(
                    "Job %s: RunComfy accepted it as request %s, but the database has refused to record "
                    "that for %.0f s. Still retrying once a minute; if the bot stops first, reconcile "
                    "this request by hand.",
                    job_id,
                    self._unrecorded[job_id]["request_id"],
                    time.monotonic() - started,
                )
                return
            delay = min(self.settings.retry_backoff_cap, delay * 2)

    async def _flush_record(self, job_id: int) -> bool:
        """One attempt at writing an unrecorded submission; True once it is recorded (or moot)."""
        changes = self._unrecorded.get(job_id)
        if changes is None:
            return True
        if job_id in self._flushing:
            return False  # the attempt already under way decides
        self._flushing.add(job_id)
        try:
            moved = await self.jobs.update(job_id, expect=(JobState.PENDING,), **changes)
        except StorageError as exc:
            log.info("Job %s: recording the submission failed again: %s", job_id, exc)
            return False
        finally:
            self._flushing.discard(job_id)
        del self._unrecorded[job_id]
        if not moved:  # pragma: no cover - nothing else ends a job kept here
            log.error("Job %s left pending before request %s was recorded", job_id, changes["request_id"])
            return True
        log.info("Job %s: recorded RunComfy request %s after all", job_id, changes["request_id"])
        self.schedule(job_id, 0.0)
        await self._present_id(job_id, force=True)
        return True

    def _with_unrecorded(self, job: Job) -> Job:
        """The job as this process knows it: with a submission the database has not taken yet."""
        changes = self._unrecorded.get(job.id)
        if changes is not None:
            job.request_id = changes["request_id"]
            job.state = changes["state"]
            job.submitted_at = changes["submitted_at"]
            job.thread_id = changes.get("thread_id", job.thread_id)
        return job

    async def _open_thread(self, job: Job) -> int | None:
        try:
            thread = await self._status_message(job).create_thread(
                name=ui.thread_name(job.prompt, job.locale), auto_archive_duration=1440
            )
        except discord.HTTPException as exc:
            # Without a thread the video goes to the channel itself; the job still runs.
            log.warning("Job %s: could not create a thread: %s", job.id, exc)
            return None
        pending = self._unrecorded.get(job.id)
        if pending is not None:
            pending["thread_id"] = thread.id  # written together with the submission
            return thread.id
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
        bind(job_id=job_id)  # each step runs in its own task
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
        bind(guild_id=job.guild_id, request_id=job.request_id)
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
        # After an unknown word the job is neither queued nor running as far as we know: the deadline
        # is decided by the next read (below), not by the queued/running overdue rules.
        overdue = (
            age > self.settings.job_timeout
            and job.overdue_notified_at is None
            and job.id not in self._unknown_word
        )
        if overdue and await self._overdue(job):
            return
        status = await self._read(job, self.runcomfy.status, "status check")
        if status is None:
            return
        await self.jobs.count_polls(job.id)
        metrics.count_poll(status.phase.value)

        phase = status.phase
        if phase is not Phase.UNKNOWN:
            self._unknown_word.pop(job.id, None)
        if phase is Phase.QUEUED:
            if job.state is not JobState.QUEUED or job.queue_position != status.queue_position:
                await self.jobs.update(job.id, expect=ACTIVE, queue_position=status.queue_position)
                await self._present_id(job.id)
        elif phase is Phase.RUNNING:
            if job.state is JobState.QUEUED:
                await self._mark_running(job)
        elif phase in (Phase.SUCCEEDED, Phase.FAILED):
            # /result decides: a failed run may say "completed" on /status, and it holds the reason.
            await self._collect(job, status)
            return
        elif phase is Phase.CANCELLED:
            await self._cancelled(job, Msg("RunComfy cancelled the job."))
            return
        elif await self._unknown(job, status.status, "status", age):
            return
        self.schedule(job.id, self.poll_interval(job))

    async def _unknown(self, job: Job, word: str, endpoint: str, age: float) -> bool:
        """RunComfy said a word we don't know: keep polling (warning once per job), but only until the
        normal deadline -- never for JOB_HARD_TIMEOUT hours. Returns True if the job ended."""
        self._unknown_word[job.id] = word
        if job.id not in self._unknown_warned:
            self._unknown_warned.add(job.id)
            log.warning(
                "Job %s: RunComfy /%s reported an unknown status %r; still waiting", job.id, endpoint, word
            )
        if age <= self.settings.job_timeout:
            return False
        assert job.request_id is not None
        log.warning("Job %s: RunComfy still says %r after the deadline; giving up", job.id, word)
        try:  # if it is really still queued, this keeps it from being billed
            await self.runcomfy.cancel(job.request_id)
        except RunComfyError as exc:
            log.info("Job %s: cancel after an unknown status failed: %s", job.id, exc)
        minutes = int(self.settings.job_timeout // 60)
        await self._fail(
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
            self._forget_unknown(job.id)
            await self._fail(job, _EXPIRED)
        except RunComfyError as exc:
            log.warning("Job %s: %s failed (%s); will retry", job.id, what, exc)
            self.schedule(job.id, self.settings.poll_max_interval)
        return None

    async def _collect(self, job: Job, status: JobStatus) -> None:
        """/status says the job ended (succeeded or failed): /result decides how, and says why."""
        result = await self._read(job, self.runcomfy.result, "result fetch")
        if result is None:
            return
        phase = result.phase
        if phase is not Phase.UNKNOWN:
            self._unknown_word.pop(job.id, None)
        if phase is Phase.SUCCEEDED:
            self._forget_unknown(job.id)
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
        elif phase is Phase.FAILED:
            self._forget_unknown(job.id)
            if result.no_video:
                await self._fail(job, Msg("RunComfy finished but returned no video."))
                return
            await self._fail(job, _generation_failed(result.error))
        elif phase is Phase.CANCELLED:
            self._forget_unknown(job.id)
            await self._cancelled(job, Msg("RunComfy cancelled the job."))
        elif status.phase is Phase.FAILED:
            # /status says failed and /result has no verdict (yet): failure on either endpoint counts.
            self._forget_unknown(job.id)
            await self._fail(job, _generation_failed(status.error))
        else:
            if phase is Phase.UNKNOWN:
                age = time.time() - (job.submitted_at or job.created_at)
                if await self._unknown(job, result.status, "result", age):
                    return
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
        """Post the finished video exactly once, even across crashes and lost answers.

        `delivery_started_at` is written before each upload. Whenever an earlier attempt may have
        reached Discord -- a previous process got that far, or Discord's answer was lost (5xx after
        storing, timeout, dropped connection) -- the thread and channel are searched for the video
        first, and it is only posted if it is not there. The post itself carries a deterministic
        nonce, so a repeat within Discord's dedup window returns the first message as well.
        """
        if job.delivery_started_at is not None and job.id not in self._reconciled:
            try:
                found = await self._find_delivery(job)
            except _Unverifiable as exc:
                log.warning("Job %s: cannot check for an earlier post yet (%s); will retry", job.id, exc)
                self.schedule(job.id, self.settings.poll_max_interval)
                return
            self._reconciled.add(job.id)
            if found is not None:
                log.info("Job %s: found the video posted by an earlier attempt", job.id)
                await self._delivered(job, *found)
                return
        self._reconciled.add(job.id)
        outgoing = await self._prepare_delivery(job)
        # Each attempt is looked for from its own start (the attempt before it was checked above).
        job.delivery_started_at = time.time()
        await self.jobs.update(job.id, delivery_started_at=job.delivery_started_at)
        await self._post_delivery(job, outgoing)

    async def _prepare_delivery(self, job: Job) -> _Outgoing:
        """The message and the video bytes to upload (no video: post RunComfy's link instead)."""
        assert job.result_url is not None
        url = job.result_url
        marker = _delivery_marker(job.id)
        loc, user = job.locale, job.user_id
        if self._fetch_output is not None and job.result_url.startswith("preview://"):
            fetch = self._fetch_output(job.result_url, MAX_VIDEO_DOWNLOAD)
        else:
            # RunComfy's URL is untrusted: https to public hosts (or RunComfy's own origin) only.
            fetch = self.outputs.fetch(job.result_url, max_bytes=MAX_VIDEO_DOWNLOAD, timeout=120)
        try:
            data = check_video(await fetch)
        except MediaError as exc:
            log.warning("Job %s: video download failed: %s", job.id, exc)
            if not self.outputs.linkable(job.result_url):
                return _Outgoing(
                    tr(
                        loc,
                        "<@{user}> your video is ready, but I couldn't fetch it, and RunComfy's link "
                        "is not a secure (https) one I can pass on. · {marker}",
                        user=user,
                        marker=marker,
                    )
                )
            return _linked(
                loc,
                url,
                lambda link: tr(
                    loc,
                    "<@{user}> your video is ready, but I couldn't download it to post here. "
                    "Here is RunComfy's link (it may expire soon, so save it): {link} · {marker}",
                    user=user,
                    link=link,
                    marker=marker,
                ),
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
            return _Outgoing(ready, data)
        try:
            async with self._encoders:  # each re-encode holds a whole video in memory
                fitted = await asyncio.to_thread(fit_video, data, job.upload_limit)
            metrics.mark_reencoded(job.id)
        except MediaError as exc:
            log.warning("Job %s: could not fit the video into %d bytes: %s", job.id, job.upload_limit, exc)
            return _too_large(job)
        outgoing = _linked(
            loc,
            url,
            lambda link: (
                ready
                + "\n"
                + tr(
                    loc,
                    "Compressed to fit Discord's upload limit — full quality: {link} (may expire)",
                    link=link,
                )
            ),
        )
        outgoing.video = fitted.data
        return outgoing

    async def _post_delivery(self, job: Job, outgoing: _Outgoing) -> None:
        """Post in the thread, else in the channel; if neither takes it, DM the link and refund."""
        problem: Msg | None = None
        for target_id in dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None):
            posted = await self._post_in(job, target_id, outgoing)
            if posted is None:  # Discord trouble: the whole delivery is retried, up to DELIVERY_TIMEOUT
                self.schedule(job.id, self.settings.poll_max_interval)
                return
            if isinstance(posted, int):
                metrics.count_delivery(job.id, uploaded=outgoing.video is not None)
                await self._delivered(job, target_id, posted)
                return
            problem = posted
        await self._undeliverable(job, problem)

    async def _post_in(self, job: Job, target_id: int, outgoing: _Outgoing) -> int | Msg | None:
        """Post the video in one channel or thread, falling back to plainer forms of the message as
        Discord's error codes say. The message id; or why this channel refuses it (the caller tries
        the next); or None when Discord's answer was lost or it is overloaded (retry later)."""
        target = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
        while True:
            try:
                message = await self._send(
                    target,
                    nonce=_nonce("v", job),  # the same logical message wherever and whenever it is posted
                    size=len(outgoing.video or b""),
                    **self._delivery_fields(job, outgoing),
                )
            except AMBIGUOUS as exc:
                # It may be there anyway: the next attempt looks for it before posting again.
                log.warning(
                    "Job %s: Discord's answer to the video post was lost (%r); will check", job.id, exc
                )
                self._reconciled.discard(job.id)
                return None
            except discord.HTTPException as exc:
                code = exc.code
                if exc.status == 429:
                    log.warning("Job %s: rate limited posting the video; will retry", job.id)
                    return None
                if code in THREAD_CLOSED:
                    log.info("Job %s: thread %s is archived or locked; trying the channel", job.id, target_id)
                    return Msg("The thread is archived or locked.")
                if code == 10003 or exc.status == 404:
                    return Msg("The channel or thread was deleted.")
                if code == 50001:
                    return Msg("I could not post the video in this channel (missing access).")
                if code == 50013:
                    missing = _missing_in(
                        self._messageable(target_id, job.guild_id),
                        file=outgoing.video is not None,
                        locale=job.locale,
                    )
                    attach = tr(job.locale, N_("Attach Files"))
                    if outgoing.video is not None and (missing is None or missing == [attach]):
                        _replace_by_link(outgoing, _no_attach(job))
                        continue
                    if missing:
                        return Msg(
                            "I could not post the video in <#{channel}>: I'm missing these permissions "
                            "there: {permissions}.",
                            channel=target_id,
                            permissions=", ".join(missing),
                        )
                    return Msg(
                        "I could not post the video in <#{channel}>: Discord says I'm missing a "
                        "permission there.",
                        channel=target_id,
                    )
                if code == 40005 or exc.status == 413:
                    if outgoing.video is not None:
                        _replace_by_link(outgoing, _too_large(job))
                        continue
                    return Msg("Discord refused the message as too large.")
                if code == 50035:
                    log.warning("Job %s: Discord refused the video message's form: %s", job.id, exc.text)
                if not outgoing.plain:
                    # Invalid form (or another refusal): a minimal message -- no file, no buttons, no
                    # embed, the link only if it fits -- rather than no video at all.
                    _replace_by_link(outgoing, _refused(job), plain=True)
                    continue
                log.warning("Job %s: Discord refused even a plain message in %s: %s", job.id, target_id, exc)
                return Msg("Discord refused the message (error {code}).", code=code or exc.status)
            return message.id

    def _delivery_fields(self, job: Job, outgoing: _Outgoing) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "content": ui.clip(outgoing.content, MAX_CONTENT),
            "allowed_mentions": _requester_only(job),
        }
        if outgoing.video is not None:
            fields["file"] = discord.File(io.BytesIO(outgoing.video), filename=f"animate-{job.id}.mp4")
        if not outgoing.plain:
            fields["view"] = ui.result_view(job)
            if outgoing.link is not None:
                fields["embed"] = ui.link_embed(outgoing.link, job.locale)
        return fields

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

    async def _undeliverable(self, job: Job, reason: Msg | None = None) -> None:
        """Neither the thread nor the channel takes the video (removed from the server, permissions
        revoked, Discord failing for an hour): send the link privately and refund -- the requester did
        not get what they paid for. `reason` is what Discord said (None: it kept failing)."""
        if job.delivery_started_at is not None:
            # The last attempt may have been stored after all.
            with contextlib.suppress(_Unverifiable):
                found = await self._find_delivery(job)
                if found is not None:
                    await self._delivered(job, *found)
                    return
        reason = reason or Msg("Discord kept failing to take the video.")
        assert job.result_url is not None
        dm = _linked(
            job.locale,
            job.result_url,
            lambda link: tr(
                job.locale,
                "Your /animate video (job #{id}) is ready, but I could not post it in the server: {reason} "
                "Here is the link (it may expire soon): {link}\nYour credits were refunded.",
                id=job.id,
                reason=render(reason, job.locale),
                link=link,
            ),
        )
        fields: dict[str, Any] = {
            "content": ui.clip(dm.content, MAX_CONTENT),
            "allowed_mentions": ui.NO_MENTIONS,
        }
        if dm.link is not None:
            fields["embed"] = ui.link_embed(dm.link, job.locale)
        try:
            user = self.client.get_user(job.user_id) or await self.client.fetch_user(job.user_id)
            await self._send(user, nonce=_nonce("d", job), **fields)
        except (discord.HTTPException, *AMBIGUOUS) as exc:
            log.info("Job %s: could not DM the requester either: %r", job.id, exc)
        await self._fail(job, reason)

    async def _find_delivery(self, job: Job) -> tuple[int, int] | None:
        """(channel id, message id) of a message of ours that already carries this job's video, if
        any, in the thread or the channel. Raises _Unverifiable if Discord can't be read right now."""
        marker = re.compile(rf"\bjob #{job.id}\b")
        filename = f"animate-{job.id}.mp4"

        def ours(message: discord.Message) -> bool:
            return bool(marker.search(message.content)) or any(
                a.filename == filename for a in message.attachments
            )

        since = job.delivery_started_at or job.finished_at or job.created_at
        for target_id in dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None):
            message = await self._find_own(job, target_id, since, ours)
            if message is not None:
                return target_id, message.id
        return None

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

    async def _cancelled(
        self, job: Job, reason: str, actor_id: int | None = None, *, by_click: bool = False
    ) -> bool:
        if job.id in self._cancelling and not by_click:
            # A Cancel click asked RunComfy and will end the job itself (the poll saw its effect).
            self._stood_back.add(job.id)
            return False
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
        """Tell the requester in the job's thread; in the channel if the thread is closed or gone."""
        if job.thread_id is None:
            return
        content = ui.clip(content, MAX_CONTENT)  # a reason from RunComfy can be of any length
        for target_id in (job.thread_id, job.channel_id):
            target = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            try:
                await asyncio.wait_for(
                    target.send(content=content, allowed_mentions=_requester_only(job)), POST_TIMEOUT
                )
                return
            except discord.HTTPException as exc:
                log.info("Job %s: could not post in %s: %s", job.id, target_id, exc)
                if not (exc.code in THREAD_CLOSED or exc.code == 10003):
                    return
            except AMBIGUOUS as exc:
                log.info("Job %s: posting in %s went unanswered: %r", job.id, target_id, exc)
                return

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
        """Cancel a queued job; the answer for whoever clicked is a bot.i18n.Msg.

        Clicks on one job take turns (one RunComfy cancel at a time), each re-reads the job, and only
        the click whose compare-and-set ended it says the credits went back; across processes the
        compare-and-set alone decides."""
        lock, users = self._cancel_locks.get(job.id, (asyncio.Lock(), 0))
        self._cancel_locks[job.id] = (lock, users + 1)
        try:
            async with lock:
                fresh = await self.jobs.get(job.id) or job
                return await self._cancel_once(fresh, by_user_id)
        finally:
            lock, users = self._cancel_locks[job.id]
            if users <= 1:
                del self._cancel_locks[job.id]
            else:
                self._cancel_locks[job.id] = (lock, users - 1)

    @staticmethod
    def _cannot_cancel(job: Job) -> str | None:
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
                return _NOT_CANCELLABLE
        return None

    async def _after_lost_race(self, job: Job) -> str:
        """Someone else ended or moved the job first: describe where it is now."""
        fresh = await self.jobs.get(job.id) or job
        return self._cannot_cancel(fresh) or Msg("I couldn't cancel the job. Please try again in a moment.")

    async def _cancel_once(self, job: Job, by_user_id: int) -> str:
        refusal = self._cannot_cancel(job)
        if refusal is not None:
            return refusal
        assert job.request_id is not None
        # While RunComfy is asked, a poll that sees the cancellation leaves ending the job to this
        # click (see `_cancelled`), so the click that cancelled is the one that says so.
        self._cancelling.add(job.id)
        try:
            try:
                result = await self.runcomfy.cancel(job.request_id)
            except RunComfyNotFoundError:
                if not await self._fail(job, _EXPIRED):
                    return await self._after_lost_race(job)
                return Msg("RunComfy no longer knows this job, so it was closed and your credits refunded.")
            except RunComfyError as exc:
                log.warning("Job %s: cancel failed: %s", job.id, exc)
                return Msg("I couldn't reach RunComfy to cancel the job. Please try again in a moment.")
            if result.cancelled:
                reason = Msg("Cancelled by <@{user}>.", user=by_user_id)
                if not await self._cancelled(job, reason, by_user_id, by_click=True):
                    return await self._after_lost_race(job)
                if by_user_id == job.user_id:
                    return Msg("Cancelled. Your {credits} went back.", credits=_credits(job.cost))
                return Msg(
                    "Cancelled. <@{user}>'s {credits} went back.",
                    user=job.user_id,
                    credits=_credits(job.cost),
                )
            await self._mark_running(job)
            return _NOT_CANCELLABLE
        finally:
            self._cancelling.discard(job.id)
            if job.id in self._stood_back:
                self._stood_back.discard(job.id)
                self.schedule(job.id, 0.0)  # the poll that stood back did not reschedule itself

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
        assert job.status_message_id is not None
        deleted = job.status_message_id
        job.status_has_image = False
        started = time.time()
        for target_id in dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None):
            target = self.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            view = ui.status_view(job) or discord.ui.View(timeout=None)
            try:
                # The nonce names this re-post (of this deleted message), wherever it lands.
                message = await self._send(
                    target,
                    nonce=_nonce("r", job, deleted),
                    embed=ui.status_embed(job),
                    view=view,
                    allowed_mentions=ui.NO_MENTIONS,
                )
            except AMBIGUOUS as exc:
                try:
                    found = await self._find_status(job, target_id, besides=deleted, since=started)
                except _Unverifiable:
                    found = None
                if found is None:
                    # The next edit finds the old message still gone and re-posts with the same nonce.
                    log.info(
                        "Job %s: re-posting the status in %s went unanswered: %r", job.id, target_id, exc
                    )
                    return
                message = found
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


def _generation_failed(error: str | None) -> Msg:
    return Msg("RunComfy could not generate the video: {reason}", reason=error or Msg("no reason given"))


def _word(word: str) -> str:
    """A remote status word, made safe to show: short, and unable to break out of the code span."""
    cleaned = "".join(ch for ch in word if ch.isprintable() and ch not in "`<>@")[:40]
    return f"`{cleaned}`" if cleaned else "—"


_NEVER_CONFIRMED = Msg("RunComfy never confirmed this job, so it was not started. Please run /animate again.")
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


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _nonce(kind: str, job: Job, epoch: int | None = None) -> str:
    """A nonce for one logical message of a job (Discord allows 25 characters): its kind, the job, the
    job's creation time (so a fresh database reusing job ids never matches an old message) and, for
    a re-post, what it replaces. The same call always gives the same nonce, also after a restart."""
    parts = [f"{kind}{_b36(job.id)}", _b36(int(job.created_at))]
    if epoch is not None:
        parts.append(_b36(epoch % 36**6))
    return ".".join(parts)[:25]


def _linked(locale: str | None, url: str, make: Callable[[str], str], *, extras: bool = True) -> _Outgoing:
    """A message showing `url`: inline while the message stays within Discord's 2,000 characters,
    else the text points below and the link goes into an embed (a link button would hold only 512
    characters; signed URLs run to 2,000). A link too long even for that -- or, without `extras`,
    too long for the text -- is left out, saying so. `make` builds the text around the link."""
    content = make(f"<{url}>")
    if len(content) <= MAX_CONTENT:
        return _Outgoing(content)
    if extras and _showable(url):
        return _Outgoing(make(tr(locale, "(link below)")), link=url)
    return _Outgoing(make(tr(locale, "(the link is too long to show in Discord)")))


def _showable(url: str) -> bool:
    return len(url) <= MAX_SHOWN_LINK and re.fullmatch(r"https?://\S+", url) is not None


def _replace_by_link(outgoing: _Outgoing, linked: _Outgoing, *, plain: bool = False) -> None:
    """Post the link instead of the file (and, if `plain`, without buttons or an embed)."""
    outgoing.video = None
    outgoing.plain = plain
    outgoing.content, outgoing.link = linked.content, linked.link


def _too_large(job: Job) -> _Outgoing:
    assert job.result_url is not None
    return _linked(
        job.locale,
        job.result_url,
        lambda link: tr(
            job.locale,
            "<@{user}> your video is ready but too large to upload here. "
            "Download it from RunComfy (the link may expire soon): {link} · {marker}",
            user=job.user_id,
            link=link,
            marker=_delivery_marker(job.id),
        ),
    )


def _no_attach(job: Job) -> _Outgoing:
    assert job.result_url is not None
    return _linked(
        job.locale,
        job.result_url,
        lambda link: tr(
            job.locale,
            "<@{user}> your video is ready, but I'm not allowed to attach files here. "
            "Download it from RunComfy (the link may expire soon): {link} · {marker}",
            user=job.user_id,
            link=link,
            marker=_delivery_marker(job.id),
        ),
    )


def _refused(job: Job) -> _Outgoing:
    """The minimal form: text only, the link in it if it fits."""
    assert job.result_url is not None
    return _linked(
        job.locale,
        job.result_url,
        lambda link: tr(
            job.locale,
            "<@{user}> your video is ready but Discord refused the upload. Download "
            "it from RunComfy (the link may expire soon): {link} · {marker}",
            user=job.user_id,
            link=link,
            marker=_delivery_marker(job.id),
        ),
        extras=False,
    )


def _missing_in(channel: object, *, file: bool, locale: str | None = None) -> list[str] | None:
    """The permissions (named in `locale`) the bot lacks to post in `channel`; None if unknown."""
    permissions_for = getattr(channel, "permissions_for", None)
    guild = getattr(channel, "guild", None)
    if permissions_for is None or guild is None or guild.me is None:
        return None
    perms: discord.Permissions = permissions_for(guild.me)
    in_thread = isinstance(channel, discord.Thread)
    if not perms.view_channel:  # Discord then denies everything else as well
        return [tr(locale, N_("View Channel"))]
    can_send = perms.send_messages_in_threads if in_thread else perms.send_messages
    needed = {N_("Send Messages in Threads") if in_thread else N_("Send Messages"): can_send}
    if can_send:  # without Send Messages, Discord reports the others as missing too: name the cause
        needed[N_("Embed Links")] = perms.embed_links
        if file:
            needed[N_("Attach Files")] = perms.attach_files
    return [tr(locale, name) for name, ok in needed.items() if not ok]


def _delivery_marker(job_id: int) -> str:
    """Tags every delivery so a restarted bot can recognise one it posted before a crash."""
    return f"job #{job_id}"


def _requester_only(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])
