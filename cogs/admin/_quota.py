"""`/animate-admin quota …`: credits per period, prices, limits, role and personal allowances, grants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _l

from bot import policy, ui
from bot.i18n import N_, Msg
from cogs.admin._base import SettingsGroup
from cogs.admin.checks import admin_config

if TYPE_CHECKING:
    from bot.client import AnimateBot

# Choice names of `period`: Discord shows them translated (the values stay English).
PERIOD_NAMES = (N_("day"), N_("week"))


class QuotaGroup(SettingsGroup, name="quota", description=_l("Credits, prices and limits")):
    @app_commands.command(name="default", description=_l("Credits every member gets per period"))
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
        config = admin_config(interaction)
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
            Msg.plural(
                allowance,
                "Members get {n} credit per {period}, resetting at {hour:02d}:00 UTC.",
                "Members get {n} credits per {period}, resetting at {hour:02d}:00 UTC.",
                period=every,
                hour=new.reset_hour,
            ),
        )

    @app_commands.command(name="costs", description=_l("Credits a job costs at each resolution"))
    @app_commands.describe(cost_480p=_l("Credits for a 480P job"), cost_1080p=_l("Credits for a 1080P job"))
    async def quota_costs(
        self,
        interaction: discord.Interaction[AnimateBot],
        cost_480p: app_commands.Range[int, 0, 1000] | None = None,
        cost_1080p: app_commands.Range[int, 0, 1000] | None = None,
    ) -> None:
        config = admin_config(interaction)
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

    @app_commands.command(
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
        config = admin_config(interaction)
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

    @app_commands.command(name="role", description=_l("Credits per period for members with a role"))
    @app_commands.describe(role=_l("The role"), credits=_l("Credits per period (leave empty to remove)"))
    async def quota_role(
        self,
        interaction: discord.Interaction[AnimateBot],
        role: discord.Role,
        credits: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        config = admin_config(interaction)
        if not await self.roles_are_local(interaction, config, role):
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

    @app_commands.command(name="user", description=_l("A personal allowance for one member (beats roles)"))
    @app_commands.describe(member=_l("The member"), credits=_l("Credits per period (leave empty to remove)"))
    async def quota_user(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        credits: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        config = admin_config(interaction)
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

    @app_commands.command(name="grant", description=_l("Give a member extra credits for the current period"))
    @app_commands.describe(
        member=_l("The member"), credits=_l("Extra credits, valid until the period resets")
    )
    async def quota_grant(
        self,
        interaction: discord.Interaction[AnimateBot],
        member: discord.Member,
        credits: app_commands.Range[int, 1, 10_000],
    ) -> None:
        config = admin_config(interaction)
        period = policy.current_period(config)
        await self.bot.store.quota.grant(
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

    @app_commands.command(
        name="unlimited-role", description=_l("Members with this role have no credit limit")
    )
    @app_commands.describe(role=_l("The unlimited role (leave empty to clear)"))
    async def quota_unlimited(
        self, interaction: discord.Interaction[AnimateBot], role: discord.Role | None = None
    ) -> None:
        await self.set_role(
            interaction,
            admin_config(interaction),
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
