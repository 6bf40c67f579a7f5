"""What users see: the status embed, its Cancel button, and the wording of every message.

Public messages about a job (status embed, its buttons, thread name) are in the job's language
(`job.locale`, the server's language when the job was made); see bot/i18n.py."""

from __future__ import annotations

import re
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self
from urllib.parse import urlsplit

import discord

from bot import errors
from bot.i18n import N_, LocaleLike, render, tr, trn
from bot.text import clip as clip  # re-exported: the UI helpers callers know
from bot.text import ts as ts
from storage.jobs import Job, JobState

if TYPE_CHECKING:
    from storage.jobs import JobRepository


class _Canceller(Protocol):
    async def cancel(self, job: Job, *, by_user_id: int) -> str: ...


class ButtonHost(Protocol):
    """What the buttons here need from the bot (bot.client.AnimateBot). A Protocol, so this module,
    which the engine imports, never imports the client."""

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def engine(self) -> _Canceller: ...

    # The cogs that handle the approval and result buttons (None while not loaded).
    @property
    def approval(self) -> ButtonHandler | None: ...

    @property
    def remix(self) -> ButtonHandler | None: ...


MODEL_LABEL = N_("Wan 2.2 on RunComfy")
PREVIEW_LABEL = N_("PREVIEW — a free local zoom/pan, not an AI generation")
# Which backend the messages describe; set once at start-up by `configure`.
_preview = False


def configure(*, preview: bool) -> None:
    global _preview
    _preview = preview


def is_preview() -> bool:
    return _preview


def backend_label(locale: LocaleLike) -> str:
    return tr(locale, PREVIEW_LABEL if _preview else MODEL_LABEL)


def credits(locale: LocaleLike, n: int) -> str:
    """ "1 credit", "2 credits"."""
    return trn(locale, n, "{n} credit", "{n} credits")


# The one "no mentions" setting for every message that echoes user text (defined in bot/errors.py,
# which sits below this module and needs it too).
NO_MENTIONS = errors.NO_MENTIONS


def message_link(guild_id: int, channel_id: int, message_id: int | None = None) -> str:
    """A link to a message, or to the channel (thread) when there is no message id."""
    base = f"https://discord.com/channels/{guild_id}/{channel_id}"
    return base if message_id is None else f"{base}/{message_id}"


# Discord blurs an attachment whose filename starts with this, until the reader clicks it.
SPOILER_PREFIX = "SPOILER_"


def spoiler_name(filename: str, spoiler: bool) -> str:
    """`filename` as uploaded: prefixed with SPOILER_ (once) when it is to be a spoiler."""
    if spoiler and not filename.startswith(SPOILER_PREFIX):
        return SPOILER_PREFIX + filename
    return filename


def spoiler_text(text: str, spoiler: bool) -> str:
    """`text` hidden behind Discord's spoiler markup (`||…||`) when it is to be a spoiler."""
    return f"||{text}||" if spoiler else text


def video_filename(job_id: int, *, spoiler: bool = False) -> str:
    """The name a job's video is uploaded under, on every delivery path (pass `spoiler=job.spoiler`):
    SPOILER_-prefixed for a spoilered job, so Discord blurs it."""
    return spoiler_name(f"animate-{job_id}.mp4", spoiler)


_COLOURS = {
    JobState.PENDING: discord.Colour.light_grey(),
    JobState.QUEUED: discord.Colour.blurple(),
    JobState.RUNNING: discord.Colour.gold(),
    JobState.DELIVERING: discord.Colour.gold(),
    JobState.DELIVERED: discord.Colour.green(),
    JobState.FAILED: discord.Colour.red(),
    JobState.CANCELLED: discord.Colour.dark_grey(),
    JobState.AWAITING_APPROVAL: discord.Colour.orange(),
    JobState.REJECTED: discord.Colour.dark_red(),
}


def eta_line(eta: float | None, now: float, locale: LocaleLike = None) -> str:
    """When the video should be ready, from the server's recent jobs (a relative Discord timestamp)."""
    if eta is None:
        return ""
    if eta <= now + 5:
        return "\n" + tr(locale, "Expected any moment now")
    return "\n" + tr(locale, "Expected {when}", when=ts(eta))


def state_line(job: Job, now: float | None = None, eta: float | None = None) -> str:
    """The job's state in words, in the job's language (the error text is stored in it too)."""
    now = time.time() if now is None else now
    loc = job.locale
    match job.state:
        case JobState.PENDING:
            return tr(loc, "⏳ Submitting to RunComfy…") + eta_line(eta, now, loc)
        case JobState.QUEUED:
            if job.queue_position is not None:
                text = tr(loc, "🕒 Queued — position {position}", position=job.queue_position)
            else:
                text = tr(loc, "🕒 Queued")
            return text + eta_line(eta, now, loc)
        case JobState.RUNNING:
            # A live relative timestamp: Discord keeps it current, so the message needs no edits
            # just to show the time passing.
            started = job.started_at or job.submitted_at or now
            return tr(loc, "🎞️ Generating… started {when}", when=ts(started)) + eta_line(eta, now, loc)
        case JobState.DELIVERING:
            return tr(loc, "📦 Done — uploading the video…")
        case JobState.DELIVERED if job.in_interaction:
            # The video is this interaction's follow-up, just below the status.
            if job.submitted_at and job.finished_at:
                return tr(
                    loc,
                    "✅ Done in {took} — the video is below.",
                    took=duration(job.finished_at - job.submitted_at),
                )
            return tr(loc, "✅ Done — the video is below.")
        case JobState.DELIVERED if job.thread_id is not None and job.delivery_channel_id == job.channel_id:
            # The thread was closed or deleted, so the video went to the channel.
            if job.submitted_at and job.finished_at:
                return tr(
                    loc,
                    "✅ Done in {took} — the video is in this channel.",
                    took=duration(job.finished_at - job.submitted_at),
                )
            return tr(loc, "✅ Done — the video is in this channel.")
        case JobState.DELIVERED:
            if job.submitted_at and job.finished_at:
                return tr(
                    loc,
                    "✅ Done in {took} — the video is in the thread.",
                    took=duration(job.finished_at - job.submitted_at),
                )
            return tr(loc, "✅ Done — the video is in the thread.")
        case JobState.FAILED:
            return tr(
                loc,
                "❌ Failed: {reason}\nYour credits were refunded.",
                reason=clip(job.error or tr(loc, "unknown error"), 300),
            )
        case JobState.CANCELLED if job.request_id is None:
            # Withdrawn while awaiting approval: it was never charged.
            return tr(
                loc, "🚫 {reason}\nNothing was charged.", reason=clip(job.error or tr(loc, "Withdrawn."), 200)
            )
        case JobState.CANCELLED:
            text = tr(loc, "🚫 Cancelled. {reason}", reason=clip(job.error or "", 200)).rstrip()
            return text + "\n" + tr(loc, "Your credits were refunded.")
        case JobState.AWAITING_APPROVAL:
            return tr(loc, "⏸️ Waiting for approval by a moderator — nothing is charged until it is approved.")
        case JobState.REJECTED:
            return tr(
                loc,
                "⛔ {reason}\nNothing was charged.",
                reason=clip(job.error or tr(loc, "Rejected by a moderator."), 200),
            )
    return job.state.value  # pragma: no cover - exhaustive above


def duration(seconds: float, *, nearest: bool = False) -> str:
    """ "42s", "3m 05s". Seconds are cut off (a job's own time, as the status shows it) or, with
    `nearest`, rounded (a median of many jobs, as /animate-stats shows it)."""
    whole = round(seconds) if nearest else int(seconds)
    minutes, secs = divmod(max(0, whole), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def image_filename(job: Job) -> str | None:
    if not job.image_url:
        return None
    name = urlsplit(job.image_url).path.rsplit("/", 1)[-1]
    return name or None


def status_embed(job: Job, now: float | None = None, eta: float | None = None) -> discord.Embed:
    loc = job.locale
    embed = discord.Embed(
        title=tr(loc, "🎬 Image to video (preview)") if _preview else tr(loc, "🎬 Image to video"),
        description=clip(job.prompt, 1500),
        colour=_COLOURS[job.state],
    )
    embed.add_field(name=tr(loc, "Requested by"), value=f"<@{job.user_id}>", inline=True)
    embed.add_field(name=tr(loc, "Resolution"), value=job.resolution, inline=True)
    if job.template:
        embed.add_field(name=tr(loc, "Template"), value=clip(job.template, 100), inline=True)
    if job.seed is not None:
        embed.add_field(name=tr(loc, "Seed"), value=str(job.seed), inline=True)
    embed.add_field(name=tr(loc, "Magic prompt"), value=on_off(loc, job.prompt_extend), inline=True)
    embed.add_field(name=tr(loc, "Cost"), value=credits(loc, job.cost), inline=True)
    if job.negative_prompt:
        embed.add_field(name=tr(loc, "Negative prompt"), value=clip(job.negative_prompt, 1000), inline=False)
    if job.image_note:
        embed.add_field(name=tr(loc, "Image"), value=clip(job.image_note, 1000), inline=False)
    embed.add_field(name=tr(loc, "Status"), value=state_line(job, now, eta), inline=False)
    # An embed image cannot be a spoiler: a spoilered job's image stays a (blurred) attachment.
    filename = image_filename(job) if job.status_has_image and not job.spoiler else None
    if filename:
        embed.set_thumbnail(url=f"attachment://{filename}")
    embed.set_footer(text=tr(loc, "Job #{id} · {backend}", id=job.id, backend=backend_label(loc)))
    return embed


def on_off(locale: LocaleLike, value: bool) -> str:
    return tr(locale, "on") if value else tr(locale, "off")


class ButtonHandler(Protocol):
    """The cog that handles a kind of job button (cogs/remix.py, cogs/approval.py)."""

    async def button_refusal(
        self, interaction: discord.Interaction[Any], job: Job, action: str
    ) -> str | None:
        """Why this member may not press `action` on `job` (in their language), or None."""
        ...

    async def button_pressed(self, interaction: discord.Interaction[Any], job: Job, action: str) -> None:
        """What a click does, once every check passed."""
        ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """One base for the persistent job buttons, custom_id `animate:<action>:<job_id>`, so a restart
    loses no button.

    `interaction_check` loads the job and refuses a button that is not this server's job's or does not
    sit on its status message (with DELIVERY: its video), then asks the handling cog who may press it;
    only then does `callback` hand the click to that cog. The cog is a typed attribute of the bot
    (`handler`), never looked up by name. An exception in either step goes to bot.errors.report_error
    (for a DynamicItem discord.py would only log it). This never-matching template keeps the base
    unregistrable.

    (discord.py registers the class of every DynamicItem in a sent view for its template, so the class
    that renders a button must be the class that handles it: handling is delegated, not subclassed.)
    """

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle, str]]]
    TEMPLATE: ClassVar[str]
    DELIVERY: ClassVar[bool] = False
    # Actions that may charge credits (a failure then says nothing was charged).
    CHARGING: ClassVar[frozenset[str]] = frozenset()
    UNAVAILABLE: ClassVar[str] = N_("That button isn't available right now. Please try again later.")

    def __init__(
        self, action: str, job_id: int, *, locale: LocaleLike = None, disabled: bool = False
    ) -> None:
        label, style, emoji = self.LOOKS[action]
        super().__init__(
            discord.ui.Button(
                label=tr(locale, label),
                style=style,
                custom_id=f"animate:{action}:{job_id}",
                emoji=emoji,
                disabled=disabled,
            )
        )
        self.action = action
        self.job_id = job_id
        self.job: Job | None = None  # set by interaction_check

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> Self:
        return cls(match["action"], int(match["job_id"]))

    def _reporting(self, interaction: discord.Interaction[Any]) -> AbstractAsyncContextManager[None]:
        action = f"{self.action} button of job {self.job_id}"
        return errors.reporting(interaction, action, charges=self.action in self.CHARGING)

    @classmethod
    def handler(cls, bot: ButtonHost) -> ButtonHandler | None:
        """The loaded cog that handles these buttons (None: it is not loaded)."""
        return None

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        async with self._reporting(interaction):
            handler = self.handler(interaction.client)
            if handler is None:
                await interaction.response.send_message(
                    tr(interaction.locale, self.UNAVAILABLE), ephemeral=True, allowed_mentions=NO_MENTIONS
                )
                return False
            job = await job_for_button(interaction, self.job_id, delivery=self.DELIVERY)
            if job is None:
                return False
            refusal = await handler.button_refusal(interaction, job, self.action)
            if refusal is not None:
                await interaction.response.send_message(refusal, ephemeral=True, allowed_mentions=NO_MENTIONS)
                return False
            self.job = job
            return True
        return False  # the check failed and was reported

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        async with self._reporting(interaction):
            handler = self.handler(interaction.client)
            assert self.job is not None and handler is not None, "interaction_check runs first"
            await handler.button_pressed(interaction, self.job, self.action)


DECISION_TEMPLATE = r"animate:(?P<action>approve|reject|withdraw):(?P<job_id>[0-9]{1,18})"
RESULT_TEMPLATE = r"animate:(?P<action>again|edit|details):(?P<job_id>[0-9]{1,18})"


class DecisionButton(JobButton, template=DECISION_TEMPLATE):
    """Approval mode: Approve / Reject (moderators) and Cancel (the requester withdraws); handled by
    cogs/approval.py (`bot.approval`)."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle, str]]] = {
        "approve": (N_("Approve"), discord.ButtonStyle.success, "✔️"),
        "reject": (N_("Reject"), discord.ButtonStyle.danger, "⛔"),
        "withdraw": (N_("Cancel"), discord.ButtonStyle.secondary, "✖️"),
    }
    TEMPLATE = DECISION_TEMPLATE
    CHARGING = frozenset({"approve"})
    UNAVAILABLE = N_("Approvals aren't available right now. Please try again later.")

    @classmethod
    def handler(cls, bot: ButtonHost) -> ButtonHandler | None:
        return bot.approval


class ResultButton(JobButton, template=RESULT_TEMPLATE):
    """Buttons on a finished video: Animate again, Edit prompt, Details; handled by cogs/remix.py
    (`bot.remix`)."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle, str]]] = {
        "again": (N_("Animate again"), discord.ButtonStyle.primary, "🔁"),
        "edit": (N_("Edit prompt"), discord.ButtonStyle.secondary, "✏️"),
        "details": (N_("Details"), discord.ButtonStyle.secondary, "ℹ️"),
    }
    TEMPLATE = RESULT_TEMPLATE
    DELIVERY = True
    CHARGING = frozenset({"again"})

    @classmethod
    def handler(cls, bot: ButtonHost) -> ButtonHandler | None:
        return bot.remix


CANCEL_TEMPLATE = r"animate:(?P<action>cancel):(?P<job_id>[0-9]{1,18})"


def requester_or_moderator(interaction: discord.Interaction[Any], job: Job) -> bool:
    """Who may act on a job's buttons: the member who started it, or a moderator (Manage Messages)."""
    return interaction.user.id == job.user_id or interaction.permissions.manage_messages


class _CancelHandler:
    """Who may cancel a job, and the answer they see; what cancelling does is the engine's `cancel`."""

    def __init__(self, bot: ButtonHost) -> None:
        self.bot = bot

    async def button_refusal(
        self, interaction: discord.Interaction[Any], job: Job, action: str
    ) -> str | None:
        if not requester_or_moderator(interaction, job):
            return tr(
                interaction.locale,
                "Only the person who started this job, or a moderator with Manage Messages, can cancel it.",
            )
        return None

    async def button_pressed(self, interaction: discord.Interaction[Any], job: Job, action: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.bot.engine.cancel(job, by_user_id=interaction.user.id)
        await interaction.followup.send(
            render(text, interaction.locale), ephemeral=True, allowed_mentions=NO_MENTIONS
        )


class CancelButton(JobButton, template=CANCEL_TEMPLATE):
    """The status message's Cancel: the requester or a moderator (Manage Messages), while queued."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle, str]]] = {
        "cancel": (N_("Cancel"), discord.ButtonStyle.danger, "✖️"),
    }
    TEMPLATE = CANCEL_TEMPLATE

    @classmethod
    def handler(cls, bot: ButtonHost) -> ButtonHandler | None:
        return _CancelHandler(bot)


async def job_for_button(
    interaction: discord.Interaction[Any], job_id: int, *, delivery: bool = False
) -> Job | None:
    """The job a persistent button names, if it is this server's job and the button sits on its status
    message (or, with `delivery`, its video). A forged or stale custom_id is refused: None."""
    bot: ButtonHost = interaction.client
    job = await bot.jobs.get(job_id)
    message_id = interaction.message.id if interaction.message else None
    # A job living in its interaction (a DM, a group DM, a server without the bot) is in the
    # user-install scope rather than a server: it belongs to the channel it was started in.
    here = job is not None and (
        job.channel_id == interaction.channel_id
        if job.in_interaction
        else job.guild_id == interaction.guild_id
    )
    if job is not None and here:
        anchor = job.delivery_message_id if delivery else job.status_message_id
        if message_id == anchor:
            return job
    text = (
        tr(interaction.locale, "This button doesn't belong to a video here.")
        if delivery
        else tr(interaction.locale, "This button doesn't belong to a job here.")
    )
    await interaction.response.send_message(text, ephemeral=True)
    return None


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    # A job that lived in its interaction keeps no readable copy of its image once its token is gone
    # (cleared when the job ends), so only Details is offered there.
    actions = ("details",) if job.in_interaction else ("again", "edit", "details")
    for action in actions:
        view.add_item(ResultButton(action, job.id, locale=job.locale))
    return view


def status_view(job: Job) -> discord.ui.View | None:
    """The Cancel button while a job may still be cancelled; greyed out once it runs; gone at the end.
    While a job awaits approval: Approve, Reject and the requester's Cancel."""
    if job.state is JobState.AWAITING_APPROVAL:
        view = discord.ui.View(timeout=None)
        for action in ("approve", "reject", "withdraw"):
            view.add_item(DecisionButton(action, job.id, locale=job.locale))
        return view
    if job.state in (JobState.PENDING, JobState.QUEUED):
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton("cancel", job.id, locale=job.locale))
        return view
    if job.state in (JobState.RUNNING, JobState.DELIVERING):
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton("cancel", job.id, disabled=True, locale=job.locale))
        return view
    return None


def thread_name(prompt: str, locale: LocaleLike = None) -> str:
    """Thread names are at most 100 characters and read best as one line."""
    flat = " ".join(prompt.split()) or tr(locale, "animation")
    return clip(f"🎬 {flat}", 100)


def link_embed(url: str, locale: LocaleLike = None, *, spoiler: bool = False) -> discord.Embed:
    """A link too long for the message text (signed URLs can be 2,000 characters) in an embed's
    description, which holds 4,096 (a spoilered job's behind `||…||`, which descriptions render)."""
    return discord.Embed(
        title=tr(locale, "RunComfy's link (it may expire soon)"),
        description=spoiler_text(url, spoiler),
        colour=discord.Colour.blurple(),
    )
