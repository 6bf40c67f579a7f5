"""`/animate-admin moderation …`: the prompt blocklist, bans, approval mode and forced spoilers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l

from bot import policy, ui
from bot.i18n import N_, Msg, tr
from cogs.admin._base import SettingsGroup
from cogs.admin.checks import admin_config, is_admin_here

if TYPE_CHECKING:
    from bot.client import AnimateBot

# Choice names of `kind`: Discord shows them translated (the values stay English).
KIND_NAMES = (N_("word"), N_("regex"))


class ModerationGroup(
    SettingsGroup, name="moderation", description=_l("Prompt blocklist, bans and approval mode")
):
    @app_commands.command(name="block", description=_l("Block prompts containing a word or matching a regex"))
    @app_commands.describe(
        kind=_l("word: a whole word or phrase, any case; regex: a regular expression, any case"),
        pattern=_l("The word, phrase or regular expression"),
    )
    async def block(
        self,
        interaction: discord.Interaction[AnimateBot],
        kind: Literal["word", "regex"],
        pattern: app_commands.Range[str, 1, 200],
    ) -> None:
        config = admin_config(interaction)
        pattern = pattern.strip()
        problem = await asyncio.to_thread(policy.validate_pattern, kind, pattern)  # runs test matches
        if problem is None and len(config.blocklist) >= policy.BLOCKLIST_MAX_ENTRIES:
            problem = Msg(
                "The blocklist is full ({n} entries); remove some first.", n=policy.BLOCKLIST_MAX_ENTRIES
            )
        if problem:
            await self.refuse(interaction, problem)
            return
        if not await self.guilds.add_block(config.guild_id, kind, pattern, interaction.user.id):
            await self.refuse(
                interaction, Msg("`{pattern}` is already blocked.", pattern=ui.clip(pattern, 100))
            )
            return
        await self.changed(
            interaction,
            Msg(
                "Blocked {kind} `{pattern}` in prompts.",
                kind=Msg("regex") if kind == "regex" else Msg("word"),
                pattern=ui.clip(pattern, 200),
            ),
        )

    @app_commands.command(name="unblock", description=_l("Remove an entry from the prompt blocklist"))
    @app_commands.describe(pattern=_l("The blocked word or regex, exactly as listed"))
    async def unblock(self, interaction: discord.Interaction[AnimateBot], pattern: str) -> None:
        config = admin_config(interaction)
        if not await self.guilds.remove_block(config.guild_id, pattern.strip()):
            await self.refuse(
                interaction, Msg("`{pattern}` isn't on the blocklist.", pattern=ui.clip(pattern, 100))
            )
            return
        await self.changed(interaction, Msg("Unblocked `{pattern}`.", pattern=ui.clip(pattern.strip(), 200)))

    @unblock.autocomplete("pattern")
    async def unblock_autocomplete(
        self, interaction: discord.Interaction[AnimateBot], current: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        config = await self.guilds.get(interaction.guild_id)
        # The blocklist itself is moderation data: only admins see it.
        if not is_admin_here(interaction, config):
            return []
        needle = current.lower()
        kinds = {"word": tr(interaction.locale, "word"), "regex": tr(interaction.locale, "regex")}
        return [
            app_commands.Choice(
                name=ui.clip(f"{kinds.get(e.kind, e.kind)}: {e.pattern}", 100), value=e.pattern
            )
            for e in config.blocklist
            if needle in e.pattern.lower() and len(e.pattern) <= 100
        ][:25]

    @app_commands.command(name="ban", description=_l("Stop a member from using /animate here"))
    @app_commands.describe(member=_l("The member"), reason=_l("Shown to them when they try"))
    async def ban(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        config = admin_config(interaction)
        if member.id == interaction.user.id:
            await self.refuse(interaction, Msg("You can't ban yourself."))
            return
        await self.guilds.ban(config.guild_id, member.id, reason, interaction.user.id)
        await self.changed(
            interaction,
            Msg(
                "{member} can no longer use /animate here (reason: {reason}).",
                member=member.mention,
                reason=ui.clip(reason, 200),
            )
            if reason
            else Msg("{member} can no longer use /animate here.", member=member.mention),
        )

    @app_commands.command(name="unban", description=_l("Let a banned member use /animate again"))
    @app_commands.describe(member=_l("The member"))
    async def unban(self, interaction: discord.Interaction[AnimateBot], member: discord.Member) -> None:
        config = admin_config(interaction)
        if not await self.guilds.unban(config.guild_id, member.id):
            await self.refuse(interaction, Msg("{member} wasn't banned.", member=member.mention))
            return
        await self.changed(interaction, Msg("{member} may use /animate again.", member=member.mention))

    @app_commands.command(name="approval", description=_l("Make every job wait for a moderator's approval"))
    @app_commands.describe(
        enabled=_l("On: jobs wait, unsubmitted and uncharged, until approved"),
        moderator_role=_l("Who may approve or reject (admins always may)"),
    )
    async def approval(
        self,
        interaction: discord.Interaction[AnimateBot],
        enabled: bool,
        moderator_role: discord.Role | None = None,
    ) -> None:
        config = admin_config(interaction)
        if not await self.roles_are_local(interaction, config, moderator_role):
            return
        changes: dict[str, object] = {"approval_required": enabled}
        if moderator_role is not None:
            changes["moderator_role_id"] = moderator_role.id
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        if enabled:
            summary = (
                Msg("Approval mode on: jobs wait until <@&{role}> approve them.", role=new.moderator_role_id)
                if new.moderator_role_id
                else Msg("Approval mode on: jobs wait until admins approve them.")
            )
        elif moderator_role:
            summary = (
                Msg("Approval mode off. Moderator role: <@&{role}>.", role=new.moderator_role_id)
                if new.moderator_role_id
                else Msg("Approval mode off. Moderator role: admins.")
            )
        else:
            summary = Msg("Approval mode off.")
        await self.changed(interaction, summary)

    @app_commands.command(name="spoiler", description=_l("Post every job's image and video as spoilers"))
    @app_commands.describe(
        forced=_l("On: every image and video is blurred until clicked, whatever members choose")
    )
    async def spoiler(self, interaction: discord.Interaction[AnimateBot], forced: bool) -> None:
        config = admin_config(interaction)
        await self.guilds.update(config.guild_id, interaction.user.id, force_spoiler=forced)
        await self.changed(
            interaction,
            Msg("Spoilers forced: every job's image and video are posted as spoilers.")
            if forced
            else Msg("Spoilers are no longer forced: members choose with /animate's `spoiler` option."),
        )
