"""Admission: the one place a request to animate an image is admitted or refused.

`Admission.admit` takes plain data the cog read off the interaction (no Discord objects) and answers
`Admitted` (the job is reserved -- charged, or awaiting approval uncharged -- and the image normalised)
or `Refused` (a bot.i18n.Msg saying what to fix; nothing charged, and perhaps a blocked prompt for the
audit log). The checks run cheapest first, so a refused request costs the bot no download:

ban → channel → request → declared attachment facts → permissions → blocklist → read-only
affordability → download (gated) → decode → reserve (re-checked and charged in one transaction).

Approval's approve-time re-check and /quota reuse `allowance` / `limits` / `price`, so the allowance
and price rules live here and in bot/policy.py only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot import policy
from bot.i18n import N_, LocaleLike, Msg, render, tr
from bot.intake import DECODE_PIXEL_BUDGET as DECODE_PIXEL_BUDGET
from bot.intake import DOWNLOADS_AT_ONCE, DownloadGate, ImageIntake
from bot.intake import PixelBudget as PixelBudget
from bot.media import MediaError, NormalizedImage, decode_cost, normalize_image
from bot.quota_rules import (
    AlreadyStarted,
    LimitCheck,
    LimitExceeded,
    Limits,
    QuotaExceeded,
    Standing,
    default_allowance,
)
from bot.ui import clip
from storage.guilds import GuildConfig, GuildRepository
from storage.jobs import InteractionSurface, Job, JobRepository, NewJob
from storage.quota import QuotaRepository
from storage.spec import GenerationSpec

if TYPE_CHECKING:
    import discord

    from bot.settings import Settings

log = logging.getLogger(__name__)

PROMPT_MAX = 800
NEGATIVE_MAX = 500
# Larger uploads are refused before download; the API itself recommends images of at most 50 MB.
MAX_SOURCE_BYTES = 50 * 1024 * 1024
# Smaller sides are refused (normalize_image's `min_side`), before download too (Discord declares it).
MIN_SIDE = 360
# A member's second request waits this long for their first to be downloaded and charged.
MEMBER_WAIT = 30.0


class AttachmentLike(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def size(self) -> int: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where the still image comes from: an attachment (URLs are signed and expire, so use it soon)."""

    url: str
    filename: str
    content_type: str | None
    size: int
    width: int | None = None  # as Discord declares it (images only); untrusted, the decode re-checks
    height: int | None = None

    @classmethod
    def from_attachment(cls, attachment: AttachmentLike) -> ImageSource:
        return cls(
            attachment.url,
            attachment.filename,
            attachment.content_type,
            attachment.size,
            attachment.width,
            attachment.height,
        )


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """The channel the job will live in, as far as admission cares."""

    id: int
    parent_id: int | None = None  # a thread's parent (channel allow-lists count threads as their parent)
    nsfw: bool = False
    in_thread: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    guild_id: int
    user_id: int
    role_ids: frozenset[int]
    channel: ChannelFacts | None  # None: a kind of channel the bot cannot post in
    permissions: discord.Permissions  # the bot's, in that channel
    spec: GenerationSpec  # what to generate, as the user gave it (admission cleans it)
    source: ImageSource
    upload_limit: int
    guild_locale: str | None = None  # the job's public messages and the audit log are in it
    origin: str | None = None  # the click or form it came from: one unfinished job per origin
    spoiler: bool = False  # the member asked for spoilers (the server may force them anyway)
    # Set when the job will live in the interaction (not a channel the bot posts in): the bot's
    # channel permissions do not matter there.
    interaction: InteractionSurface | None = None


@dataclass(frozen=True, slots=True)
class BlockedPrompt:
    """For the audit log, already in the server's language."""

    guild_id: int
    user_id: int
    title: str
    details: str
    locale: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # a bot.i18n.Msg: render it in the reader's language
    blocked: BlockedPrompt | None = None
    out_of_credits: bool = False  # the allowance is spent: the answer offers credit packs


@dataclass(frozen=True, slots=True)
class Admitted:
    """The job is reserved: charged (PENDING) or, in approval mode, awaiting approval uncharged. Any
    failure from here until RunComfy has the job must end it (`JobEngine.abandon`)."""

    job: Job
    image: NormalizedImage
    standing: Standing
    awaiting_approval: bool
    in_thread: bool


def missing_permissions(perms: discord.Permissions, *, in_thread: bool) -> list[str]:
    """The names (English, as in Discord's English client; translate with `tr`) of what the bot lacks."""
    needed = {
        N_("Send Messages"): perms.send_messages_in_threads if in_thread else perms.send_messages,
        N_("Embed Links"): perms.embed_links,
        N_("Attach Files"): perms.attach_files,
        N_("View Channel"): perms.view_channel,
    }
    if not in_thread:
        needed[N_("Create Public Threads")] = perms.create_public_threads
        needed[N_("Send Messages in Threads")] = perms.send_messages_in_threads
    return [name for name, ok in needed.items() if not ok]


def check_request(prompt: str, negative_prompt: str | None, image: ImageSource) -> str | None:
    """A friendly sentence for input we can reject before downloading anything (a bot.i18n.Msg)."""
    if not prompt.strip():
        return Msg("Please describe what should happen in the video (the prompt is empty).")
    if len(prompt) > PROMPT_MAX:
        return Msg(
            "Your prompt is {length} characters; the model accepts at most {limit}.",
            length=len(prompt),
            limit=PROMPT_MAX,
        )
    if negative_prompt is not None and len(negative_prompt) > NEGATIVE_MAX:
        return Msg(
            "Your negative prompt is {length} characters; the model accepts at most {limit}.",
            length=len(negative_prompt),
            limit=NEGATIVE_MAX,
        )
    content_type = (image.content_type or "").split(";")[0].strip().lower()
    if content_type and not content_type.startswith("image/"):
        return Msg(
            "`{filename}` isn't an image ({content_type}). Attach a JPEG, PNG, WebP or BMP picture.",
            filename=clip(image.filename, 80),
            content_type=content_type,
        )
    if image.size > MAX_SOURCE_BYTES:
        return Msg(
            "That image is {size:.1f} MB; please attach one under {limit} MB.",
            size=image.size / 1_048_576,
            limit=MAX_SOURCE_BYTES // 1_048_576,
        )
    return None


def check_dimensions(image: ImageSource) -> str | None:
    """Refuse an image Discord says is too small before downloading it (the same words as the
    decoder's refusal; a lying size is caught by the decoder anyway)."""
    if image.width is None or image.height is None or image.width <= 0 or image.height <= 0:
        return None
    if image.width < MIN_SIDE or image.height < MIN_SIDE:
        return Msg(
            "That image is too small ({width}x{height} px): it must be at least "
            "{min_side}x{min_side} px and small images aren't upscaled. Please upload a larger image.",
            width=image.width,
            height=image.height,
            min_side=MIN_SIDE,
        )
    return None


def refused(exc: LimitExceeded | AlreadyStarted, resolution: str) -> Refused:
    """Why reserving was refused; out of credits offers the credit packs (bot.premium)."""
    return Refused(policy.describe_limit(exc, resolution), out_of_credits=isinstance(exc, QuotaExceeded))


def changes_text(image: NormalizedImage, locale: LocaleLike) -> str:
    """What normalisation changed about the image, in the reader's language."""
    return "; ".join(render(change, locale) for change in image.changes)


def _listed(names: list[str]) -> Msg:
    """Names joined by ", ", each translated in whatever language the whole is rendered."""
    keys = [f"p{i}" for i in range(len(names))]
    return Msg(
        ", ".join("{" + k + "}" for k in keys), **{k: Msg(n) for k, n in zip(keys, names, strict=True)}
    )


Downloader = Callable[[str], Awaitable[bytes]]
Abandon = Callable[[int, str], Awaitable[object]]


class Admission:
    """Built once at start-up (AnimateBot.setup_hook); every way of starting a job calls `admit`."""

    def __init__(
        self,
        *,
        settings: Settings,
        guilds: GuildRepository,
        jobs: JobRepository,
        quota: QuotaRepository,
        download: Downloader,
        accepting: Callable[[], bool],
        abandon: Abandon,
        decode: Callable[[bytes], NormalizedImage] = normalize_image,
        cost: Callable[[bytes], int] = decode_cost,
        gate: DownloadGate | None = None,
        member_wait: float = MEMBER_WAIT,
        boost: Callable[[int], Awaitable[int | None]] | None = None,
        lease: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        # The engine's lease columns for a new pending job: another process's pending sweep leaves
        # it to this one while it lives, however long its status post queues for the REST share.
        self.lease = lease
        self.guilds = guilds
        self.jobs = jobs
        self.quota = quota
        self.accepting = accepting
        self.abandon = abandon
        self.gate = gate or DownloadGate(DOWNLOADS_AT_ONCE)
        self.intake = ImageIntake(download=download, decode=decode, cost=cost, gate=self.gate)
        self.member_wait, self.boost = member_wait, boost  # boost: a server subscription's allowance

    # ------------------------------------------------------------------ rules shared with /quota, approval

    async def allowance(
        self, config: GuildConfig, user_id: int, role_ids: set[int] | frozenset[int]
    ) -> policy.Allowance:
        override = await self.guilds.user_override(config.guild_id, user_id)
        default = default_allowance(
            config.guild_id, self.settings.daily_quota, self.settings.user_install_quota
        )
        boost = await self.boost(config.guild_id) if self.boost else None
        return policy.resolve_allowance(config, set(role_ids), override, default, boost)

    async def limits(self, config: GuildConfig, user_id: int, role_ids: set[int] | frozenset[int]) -> Limits:
        return policy.limits_for(config, await self.allowance(config, user_id, role_ids))

    def price(self, config: GuildConfig, resolution: str) -> int:
        return policy.cost_of(config, resolution, self.settings.cost_480p, self.settings.cost_1080p)

    # ------------------------------------------------------------------ the entry point

    async def admit(self, req: AdmissionRequest) -> Admitted | Refused:
        """Admit one request (cheapest checks first), or say why not; nothing is charged for a refusal."""
        if not self.accepting():
            return Refused(Msg("The bot is restarting — please try again in a minute. Nothing was charged."))
        if req.channel is None:
            return Refused(Msg("I can't post in this kind of channel. Use /animate in a text channel."))
        config = await self.guilds.get(req.guild_id)
        refusal = await self._cheap_checks(req, req.channel, config)
        if refusal is not None:
            return refusal
        new = self._new_job(req, req.channel, config)
        allowance = await self.allowance(config, req.user_id, req.role_ids)
        # A fast refusal before any download: a member who cannot afford the job costs ~nothing. It
        # charges nothing and decides nothing -- reserve_job re-checks in its transaction.
        reason = await self._unaffordable(new, policy.limits_for(config, allowance), config.approval_required)
        if reason is not None:
            return reason
        reserved = await self._download_and_reserve(req, new, config, allowance)
        if isinstance(reserved, Refused):
            return reserved
        job_id, standing, image = reserved
        job = await self._prepared(job_id, image)
        return Admitted(
            job, image, standing, awaiting_approval=config.approval_required, in_thread=req.channel.in_thread
        )

    async def _download_and_reserve(
        self, req: AdmissionRequest, new: NewJob, config: GuildConfig, allowance: policy.Allowance
    ) -> tuple[int, Standing, NormalizedImage] | Refused:
        """The expensive part, gated (bot-wide and one at a time per member): download, decode, then
        re-check every limit and reserve in one transaction."""
        approval = config.approval_required
        async with self.gate.member(req.user_id, self.member_wait) as slot:
            if not slot.acquired:
                return Refused(
                    Msg(
                        "Your previous image is still being prepared. Please try again in a moment. "
                        "Nothing was charged."
                    )
                )
            if slot.waited:
                # Their request that went first may have spent the credits or started this very job.
                reason = await self._unaffordable(new, policy.limits_for(config, allowance), approval)
                if reason is not None:
                    return reason
            try:
                image = await self.intake.prepare(req.source.url, req.source.size)
            except MediaError as exc:
                return Refused(exc.user_message)
            if image.adjusted:
                # Shown on the public status message, in the job's language; stored by the INSERT
                # that reserves the job (no write of its own).
                note = tr(
                    new.locale, "Adjusted for the model: {changes}", changes=changes_text(image, new.locale)
                )
                new = dataclasses.replace(new, image_note=note)
            try:
                # The rule is ours; storage runs it inside the transaction that charges.
                rule = LimitCheck(policy.limits_for(config, allowance), for_approval=approval)
                if self.lease is not None:  # this process holds the job from its first write
                    new = dataclasses.replace(new, **self.lease())
                job_id, standing = await self.quota.reserve(new, rule, await_approval=approval)
            except (LimitExceeded, AlreadyStarted) as exc:
                return refused(exc, new.resolution)
        return job_id, standing, image

    async def _prepared(self, job_id: int, image: NormalizedImage) -> Job:
        """The reserved job (its image note stored with it). A failure here ends the job."""
        try:
            job = await self.jobs.get(job_id)
            assert job is not None
        except BaseException:
            await self.abandon(job_id, Msg("An internal error stopped this job before it started."))
            raise
        return job

    async def _cheap_checks(
        self, req: AdmissionRequest, channel: ChannelFacts, config: GuildConfig
    ) -> Refused | None:
        """Everything decided without a download or a quota read: ban, channel, request, permissions,
        blocklist -- in that order."""
        ban = await self.guilds.get_ban(req.guild_id, req.user_id)
        if ban is not None:
            if ban.reason:
                return Refused(
                    Msg(
                        "A server admin has blocked you from using /animate here ({reason}).",
                        reason=clip(ban.reason, 200),
                    )
                )
            return Refused(Msg("A server admin has blocked you from using /animate here."))
        spec, source = req.spec, req.source
        problem = (
            policy.channel_problem(
                config, channel_id=channel.id, parent_id=channel.parent_id, nsfw=channel.nsfw
            )
            or check_request(spec.prompt, spec.negative_prompt, source)
            or check_dimensions(source)
        )
        if problem:
            return Refused(problem)
        missing = [] if req.interaction else missing_permissions(req.permissions, in_thread=channel.in_thread)
        if missing:
            return Refused(
                Msg(
                    "I can't run jobs in this channel because I'm missing these permissions here: "
                    "{permissions}. Ask a server admin to grant them, or use another channel.",
                    permissions=_listed(missing),
                )
            )
        if not config.blocklist:
            return None  # nothing to match: no trip to a worker thread (two per command otherwise)
        # Compiling (cached) and matching admins' regexes stays off the event loop.
        blocklist = await asyncio.to_thread(policy.compiled_blocklist, config.blocklist)
        hit = await asyncio.to_thread(blocklist.check, f"{spec.prompt}\n{spec.template or ''}")
        if hit is None:
            return None
        loc = req.guild_locale
        if hit.entry:
            details = tr(
                loc,
                "<@{user}> in <#{channel}>: matched `{matched}`",
                user=req.user_id,
                channel=channel.id,
                matched=clip(hit.matched, 80),
            )
        else:
            details = tr(
                loc,
                "<@{user}> in <#{channel}>: the blocklist check timed out",
                user=req.user_id,
                channel=channel.id,
            )
        blocked = BlockedPrompt(req.guild_id, req.user_id, tr(loc, "Prompt blocked"), details, loc)
        return Refused(policy.describe_block(hit), blocked)

    def _new_job(self, req: AdmissionRequest, channel: ChannelFacts, config: GuildConfig) -> NewJob:
        return NewJob.from_spec(
            req.spec.cleaned(),
            guild_id=req.guild_id,
            channel_id=channel.id,
            user_id=req.user_id,
            cost=self.price(config, req.spec.resolution),
            upload_limit=req.upload_limit,
            locale=req.guild_locale,
            origin=req.origin,
            spoiler=req.spoiler or config.force_spoiler,
            interaction=req.interaction,
        )

    async def _unaffordable(self, new: NewJob, limits: Limits, approval: bool) -> Refused | None:
        """Why the job would be refused right now (read-only, nothing charged), or None."""
        try:
            await self.quota.check(new, LimitCheck(limits, for_approval=approval))
        except (LimitExceeded, AlreadyStarted) as exc:
            return refused(exc, new.resolution)
        return None
