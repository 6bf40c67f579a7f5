"""/animate-admin: per-guild settings -- quotas, channels, moderation, audit log -- without editing files.

Every subcommand is hidden from non-admins by Discord (`default_permissions(manage_guild)`) *and*
re-checked here (Manage Server, Administrator or the configured admin role), because a server can
override command visibility. Every change is echoed back (ephemeral, in the admin's language) and
written to the audit log (in the server's language).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l
from discord.ext import commands

from bot import policy, ui
from bot.i18n import N_, LocaleLike, Msg, render, tr
from storage.guilds import GuildConfig, GuildRepository, guild_repository
from storage.quota import guild_spent

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()
# Choice names of `period` and `kind`: Discord shows them translated (the values stay English).
CHOICE_NAMES = (N_("day"), N_("week"), N_("word"), N_("regex"))


async def require_admin(bot: AnimateBot, interaction: discord.Interaction[AnimateBot]) -> GuildConfig | None:
    """The guild's config if the caller is an admin; otherwise answer with a refusal and return None."""
    loc = interaction.locale
    if interaction.guild_id is None:
        await interaction.response.send_message(
            tr(loc, "This command only works in a server."), ephemeral=True
        )
        return None
    config = await guild_repository(bot.db).get(interaction.guild_id)
    if policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
        return config
    if config.admin_role_id:
        text = tr(
            loc,
            "Only members with the Manage Server permission or the <@&{role}> role can do that.",
            role=config.admin_role_id,
        )
    else:
        text = tr(loc, "Only members with the Manage Server permission can do that.")
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NONE)
    return None


def _role(role_id: int | None, empty: str) -> str:
    return f"<@&{role_id}>" if role_id else empty


class Admin(commands.Cog):
    admin = app_commands.Group(
        name="animate-admin",
        description=_l("Configure /animate for this server (admins only)"),
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    quota_group = app_commands.Group(name="quota", description=_l("Credits, prices and limits"), parent=admin)
    channels_group = app_commands.Group(
        name="channels", description=_l("Where /animate may be used"), parent=admin
    )
    moderation_group = app_commands.Group(
        name="moderation", description=_l("Prompt blocklist, bans and approval mode"), parent=admin
    )

    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @property
    def guilds(self) -> GuildRepository:
        return guild_repository(self.bot.db)

    async def changed(self, interaction: discord.Interaction[AnimateBot], summary: str) -> None:
        """Echo a change to the admin (their language) and record it in the audit log (the server's).
        `summary` is a bot.i18n.Msg."""
        assert interaction.guild_id is not None
        log.info("Guild %s: %s changed settings: %s", interaction.guild_id, interaction.user.id, summary)
        await interaction.response.send_message(
            f"✅ {render(summary, interaction.locale)}", ephemeral=True, allowed_mentions=NONE
        )
        guild_locale = interaction.guild_locale
        self.bot.dispatch(
            "animate_audit",
            interaction.guild_id,
            interaction.user.id,
            tr(guild_locale, "Settings changed"),
            render(summary, guild_locale),
            guild_locale,
        )

    async def admin_with_roles(
        self, interaction: discord.Interaction[AnimateBot], *roles: discord.Role | None
    ) -> GuildConfig | None:
        """`require_admin`, plus: every role given must belong to this server."""
        config = await require_admin(self.bot, interaction)
        if config is None:
            return None
        if any(role is not None and role.guild.id != config.guild_id for role in roles):
            await self.refuse(interaction, Msg("That role isn't from this server."))
            return None
        return config

    async def set_role(
        self,
        interaction: discord.Interaction[AnimateBot],
        field: str,
        role: discord.Role | None,
        when_set: str | None,
        when_cleared: str,
    ) -> None:
        """Set (or, with no role, clear) a one-role setting and echo it back."""
        config = await self.admin_with_roles(interaction, role)
        if config is None:
            return
        await self.guilds.update(config.guild_id, interaction.user.id, **{field: role.id if role else None})
        await self.changed(interaction, when_set if role and when_set else when_cleared)

    async def refuse(self, interaction: discord.Interaction[AnimateBot], text: str) -> None:
        await interaction.response.send_message(
            render(text, interaction.locale), ephemeral=True, allowed_mentions=NONE
        )

    # ------------------------------------------------------------------------------------------ show

    @admin.command(name="show", description=_l("Show this server's whole /animate configuration"))
    async def show(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        embed = await self.config_embed(config, interaction.locale)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NONE)

    async def config_embed(self, config: GuildConfig, locale: LocaleLike = None) -> discord.Embed:
        loc = locale
        settings = self.bot.settings
        period = policy.current_period(config)
        every = tr(loc, "week (from Monday)") if config.period == "week" else tr(loc, "day")
        allowance = config.allowance if config.allowance is not None else settings.daily_quota
        values = {
            "n": allowance,
            "every": every,
            "hour": config.reset_hour,
            "next": ui.ts(period.resets_at.timestamp()),
        }
        if config.allowance is not None:
            credits = tr(
                loc,
                "{n} per member per {every}, resetting at {hour:02d}:00 UTC — next reset {next}",
                **values,
            )
        else:
            credits = tr(
                loc,
                "{n} per member per {every} (bot default), resetting at {hour:02d}:00 UTC — "
                "next reset {next}",
                **values,
            )
        embed = discord.Embed(
            title=tr(loc, "⚙️ /animate settings for this server"), colour=discord.Colour.blurple()
        )
        embed.add_field(name=tr(loc, "Credits"), value=credits, inline=False)
        embed.add_field(
            name=tr(loc, "Prices"),
            value=f"480P: {policy.cost_of(config, '480P', settings.cost_480p, settings.cost_1080p)} · "
            f"1080P: {policy.cost_of(config, '1080P', settings.cost_480p, settings.cost_1080p)}",
        )
        roles = sorted(config.role_allowances.items(), key=lambda kv: -kv[1])
        embed.add_field(
            name=tr(loc, "Role allowances (highest wins)"),
            value=ui.clip("\n".join(f"<@&{r}>: {n}" for r, n in roles) or tr(loc, "none"), 1000),
        )
        overrides, total = await self.guilds.user_overrides(config.guild_id, limit=15)
        text = "\n".join(f"<@{u}>: {n}" for u, n in overrides) or tr(loc, "none")
        if total > len(overrides):
            text += "\n" + tr(loc, "… and {n} more", n=total - len(overrides))
        embed.add_field(name=tr(loc, "Personal allowances"), value=ui.clip(text, 1000))
        embed.add_field(
            name=tr(loc, "Unlimited role"), value=_role(config.unlimited_role_id, tr(loc, "none"))
        )
        spent = ""
        if config.daily_budget is not None:
            day = policy.limits_for(config, policy.Allowance(0, "")).budget_window
            assert day is not None and day.starts_at is not None
            used = await guild_spent(
                self.bot.db, config.guild_id, day.starts_at.timestamp(), day.resets_at.timestamp()
            )
            spent = tr(loc, " ({n} spent today)", n=used)
        if config.max_concurrent:
            concurrent = tr(loc, "Concurrent jobs per member: {n}", n=config.max_concurrent)
        else:
            concurrent = tr(loc, "Concurrent jobs per member: no limit")
        if config.cooldown_seconds:
            cooldown = tr(loc, "Cooldown: {seconds} s", seconds=config.cooldown_seconds)
        else:
            cooldown = tr(loc, "Cooldown: off")
        if config.daily_budget is not None:
            budget = tr(loc, "Daily server budget: {n}", n=config.daily_budget)
        else:
            budget = tr(loc, "Daily server budget: none")
        embed.add_field(
            name=tr(loc, "Limits"), value=f"{concurrent}\n{cooldown}\n{budget}" + spent, inline=False
        )
        channels = ", ".join(f"<#{c}>" for c in sorted(config.channels)) or tr(loc, "everywhere")
        age = tr(loc, "Age-restricted only: {value}", value=ui.on_off(loc, config.require_age_restricted))
        embed.add_field(name=tr(loc, "Channels"), value=ui.clip(channels, 900) + "\n" + age, inline=False)
        words = [e.pattern for e in config.blocklist if e.kind == "word"]
        regexes = [e.pattern for e in config.blocklist if e.kind == "regex"]
        block = tr(loc, "{n} word(s): ", n=len(words)) + (", ".join(f"`{w}`" for w in words) or "—")
        block += (
            "\n" + tr(loc, "{n} regex(es): ", n=len(regexes)) + (", ".join(f"`{r}`" for r in regexes) or "—")
        )
        embed.add_field(name=tr(loc, "Prompt blocklist"), value=ui.clip(block, 1000), inline=False)
        bans = await self.guilds.ban_count(config.guild_id)
        embed.add_field(name=tr(loc, "Banned members"), value=str(bans))
        embed.add_field(
            name=tr(loc, "Approval mode"),
            value=tr(
                loc,
                "{state} · moderators: {who}",
                state=ui.on_off(loc, config.approval_required),
                who=_role(config.moderator_role_id, tr(loc, "admins only")),
            ),
        )
        embed.add_field(
            name=tr(loc, "Admin role"), value=_role(config.admin_role_id, tr(loc, "Manage Server only"))
        )
        embed.add_field(
            name=tr(loc, "Audit channel"),
            value=f"<#{config.audit_channel_id}>" if config.audit_channel_id else tr(loc, "off"),
        )
        return embed

    # ------------------------------------------------------------------------------------------ general

    @admin.command(name="admin-role", description=_l("Let a role use /animate-admin (leave empty to clear)"))
    @app_commands.describe(role=_l("Members with this role may change these settings"))
    async def admin_role(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        await self.set_role(
            interaction,
            "admin_role_id",
            role,
            Msg("Admin role set to {role}.", role=role.mention) if role else None,
            Msg("Admin role cleared (Manage Server only)."),
        )

    @admin.command(name="audit-channel", description=_l("Log every job and admin change to a channel"))
    @app_commands.describe(channel=_l("The audit-log channel (leave empty to turn the audit log off)"))
    async def audit_channel(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel | None = None
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if channel is not None:
            if channel.guild.id != config.guild_id:
                await self.refuse(interaction, Msg("That channel isn't in this server."))
                return
            perms = channel.permissions_for(channel.guild.me)
            if not (perms.view_channel and perms.send_messages and perms.embed_links):
                await self.refuse(
                    interaction,
                    Msg(
                        "I can't post in {channel}: I need View Channel, Send Messages and Embed Links "
                        "there.",
                        channel=channel.mention,
                    ),
                )
                return
        await self.guilds.update(
            config.guild_id, interaction.user.id, audit_channel_id=channel.id if channel else None
        )
        await self.changed(
            interaction,
            Msg("Audit log goes to {channel}.", channel=channel.mention)
            if channel
            else Msg("Audit log turned off."),
        )

    # ------------------------------------------------------------------------------------------ quota

    @quota_group.command(name="default", description=_l("Credits every member gets per period"))
    @app_commands.describe(
        credits=_l("Credits per member per period"),
        period=_l("A day or a week (weeks start on Monday)"),
        reset_hour=_l("UTC hour at which the period resets (0-23)"),
    )
    async def quota_default(
        self,
        interaction: discord.Interaction[AnimateBot],
        credits: app_commands.Range[int, 0, 100_000] | None = None,
        period: Literal["day", "week"] | None = None,
        reset_hour: app_commands.Range[int, 0, 23] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        changes: dict[str, object] = {}
        if credits is not None:
            changes["allowance"] = credits
        if period is not None:
            changes["period"] = period
        if reset_hour is not None:
            changes["reset_hour"] = reset_hour
        if not changes:
            await self.refuse(interaction, Msg("Give at least one of credits, period or reset_hour."))
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        allowance = new.allowance if new.allowance is not None else self.bot.settings.daily_quota
        every = Msg("week") if new.period == "week" else Msg("day")
        await self.changed(
            interaction,
            Msg(
                "Members get {n} credit per {period}, resetting at {hour:02d}:00 UTC."
                if allowance == 1
                else "Members get {n} credits per {period}, resetting at {hour:02d}:00 UTC.",
                n=allowance,
                period=every,
                hour=new.reset_hour,
            ),
        )

    @quota_group.command(name="costs", description=_l("Credits a job costs at each resolution"))
    @app_commands.describe(cost_480p=_l("Credits for a 480P job"), cost_1080p=_l("Credits for a 1080P job"))
    async def quota_costs(
        self,
        interaction: discord.Interaction[AnimateBot],
        cost_480p: app_commands.Range[int, 0, 1000] | None = None,
        cost_1080p: app_commands.Range[int, 0, 1000] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        changes: dict[str, object] = {}
        if cost_480p is not None:
            changes["cost_480p"] = cost_480p
        if cost_1080p is not None:
            changes["cost_1080p"] = cost_1080p
        if not changes:
            await self.refuse(interaction, Msg("Give cost_480p, cost_1080p or both."))
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        s = self.bot.settings
        await self.changed(
            interaction,
            Msg(
                "Prices: 480P costs {low}, 1080P costs {high} credit(s).",
                low=policy.cost_of(new, "480P", s.cost_480p, s.cost_1080p),
                high=policy.cost_of(new, "1080P", s.cost_480p, s.cost_1080p),
            ),
        )

    @quota_group.command(
        name="limits", description=_l("Concurrent jobs, cooldown and the daily server budget")
    )
    @app_commands.describe(
        max_concurrent=_l("Unfinished jobs per member at once (0 = no limit)"),
        cooldown_seconds=_l("Seconds a member waits between two requests (0 = off)"),
        daily_budget=_l("Credits the whole server may spend per day (0 = no budget)"),
    )
    async def quota_limits(
        self,
        interaction: discord.Interaction[AnimateBot],
        max_concurrent: app_commands.Range[int, 0, 100] | None = None,
        cooldown_seconds: app_commands.Range[int, 0, 86_400] | None = None,
        daily_budget: app_commands.Range[int, 0, 10_000_000] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        changes: dict[str, object] = {}
        if max_concurrent is not None:
            changes["max_concurrent"] = max_concurrent or None
        if cooldown_seconds is not None:
            changes["cooldown_seconds"] = cooldown_seconds
        if daily_budget is not None:
            changes["daily_budget"] = daily_budget or None
        if not changes:
            await self.refuse(
                interaction, Msg("Give at least one of max_concurrent, cooldown_seconds or daily_budget.")
            )
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        parts = [
            Msg("Limits: {n} concurrent job(s) per member", n=new.max_concurrent)
            if new.max_concurrent
            else Msg("Limits: no limit on concurrent job(s) per member"),
            Msg(", cooldown {seconds} s", seconds=new.cooldown_seconds)
            if new.cooldown_seconds
            else Msg(", cooldown off"),
            Msg(", daily server budget {n}.", n=new.daily_budget)
            if new.daily_budget is not None
            else Msg(", daily server budget none."),
        ]
        await self.changed(
            interaction,
            Msg("{limits}{cooldown}{budget}", limits=parts[0], cooldown=parts[1], budget=parts[2]),
        )

    @quota_group.command(name="role", description=_l("Credits per period for members with a role"))
    @app_commands.describe(role=_l("The role"), credits=_l("Credits per period (leave empty to remove)"))
    async def quota_role(
        self,
        interaction: discord.Interaction[AnimateBot],
        role: discord.Role,
        credits: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        config = await self.admin_with_roles(interaction, role)
        if config is None:
            return
        await self.guilds.set_role_allowance(config.guild_id, role.id, credits)
        await self.changed(
            interaction,
            Msg(
                "{role} members get {n} credit(s) per period (highest role wins).",
                role=role.mention,
                n=credits,
            )
            if credits is not None
            else Msg("{role} no longer has its own allowance.", role=role.mention),
        )

    @quota_group.command(name="user", description=_l("A personal allowance for one member (beats roles)"))
    @app_commands.describe(member=_l("The member"), credits=_l("Credits per period (leave empty to remove)"))
    async def quota_user(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        credits: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        await self.guilds.set_user_override(config.guild_id, member.id, credits)
        await self.changed(
            interaction,
            Msg(
                "{member} gets {n} credit(s) per period, whatever their roles.",
                member=member.mention,
                n=credits,
            )
            if credits is not None
            else Msg(
                "{member}'s personal allowance removed; roles and the default apply again.",
                member=member.mention,
            ),
        )

    @quota_group.command(name="grant", description=_l("Give a member extra credits for the current period"))
    @app_commands.describe(
        member=_l("The member"), credits=_l("Extra credits, valid until the period resets")
    )
    async def quota_grant(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        credits: app_commands.Range[int, 1, 10_000],
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        period = policy.current_period(config)
        await self.bot.quota.grant(
            config.guild_id, member.id, credits, period, reason=f"granted by {interaction.user.id}"
        )
        await self.changed(
            interaction,
            Msg(
                "Granted {member} {n} extra credit(s), valid until {until}.",
                member=member.mention,
                n=credits,
                until=ui.ts(period.resets_at.timestamp()),
            ),
        )

    @quota_group.command(name="unlimited-role", description=_l("Members with this role have no credit limit"))
    @app_commands.describe(role=_l("The unlimited role (leave empty to clear)"))
    async def quota_unlimited(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        await self.set_role(
            interaction,
            "unlimited_role_id",
            role,
            Msg(
                "{role} members have unlimited credits (concurrency and budget still apply).",
                role=role.mention,
            )
            if role
            else None,
            Msg("No unlimited role any more."),
        )

    # ------------------------------------------------------------------------------------------ channels

    @channels_group.command(
        name="allow", description=_l("Allow /animate in a channel (then only in allowed ones)")
    )
    @app_commands.describe(channel=_l("The channel (its threads are included)"))
    async def channels_allow(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if channel.guild.id != config.guild_id:
            await self.refuse(interaction, Msg("That channel isn't in this server."))
            return
        await self.guilds.set_channel(config.guild_id, channel.id, True)
        new = await self.guilds.get(config.guild_id)
        await self.changed(
            interaction,
            Msg(
                "/animate is allowed in {channel}. Allowed channels: {channels}.",
                channel=channel.mention,
                channels=", ".join(f"<#{c}>" for c in sorted(new.channels)),
            ),
        )

    @channels_group.command(name="remove", description=_l("Remove a channel from the allow-list"))
    @app_commands.describe(channel=_l("The channel"))
    async def channels_remove(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if not await self.guilds.set_channel(config.guild_id, channel.id, False):
            await self.refuse(
                interaction, Msg("{channel} wasn't on the allow-list.", channel=channel.mention)
            )
            return
        new = await self.guilds.get(config.guild_id)
        rest = ", ".join(f"<#{c}>" for c in sorted(new.channels))
        await self.changed(
            interaction,
            Msg("Removed {channel}. Allowed channels: {channels}.", channel=channel.mention, channels=rest)
            if rest
            else Msg(
                "Removed {channel}. The list is empty: /animate works everywhere.", channel=channel.mention
            ),
        )

    @channels_group.command(name="clear", description=_l("Allow /animate in every channel again"))
    async def channels_clear(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        await self.guilds.clear_channels(config.guild_id)
        await self.changed(interaction, Msg("Channel allow-list cleared: /animate works in every channel."))

    @channels_group.command(
        name="age-restricted", description=_l("Only run /animate in age-restricted channels")
    )
    @app_commands.describe(required=_l("On: /animate refuses to run outside age-restricted (NSFW) channels"))
    async def channels_age(self, interaction: discord.Interaction[AnimateBot], required: bool) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        await self.guilds.update(config.guild_id, interaction.user.id, require_age_restricted=required)
        await self.changed(
            interaction,
            Msg("/animate now only runs in age-restricted channels.")
            if required
            else Msg("/animate no longer requires age-restricted channels."),
        )

    # ------------------------------------------------------------------------------------------ moderation

    @moderation_group.command(
        name="block", description=_l("Block prompts containing a word or matching a regex")
    )
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
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
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

    @moderation_group.command(name="unblock", description=_l("Remove an entry from the prompt blocklist"))
    @app_commands.describe(pattern=_l("The blocked word or regex, exactly as listed"))
    async def unblock(self, interaction: discord.Interaction[AnimateBot], pattern: str) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
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
        if not policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
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

    @moderation_group.command(name="ban", description=_l("Stop a member from using /animate here"))
    @app_commands.describe(member=_l("The member"), reason=_l("Shown to them when they try"))
    async def ban(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
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

    @moderation_group.command(name="unban", description=_l("Let a banned member use /animate again"))
    @app_commands.describe(member=_l("The member"))
    async def unban(self, interaction: discord.Interaction[AnimateBot], member: discord.Member) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if not await self.guilds.unban(config.guild_id, member.id):
            await self.refuse(interaction, Msg("{member} wasn't banned.", member=member.mention))
            return
        await self.changed(interaction, Msg("{member} may use /animate again.", member=member.mention))

    @moderation_group.command(
        name="approval", description=_l("Make every job wait for a moderator's approval")
    )
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
        config = await self.admin_with_roles(interaction, moderator_role)
        if config is None:
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


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Admin(bot))
