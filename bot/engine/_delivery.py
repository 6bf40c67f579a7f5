"""Getting a finished video to the requester, exactly once: download it through the safe fetcher,
re-encode it if it is too large, post it with a nonce, reconcile a lost answer, fall back to plainer
forms and finally to a DM with the link (refunded)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot import metrics, ui
from bot.engine import _common as c
from bot.engine._endings import Endings
from bot.engine._presenter import Presenter
from bot.engine._scheduler import Scheduler
from bot.engine._surface import delivered_in, delivery_targets, dm_channel_id, token_gone
from bot.fetch import check_video
from bot.i18n import N_, Msg, render, tr
from bot.intake import Budget
from bot.media import MediaError, fit_video
from bot.media.buffers import UploadBody
from storage.jobs import Job
from storage.lifecycle import JobEvent, JobState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class _Again(enum.Enum):
    FORM = "form"  # the post is to be tried again at once, in the plainer form just set


_RETRY_FORM = _Again.FORM


# Videos held at once by deliveries (see Delivery.deliver); one larger than this goes alone.
VIDEO_BYTES_IN_FLIGHT = 24_000_000
# Held for a download before any video's size is known: about a 5 s 480p clip (3.2 MB in the bench).
# A guess too small lets a burst of first deliveries all start at once (24 held 1 MB each, then
# 3 MB each arrived: 64 MiB of videos at a 100-photo burst's peak, measured).
VIDEO_FIRST_GUESS = 4_000_000
UNFETCHABLE = Msg(
    "RunComfy's video could not be fetched, and its link is not a secure (https) one I can pass on."
)


class _NothingToPost(Exception):
    """The finished video can reach the requester neither as a file nor as a link."""

    def __init__(self, reason: Msg) -> None:
        super().__init__(str(reason))
        self.reason = reason


@dataclass(slots=True)
class Outgoing:
    """A video delivery as it will be posted. Changed in place when Discord refuses a form of it."""

    content: str
    video: bytes | None = None
    link: str | None = None  # shown in an embed: it did not fit into the content
    plain: bool = False  # no buttons and no embed (Discord refused the full form)


class Delivery:
    def __init__(self, ctx: c.Context, presenter: Presenter, endings: Endings, scheduler: Scheduler) -> None:
        self.ctx = ctx
        self.presenter = presenter
        self.endings = endings
        self.scheduler = scheduler
        self._encoders = asyncio.Semaphore(2)  # video re-encodes at once (CPU and memory heavy)
        # Video bytes in memory at once, from download to the end of the upload: a burst of finished
        # jobs would otherwise hold every video (and aiohttp's copy of each upload) at once.
        self._videos = Budget(VIDEO_BYTES_IN_FLIGHT)
        self._typical = VIDEO_FIRST_GUESS  # what a download is expected to hold, until one is seen
        # Set when the backend serves outputs itself (the preview backend): url, max_bytes -> bytes.
        self._fetch_output: Callable[[str, int], Awaitable[bytes]] | None = getattr(
            ctx.runcomfy, "fetch_output", None
        )

    async def deliver(self, job: Job) -> None:
        """Post the finished video exactly once, even across crashes and lost answers.

        `delivery_started_at` is written before each upload (the move to delivering writes the
        first one). Whenever an earlier attempt may have reached Discord -- a previous process got
        that far, or Discord's answer was lost (5xx after storing, timeout, dropped connection) --
        the thread and channel are searched for the video first, and it is only posted if it is not
        there. The post itself carries a deterministic nonce, so a repeat within Discord's dedup
        window returns the first message as well.
        """
        if job.delivery_started_at is not None and job.id not in self.ctx.reconciled:
            try:
                found = await self.find_delivery(job)
            except c.Unverifiable as exc:
                log.warning("Job %s: cannot check for an earlier post yet (%s); will retry", job.id, exc)
                self.scheduler.schedule(job.id, self.ctx.settings.poll_max_interval)
                return
            self.ctx.reconciled.add(job.id)
            if found is not None:
                log.info("Job %s: found the video posted by an earlier attempt", job.id)
                await self._delivered(job, *found)
                return
        self.ctx.reconciled.add(job.id)
        async with self._videos.hold(self._typical) as held:
            try:
                outgoing = await self._prepare(job)
            except _NothingToPost as nothing:
                await self.endings.fail(job, nothing.reason)
                return
            if outgoing.video is not None:
                self._typical = len(outgoing.video)
                self._videos.take(held, len(outgoing.video) - held.amount)
            await self._upload(job, outgoing)

    async def _upload(self, job: Job, outgoing: Outgoing) -> None:
        # Each attempt is looked for from its own start (the attempt before it was checked above). A
        # mark already written less than RECONCILE_MARGIN ago will do -- it precedes this attempt, and
        # the search starts that much earlier anyway -- so the first attempt right after the move to
        # delivering (which wrote it) costs no write of its own.
        mark = job.delivery_started_at
        if mark is None or time.time() - mark > c.RECONCILE_MARGIN:
            job.delivery_started_at = time.time()
            await self.ctx.jobs.update(job.id, delivery_started_at=job.delivery_started_at)
        await self._post(job, outgoing)

    async def _prepare(self, job: Job) -> Outgoing:
        """The message and the video bytes to upload (no video: post RunComfy's link instead)."""
        assert job.result_url is not None
        url = job.result_url
        marker = _delivery_marker(job.id)
        loc, user = job.locale, job.user_id
        if self._fetch_output is not None and job.result_url.startswith("preview://"):
            fetch = self._fetch_output(job.result_url, c.MAX_VIDEO_DOWNLOAD)
        else:
            # RunComfy's URL is untrusted: https to public hosts (or RunComfy's own origin) only.
            fetch = self.ctx.outputs.fetch(job.result_url, max_bytes=c.MAX_VIDEO_DOWNLOAD, timeout=120)
        try:
            data = check_video(await fetch)
        except MediaError as exc:
            log.warning("Job %s: video download failed: %s", job.id, exc)
            if not self.ctx.outputs.linkable(job.result_url):
                # Neither the file nor a link the requester may follow: they get nothing, so it is
                # a failed job, refunded (with a link, the video is theirs to fetch: no refund).
                raise _NothingToPost(UNFETCHABLE) from exc
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
                spoiler=job.spoiler,
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
            return Outgoing(ready, data)
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
            spoiler=job.spoiler,
        )
        outgoing.video = fitted.data
        return outgoing

    async def _post(self, job: Job, outgoing: Outgoing) -> None:
        """Post in the thread, else in the channel; if neither takes it, DM the link and refund."""
        problem: Msg | None = None
        for target_id, target in await self._targets(job):
            posted = await self._post_in(job, target_id, target, outgoing)
            if posted is None:  # Discord trouble: the whole delivery is retried, up to DELIVERY_TIMEOUT
                self.scheduler.schedule(job.id, self.ctx.settings.poll_max_interval)
                return
            if isinstance(posted, int):
                metrics.count_delivery(job.id, uploaded=outgoing.video is not None)
                await self._delivered(job, delivered_in(target, target_id), posted)
                return
            problem = posted
        await self.undeliverable(job, problem)

    async def _targets(self, job: Job) -> list[tuple[int, discord.abc.Messageable]]:
        """Where the video may go, in order: the thread, else the channel; for a job that lives in
        its interaction, the follow-up, else a DM (bot/engine/_surface.py)."""
        if job.in_interaction:
            return delivery_targets(self.ctx, job)
        ids = dict.fromkeys(t for t in (job.thread_id, job.channel_id) if t is not None)
        return [(t, self.ctx.client.get_partial_messageable(t, guild_id=job.guild_id)) for t in ids]

    async def _post_in(
        self, job: Job, target_id: int, target: discord.abc.Messageable, outgoing: Outgoing
    ) -> int | Msg | None:
        """Post the video in one channel or thread, falling back to plainer forms of the message as
        Discord's error codes say. The message id; or why this channel refuses it (the caller tries
        the next); or None when Discord's answer was lost or it is overloaded (retry later)."""
        while True:
            fields = self._fields(job, outgoing)
            try:
                message = await c.send(
                    target,
                    nonce=c.nonce("v", job),  # the same logical message wherever and whenever it is posted
                    size=len(outgoing.video or b""),
                    **fields,
                )
            except c.AMBIGUOUS as exc:
                # It may be there anyway: the next attempt looks for it before posting again.
                log.warning(
                    "Job %s: Discord's answer to the video post was lost (%r); will check", job.id, exc
                )
                self.ctx.reconciled.discard(job.id)
                return None
            except discord.HTTPException as exc:
                verdict = self._refusal(job, target_id, outgoing, exc)
                if verdict is _RETRY_FORM:
                    continue
                return verdict
            finally:
                if "file" in fields:  # the upload is over: its bytes need not wait for the collector
                    fields["file"].fp.release()
            return message.id

    def _refusal(
        self, job: Job, target_id: int, outgoing: Outgoing, exc: discord.HTTPException
    ) -> Msg | _Again | None:
        """What Discord's refusal of a video post means: why this channel refuses it (a Msg), None to
        retry later, or _RETRY_FORM after `outgoing` was changed into a plainer form to try at once."""
        code = exc.code
        if token_gone(exc):  # the interaction's token expired: the DM is next
            return Msg("The interaction expired.")
        if code == 50007:
            return Msg("Your DMs are closed to me.")
        if exc.status == 429:
            log.warning("Job %s: rate limited posting the video; will retry", job.id)
            return None
        if code in c.THREAD_CLOSED:
            log.info("Job %s: thread %s is archived or locked; trying the channel", job.id, target_id)
            return Msg("The thread is archived or locked.")
        if code == 10003 or exc.status == 404:
            return Msg("The channel or thread was deleted.")
        if code == 50001:
            return Msg("I could not post the video in this channel (missing access).")
        if code == 50013:
            missing = c.missing_in(
                self.ctx.messageable(target_id, job.guild_id),
                file=outgoing.video is not None,
                locale=job.locale,
            )
            attach = tr(job.locale, N_("Attach Files"))
            if outgoing.video is not None and (missing is None or missing == [attach]):
                _replace_by_link(outgoing, _no_attach(job))
                return _RETRY_FORM
            if missing:
                return Msg(
                    "I could not post the video in <#{channel}>: I'm missing these permissions "
                    "there: {permissions}.",
                    channel=target_id,
                    permissions=", ".join(missing),
                )
            return Msg(
                "I could not post the video in <#{channel}>: Discord says I'm missing a permission there.",
                channel=target_id,
            )
        if code == 40005 or exc.status == 413:
            if outgoing.video is not None:
                _replace_by_link(outgoing, _too_large(job))
                return _RETRY_FORM
            return Msg("Discord refused the message as too large.")
        if code == 50035:
            log.warning("Job %s: Discord refused the video message's form: %s", job.id, exc.text)
        if not outgoing.plain:
            # Invalid form (or another refusal): a minimal message -- no file, no buttons, no
            # embed, the link only if it fits -- rather than no video at all.
            _replace_by_link(outgoing, _refused(job), plain=True)
            return _RETRY_FORM
        log.warning("Job %s: Discord refused even a plain message in %s: %s", job.id, target_id, exc)
        return Msg("Discord refused the message (error {code}).", code=code or exc.status)

    def _fields(self, job: Job, outgoing: Outgoing) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "content": ui.clip(outgoing.content, c.MAX_CONTENT),
            "allowed_mentions": c.requester_only(job),
        }
        if outgoing.video is not None:
            fields["file"] = discord.File(
                UploadBody(outgoing.video), filename=ui.video_filename(job.id, spoiler=job.spoiler)
            )
        if not outgoing.plain:
            fields["view"] = ui.result_view(job)
            if outgoing.link is not None:
                fields["embed"] = ui.link_embed(outgoing.link, job.locale, spoiler=job.spoiler)
        return fields

    async def _delivered(self, job: Job, channel_id: int, message_id: int) -> None:
        self.ctx.reconciled.discard(job.id)
        if await self.ctx.jobs.transition(
            job.id, JobState.DELIVERED, delivery_channel_id=channel_id, delivery_message_id=message_id
        ):
            log.info("Job %s delivered", job.id)
            fresh = await self.ctx.jobs.get(job.id)
            self.ctx.emit(fresh or job, JobEvent.DELIVERED)
            await self.presenter.present(fresh or job, force=True)

    async def undeliverable(self, job: Job, reason: Msg | None = None) -> None:
        """Neither the thread nor the channel takes the video (removed from the server, permissions
        revoked, Discord failing for an hour): send the link privately and refund -- the requester did
        not get what they paid for. `reason` is what Discord said (None: it kept failing)."""
        if job.delivery_started_at is not None:
            # The last attempt may have been stored after all.
            with contextlib.suppress(c.Unverifiable):
                found = await self.find_delivery(job)
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
            spoiler=job.spoiler,
        )
        fields: dict[str, Any] = {
            "content": ui.clip(dm.content, c.MAX_CONTENT),
            "allowed_mentions": ui.NO_MENTIONS,
        }
        if dm.link is not None:
            fields["embed"] = ui.link_embed(dm.link, job.locale, spoiler=job.spoiler)
        try:
            user = self.ctx.client.get_user(job.user_id) or await self.ctx.client.fetch_user(job.user_id)
            await c.send(user, nonce=c.nonce("d", job), **fields)
        except (discord.HTTPException, *c.AMBIGUOUS) as exc:
            log.info("Job %s: could not DM the requester either: %r", job.id, exc)
        await self.endings.fail(job, reason)

    async def find_delivery(self, job: Job) -> tuple[int, int] | None:
        """(channel id, message id) of a message of ours that already carries this job's video, if
        any, in the thread or the channel. Raises c.Unverifiable if Discord can't be read right now."""
        marker = re.compile(rf"\bjob #{job.id}\b")
        filename = ui.video_filename(job.id, spoiler=job.spoiler)

        def ours(message: discord.Message) -> bool:
            return bool(marker.search(message.content)) or any(
                a.filename == filename for a in message.attachments
            )

        since = job.delivery_started_at or job.finished_at or job.created_at
        where: list[int] = [t for t in (job.thread_id, job.channel_id) if t is not None]
        if job.in_interaction:
            # A follow-up can be read back only in the DM with the bot, which is also where the DM
            # fallback went (elsewhere an answer lost after a crash is posted again).
            try:
                where = [await dm_channel_id(self.ctx, job)]
            except (discord.HTTPException, *c.AMBIGUOUS) as exc:
                raise c.Unverifiable(str(exc)) from exc
        for target_id in dict.fromkeys(where):
            message = await self.ctx.find_own(job, target_id, since, ours)
            if message is not None:
                return target_id, message.id
        return None


def _linked(
    locale: str | None,
    url: str,
    make: Callable[[str], str],
    *,
    extras: bool = True,
    spoiler: bool = False,
) -> Outgoing:
    """A message showing `url`: inline while the message stays within Discord's 2,000 characters,
    else the text points below and the link goes into an embed (a link button would hold only 512
    characters; signed URLs run to 2,000). A link too long even for that -- or, without `extras`,
    too long for the text -- is left out, saying so. `make` builds the text around the link. With
    `spoiler` the inline link is wrapped in `||…||` (the embed wraps its own: `ui.link_embed`)."""
    content = make(ui.spoiler_text(f"<{url}>", spoiler))
    if len(content) <= c.MAX_CONTENT:
        return Outgoing(content)
    if extras and _showable(url):
        return Outgoing(make(tr(locale, "(link below)")), link=url)
    return Outgoing(make(tr(locale, "(the link is too long to show in Discord)")))


def _showable(url: str) -> bool:
    return len(url) <= c.MAX_SHOWN_LINK and re.fullmatch(r"https?://\S+", url) is not None


def _replace_by_link(outgoing: Outgoing, linked: Outgoing, *, plain: bool = False) -> None:
    """Post the link instead of the file (and, if `plain`, without buttons or an embed)."""
    outgoing.video = None
    outgoing.plain = plain
    outgoing.content, outgoing.link = linked.content, linked.link


def _link_instead(job: Job, template: str, *, extras: bool = True) -> Outgoing:
    """RunComfy's link in place of the file, worded by `template` (an N_ template with `{user}`,
    `{link}` and `{marker}`); without `extras`, text only (the minimal form)."""
    assert job.result_url is not None
    return _linked(
        job.locale,
        job.result_url,
        lambda link: tr(job.locale, template, user=job.user_id, link=link, marker=_delivery_marker(job.id)),
        extras=extras,
        spoiler=job.spoiler,
    )


def _too_large(job: Job) -> Outgoing:
    return _link_instead(
        job,
        N_(
            "<@{user}> your video is ready but too large to upload here. "
            "Download it from RunComfy (the link may expire soon): {link} · {marker}"
        ),
    )


def _no_attach(job: Job) -> Outgoing:
    return _link_instead(
        job,
        N_(
            "<@{user}> your video is ready, but I'm not allowed to attach files here. "
            "Download it from RunComfy (the link may expire soon): {link} · {marker}"
        ),
    )


def _refused(job: Job) -> Outgoing:
    """The minimal form: text only, the link in it if it fits."""
    return _link_instead(
        job,
        N_(
            "<@{user}> your video is ready but Discord refused the upload. Download "
            "it from RunComfy (the link may expire soon): {link} · {marker}"
        ),
        extras=False,
    )


def _delivery_marker(job_id: int) -> str:
    """Tags every delivery so a restarted bot can recognise one it posted before a crash."""
    return f"job #{job_id}"
