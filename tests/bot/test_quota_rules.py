"""The limits rule on its own: bot.quota_rules.LimitCheck over plain figures, no database."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bot.quota_rules import (
    AlreadyStarted,
    BudgetExhausted,
    CoolingDown,
    LimitCheck,
    Limits,
    Period,
    QuotaExceeded,
    Standing,
    TooManyJobs,
    period_for,
)

NOW = 1_800_000_000.0
DAY = period_for("day", 0, NOW)


@dataclass
class Figures:
    """bot.quota_rules.Figures as plain numbers, recording which were read."""

    cost: int = 1
    now: float = NOW
    origin_job: int | None = None
    last_request: float | None = None
    active: int = 0
    used: int = 0
    granted: int = 0
    held_credits: int = 0
    spent: int = 0
    read: list[str] = field(default_factory=list)

    async def open_job_for_origin(self) -> int | None:
        self.read.append("origin")
        return self.origin_job

    async def last_request_at(self) -> float | None:
        self.read.append("last_request")
        return self.last_request

    async def active_jobs(self) -> int:
        self.read.append("active")
        return self.active

    async def usage(self, period: Period) -> tuple[int, int]:
        self.read.append("usage")
        return self.used, self.granted

    async def held(self) -> int:
        self.read.append("held")
        return self.held_credits

    async def guild_spent(self, since: float, until: float) -> int:
        self.read.append("spent")
        return self.spent


async def test_a_limit_that_is_off_reads_nothing_for_it() -> None:
    figures = Figures(used=2)
    standing = await LimitCheck(Limits(5, DAY))(figures)
    assert standing == Standing(limit=5, used=2, period=DAY, granted=0)
    assert figures.read == ["origin", "usage"]
    assert LimitCheck(Limits(5, DAY)).serial_with_guild is False
    assert LimitCheck(Limits(5, DAY, daily_budget=9)).serial_with_guild is True


async def test_limits_are_checked_in_order_and_the_first_broken_one_is_raised() -> None:
    limits = Limits(1, DAY, max_concurrent=1, cooldown=60, daily_budget=3)
    everything = Figures(origin_job=4, last_request=NOW - 10, active=1, used=1, spent=3)
    with pytest.raises(AlreadyStarted) as started:
        await LimitCheck(limits)(everything)
    assert started.value.job_id == 4
    with pytest.raises(CoolingDown) as cooling:
        await LimitCheck(limits)(Figures(last_request=NOW - 10, active=1, used=1, spent=3))
    assert cooling.value.frees_at == NOW + 50
    with pytest.raises(TooManyJobs):
        await LimitCheck(limits)(Figures(last_request=NOW - 60, active=1, used=1, spent=3))
    with pytest.raises(QuotaExceeded):
        await LimitCheck(limits)(Figures(used=1, spent=3))
    with pytest.raises(BudgetExhausted):
        await LimitCheck(limits)(Figures(spent=3))


async def test_approval_skips_the_cooldown_and_counts_waiting_requests() -> None:
    limits = Limits(3, DAY, cooldown=60)
    at_approval = Figures(last_request=NOW - 1, used=1)
    await LimitCheck(limits, first_request=False)(at_approval)
    assert "last_request" not in at_approval.read
    with pytest.raises(QuotaExceeded) as refused:
        await LimitCheck(limits, for_approval=True)(Figures(used=1, held_credits=2))
    assert refused.value.held == 2
    # A grant adds to the allowance for the period.
    await LimitCheck(limits, for_approval=True)(Figures(used=1, held_credits=2, granted=1))


@dataclass
class WithPurchased(Figures):
    bought: int = 2

    async def purchased(self) -> int:
        self.read.append("purchased")
        return self.bought


async def test_purchased_credits_cover_what_the_allowance_does_not() -> None:
    rule = LimitCheck(Limits(5, DAY, purchased=True))
    figures = WithPurchased(used=4)
    standing = await rule(figures)
    assert "purchased" not in figures.read and standing.from_purchased(1) == 0  # covered: not read
    figures = WithPurchased(used=5, cost=2)
    standing = await rule(figures)
    assert standing.purchased == 2 and standing.from_purchased(2) == 2
    with pytest.raises(QuotaExceeded) as info:
        await rule(WithPurchased(used=5, cost=3))
    assert info.value.standing.purchased == 2
    figures = WithPurchased(used=5)
    with pytest.raises(QuotaExceeded):  # a rule without `purchased` never reads them
        await LimitCheck(Limits(5, DAY))(figures)
    assert "purchased" not in figures.read


async def test_a_member_over_a_lowered_allowance_may_still_pay_with_purchased_credits() -> None:
    # The allowance went from 10 to 3 after 8 were used: the job's 2 credits come from the 2 bought.
    standing = await LimitCheck(Limits(3, DAY, purchased=True))(WithPurchased(used=8, cost=2))
    assert standing.purchased == 2 and standing.from_purchased(2) == 2
    with pytest.raises(QuotaExceeded):
        await LimitCheck(Limits(3, DAY, purchased=True))(WithPurchased(used=8, cost=3))
    # Approval requests waiting count the same way.
    rule = LimitCheck(Limits(3, DAY, purchased=True), for_approval=True)
    await rule(WithPurchased(used=2, held_credits=4, cost=2))
