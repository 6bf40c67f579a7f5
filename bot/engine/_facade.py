"""`JobEngine`: the engine as the bot and the cogs see it, wiring its parts together.

Each concern has its own module: `_scheduler` (when each job is looked at), `_poller` (what RunComfy
says, and what that means for the job), `_delivery` (getting the video posted), `_presenter` (the
status message), `_launch` (posting, submitting, recording), `_endings` (the one way a job ends)
and `_cancel` (the Cancel button's effect). Every state change itself is in storage.lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.engine import _common as c
from bot.engine._cancel import Canceller
from bot.engine._delivery import Delivery
from bot.engine._endings import Endings
from bot.engine._launch import Launcher, LaunchResult
from bot.engine._leases import Leases
from bot.engine._poller import Poller
from bot.engine._presenter import Presenter
from bot.engine._scheduler import Clock, Scheduler, Tasks
from bot.fetch import OutputFetcher
from bot.settings import Settings
from storage.jobs import Job, JobRepository
from storage.lifecycle import JobEvent, JobState
from storage.quota import QuotaRepository
from storage.stats import StatsRepository

if TYPE_CHECKING:
    from bot.media import NormalizedImage

log = logging.getLogger(__name__)


class JobEngine:
    """Submits jobs, polls every in-flight job from one scheduler, delivers videos.

    Every state change goes through the database first (a compare-and-set along
    storage.lifecycle.TRANSITIONS), so a restart picks up exactly where the last process stopped and
    two racing actors (a poll and a cancel click) cannot both win. Nothing here ever re-sends a submit.
    """

    def __init__(
        self,
        *,
        client: discord.Client,
        settings: Settings,
        jobs: JobRepository,
        quota: QuotaRepository,
        runcomfy: c.VideoBackend,
        session: aiohttp.ClientSession,
        outputs: OutputFetcher,
        stats: StatsRepository,
        clock: Clock | None = None,
    ) -> None:
        self.ctx = ctx = c.Context(client, settings, jobs, quota, runcomfy, session, outputs, stats)
        self.tasks = Tasks()
        self.presenter = Presenter(ctx, self.tasks)
        self.endings = Endings(ctx, self.presenter)
        # The scheduler runs the poller's steps; the poller needs the scheduler to reschedule.
        self.scheduler = Scheduler(self._step, self.tasks, clock)
        self.delivery = Delivery(ctx, self.presenter, self.endings, self.scheduler)
        self.poller = Poller(ctx, self.tasks, self.presenter, self.endings, self.delivery, self.scheduler)
        self.leases = Leases(ctx, self.scheduler, self.endings)
        self.launcher = Launcher(ctx, self.tasks, self.presenter, self.endings, self.scheduler, self.leases)
        self.canceller = Canceller(ctx, self.endings, self.poller, self.scheduler)
        self._stopped = False

    # The dependencies, as the cogs and tests know them.
    @property
    def client(self) -> discord.Client:
        return self.ctx.client

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def jobs(self) -> JobRepository:
        return self.ctx.jobs

    @property
    def quota(self) -> QuotaRepository:
        return self.ctx.quota

    @property
    def runcomfy(self) -> c.VideoBackend:
        return self.ctx.runcomfy

    @property
    def accepting(self) -> bool:
        """False once shutting down: new commands are turned away, uncharged."""
        return self.launcher.accepting

    @property
    def _busy(self) -> set[int]:
        return self.scheduler.busy  # jobs whose step is running (the e2e harness waits on it)

    @property
    def _eta_cache(self) -> dict[tuple[int, str], tuple[float, tuple[float, ...]]]:
        return self.presenter.eta_cache

    async def _step(self, job_id: int) -> None:
        await self.poller.step_guarded(job_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume every unfinished job from the database; never resubmit anything."""
        resumed = await self.launcher.resume()
        if resumed:
            log.info("Resumed %d unfinished job(s)", resumed)
        self.scheduler.start()
        self.tasks.spawn(self.launcher.sweep_loop(), "pending-sweep")
        self.tasks.spawn(self.leases.loop(), "job-leases")

    @property
    def owner(self) -> str:
        """This process's name in job leases."""
        return self.ctx.owner

    def lease_columns(self) -> dict[str, Any]:
        """The columns that make this process the holder of a job written now (see Leases)."""
        return self.leases.lease_columns()

    async def stop(self) -> None:
        """Stop polling; unfinished jobs stay in the database and resume on the next start.

        Launches in progress get a short grace period first: a submit cut off mid-flight has an
        unknown outcome and would have to be refunded on restart.
        """
        if self._stopped:
            return  # the client may close twice (an error, then the caller); the database is gone
        self._stopped = True
        self.launcher.accepting = False
        launches = [t for t in self.launcher.launches if not t.done()]
        if launches:
            log.info("Waiting up to %.0f s for %d submission(s)", self.settings.shutdown_grace, len(launches))
            await asyncio.wait(launches, timeout=self.settings.shutdown_grace)
        self.ctx.closing = True
        await self.scheduler.stop()
        await self.launcher.flush_all()
        await self.leases.release()  # another process takes them over at once

    def schedule(self, job_id: int, delay: float) -> None:
        self.scheduler.schedule(job_id, delay)

    def poll_interval(self, job: Job) -> float:
        return self.poller.poll_interval(job)

    async def sweep_pending(self) -> int:
        return await self.launcher.sweep_pending()

    # ------------------------------------------------------------------ launching

    async def launch(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable, *, make_thread: bool = True
    ) -> LaunchResult:
        return await self.launcher.launch(job, image, channel, make_thread=make_thread)

    async def post_status(
        self, job: Job, image: NormalizedImage, channel: discord.abc.Messageable
    ) -> LaunchResult | None:
        return await self.launcher.post_status(job, image, channel)

    async def recover_status(self, job: Job) -> bool | None:
        return await self.launcher.recover_status(job)

    async def submit(self, job: Job, *, make_thread: bool = True) -> LaunchResult:
        return await self.launcher.submit(job, make_thread=make_thread)

    async def hosted_image(self, job: Job) -> discord.Attachment | None:
        return await self.launcher.hosted_image(job)

    # ------------------------------------------------------------------ status and endings

    async def present(self, job: Job, *, force: bool = False) -> None:
        await self.presenter.present(job, force=force)

    async def eta(self, job: Job) -> float | None:
        return await self.presenter.eta(job)

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
    ) -> bool:
        """End a job (see `Endings.end`): the one way every part of the bot ends one."""
        return await self.endings.end(
            job, to, reason, within=within, event=event, actor_id=actor_id, refund=refund
        )

    async def abandon(self, job_id: int, reason: str) -> None:
        """End a job that never reached RunComfy (an unexpected error mid-launch), refunding it.

        Reasons are stored, and shown publicly, in the job's language: pass a bot.i18n.Msg."""
        await self.endings.abandon(job_id, reason)

    async def cancel(self, job: Job, *, by_user_id: int) -> str:
        return await self.canceller.cancel(job, by_user_id=by_user_id)
