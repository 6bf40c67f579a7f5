"""The job's status message: edits (coalesced per message, spaced per channel), re-posts, the ETA."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import statistics
import time
from typing import TypeVar

import discord

from bot import ui
from bot.engine import _common as c
from bot.engine._poll_schedule import POLL_MIN_SAMPLES
from bot.engine._scheduler import Tasks
from storage.jobs import Job
from storage.lifecycle import POLLED, JobState
from storage.singleflight import SingleFlight

log = logging.getLogger(__name__)
SHOWN_MEMORY = 10_000  # jobs whose newest shown row is remembered
DURATIONS_SECONDS = 60.0  # recent durations are cached this long per guild and resolution ...
REREAD_AFTER_FINISH = 1.0  # ... or this long once a peer finished while the guild has too few of its own


class Presenter:
    def __init__(self, ctx: c.Context, tasks: Tasks) -> None:
        self.ctx = ctx
        self._tasks = tasks
        self._last_edit: dict[int, float] = {}
        self._edit_pending: set[int] = set()
        self._channel_next: dict[int, float] = {}  # earliest next routine edit per channel
        self._edit_locks: dict[int, asyncio.Lock] = {}
        self._shown: dict[int, float] = {}  # job id -> `updated_at` of the newest row shown
        # Jobs this process was asked to show finished (a finished state is final: insertion order,
        # bounded like `_shown`), so `show_if_still` need not read them again.
        self._ended: dict[int, None] = {}
        # job id -> (message, what it shows, the state it shows): its post or its last edit
        self._looks: dict[int, tuple[int | None, int, JobState]] = {}
        self._positions: dict[int, int] = {}  # queued job id -> its latest queue position (not stored)
        self.eta_cache: dict[tuple[int, str], tuple[float, tuple[float, ...]]] = {}
        # resolution -> guilds whose cached durations are not yet their own POLL_MIN_SAMPLES or more
        self._unsettled: dict[str, set[int]] = {}
        self._stale: set[tuple[int, str]] = set()  # of those, the ones a peer finished since
        self._duration_loads: SingleFlight[tuple[int, str], tuple[float, ...]] = SingleFlight()

    def position(self, job: Job) -> int | None:
        """The queue position last seen for a queued job (the row's, until a poll said otherwise)."""
        return self._positions.get(job.id, job.queue_position)

    def set_position(self, job_id: int, position: int | None) -> None:
        if position is None:
            self._positions.pop(job_id, None)
        else:
            self._positions[job_id] = position

    def posted(self, job: Job, message_id: int, embed: discord.Embed, view: discord.ui.View | None) -> None:
        """The status message was just posted showing `embed` and `view`: that counts as its latest
        edit, so an edit showing the same is skipped and a routine one waits its interval."""
        self._last_edit[job.id] = time.monotonic()
        self._looks[job.id] = (message_id, _look(embed, view), job.state)

    def shows(self, job: Job, state: JobState) -> bool:
        """Whether the job's status message, as this process last showed it, shows `state`."""
        looks = self._looks.get(job.id)
        return looks is not None and looks[0] == job.status_message_id and looks[2] is state

    async def show_queue(self, job: Job, position: int | None) -> None:
        """A poll saw the queued `job` at `position` (None: RunComfy gave none): a routine edit, unless
        the message already shows exactly that. Called on every queued poll, so an edit dropped as
        too soon is made by a later poll."""
        if job.state is not JobState.QUEUED:
            return
        looks = self._looks.get(job.id)
        if position == self.position(job) and looks is not None and looks[2] is JobState.QUEUED:
            return
        self.set_position(job.id, position)
        await self.present(job)

    async def refresh(self, job_id: int, *, force: bool = False) -> None:
        """Show the job as the database has it now."""
        job = await self.ctx.jobs.get(job_id)
        if job is not None:
            await self.present(job, force=force)

    async def present(self, job: Job, *, force: bool = False) -> None:
        """Edit the status message to show `job`. Routine edits (the queue position) are made at most
        once per message per `status_edit_interval` -- one asked for sooner is dropped, as the next
        poll asks again (see `show_queue`), and a job that starts meanwhile never shows a position
        nobody had time to read -- and spaced `channel_edit_interval` apart within a channel (all
        status messages of a channel share Discord's rate limit); forced edits -- state changes -- go
        at once.

        Edits of one message run one at a time. The job given is shown as it is (callers pass the row
        they just read or wrote), unless an edit already showed a newer row: then it is read again, so
        the last edit always shows the newest state, whatever order they were asked for in.
        """
        settings = self.ctx.settings
        if job.state.finished:
            self._note_ended(job.id)
        if job.status_message_id is None or self.ctx.closing:
            return
        channel_id = job.status_channel_id or job.channel_id
        now = time.monotonic()
        if not force:
            if now - self._last_edit.get(job.id, -1e9) < settings.status_edit_interval:
                return
            wait = self._channel_next.get(channel_id, 0.0) - now
            if wait > 0:
                if job.id not in self._edit_pending:
                    self._edit_pending.add(job.id)
                    self._tasks.spawn(self._delayed(job.id, wait), f"present-{job.id}")
                return
        self._last_edit[job.id] = now
        self._channel_next[channel_id] = max(now, self._channel_next.get(channel_id, 0.0)) + (
            settings.channel_edit_interval
        )
        lock = self._edit_locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            shown = self._shown.get(job.id)
            fresh = job
            if shown is not None and job.updated_at < shown:
                fresh = await self.ctx.jobs.get(job.id) or job
            if fresh.status_message_id is None:
                return
            self._remember(job.id, max(fresh.updated_at, shown or fresh.updated_at))
            if fresh.state is JobState.QUEUED:
                fresh = dataclasses.replace(fresh, queue_position=self.position(fresh))
            else:
                self._positions.pop(job.id, None)
            await self._edit(fresh)
        if fresh.state.finished:
            self._last_edit.pop(job.id, None)
            self._edit_locks.pop(job.id, None)

    def _remember(self, job_id: int, updated_at: float) -> None:
        # Kept after a job ends too (a late edit of an older row must still see it is old); bounded,
        # as an edit that late only ever comes from a step that was already under way.
        _keep(self._shown, job_id, updated_at)

    def _note_ended(self, job_id: int) -> None:
        _keep(self._ended, job_id, None)

    async def _edit(self, job: Job) -> None:
        eta = await self.eta(job)
        embed, view = ui.status_embed(job, eta=eta), ui.status_view(job)
        # An edit that would show exactly what the message shows already carries nothing: skip it.
        looks = _look(embed, view)
        if self._looks.get(job.id, (None, None))[:2] == (job.status_message_id, looks):
            return
        try:
            await self.ctx.status_message(job).edit(embed=embed, view=view, allowed_mentions=ui.NO_MENTIONS)
        except discord.NotFound as exc:
            self._looks.pop(job.id, None)
            if exc.code == 10008:  # Unknown Message: someone deleted it
                await self._repost(job)
            else:
                log.warning("Job %s: status message unreachable: %s", job.id, exc)
        except discord.HTTPException as exc:
            self._looks.pop(job.id, None)
            log.warning("Job %s: could not update the status message: %s", job.id, exc)
        else:
            self._looks[job.id] = (job.status_message_id, looks, job.state)
            if job.state.finished:
                self._looks.pop(job.id, None)  # a finished job's message is not edited again

    async def eta(self, job: Job) -> float | None:
        """Expected finish: submit time plus the median of the guild's recent jobs at this resolution
        (bot-wide while the guild has fewer than a few)."""
        if job.state not in POLLED or job.submitted_at is None:
            return None
        took = await self.durations(job)
        return job.submitted_at + statistics.median(took) if took else None

    async def durations(self, job: Job) -> tuple[float, ...]:
        """Recent durations (submit -> finished) of the guild's delivered jobs at the job's resolution,
        bot-wide while the guild has fewer than a few; empty while there are too few anywhere. The ETA
        and the poll schedule share them, cached for a minute per guild and resolution."""
        key = (job.guild_id, job.resolution)
        cached = self.eta_cache.get(key)
        ttl = REREAD_AFTER_FINISH if key in self._stale else DURATIONS_SECONDS
        if cached is None or time.monotonic() - cached[0] > ttl:
            # A burst of jobs all miss at once: they share one read (see storage/singleflight.py).
            return await self._duration_loads.run(key, functools.partial(self._load_durations, *key))
        return cached[1]

    async def _load_durations(self, guild_id: int, resolution: str) -> tuple[float, ...]:
        key = (guild_id, resolution)
        self._stale.discard(key)
        stats = self.ctx.stats
        took = await stats.recent_durations(resolution, guild_id)
        unsettled = self._unsettled.setdefault(resolution, set())
        if len(took) < POLL_MIN_SAMPLES:
            unsettled.add(guild_id)
        else:
            unsettled.discard(guild_id)
        if len(took) < c.ETA_MIN_SAMPLES:
            took = await stats.recent_durations(resolution, None)
        found = tuple(took) if len(took) >= c.ETA_MIN_SAMPLES else ()
        self.eta_cache[key] = (time.monotonic(), found)
        return found

    def finished(self, job: Job) -> None:
        """A job at this resolution finished (its duration now counts, see `recent_durations`): a
        guild whose cached durations are not yet its own settled history (none, too few, or the
        bot-wide ones) reads them again at its next step (at most once per REREAD_AFTER_FINISH, so
        a burst of finishes costs one read), not a minute later. Cold jobs learn from their peers as
        they finish, and a server's jobs stop being planned on other work's history as soon as their
        own says enough."""
        for guild_id in self._unsettled.pop(job.resolution, ()):
            self._stale.add((guild_id, job.resolution))

    async def _repost(self, job: Job) -> None:
        """The status message was deleted: post a fresh one (in the thread if there is one) so the
        requester keeps their progress and Cancel button. The source image went with the original."""
        assert job.status_message_id is not None
        deleted = job.status_message_id
        job.status_has_image = False
        started = time.time()
        for target_id in dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None):
            target = self.ctx.client.get_partial_messageable(target_id, guild_id=job.guild_id)
            view = ui.status_view(job) or discord.ui.View(timeout=None)
            try:
                # The nonce names this re-post (of this deleted message), wherever it lands.
                message = await c.send(
                    target,
                    nonce=c.nonce("r", job, deleted),
                    embed=ui.status_embed(job),
                    view=view,
                    allowed_mentions=ui.NO_MENTIONS,
                )
            except c.AMBIGUOUS as exc:
                try:
                    found = await self.ctx.find_status(job, target_id, besides=deleted, since=started)
                except c.Unverifiable:
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
            await self.ctx.jobs.update(
                job.id, status_message_id=message.id, status_channel_id=target_id, status_has_image=False
            )
            # Rows read before this point name the deleted message: the next edit must read again.
            self._remember(job.id, time.time())
            log.info("Job %s: status message was deleted; re-posted in %s", job.id, target_id)
            return

    async def show_if_still(self, job_id: int, state: JobState, wait: float) -> None:
        """Show the job after `wait` seconds if it is still in `state`: for a state that usually
        passes faster than anyone could read it (uploading the video), only shown when it lingers."""
        await asyncio.sleep(wait)
        if job_id in self._ended and not state.finished:
            return  # shown finished since (usually: delivered): it can be in no other state again
        job = await self.ctx.jobs.get(job_id)
        if job is not None and job.state is state:
            await self.present(job, force=True)

    async def _delayed(self, job_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._edit_pending.discard(job_id)
        await self.refresh(job_id)  # not forced: waits again if its channel is still busy


def _look(embed: discord.Embed, view: discord.ui.View | None) -> int:
    """What a status message shows, as one comparable value."""
    return hash(repr((embed.to_dict(), view.to_components() if view is not None else None)))


_V = TypeVar("_V")


def _keep(memory: dict[int, _V], job_id: int, value: _V) -> None:
    """Remember `value` for the job as the newest entry, forgetting the oldest past SHOWN_MEMORY."""
    memory.pop(job_id, None)
    memory[job_id] = value
    while len(memory) > SHOWN_MEMORY:
        del memory[next(iter(memory))]
