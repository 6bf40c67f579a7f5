"""Approval mode: a job waits, unsubmitted and uncharged, until a moderator approves or rejects it.

The buttons (bot.ui.DecisionButton, handled here through `bot.approval`) are persistent, with the job
id in their custom_id, so requests survive a restart. Every decision is a compare-and-set on the job's
state, so two moderators clicking at once (or a moderator and the requester withdrawing) cannot both win.

If the requester can no longer afford the job when it is approved (allowance spent meanwhile, the
concurrency limit, the server budget), the job stays waiting and the moderator is told why: those
limits free up with time, so the moderator may approve later or reject it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import engine, policy, ui
from bot.i18n import Msg, render, tr
from bot.quota_rules import LimitCheck, LimitExceeded
from storage.jobs import Job, JobState
from storage.lifecycle import JobEvent

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)

ORPHANS_AT_ONCE = 1000  # one look takes this many (each costs a look at the channel's history)
# Why a request that the bot never managed to post for approval ended.
NEVER_POSTED = Msg(
    "The bot restarted before this request could be posted for approval. Nothing was charged — "
    "please run /animate again."
)


class Approval(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.approval = self  # handles bot.ui.DecisionButton clicks
        # In the background: start-up need not wait for Discord's message history.
        self._recovery = asyncio.create_task(self._recover_safely(), name="approval-recovery")

    async def cog_unload(self) -> None:
        if self.bot.approval is self:
            self.bot.approval = None
        self._recovery.cancel()
        await asyncio.gather(self._recovery, return_exceptions=True)

    # ------------------------------------------------------------------ after a crash

    async def _recover_safely(self) -> None:
        # One database per process (SQLite): every orphan is from an earlier start, so one pass. A
        # shared one: a request younger than engine.ORPHAN_AGE at start-up, or orphaned later by a peer's
        # crash, is no live process's business either -- so the look is repeated while this runs.
        while True:
            try:
                await self.recover_orphans()
            except Exception:  # the requests stay as they are; the next pass looks again
                log.exception("Could not look for approval requests orphaned by a crash")
            if not self._shared_database:
                return
            await asyncio.sleep(engine.ORPHAN_AGE)

    @property
    def _shared_database(self) -> bool:
        """Several processes may use the database (PostgreSQL); SQLite is one process's."""
        return self.bot.store.db.dialect != "sqlite"

    async def recover_orphans(self) -> int:
        """Requests whose post was orphaned by a crash (posted, but the process died before storing
        its id), like the launcher's orphaned status messages: find the post and store it, so its
        Approve / Reject / Cancel buttons work and it keeps waiting; a request that was never posted
        (nobody could decide on it) ends, never charged. Returns how many were found."""
        # A shared database: a live process may be posting a request right now; one database per
        # process (SQLite): every request is from an earlier start.
        cutoff = time.time() - (engine.ORPHAN_AGE if self._shared_database else 0.0)
        found = 0
        for job in await self.bot.store.jobs.unposted_requests(cutoff, limit=ORPHANS_AT_ONCE):
            recovered = await self.bot.engine.recover_status(job)
            if recovered:
                found += 1
                # The crash also swallowed the request's event (its audit line).
                self.bot.dispatch("job_event", job, JobEvent.REQUESTED, job.user_id)
                log.info("Job %s: its approval request, orphaned by a crash, waits again", job.id)
            elif recovered is False:
                await self.bot.engine.end(
                    job,
                    JobState.FAILED,
                    NEVER_POSTED,
                    within=JobState.AWAITING_APPROVAL,
                    event=None,
                    refund=False,
                )
                log.warning("Job %s: its approval request was never posted; ended, never charged", job.id)
        return found

    async def button_refusal(
        self, interaction: discord.Interaction[Any], job: Job, action: str
    ) -> str | None:
        """Approve / Reject: moderators (or admins); Cancel: only the requester."""
        loc = interaction.locale
        config = await self.bot.store.guilds.get(job.guild_id)
        moderator = policy.is_moderator(interaction.permissions, policy.role_ids(interaction.user), config)
        if action == "withdraw":
            if interaction.user.id == job.user_id:
                return None
            if moderator:
                return tr(
                    loc,
                    "Only the person who asked for this job can withdraw it — "
                    "moderators use Approve or Reject.",
                )
            return tr(loc, "Only the person who asked for this job can withdraw it.")
        if moderator:
            return None
        if config.moderator_role_id:
            return tr(
                loc,
                "Only members with the <@&{role}> role can approve or reject jobs.",
                role=config.moderator_role_id,
            )
        return tr(loc, "Only admins can approve or reject jobs.")

    async def button_pressed(self, interaction: discord.Interaction[Any], job: Job, action: str) -> None:
        """A moderator's decision or the requester's withdrawal (bot.ui.DecisionButton), already checked."""
        loc = interaction.locale
        if job.state is not JobState.AWAITING_APPROVAL:
            await interaction.response.send_message(render(_already(job), loc), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if action == "approve":
            text = await self.approve(interaction, job)
        elif action == "reject":
            text = await self.finish(
                job,
                JobState.REJECTED,
                Msg("Rejected by <@{user}>.", user=interaction.user.id),
                interaction.user.id,
                JobEvent.REJECTED,
            )
        else:
            text = await self.finish(
                job,
                JobState.CANCELLED,
                Msg("Withdrawn by the requester."),
                interaction.user.id,
                JobEvent.CANCELLED,
            )
        await interaction.followup.send(render(text, loc), ephemeral=True, allowed_mentions=ui.NO_MENTIONS)

    async def finish(self, job: Job, state: JobState, reason: str, actor_id: int, event: JobEvent) -> str:
        """Reject or withdraw: a final state, never charged. `reason` (a bot.i18n.Msg) is stored in the
        job's language; the answer is a Msg for whoever clicked."""
        ended = await self.bot.engine.end(
            job,
            state,
            reason,
            within=JobState.AWAITING_APPROVAL,
            event=event,
            actor_id=actor_id,
            refund=False,
        )
        if not ended:
            return _already(await self.bot.store.jobs.get(job.id) or job)
        log.info("Job %s %s by %s", job.id, event, actor_id)
        if state is JobState.REJECTED:
            return Msg("Rejected job #{id}. <@{user}> was not charged.", id=job.id, user=job.user_id)
        return Msg("Withdrawn. Nothing was charged.")

    async def approve(self, interaction: discord.Interaction[Any], job: Job) -> str:
        guilds = self.bot.store.guilds
        config = await guilds.get(job.guild_id)
        guild = interaction.guild
        if guild is None:  # pragma: no cover - component interactions in a guild carry it
            return Msg("I can't see this server right now. Please try again in a moment.")
        # The requester's roles decide their allowance; they are not in this interaction, so ask Discord.
        try:
            member = await guild.fetch_member(job.user_id)
        except discord.NotFound:
            await self.finish(
                job,
                JobState.REJECTED,
                Msg("The requester left the server."),
                interaction.user.id,
                JobEvent.REJECTED,
            )
            return Msg("The requester has left the server, so the request was closed. Nothing was charged.")
        except discord.HTTPException as exc:
            log.warning("Job %s: could not look up the requester: %s", job.id, exc)
            return Msg("I couldn't look up the requester on Discord. Please try again in a moment.")
        if await guilds.get_ban(job.guild_id, job.user_id) is not None:
            return Msg(
                "<@{user}> is banned from /animate here; reject the request or unban them first.",
                user=job.user_id,
            )
        # The same allowance rules as when it was requested (bot/admission.py).
        limits = await self.bot.admission.limits(config, job.user_id, policy.role_ids(member))
        try:
            standing = await self.bot.store.quota.approve(job.id, LimitCheck(limits, first_request=False))
        except LimitExceeded as exc:
            reason = policy.describe_limit(exc, job.resolution, requester=job.user_id)
            return Msg(
                "Not approved yet: {reason}\nThe request stays waiting: approve it later, or reject it.",
                reason=reason,
            )
        if standing is None:
            fresh = await self.bot.store.jobs.get(job.id)
            return _already(fresh or job)
        # Charged now: any failure before RunComfy has the job refunds it.
        try:
            fresh = await self.bot.store.jobs.get(job.id)
            assert fresh is not None
            self.bot.dispatch("job_event", fresh, JobEvent.APPROVED, interaction.user.id)
            make_thread = not isinstance(interaction.channel, discord.Thread)
            result = await self.bot.engine.submit(fresh, make_thread=make_thread)
        except BaseException:
            await self.bot.engine.abandon(
                job.id, Msg("An internal error stopped this job before it started.")
            )
            raise
        if not result.ok:
            return Msg("Approved, but submitting failed: {reason}", reason=result.message)
        return Msg(
            "Approved job #{id} and submitted it; <@{user}> was charged {cost} credit(s).",
            id=job.id,
            user=job.user_id,
            cost=job.cost,
        )


def _already(job: Job) -> Msg:
    match job.state:
        case JobState.REJECTED:
            return Msg("This request was already rejected.")
        case JobState.CANCELLED:
            return Msg("This request was already withdrawn or cancelled.")
        case JobState.AWAITING_APPROVAL:
            return Msg("This request is still waiting for approval.")
    return Msg("This request was already approved.")


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Approval(bot))
