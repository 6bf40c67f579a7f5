"""Guild policy, as pure functions: who may do what, how many credits a member gets, which prompts and
channels are allowed, and how a refusal is worded. No I/O here, so every rule is unit-testable.

Refusals are returned as bot.i18n.Msg (English when used as a `str`); render them in the reader's
language with `bot.i18n.render(text, locale)`."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass

import discord
import regex

from bot.i18n import Msg
from bot.quota_rules import (
    AlreadyStarted,
    BudgetExhausted,
    CoolingDown,
    LimitExceeded,
    Limits,
    Period,
    QuotaExceeded,
    TooManyJobs,
    period_for,
)
from bot.text import clip, ts
from storage.guilds import BlockEntry, GuildConfig

# Blocklist patterns are user input run against every prompt: the `regex` module's match timeout
# bounds a pathological pattern, and `concurrent=True` releases the GIL while it runs in a thread.
REGEX_MAX_LENGTH = 200
BLOCKLIST_MAX_ENTRIES = 100
MATCH_BUDGET = 0.25  # seconds for the whole blocklist, per prompt
_PROBES = ("a" * 800 + "!", " " * 800 + "!", "ab" * 400 + "!", "a1 " * 266 + "!")


# ----------------------------------------------------------------------------------------------- people


def role_ids(user: discord.abc.User | discord.Member) -> set[int]:
    return {role.id for role in user.roles} if isinstance(user, discord.Member) else set()


def is_admin(perms: discord.Permissions, roles: Iterable[int], config: GuildConfig) -> bool:
    """Manage Server (or Administrator), or the guild's configured admin role."""
    if perms.administrator or perms.manage_guild:
        return True
    return config.admin_role_id is not None and config.admin_role_id in set(roles)


def is_moderator(perms: discord.Permissions, roles: Iterable[int], config: GuildConfig) -> bool:
    """May approve or reject jobs: the moderator role, or any admin."""
    roles = set(roles)
    if config.moderator_role_id is not None and config.moderator_role_id in roles:
        return True
    return is_admin(perms, roles, config)


# ----------------------------------------------------------------------------------------------- credits


@dataclass(frozen=True, slots=True)
class Allowance:
    credits: int | None  # per period; None = unlimited
    source: str  # why, for /quota: "your override", "role <@&1>", ... (a bot.i18n.Msg)

    @property
    def unlimited(self) -> bool:
        return self.credits is None


def resolve_allowance(
    config: GuildConfig, roles: Iterable[int], override: int | None, default: int, boost: int | None = None
) -> Allowance:
    """Per-user override > unlimited role > highest role allowance > server default > bot default;
    a server subscription (`boost`, README "Selling credits") raises the last two to at least `boost`."""
    roles = set(roles)
    if override is not None:
        return Allowance(override, Msg("a personal allowance set by an admin"))
    if config.unlimited_role_id is not None and config.unlimited_role_id in roles:
        return Allowance(None, Msg("the unlimited role <@&{role}>", role=config.unlimited_role_id))
    matching = [(credits, rid) for rid, credits in config.role_allowances.items() if rid in roles]
    if matching:
        credits, rid = max(matching)
        return Allowance(credits, Msg("the role <@&{role}>", role=rid))
    base = default if config.allowance is None else config.allowance
    if boost is not None and boost > base:
        return Allowance(boost, Msg("this server's premium subscription"))
    if config.allowance is not None:
        return Allowance(config.allowance, Msg("the server default"))
    return Allowance(default, Msg("the bot default"))


def cost_of(config: GuildConfig, resolution: str, default_480p: int, default_1080p: int) -> int:
    if resolution == "1080P":
        return default_1080p if config.cost_1080p is None else config.cost_1080p
    return default_480p if config.cost_480p is None else config.cost_480p


def current_period(config: GuildConfig, now: float | None = None) -> Period:
    return period_for(config.period, config.reset_hour, now)


def limits_for(config: GuildConfig, allowance: Allowance, now: float | None = None) -> Limits:
    """The limits one member's job is checked against. The unlimited role skips the allowance and the
    cooldown; the concurrency limit and the guild budget still apply (they protect service and bill)."""
    return Limits(
        allowance=allowance.credits,
        period=current_period(config, now),
        max_concurrent=config.max_concurrent,
        cooldown=0.0 if allowance.unlimited else float(config.cooldown_seconds),
        daily_budget=config.daily_budget,
        budget_window=period_for("day", config.reset_hour, now),
        purchased=True,
    )


def period_word(period: Period) -> str:
    return Msg("this week") if period.kind == "week" else Msg("today")


def describe_limit(
    exc: LimitExceeded | AlreadyStarted, resolution: str = "480P", *, requester: int | None = None
) -> str:
    """A friendly sentence saying which limit refused the job and when it frees up; addressed to the
    requester, or about them (`requester`) when a moderator is approving."""
    if isinstance(exc, AlreadyStarted):
        if exc.job_id is None:
            return Msg("This was already started — nothing more was charged.")
        return Msg("This was already started as job #{id} — nothing more was charged.", id=exc.job_id)
    if isinstance(exc, QuotaExceeded):
        s = exc.standing
        remaining = s.remaining or 0
        values = {
            "cost": exc.cost,
            "remaining": remaining,
            "total": (s.limit or 0) + s.granted,
            "when": period_word(s.period),
            "reset": ts(s.period.resets_at.timestamp()),
        }
        if requester is None:
            parts = [
                Msg(
                    "You are out of credits: this job costs {cost} and you have {remaining} of {total} left "
                    "{when}. Credits reset {reset}.",
                    **values,
                )
            ]
        else:
            parts = [
                Msg(
                    "<@{user}> is out of credits: this job costs {cost} and <@{user}> has {remaining} of "
                    "{total} left {when}. Credits reset {reset}.",
                    user=requester,
                    **values,
                )
            ]
        if s.purchased:  # some purchased credits, not enough for this job
            parts.append(Msg.plural(s.purchased, " (+{n} purchased credit.)", " (+{n} purchased credits.)"))
        if exc.held:
            held = Msg.plural(
                exc.held,
                " ({n} credit are held by requests awaiting approval.)",
                " ({n} credits are held by requests awaiting approval.)",
            )
            parts.append(held)
        if resolution == "1080P" and remaining and requester is None:
            parts.append(Msg(" Try 480P, which costs less."))
        return _joined(parts)
    if isinstance(exc, TooManyJobs):
        values = {"active": exc.active, "limit": exc.limit, "user": requester}
        if requester is None:
            return Msg.plural(
                exc.active,
                "You have {active} unfinished job here already (the limit is {limit}). "
                "Your next job can start when one of them finishes.",
                "You have {active} unfinished jobs here already (the limit is {limit}). "
                "Your next job can start when one of them finishes.",
                **values,
            )
        return Msg.plural(
            exc.active,
            "<@{user}> has {active} unfinished job here already (the limit is {limit}). "
            "<@{user}>'s next job can start when one of them finishes.",
            "<@{user}> has {active} unfinished jobs here already (the limit is {limit}). "
            "<@{user}>'s next job can start when one of them finishes.",
            **values,
        )
    if isinstance(exc, CoolingDown):
        assert exc.frees_at is not None
        if requester is None:
            return Msg("Slow down — you can start another job {when}.", when=ts(exc.frees_at))
        return Msg(
            "Slow down — <@{user}> can start another job {when}.", user=requester, when=ts(exc.frees_at)
        )
    if isinstance(exc, BudgetExhausted):
        return Msg(
            "This server has used its daily /animate budget ({spent} of {budget} credits; this "
            "job costs {cost}). It resets {reset}.",
            spent=exc.spent,
            budget=exc.budget,
            cost=exc.cost,
            reset=ts(exc.window.resets_at.timestamp()),
        )
    return Msg("A usage limit stops this job right now. Please try again later.")  # pragma: no cover


def _joined(parts: list[Msg]) -> Msg:
    """Sentences rendered one after the other, in whatever language the whole is rendered."""
    names = [f"p{i}" for i in range(len(parts))]
    return Msg("".join("{" + n + "}" for n in names), **dict(zip(names, parts, strict=True)))


# ----------------------------------------------------------------------------------------------- channels


def channel_problem(config: GuildConfig, *, channel_id: int, parent_id: int | None, nsfw: bool) -> str | None:
    """Why /animate may not run in this channel (threads count as their parent), or None."""
    if config.channels and channel_id not in config.channels and parent_id not in config.channels:
        where = ", ".join(f"<#{c}>" for c in sorted(config.channels)[:10])
        return Msg("/animate isn't enabled in this channel. Use it in {channels}.", channels=where)
    if config.require_age_restricted and not nsfw:
        return Msg("On this server /animate only runs in age-restricted channels.")
    return None


# ----------------------------------------------------------------------------------------------- blocklist


def validate_pattern(kind: str, pattern: str) -> str | None:
    """Why a blocklist entry is unusable, or None."""
    if not pattern.strip():
        return Msg("The pattern is empty.")
    if kind == "word":
        return None if len(pattern) <= 100 else Msg("A blocked word or phrase can be at most 100 characters.")
    if len(pattern) > REGEX_MAX_LENGTH:
        return Msg("A regular expression can be at most {limit} characters.", limit=REGEX_MAX_LENGTH)
    try:
        compiled = regex.compile(pattern, regex.IGNORECASE)
    except regex.error as exc:
        return Msg("That regular expression doesn't compile: {error}.", error=str(exc))
    try:
        if compiled.search("", timeout=0.05) is not None:
            return Msg("That regular expression matches an empty prompt, so it would block everything.")
        for probe in _PROBES:
            compiled.search(probe, timeout=0.05)
    except TimeoutError:
        return Msg("That regular expression is too slow (catastrophic backtracking); please simplify it.")
    return None


@dataclass(frozen=True, slots=True)
class BlockHit:
    entry: BlockEntry | None  # None: the check itself could not finish
    matched: str


class Blocklist:
    """A guild's compiled blocklist: one alternation of whole words, plus each regular expression."""

    def __init__(self, entries: tuple[BlockEntry, ...]) -> None:
        self.words = [e for e in entries if e.kind == "word"]
        self._word_re: regex.Pattern[str] | None = None
        if self.words:
            alternation = "|".join(regex.escape(e.pattern.strip()) for e in self.words)
            self._word_re = regex.compile(rf"(?<!\w)(?:{alternation})(?!\w)", regex.IGNORECASE)
        self.patterns: list[tuple[BlockEntry, regex.Pattern[str]]] = []
        for entry in entries:
            if entry.kind == "regex":
                try:
                    self.patterns.append((entry, regex.compile(entry.pattern, regex.IGNORECASE)))
                except regex.error:  # pragma: no cover - validated when added
                    continue

    def check(self, text: str, budget: float = MATCH_BUDGET) -> BlockHit | None:
        """The first entry matching `text`. Runs in a worker thread; never longer than `budget`."""
        if not text:
            return None
        if self._word_re is not None:
            found = self._word_re.search(text)
            if found:
                word = found.group(0).lower()
                entry = next((e for e in self.words if e.pattern.strip().lower() == word), None)
                return BlockHit(entry or self.words[0], found.group(0))
        deadline = time.monotonic() + budget
        for entry, pattern in self.patterns:
            try:
                found = pattern.search(text, timeout=max(0.01, deadline - time.monotonic()), concurrent=True)
            except TimeoutError:
                # Fail closed: a prompt we could not check is not submitted.
                return BlockHit(None, "")
            if found:
                return BlockHit(entry, found.group(0))
        return None


@functools.lru_cache(maxsize=256)
def compiled_blocklist(entries: tuple[BlockEntry, ...]) -> Blocklist:
    """Compiled once per distinct blocklist (a guild's config changes -> a new tuple -> a new entry)."""
    return Blocklist(entries)


def describe_block(hit: BlockHit) -> str:
    if hit.entry is None:
        return Msg(
            "I couldn't check your prompt against this server's blocklist in time, so I didn't start the "
            "job. Please try a shorter prompt, or ask an admin to simplify the blocklist."
        )
    return Msg(
        "Your prompt contains something this server doesn't allow (`{matched}`). "
        "Please rephrase it. Nothing was charged.",
        matched=clip(hit.matched, 50),
    )
