"""/animate-admin: per-guild settings -- quotas, channels, moderation, audit log -- without editing files.

Every subcommand is hidden from non-admins by Discord (`default_permissions(manage_guild)`) *and*
re-checked here (Manage Server, Administrator or the configured admin role), because a server can
override command visibility. Every change is echoed back (ephemeral) and written to the audit log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy, ui
from storage.guilds import GuildConfig, GuildRepository, guild_repository
from storage.quota import guild_spent

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()


async def require_admin(bot: AnimateBot, interaction: discord.Interaction[AnimateBot]) -> GuildConfig | None:
    """The guild's config if the caller is an admin; otherwise answer with a refusal and return None."""
    if interaction.guild_id is None:
        await interaction.response.send_message("This command only works in a server.", ephemeral=True)
        return None
    config = await guild_repository(bot.db).get(interaction.guild_id)
    if policy.is_admin(interaction.permissions, policy.role_ids(interaction.user), config):
        return config
    extra = f" or the <@&{config.admin_role_id}> role" if config.admin_role_id else ""
    await interaction.response.send_message(
        f"Only members with the Manage Server permission{extra} can do that.",
        ephemeral=True,
        allowed_mentions=NONE,
    )
    return None


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _role(role_id: int | None, empty: str = "none") -> str:
    return f"<@&{role_id}>" if role_id else empty


class Admin(commands.Cog):
    admin = app_commands.Group(
        name="animate-admin",
        description="Configure /animate for this server (admins only)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    quota_group = app_commands.Group(name="quota", description="Credits, prices and limits", parent=admin)
    channels_group = app_commands.Group(
        name="channels", description="Where /animate may be used", parent=admin
    )
    moderation_group = app_commands.Group(
        name="moderation", description="Prompt blocklist, bans and approval mode", parent=admin
    )

    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot

    @property
    def guilds(self) -> GuildRepository:
        return guild_repository(self.bot.db)

    async def changed(self, interaction: discord.Interaction[AnimateBot], summary: str) -> None:
        """Echo a change to the admin and record it in the audit log."""
        assert interaction.guild_id is not None
        log.info("Guild %s: %s changed settings: %s", interaction.guild_id, interaction.user.id, summary)
        await interaction.response.send_message(f"✅ {summary}", ephemeral=True, allowed_mentions=NONE)
        self.bot.dispatch(
            "animate_audit", interaction.guild_id, interaction.user.id, "Settings changed", summary
        )

    async def refuse(self, interaction: discord.Interaction[AnimateBot], text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NONE)

    # ------------------------------------------------------------------------------------------ show

    @admin.command(name="show", description="Show this server's whole /animate configuration")
    async def show(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        embed = await self.config_embed(config)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NONE)

    async def config_embed(self, config: GuildConfig) -> discord.Embed:
        settings = self.bot.settings
        period = policy.current_period(config)
        every = "week (from Monday)" if config.period == "week" else "day"
        allowance = config.allowance if config.allowance is not None else settings.daily_quota
        source = "" if config.allowance is not None else " (bot default)"
        embed = discord.Embed(title="⚙️ /animate settings for this server", colour=discord.Colour.blurple())
        embed.add_field(
            name="Credits",
            value=f"{allowance} per member per {every}{source}, resetting at "
            f"{config.reset_hour:02d}:00 UTC — next reset {ui.ts(period.resets_at.timestamp())}",
            inline=False,
        )
        embed.add_field(
            name="Prices",
            value=f"480P: {policy.cost_of(config, '480P', settings.cost_480p, settings.cost_1080p)} · "
            f"1080P: {policy.cost_of(config, '1080P', settings.cost_480p, settings.cost_1080p)}",
        )
        roles = sorted(config.role_allowances.items(), key=lambda kv: -kv[1])
        embed.add_field(
            name="Role allowances (highest wins)",
            value=ui.clip("\n".join(f"<@&{r}>: {n}" for r, n in roles) or "none", 1000),
        )
        overrides, total = await self.guilds.user_overrides(config.guild_id, limit=15)
        text = "\n".join(f"<@{u}>: {n}" for u, n in overrides) or "none"
        if total > len(overrides):
            text += f"\n… and {total - len(overrides)} more"
        embed.add_field(name="Personal allowances", value=ui.clip(text, 1000))
        embed.add_field(name="Unlimited role", value=_role(config.unlimited_role_id))
        spent = ""
        if config.daily_budget is not None:
            day = policy.limits_for(config, policy.Allowance(0, "")).budget_window
            assert day is not None and day.starts_at is not None
            used = await guild_spent(
                self.bot.db, config.guild_id, day.starts_at.timestamp(), day.resets_at.timestamp()
            )
            spent = f" ({used} spent today)"
        embed.add_field(
            name="Limits",
            value=f"Concurrent jobs per member: {config.max_concurrent or 'no limit'}\n"
            f"Cooldown: {f'{config.cooldown_seconds} s' if config.cooldown_seconds else 'off'}\n"
            f"Daily server budget: {config.daily_budget if config.daily_budget is not None else 'none'}"
            + spent,
            inline=False,
        )
        channels = ", ".join(f"<#{c}>" for c in sorted(config.channels)) or "everywhere"
        embed.add_field(
            name="Channels",
            value=ui.clip(channels, 900) + f"\nAge-restricted only: {_on_off(config.require_age_restricted)}",
            inline=False,
        )
        words = [e.pattern for e in config.blocklist if e.kind == "word"]
        regexes = [e.pattern for e in config.blocklist if e.kind == "regex"]
        block = f"{len(words)} word(s): " + (", ".join(f"`{w}`" for w in words) or "—")
        block += f"\n{len(regexes)} regex(es): " + (", ".join(f"`{r}`" for r in regexes) or "—")
        embed.add_field(name="Prompt blocklist", value=ui.clip(block, 1000), inline=False)
        bans = await self.guilds.ban_count(config.guild_id)
        embed.add_field(name="Banned members", value=str(bans))
        embed.add_field(
            name="Approval mode",
            value=f"{_on_off(config.approval_required)} · moderators: "
            f"{_role(config.moderator_role_id, 'admins only')}",
        )
        embed.add_field(name="Admin role", value=_role(config.admin_role_id, "Manage Server only"))
        embed.add_field(
            name="Audit channel", value=f"<#{config.audit_channel_id}>" if config.audit_channel_id else "off"
        )
        return embed

    # ------------------------------------------------------------------------------------------ general

    @admin.command(name="admin-role", description="Let a role use /animate-admin (leave empty to clear)")
    @app_commands.describe(role="Members with this role may change these settings")
    async def admin_role(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if role is not None and role.guild.id != config.guild_id:
            await self.refuse(interaction, "That role isn't from this server.")
            return
        await self.guilds.update(
            config.guild_id, interaction.user.id, admin_role_id=role.id if role else None
        )
        await self.changed(
            interaction,
            f"Admin role set to {role.mention}." if role else "Admin role cleared (Manage Server only).",
        )

    @admin.command(name="audit-channel", description="Log every job and admin change to a channel")
    @app_commands.describe(channel="The audit-log channel (leave empty to turn the audit log off)")
    async def audit_channel(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel | None = None
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if channel is not None:
            if channel.guild.id != config.guild_id:
                await self.refuse(interaction, "That channel isn't in this server.")
                return
            perms = channel.permissions_for(channel.guild.me)
            if not (perms.view_channel and perms.send_messages and perms.embed_links):
                await self.refuse(
                    interaction,
                    f"I can't post in {channel.mention}: I need View Channel, Send Messages and Embed Links "
                    "there.",
                )
                return
        await self.guilds.update(
            config.guild_id, interaction.user.id, audit_channel_id=channel.id if channel else None
        )
        await self.changed(
            interaction, f"Audit log goes to {channel.mention}." if channel else "Audit log turned off."
        )

    # ------------------------------------------------------------------------------------------ quota

    @quota_group.command(name="default", description="Credits every member gets per period")
    @app_commands.describe(
        credits="Credits per member per period",
        period="A day or a week (weeks start on Monday)",
        reset_hour="UTC hour at which the period resets (0-23)",
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
            await self.refuse(interaction, "Give at least one of credits, period or reset_hour.")
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        allowance = new.allowance if new.allowance is not None else self.bot.settings.daily_quota
        await self.changed(
            interaction,
            f"Members get {allowance} credit{'s' if allowance != 1 else ''} per {new.period}, resetting at "
            f"{new.reset_hour:02d}:00 UTC.",
        )

    @quota_group.command(name="costs", description="Credits a job costs at each resolution")
    @app_commands.describe(cost_480p="Credits for a 480P job", cost_1080p="Credits for a 1080P job")
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
            await self.refuse(interaction, "Give cost_480p, cost_1080p or both.")
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        s = self.bot.settings
        await self.changed(
            interaction,
            f"Prices: 480P costs {policy.cost_of(new, '480P', s.cost_480p, s.cost_1080p)}, "
            f"1080P costs {policy.cost_of(new, '1080P', s.cost_480p, s.cost_1080p)} credit(s).",
        )

    @quota_group.command(name="limits", description="Concurrent jobs, cooldown and the daily server budget")
    @app_commands.describe(
        max_concurrent="Unfinished jobs per member at once (0 = no limit)",
        cooldown_seconds="Seconds a member waits between two requests (0 = off)",
        daily_budget="Credits the whole server may spend per day (0 = no budget)",
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
                interaction, "Give at least one of max_concurrent, cooldown_seconds or daily_budget."
            )
            return
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        await self.changed(
            interaction,
            f"Limits: {new.max_concurrent or 'no limit on'} concurrent job(s) per member, cooldown "
            f"{f'{new.cooldown_seconds} s' if new.cooldown_seconds else 'off'}, daily server budget "
            f"{new.daily_budget if new.daily_budget is not None else 'none'}.",
        )

    @quota_group.command(name="role", description="Credits per period for members with a role")
    @app_commands.describe(role="The role", credits="Credits per period (leave empty to remove)")
    async def quota_role(
        self,
        interaction: discord.Interaction[AnimateBot],
        role: discord.Role,
        credits: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if role.guild.id != config.guild_id:
            await self.refuse(interaction, "That role isn't from this server.")
            return
        await self.guilds.set_role_allowance(config.guild_id, role.id, credits)
        await self.changed(
            interaction,
            f"{role.mention} members get {credits} credit(s) per period (highest role wins)."
            if credits is not None
            else f"{role.mention} no longer has its own allowance.",
        )

    @quota_group.command(name="user", description="A personal allowance for one member (beats roles)")
    @app_commands.describe(member="The member", credits="Credits per period (leave empty to remove)")
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
            f"{member.mention} gets {credits} credit(s) per period, whatever their roles."
            if credits is not None
            else f"{member.mention}'s personal allowance removed; roles and the default apply again.",
        )

    @quota_group.command(name="grant", description="Give a member extra credits for the current period")
    @app_commands.describe(member="The member", credits="Extra credits, valid until the period resets")
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
            f"Granted {member.mention} {credits} extra credit(s), valid until "
            f"{ui.ts(period.resets_at.timestamp())}.",
        )

    @quota_group.command(name="unlimited-role", description="Members with this role have no credit limit")
    @app_commands.describe(role="The unlimited role (leave empty to clear)")
    async def quota_unlimited(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if role is not None and role.guild.id != config.guild_id:
            await self.refuse(interaction, "That role isn't from this server.")
            return
        await self.guilds.update(
            config.guild_id, interaction.user.id, unlimited_role_id=role.id if role else None
        )
        await self.changed(
            interaction,
            f"{role.mention} members have unlimited credits (concurrency and budget still apply)."
            if role
            else "No unlimited role any more.",
        )

    # ------------------------------------------------------------------------------------------ channels

    @channels_group.command(
        name="allow", description="Allow /animate in a channel (then only in allowed ones)"
    )
    @app_commands.describe(channel="The channel (its threads are included)")
    async def channels_allow(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if channel.guild.id != config.guild_id:
            await self.refuse(interaction, "That channel isn't in this server.")
            return
        await self.guilds.set_channel(config.guild_id, channel.id, True)
        new = await self.guilds.get(config.guild_id)
        await self.changed(
            interaction,
            f"/animate is allowed in {channel.mention}. Allowed channels: "
            + ", ".join(f"<#{c}>" for c in sorted(new.channels))
            + ".",
        )

    @channels_group.command(name="remove", description="Remove a channel from the allow-list")
    @app_commands.describe(channel="The channel")
    async def channels_remove(
        self, interaction: discord.Interaction[AnimateBot], channel: discord.TextChannel
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if not await self.guilds.set_channel(config.guild_id, channel.id, False):
            await self.refuse(interaction, f"{channel.mention} wasn't on the allow-list.")
            return
        new = await self.guilds.get(config.guild_id)
        rest = ", ".join(f"<#{c}>" for c in sorted(new.channels))
        await self.changed(
            interaction,
            f"Removed {channel.mention}. "
            + (f"Allowed channels: {rest}." if rest else "The list is empty: /animate works everywhere."),
        )

    @channels_group.command(name="clear", description="Allow /animate in every channel again")
    async def channels_clear(self, interaction: discord.Interaction[AnimateBot]) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        await self.guilds.clear_channels(config.guild_id)
        await self.changed(interaction, "Channel allow-list cleared: /animate works in every channel.")

    @channels_group.command(name="age-restricted", description="Only run /animate in age-restricted channels")
    @app_commands.describe(required="On: /animate refuses to run outside age-restricted (NSFW) channels")
    async def channels_age(self, interaction: discord.Interaction[AnimateBot], required: bool) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        await self.guilds.update(config.guild_id, interaction.user.id, require_age_restricted=required)
        await self.changed(
            interaction,
            "/animate now only runs in age-restricted channels."
            if required
            else "/animate no longer requires age-restricted channels.",
        )

    # ------------------------------------------------------------------------------------------ moderation

    @moderation_group.command(name="block", description="Block prompts containing a word or matching a regex")
    @app_commands.describe(
        kind="word: a whole word or phrase, any case; regex: a regular expression, any case",
        pattern="The word, phrase or regular expression",
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
        problem = policy.validate_pattern(kind, pattern)
        if problem is None and len(config.blocklist) >= policy.BLOCKLIST_MAX_ENTRIES:
            problem = f"The blocklist is full ({policy.BLOCKLIST_MAX_ENTRIES} entries); remove some first."
        if problem:
            await self.refuse(interaction, problem)
            return
        if not await self.guilds.add_block(config.guild_id, kind, pattern, interaction.user.id):
            await self.refuse(interaction, f"`{ui.clip(pattern, 100)}` is already blocked.")
            return
        await self.changed(interaction, f"Blocked {kind} `{ui.clip(pattern, 200)}` in prompts.")

    @moderation_group.command(name="unblock", description="Remove an entry from the prompt blocklist")
    @app_commands.describe(pattern="The blocked word or regex, exactly as listed")
    async def unblock(self, interaction: discord.Interaction[AnimateBot], pattern: str) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if not await self.guilds.remove_block(config.guild_id, pattern.strip()):
            await self.refuse(interaction, f"`{ui.clip(pattern, 100)}` isn't on the blocklist.")
            return
        await self.changed(interaction, f"Unblocked `{ui.clip(pattern.strip(), 200)}`.")

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
        return [
            app_commands.Choice(name=ui.clip(f"{e.kind}: {e.pattern}", 100), value=e.pattern)
            for e in config.blocklist
            if needle in e.pattern.lower() and len(e.pattern) <= 100
        ][:25]

    @moderation_group.command(name="ban", description="Stop a member from using /animate here")
    @app_commands.describe(member="The member", reason="Shown to them when they try")
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
            await self.refuse(interaction, "You can't ban yourself.")
            return
        await self.guilds.ban(config.guild_id, member.id, reason, interaction.user.id)
        await self.changed(
            interaction,
            f"{member.mention} can no longer use /animate here"
            + (f" (reason: {ui.clip(reason, 200)})." if reason else "."),
        )

    @moderation_group.command(name="unban", description="Let a banned member use /animate again")
    @app_commands.describe(member="The member")
    async def unban(self, interaction: discord.Interaction[AnimateBot], member: discord.Member) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        if not await self.guilds.unban(config.guild_id, member.id):
            await self.refuse(interaction, f"{member.mention} wasn't banned.")
            return
        await self.changed(interaction, f"{member.mention} may use /animate again.")

    @moderation_group.command(name="approval", description="Make every job wait for a moderator's approval")
    @app_commands.describe(
        enabled="On: jobs wait, unsubmitted and uncharged, until approved",
        moderator_role="Who may approve or reject (admins always may)",
    )
    async def approval(
        self,
        interaction: discord.Interaction[AnimateBot],
        enabled: bool,
        moderator_role: discord.Role | None = None,
    ) -> None:
        config = await require_admin(self.bot, interaction)
        if config is None:
            return
        changes: dict[str, object] = {"approval_required": enabled}
        if moderator_role is not None:
            if moderator_role.guild.id != config.guild_id:
                await self.refuse(interaction, "That role isn't from this server.")
                return
            changes["moderator_role_id"] = moderator_role.id
        new = await self.guilds.update(config.guild_id, interaction.user.id, **changes)
        who = _role(new.moderator_role_id, "admins")
        await self.changed(
            interaction,
            f"Approval mode on: jobs wait until {who} approve them."
            if enabled
            else "Approval mode off." + (f" Moderator role: {who}." if moderator_role else ""),
        )


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Admin(bot))
