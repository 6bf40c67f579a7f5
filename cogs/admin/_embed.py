"""The `/animate-admin show` embed: the whole configuration of one server, in the reader's language."""

from __future__ import annotations

import discord

from bot import policy, ui
from bot.i18n import LocaleLike, tr
from bot.settings import Settings
from storage.guilds import GuildConfig
from storage.store import Store


def _role(role_id: int | None, empty: str) -> str:
    return f"<@&{role_id}>" if role_id else empty


def _credits(config: GuildConfig, settings: Settings, loc: LocaleLike) -> str:
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
        return tr(
            loc,
            "{n} per member per {every}, resetting at {hour:02d}:00 UTC — next reset {next}",
            **values,
        )
    return tr(
        loc,
        "{n} per member per {every} (bot default), resetting at {hour:02d}:00 UTC — next reset {next}",
        **values,
    )


async def _limits(store: Store, config: GuildConfig, loc: LocaleLike) -> str:
    spent = ""
    if config.daily_budget is not None:
        day = policy.limits_for(config, policy.Allowance(0, "")).budget_window
        assert day is not None and day.starts_at is not None
        used = await store.quota.guild_spent(
            config.guild_id, day.starts_at.timestamp(), day.resets_at.timestamp()
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
    return f"{concurrent}\n{cooldown}\n{budget}" + spent


def _blocklist(config: GuildConfig, loc: LocaleLike) -> str:
    words = [e.pattern for e in config.blocklist if e.kind == "word"]
    regexes = [e.pattern for e in config.blocklist if e.kind == "regex"]
    block = tr(loc, "{n} word(s): ", n=len(words)) + (", ".join(f"`{w}`" for w in words) or "—")
    block += "\n" + tr(loc, "{n} regex(es): ", n=len(regexes)) + (", ".join(f"`{r}`" for r in regexes) or "—")
    return block


async def _allowance_fields(embed: discord.Embed, store: Store, config: GuildConfig, loc: LocaleLike) -> None:
    roles = sorted(config.role_allowances.items(), key=lambda kv: -kv[1])
    embed.add_field(
        name=tr(loc, "Role allowances (highest wins)"),
        value=ui.clip("\n".join(f"<@&{r}>: {n}" for r, n in roles) or tr(loc, "none"), 1000),
    )
    overrides, total = await store.guilds.user_overrides(config.guild_id, limit=15)
    text = "\n".join(f"<@{u}>: {n}" for u, n in overrides) or tr(loc, "none")
    if total > len(overrides):
        text += "\n" + tr(loc, "… and {n} more", n=total - len(overrides))
    embed.add_field(name=tr(loc, "Personal allowances"), value=ui.clip(text, 1000))
    embed.add_field(name=tr(loc, "Unlimited role"), value=_role(config.unlimited_role_id, tr(loc, "none")))


async def _moderation_fields(
    embed: discord.Embed, store: Store, config: GuildConfig, loc: LocaleLike
) -> None:
    embed.add_field(
        name=tr(loc, "Prompt blocklist"), value=ui.clip(_blocklist(config, loc), 1000), inline=False
    )
    bans = await store.guilds.ban_count(config.guild_id)
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
        name=tr(loc, "Spoilers"),
        value=tr(loc, "forced on every job")
        if config.force_spoiler
        else tr(loc, "members choose (the `spoiler` option)"),
    )


async def config_embed(
    store: Store, settings: Settings, config: GuildConfig, locale: LocaleLike = None
) -> discord.Embed:
    loc = locale
    embed = discord.Embed(
        title=tr(loc, "⚙️ /animate settings for this server"), colour=discord.Colour.blurple()
    )
    embed.add_field(name=tr(loc, "Credits"), value=_credits(config, settings, loc), inline=False)
    embed.add_field(
        name=tr(loc, "Prices"),
        value=f"480P: {policy.cost_of(config, '480P', settings.cost_480p, settings.cost_1080p)} · "
        f"1080P: {policy.cost_of(config, '1080P', settings.cost_480p, settings.cost_1080p)}",
    )
    await _allowance_fields(embed, store, config, loc)
    embed.add_field(name=tr(loc, "Limits"), value=await _limits(store, config, loc), inline=False)
    channels = ", ".join(f"<#{c}>" for c in sorted(config.channels)) or tr(loc, "everywhere")
    age = tr(loc, "Age-restricted only: {value}", value=ui.on_off(loc, config.require_age_restricted))
    embed.add_field(name=tr(loc, "Channels"), value=ui.clip(channels, 900) + "\n" + age, inline=False)
    await _moderation_fields(embed, store, config, loc)
    embed.add_field(
        name=tr(loc, "Admin role"), value=_role(config.admin_role_id, tr(loc, "Manage Server only"))
    )
    embed.add_field(
        name=tr(loc, "Audit channel"),
        value=f"<#{config.audit_channel_id}>" if config.audit_channel_id else tr(loc, "off"),
    )
    return embed
