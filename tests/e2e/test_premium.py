"""Issue #15: credit packs sold through Discord (Premium Apps), end to end through the fakes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot import premium
from tests.e2e.conftest import Harness
from tests.fakes.discord import FakeInteraction
from tests.fakes.discord._entitlements import SKU_SUBSCRIPTION
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger

CONSUME = r"/applications/\d+/entitlements/\d+/consume$"


async def start(h: Harness, packs: str = "{sku}:10", **overrides: Any) -> int:
    """A bot selling one pack; returns the pack's SKU id."""
    sku = h.discord.add_sku("10 credits")
    await h.start_bot(premium_skus=packs.format(sku=sku), **overrides)
    return sku


async def balance(h: Harness, user: str = "alice") -> int:
    return await h.running.store.premium.balance(h.discord.user_ids[user])


async def settled(h: Harness, entitlement_id: int) -> None:
    """Until the bot consumed the entitlement (at Discord and in its own records)."""

    async def done() -> bool:
        record = await h.running.store.premium.get(entitlement_id)
        return record is not None and record.consumed

    await h.discord.wait_for(done)


async def quota_embed(h: Harness, user: str = "alice") -> tuple[dict[str, Any], FakeInteraction]:
    inter = await h.discord.slash("quota", {}, user=user)
    message = await inter.wait_response()
    return message["embeds"][0], inter


def field(embed: dict[str, Any], name: str) -> str | None:
    return next((f["value"] for f in embed["fields"] if f["name"] == name), None)


def premium_buttons(components: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [c for row in components or [] for c in row["components"] if c.get("style") == 6]


async def test_a_purchase_grants_once_though_the_event_and_interactions_all_carry_it(
    harness: Harness,
) -> None:
    h = harness
    # Consuming fails for now, so the entitlement stays in every interaction of alice's meanwhile.
    h.discord.fail_next("POST", CONSUME, 503, times=4)
    sku = await start(h, premium_sweep_interval=3600)
    ent = await h.discord.purchase("alice", sku, dispatch=False)
    # The event and two interactions carrying the entitlement, all at once.
    await asyncio.gather(
        h.discord.dispatch("ENTITLEMENT_CREATE", ent), quota_embed(h), quota_embed(h), quota_embed(h)
    )
    embed, inter = await quota_embed(h)
    assert inter.payload["entitlements"][0]["id"] == ent["id"]
    assert field(embed, "Purchased credits") == "**10** (never expire, used after the allowance)"
    assert await balance(h) == 10
    rows = await h.running.db.fetchall("SELECT id, credits FROM premium_entitlements")
    assert [(int(r["id"]), int(r["credits"])) for r in rows] == [(int(ent["id"]), 10)]


async def test_a_pack_is_consumed_through_the_api_and_a_failing_consume_is_retried_without_regranting(
    harness: Harness,
) -> None:
    h = harness
    h.discord.fail_next("POST", CONSUME, 503, times=4)  # every attempt of the first round fails
    sku = await start(h, premium_sweep_interval=0.3)
    ent = await h.discord.purchase("alice", sku)
    eid = int(ent["id"])
    await settled(h, eid)  # the sweep consumed it on a later round
    assert h.discord.entitlements[eid]["consumed"] is True
    assert len(h.discord.calls_to("POST", CONSUME)) >= 5
    assert await balance(h) == 10
    # Another purchase of the same pack is consumed at once: each grants its own 10.
    second = await h.discord.purchase("alice", sku)
    await settled(h, int(second["id"]))
    assert await balance(h) == 20
    assert h.discord.entitlements[int(second["id"])]["consume_calls"] == 1


async def test_out_of_credits_offers_the_packs_and_quota_shows_purchased_credits(harness: Harness) -> None:
    h = harness
    sku = h.discord.add_sku("10 credits")
    other = h.discord.add_sku("50 credits")
    await h.start_bot(daily_quota=1, premium_skus=f"{sku}:10,{other}:50")
    await h.reply(await h.animate())
    refused = await h.animate()
    text = await h.reply(refused)
    assert "You are out of credits" in text and "Buy a credit pack below" in text
    buttons = premium_buttons(refused.followups[-1].get("components"))
    assert [(b["sku_id"], b.get("label"), b.get("custom_id")) for b in buttons] == [
        (str(sku), None, None),
        (str(other), None, None),
    ]
    embed, inter = await quota_embed(h)
    assert field(embed, "Purchased credits") == "**0** (never expire, used after the allowance)"
    assert [b["sku_id"] for b in premium_buttons((await inter.wait_response()).get("components"))] == [
        str(sku),
        str(other),
    ]
    assert len(h.runcomfy.requests_to("submit")) == 1


async def test_purchased_credits_are_spent_after_the_allowance_and_outlive_the_period(
    harness: Harness,
) -> None:
    h = harness
    sku = await start(h, daily_quota=1)
    await settled(h, int((await h.discord.purchase("alice", sku))["id"]))
    await h.reply(await h.animate())
    first = await h.last_job_id()
    await h.reply(await h.animate())
    second = await h.last_job_id()
    rows = await h.running.db.fetchall("SELECT job_id, purchased FROM quota_ledger ORDER BY id")
    assert [(int(r["job_id"]), int(r["purchased"])) for r in rows] == [(first, 0), (second, 1)]
    assert await balance(h) == 9
    # A new period (the charges now belong to an old one): the allowance is back, the purchased
    # credits are still all there.
    await h.running.db.execute("UPDATE quota_ledger SET period = '2000-01-01'")
    embed, _ = await quota_embed(h)
    assert field(embed, "Left today") == "**1** of 1"
    assert field(embed, "Purchased credits") == "**9** (never expire, used after the allowance)"


async def test_a_failed_job_refunds_each_credit_to_the_bucket_it_came_from(harness: Harness) -> None:
    h = harness
    sku = await start(h, daily_quota=1, cost_480p=2)
    await settled(h, int((await h.discord.purchase("alice", sku))["id"]))
    h.runcomfy.scripts.append(JobScript(outcome="failed", error={"message": "boom"}))
    await h.reply(await h.animate())  # 1 from the allowance, 1 purchased
    job_id = await h.last_job_id()
    assert await balance(h) == 9
    await h.wait_job(job_id, "failed")
    assert await job_ledger(h.running.quota, job_id) == [("charge", 2), ("refund", -2)]
    assert await balance(h) == 10
    embed, _ = await quota_embed(h)
    assert field(embed, "Left today") == "**1** of 1"


async def test_a_refund_takes_back_only_the_unspent_credits_and_says_so_in_the_audit_log(
    harness: Harness,
) -> None:
    h = harness
    audit = h.discord.add_channel("audit")
    sku = await start(h, daily_quota=0)
    await h.running.store.guilds.update(h.discord.guild_id, None, audit_channel_id=audit)
    ent = await h.discord.purchase("alice", sku)
    await settled(h, int(ent["id"]))
    for _ in range(2):
        await h.reply(await h.animate())
        # Delivered, so spent (a running job's credits would still count as unspent).
        await h.wait_job(await h.last_job_id(), "delivered")
    assert await balance(h) == 8
    await h.discord.refund(int(ent["id"]))

    def refund_lines() -> list[dict[str, Any]]:
        return [
            m for m in h.discord.messages(audit) if "refunded" in (m["embeds"] or [{}])[0].get("title", "")
        ]

    lines = await h.discord.wait_for(refund_lines)
    alice = h.discord.user_ids["alice"]
    assert lines[0]["embeds"][0]["description"] == (
        f"<@{alice}>'s credit pack (10 credits) was refunded: 8 unspent credits were taken back "
        "(2 had been spent)."
    )
    assert await balance(h) == 0
    # Discord repeating the event changes nothing.
    await h.discord.dispatch("ENTITLEMENT_DELETE", h.discord.entitlement_payload(int(ent["id"])))
    await h.discord.wait_for(lambda: h.running.store.premium.get(int(ent["id"])))
    await asyncio.sleep(0.1)
    assert len(refund_lines()) == 1 and await balance(h) == 0
    refused = await h.animate()
    assert "out of credits" in await h.reply(refused)


async def test_a_server_subscription_raises_the_default_allowance_while_it_lasts(harness: Harness) -> None:
    h = harness
    gsku = h.discord.add_sku("Server boost", SKU_SUBSCRIPTION)
    await h.start_bot(daily_quota=1, premium_guild_sku=f"{gsku}:20")
    embed, inter = await quota_embed(h)
    assert field(embed, "Left today") == "**1** of 1" and not (await inter.wait_response()).get("components")
    ent = await h.discord.subscribe_guild(h.discord.guild_id, gsku)

    async def left() -> str | None:
        return field((await quota_embed(h))[0], "Left today")

    await h.discord.wait_for(lambda: _equals(left(), "**20** of 20"))
    embed, _ = await quota_embed(h)
    assert field(embed, "Allowance from") == "this server's premium subscription"
    await h.discord.update_entitlement(int(ent["id"]), ends_at=1.0)  # it ended
    await h.discord.wait_for(lambda: _equals(left(), "**1** of 1"))


async def _equals(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def test_an_entitlement_bought_while_the_bot_was_offline_is_granted_at_start(harness: Harness) -> None:
    h = harness
    sku = h.discord.add_sku("10 credits")
    ent = await h.discord.purchase("alice", sku)  # nobody connected: no event reaches a bot
    await h.start_bot(premium_skus=f"{sku}:10")
    await settled(h, int(ent["id"]))
    assert await balance(h) == 10
    assert h.discord.calls_to("GET", r"/applications/\d+/entitlements$")


async def test_without_premium_skus_nothing_of_it_shows(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=1)
    await h.reply(await h.animate())
    refused = await h.animate()
    text = await h.reply(refused)
    assert "out of credits" in text and "credit pack" not in text
    assert not refused.followups[-1].get("components")
    embed, inter = await quota_embed(h)
    assert field(embed, "Purchased credits") is None and not (await inter.wait_response()).get("components")
    assert not h.discord.calls_to("GET", r"/applications/\d+/(skus|entitlements)")


async def test_the_on_its_way_line_counts_purchased_credits_when_there_are_some_or_the_job_used_some(
    harness: Harness,
) -> None:
    h = harness
    sku = await start(h, packs="{sku}:2", daily_quota=1)
    # No purchased credits yet: the line is as it always was.
    assert (await h.reply(await h.animate())).endswith(" 0 credits left today.")
    await h.running.db.execute("UPDATE quota_ledger SET period = '2000-01-01'")  # a fresh allowance
    await settled(h, int((await h.discord.purchase("alice", sku))["id"]))
    assert (await h.reply(await h.animate())).endswith(" 0 credits left today, plus 2 purchased.")
    text = await h.reply(await h.animate())
    assert text.endswith(" 0 credits left today, plus 1 purchased. This job used 1 purchased credit.")
    text = await h.reply(await h.animate())
    assert text.endswith(" 0 credits left today, and no purchased credits. This job used 1 purchased credit.")
    assert await balance(h) == 0


async def test_a_refusal_for_lack_of_credits_in_a_dm_or_group_dm_carries_the_packs(harness: Harness) -> None:
    h = harness
    sku = await start(h, user_install_daily_quota=0)
    for channel in (h.discord.open_dm("alice"), h.discord.add_group_dm(["alice", "bob"])):
        refused = await h.animate(channel_id=channel)
        text = await h.reply(refused)
        assert "You are out of credits" in text and "Buy a credit pack below" in text
        assert refused.ephemeral
        assert [b["sku_id"] for b in premium_buttons(refused.followups[-1].get("components"))] == [str(sku)]
    assert h.runcomfy.requests_to("submit") == []
    assert await h.running.db.fetchone("SELECT id FROM quota_ledger") is None  # nothing charged


async def test_refunds_made_while_the_bot_was_offline_are_taken_back_at_start_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    monkeypatch.setattr(premium, "ENTITLEMENT_PAGE", 2)  # three entitlements: two pages
    audit = h.discord.add_channel("audit")
    sku = await start(h, daily_quota=0)
    await h.running.store.guilds.update(h.discord.guild_id, None, audit_channel_id=audit)
    ents = [int((await h.discord.purchase("alice", sku))["id"]) for _ in range(3)]
    for eid in ents:
        await settled(h, eid)
    await h.reply(await h.animate())  # one purchased credit spent: 29 left
    await h.stop_bot()
    for eid in (ents[0], ents[2]):  # refunded while no bot listens: no ENTITLEMENT_DELETE reaches one
        await h.discord.refund(eid, dispatch=False)

    def refund_lines() -> list[dict[str, Any]]:
        return [
            m for m in h.discord.messages(audit) if "refunded" in (m["embeds"] or [{}])[0].get("title", "")
        ]

    def listings() -> list[Any]:
        """The bot's own listings that include deleted entitlements (discord.py's never do)."""
        return [
            c
            for c in h.discord.calls_to("GET", r"/applications/\d+/entitlements$")
            if c.query.get("exclude_deleted") == "false"
        ]

    earlier = len(listings())
    await h.start_bot(premium_skus=f"{sku}:10", daily_quota=0)
    lines = await h.discord.wait_for(lambda: len(refund_lines()) == 2 and refund_lines())
    alice = h.discord.user_ids["alice"]
    assert [line["embeds"][0]["description"] for line in lines] == [
        f"<@{alice}>'s credit pack (10 credits) was refunded: 10 unspent credits were taken back "
        "(0 had been spent)."
    ] * 2
    assert await balance(h) == 9
    # Paged by id with `after` (two to a page here): the page after the second entitlement is the last.
    assert [c.query.get("after") for c in listings()[earlier:]] == ["0", str(ents[1])]
    # Another start lists them again and finds them revoked: no second take-back or audit line.
    await h.stop_bot()
    await h.start_bot(premium_skus=f"{sku}:10", daily_quota=0)
    await h.discord.wait_for(lambda: len(listings()) == earlier + 4)

    def swept_since() -> bool:  # the regular sweep runs once the start-up look is done
        calls = h.discord.calls_to("GET", r"/applications/\d+/entitlements$")
        return calls[-1].query.get("exclude_deleted") != "false"

    await h.discord.wait_for(swept_since)
    assert len(refund_lines()) == 2 and await balance(h) == 9


async def test_the_periodic_sweep_reads_only_entitlements_newer_than_those_it_dealt_with(
    harness: Harness,
) -> None:
    h = harness
    sku = h.discord.add_sku("10 credits")
    ents = [int((await h.discord.purchase("alice", sku))["id"]) for _ in range(2)]  # while offline
    await h.start_bot(premium_skus=f"{sku}:10")
    for eid in ents:
        await settled(h, eid)
    cog = h.running.premium
    assert cog is not None

    def sweeps() -> list[Any]:  # discord.py's listings (the start-up refund look asks for deleted ones)
        return [
            c
            for c in h.discord.calls_to("GET", r"/applications/\d+/entitlements$")
            if c.query.get("exclude_deleted") != "false"
        ]

    await h.discord.wait_for(lambda: len(sweeps()) >= 1)  # the start-up sweep read them all
    assert "after" not in sweeps()[0].query or sweeps()[0].query["after"] in ("0", "")
    await cog.sweep()
    assert sweeps()[-1].query.get("after") == str(max(ents))  # consumed ones are not read again
    # One bought while the event was lost is still found by the next sweep, which then moves on.
    late = int((await h.discord.purchase("alice", sku, dispatch=False))["id"])
    await cog.sweep()
    await settled(h, late)
    assert await balance(h) == 30
    await cog.sweep()
    assert sweeps()[-1].query.get("after") == str(late)


async def test_a_sweep_whose_listing_hangs_gives_up_after_the_http_timeout(harness: Harness) -> None:
    h = harness
    await start(h, http_timeout=0.3)
    cog = h.running.premium
    assert cog is not None
    listings = r"/applications/\d+/entitlements$"
    await h.discord.wait_for(  # the start-up sweep is done listing: the stall is for this one
        lambda: any(c.query.get("exclude_deleted") != "false" for c in h.discord.calls_to("GET", listings))
    )
    release = h.discord.stall_after("GET", r"^/applications/\d+/entitlements$")
    sweep = asyncio.create_task(cog.sweep())
    try:
        await asyncio.wait({sweep}, timeout=10)  # only a bound for a sweep that would never end
        assert sweep.done() and isinstance(sweep.exception(), TimeoutError)
    finally:
        release.set()
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)
