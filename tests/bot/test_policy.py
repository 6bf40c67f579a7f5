from __future__ import annotations

import time

import discord
import pytest

from bot import policy
from bot.quota_rules import BudgetExhausted, CoolingDown, QuotaExceeded, Standing, TooManyJobs
from storage.guilds import BlockEntry, GuildConfig
from tests.ledger import daily_period

GOLD, SILVER, VIP, ADMINS, MODS = 10, 11, 12, 13, 14


def config(**kwargs: object) -> GuildConfig:
    return GuildConfig(guild_id=1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("roles", "override", "expected", "source"),
    [
        (set(), None, 5, "the bot default"),
        ({GOLD, SILVER}, None, 20, f"<@&{GOLD}>"),  # highest role wins
        ({SILVER}, None, 1, f"<@&{SILVER}>"),  # a role may also lower the default
        ({VIP, GOLD}, None, None, "unlimited"),
        ({VIP}, 2, 2, "personal"),  # a personal allowance beats everything
    ],
)
def test_resolve_allowance(roles: set[int], override: int | None, expected: int | None, source: str) -> None:
    cfg = config(role_allowances={GOLD: 20, SILVER: 1}, unlimited_role_id=VIP)
    allowance = policy.resolve_allowance(cfg, roles, override, 5)
    assert allowance.credits == expected and source in allowance.source
    assert policy.resolve_allowance(config(allowance=3), set(), None, 5).credits == 3


def test_costs_and_limits() -> None:
    cfg = config(cost_1080p=7, max_concurrent=2, cooldown_seconds=30, daily_budget=100, reset_hour=4)
    assert policy.cost_of(cfg, "1080P", 1, 2) == 7 and policy.cost_of(cfg, "480P", 1, 2) == 1
    limits = policy.limits_for(cfg, policy.Allowance(5, "x"))
    assert (limits.max_concurrent, limits.cooldown, limits.daily_budget) == (2, 30, 100)
    assert limits.budget_window is not None and limits.budget_window.key.endswith("T04")
    assert policy.limits_for(cfg, policy.Allowance(None, "x")).cooldown == 0  # unlimited: no cooldown


def test_admin_and_moderator_checks() -> None:
    plain = discord.Permissions.none()
    cfg = config(admin_role_id=ADMINS, moderator_role_id=MODS)
    assert policy.is_admin(discord.Permissions(manage_guild=True), set(), cfg)
    assert policy.is_admin(discord.Permissions(administrator=True), set(), cfg)
    assert policy.is_admin(plain, {ADMINS}, cfg) and not policy.is_admin(plain, {MODS}, cfg)
    assert policy.is_moderator(plain, {MODS}, cfg) and policy.is_moderator(plain, {ADMINS}, cfg)
    assert not policy.is_moderator(discord.Permissions(manage_messages=True), set(), cfg)
    assert not policy.is_admin(plain, {ADMINS}, config())


def test_channel_rules() -> None:
    assert policy.channel_problem(config(), channel_id=1, parent_id=None, nsfw=False) is None
    allow = config(channels=frozenset({5}))
    assert policy.channel_problem(allow, channel_id=5, parent_id=None, nsfw=False) is None
    assert policy.channel_problem(allow, channel_id=9, parent_id=5, nsfw=False) is None  # a thread of it
    assert "isn't enabled" in (policy.channel_problem(allow, channel_id=6, parent_id=None, nsfw=False) or "")
    adult = config(require_age_restricted=True)
    assert "age-restricted" in (policy.channel_problem(adult, channel_id=1, parent_id=None, nsfw=False) or "")
    assert policy.channel_problem(adult, channel_id=1, parent_id=None, nsfw=True) is None


def test_blocklist_words_are_whole_and_case_insensitive() -> None:
    entries = (
        BlockEntry(1, "word", "gore"),
        BlockEntry(2, "word", "blood bath"),
        BlockEntry(3, "regex", r"b[o0]mb"),
    )
    blocklist = policy.compiled_blocklist(entries)
    assert blocklist is policy.compiled_blocklist(entries)
    hit = blocklist.check("So much GORE here")
    assert hit is not None and hit.entry == entries[0] and hit.matched == "GORE"
    assert blocklist.check("a Blood Bath") is not None
    assert blocklist.check("gorgeous bloodbath") is None
    hit = blocklist.check("a B0MB!")
    assert hit is not None and hit.entry == entries[2]
    assert "B0MB" in policy.describe_block(hit)


def test_a_slow_regex_fails_closed_within_its_budget() -> None:
    blocklist = policy.Blocklist((BlockEntry(1, "regex", r"(a|aa)+$"),))
    started = time.monotonic()
    hit = blocklist.check("a" * 5000 + "!", budget=0.05)
    assert time.monotonic() - started < 1
    assert hit is not None and hit.entry is None
    assert "couldn't check" in policy.describe_block(hit)


@pytest.mark.parametrize(
    ("kind", "pattern", "problem"),
    [
        ("word", "fine", None),
        ("word", "  ", "empty"),
        ("regex", r"b[o0]mb", None),
        ("regex", "(", "doesn't compile"),
        ("regex", "a?", "empty prompt"),
        ("regex", r"(a+)+$", "too slow"),
        ("regex", "x" * 201, "at most"),
    ],
)
def test_validate_pattern(kind: str, pattern: str, problem: str | None) -> None:
    result = policy.validate_pattern(kind, pattern)
    assert result is None if problem is None else (result is not None and problem in result)


def test_limit_messages_name_the_limit_and_when_it_frees() -> None:
    period = daily_period()
    quota = QuotaExceeded(Standing(limit=2, used=1, period=period, granted=1), cost=3)
    text = policy.describe_limit(quota, "1080P")
    assert "2 of 3 left today" in text and "<t:" in text and "Try 480P" in text
    about = policy.describe_limit(quota, requester=42)
    assert about.startswith("<@42> is out of credits")
    assert "the limit is 2" in policy.describe_limit(TooManyJobs(2, 2))
    assert "<t:1000:R>" in policy.describe_limit(CoolingDown(1000.0))
    assert "budget (5 of 5" in policy.describe_limit(BudgetExhausted(5, 5, 1, period))


def test_a_server_subscription_raises_the_default_but_not_personal_or_role_allowances() -> None:
    boosted = policy.resolve_allowance(config(), set(), None, 5, boost=20)
    assert boosted.credits == 20 and "premium subscription" in boosted.source
    assert policy.resolve_allowance(config(allowance=30), set(), None, 5, boost=20).credits == 30
    assert policy.resolve_allowance(config(allowance=3), set(), None, 5, boost=20).credits == 20
    assert policy.resolve_allowance(config(), set(), 2, 5, boost=20).credits == 2  # personal wins
    assert policy.resolve_allowance(config(role_allowances={7: 1}), {7}, None, 5, boost=20).credits == 1
    assert policy.limits_for(config(), boosted).purchased is True


def test_out_of_credits_mentions_purchased_credits_that_fall_short() -> None:
    period = daily_period()
    short = QuotaExceeded(Standing(limit=1, used=1, period=period, purchased=1), cost=2)
    assert "(+1 purchased credit.)" in str(policy.describe_limit(short))
    none = QuotaExceeded(Standing(limit=1, used=1, period=period), cost=2)
    assert "purchased" not in str(policy.describe_limit(none))
