"""What users see: the status embed, its Cancel button, and the wording of every message."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import discord

from storage.jobs import Job, JobState

if TYPE_CHECKING:
    from bot.client import AnimateBot

MODEL_LABEL = "Wan 2.2 on RunComfy"
NO_MENTIONS = discord.AllowedMentions.none()

_COLOURS = {
    JobState.PENDING: discord.Colour.light_grey(),
    JobState.QUEUED: discord.Colour.blurple(),
    JobState.RUNNING: discord.Colour.gold(),
    JobState.DELIVERING: discord.Colour.gold(),
    JobState.DELIVERED: discord.Colour.green(),
    JobState.FAILED: discord.Colour.red(),
    JobState.CANCELLED: discord.Colour.dark_grey(),
}


def ts(epoch: float, style: str = "R") -> str:
    """A Discord timestamp, rendered in each reader's own time zone."""
    return f"<t:{int(epoch)}:{style}>"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_line(job: Job, now: float | None = None) -> str:
    now = time.time() if now is None else now
    match job.state:
        case JobState.PENDING:
            return "⏳ Submitting to RunComfy…"
        case JobState.QUEUED:
            pos = f" — position {job.queue_position}" if job.queue_position is not None else ""
            return f"🕒 Queued{pos}"
        case JobState.RUNNING:
            started = job.started_at or job.submitted_at or now
            return f"🎞️ Generating… started {ts(started)} ({_duration(now - started)} so far)"
        case JobState.DELIVERING:
            return "📦 Done — uploading the video…"
        case JobState.DELIVERED:
            took = ""
            if job.submitted_at and job.finished_at:
                took = f" in {_duration(job.finished_at - job.submitted_at)}"
            return f"✅ Done{took} — the video is in the thread."
        case JobState.FAILED:
            return f"❌ Failed: {clip(job.error or 'unknown error', 300)}\nYour credits were refunded."
        case JobState.CANCELLED:
            return f"🚫 Cancelled. {clip(job.error or '', 200)}".rstrip() + "\nYour credits were refunded."
    return job.state.value  # pragma: no cover - exhaustive above


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def image_filename(job: Job) -> str | None:
    if not job.image_url:
        return None
    name = urlsplit(job.image_url).path.rsplit("/", 1)[-1]
    return name or None


def status_embed(job: Job, now: float | None = None) -> discord.Embed:
    embed = discord.Embed(
        title="🎬 Image to video",
        description=clip(job.prompt, 1500),
        colour=_COLOURS[job.state],
    )
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>", inline=True)
    embed.add_field(name="Resolution", value=job.resolution, inline=True)
    if job.template:
        embed.add_field(name="Template", value=clip(job.template, 100), inline=True)
    if job.seed is not None:
        embed.add_field(name="Seed", value=str(job.seed), inline=True)
    embed.add_field(name="Magic prompt", value="on" if job.prompt_extend else "off", inline=True)
    embed.add_field(name="Cost", value=f"{job.cost} credit{'s' if job.cost != 1 else ''}", inline=True)
    if job.negative_prompt:
        embed.add_field(name="Negative prompt", value=clip(job.negative_prompt, 1000), inline=False)
    if job.image_note:
        embed.add_field(name="Image", value=clip(job.image_note, 1000), inline=False)
    embed.add_field(name="Status", value=state_line(job, now), inline=False)
    filename = image_filename(job)
    if filename:
        embed.set_thumbnail(url=f"attachment://{filename}")
    embed.set_footer(text=f"Job #{job.id} · {MODEL_LABEL}")
    return embed


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"animate:cancel:(?P<job_id>[0-9]{1,18})"
):
    """Persistent: the job id rides in the custom_id, so clicks work after a restart."""

    def __init__(self, job_id: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.danger,
                custom_id=f"animate:cancel:{job_id}",
                disabled=disabled,
                emoji="✖️",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: AnimateBot = interaction.client
        await bot.engine.handle_cancel_click(interaction, self.job_id)


def status_view(job: Job) -> discord.ui.View | None:
    """The Cancel button while a job may still be cancelled; greyed out once it runs; gone at the end."""
    if job.state in (JobState.PENDING, JobState.QUEUED):
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(job.id))
        return view
    if job.state in (JobState.RUNNING, JobState.DELIVERING):
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(job.id, disabled=True))
        return view
    return None


def thread_name(prompt: str) -> str:
    """Thread names are at most 100 characters and read best as one line."""
    flat = " ".join(prompt.split()) or "animation"
    return clip(f"🎬 {flat}", 100)
