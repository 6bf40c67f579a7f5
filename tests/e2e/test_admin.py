"""/animate-admin and /quota: settings per guild, server-side permission checks, every limit enforced."""

from __future__ import annotations

import pytest

from tests.e2e.adminkit import admin, audit_titles, embed_of, fields
from tests.e2e.conftest import Harness
from tests.fakes.discord import Perm
from tests.fakes.runcomfy import JobScript
from tests.ledger import job_ledger


async def test_admin_commands_are_hidden_and_refused_on_the_server_side(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    cmd = h.discord.find_command("animate-admin")
    assert cmd is not None and int(cmd["default_member_permissions"]) == Perm.MANAGE_GUILD
    with pytest.raises(PermissionError):
        await admin(h, "show", user="alice")

    # A server may override Discord's visibility: the bot still refuses.
    h.discord.enforce_command_permissions = False
    for user in ("alice", "mod"):
        assert "Only members with the Manage Server permission" in await admin(
            h, "quota default", user=user, credits=100
        )
    text = await h.reply(await h.discord.slash("animate-stats", {}, user="alice"))
    assert "Only members with the Manage Server permission" in text
    # ... while Manage Server and the owner pass the same check.
    for user in ("admin", "owner"):
        assert "Members get 100 credits" in await admin(h, "quota default", user=user, credits=100)


async def test_configured_admin_role_may_administer(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.enforce_command_permissions = False
    assert "Only members" in await admin(h, "show", user="mod")
    assert "Admin role set" in await admin(h, "admin-role", user="owner", role="Moderator")
    assert "Members get 9 credits per day" in await admin(h, "quota default", user="mod", credits=9)


async def test_show_echoes_the_whole_configuration_and_every_change_is_audited(harness: Harness) -> None:
    h = harness
    audit = h.discord.add_channel("audit-log")
    gold = h.discord.add_role("Gold", 0)
    h.discord.add_member("bob", roles=[gold])
    await h.start_bot()
    changes = [
        ("audit-channel", {"channel": audit}, f"<#{audit}>"),
        ("quota default", {"credits": 3, "period": "week", "reset_hour": 6}, "3 credits per week"),
        ("quota costs", {"cost_480p": 1, "cost_1080p": 4}, "1080P costs 4"),
        ("quota limits", {"max_concurrent": 2, "cooldown_seconds": 30, "daily_budget": 50}, "2 concurrent"),
        ("quota role", {"role": "Gold", "credits": 20}, f"<@&{gold}> members get 20"),
        ("quota user", {"member": "bob", "credits": 7}, f"<@{h.discord.user_ids['bob']}> gets 7"),
        ("quota unlimited-role", {"role": "Moderator"}, "unlimited credits"),
        ("channels allow", {"channel": h.discord.channel_id}, "is allowed in"),
        ("channels age-restricted", {"required": False}, "no longer requires"),
        ("moderation block", {"kind": "word", "pattern": "gore"}, "Blocked word `gore`"),
        ("moderation block", {"kind": "regex", "pattern": r"b[o0]mb"}, "Blocked regex"),
        ("moderation ban", {"member": "bob", "reason": "spam"}, "can no longer use /animate"),
        ("moderation approval", {"enabled": False, "moderator_role": "Moderator"}, "Approval mode off"),
    ]
    for sub, options, expected in changes:
        text = await admin(h, sub, **options)
        assert text.startswith("✅") and expected in text, (sub, text)

    inter = await h.discord.slash("animate-admin", {}, user="admin", subcommand="show")
    response = await inter.wait_response()
    assert inter.ephemeral and response["allowed_mentions"]["parse"] == []
    shown = fields(response["embeds"][0])
    assert "3 per member per week" in shown["Credits"] and "06:00 UTC" in shown["Credits"]
    assert shown["Prices"] == "480P: 1 · 1080P: 4"
    assert f"<@&{gold}>: 20" in shown["Role allowances (highest wins)"]
    assert f"<@{h.discord.user_ids['bob']}>: 7" in shown["Personal allowances"]
    assert shown["Unlimited role"] == f"<@&{h.discord.role_ids['moderator']}>"
    assert "Concurrent jobs per member: 2" in shown["Limits"] and "30 s" in shown["Limits"]
    assert "Daily server budget: 50 (0 spent today)" in shown["Limits"]
    assert f"<#{h.discord.channel_id}>" in shown["Channels"]
    assert "`gore`" in shown["Prompt blocklist"] and "`b[o0]mb`" in shown["Prompt blocklist"]
    assert shown["Banned members"] == "1"
    assert shown["Audit channel"] == f"<#{audit}>"

    titles = await audit_titles(h, audit, len(changes))
    assert titles.count("Settings changed") >= len(changes)
    for message in h.discord.messages(audit):
        assert message["allowed_mentions"]["parse"] == []
        assert f"<@{h.discord.user_ids['admin']}>" in str(message["embeds"][0]["fields"])


async def test_invalid_settings_are_refused_with_a_reason(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    assert "doesn't compile" in await admin(h, "moderation block", kind="regex", pattern="(unclosed")
    assert "too slow" in await admin(h, "moderation block", kind="regex", pattern=r"(a+)+$")
    assert "matches an empty prompt" in await admin(h, "moderation block", kind="regex", pattern="x*")
    assert "Give at least one" in await admin(h, "quota default")
    assert "isn't on the blocklist" in await admin(h, "moderation unblock", pattern="nothing")
    assert "wasn't banned" in await admin(h, "moderation unban", member="bob")
    hidden = h.discord.add_channel("hidden", overwrites=[{"id": "bot", "deny": Perm.VIEW_CHANNEL}])
    await h.discord.dispatch("CHANNEL_CREATE", h.discord.channel_payload(hidden))
    assert "I can't post in" in await admin(h, "audit-channel", channel=hidden)


async def test_roles_overrides_and_grants_set_the_allowance(harness: Harness) -> None:
    h = harness
    gold = h.discord.add_role("Gold", 0)
    silver = h.discord.add_role("Silver", 0)
    h.discord.add_member("bob", roles=[gold, silver])
    await h.start_bot(daily_quota=1)
    await admin(h, "quota role", role="Gold", credits=10)
    await admin(h, "quota role", role="Silver", credits=3)

    async def left(user: str, **options: object) -> str:
        return fields(await embed_of(h, "quota", user=user, **options))["Left today"]

    assert await left("bob") == "**10** of 10"  # the highest role wins
    assert await left("alice") == "**1** of 1"  # no role: the default
    await admin(h, "quota user", member="bob", credits=2)
    assert await left("bob") == "**2** of 2"  # a personal allowance beats roles
    await admin(h, "quota grant", member="bob", credits=3)
    assert await left("bob") == "**5** of 2 (+3 granted)"
    for _ in range(5):
        assert "on its way" in await h.reply(await h.animate(user="bob"))
    assert "out of credits" in await h.reply(await h.animate(user="bob"))

    # Only admins may look up someone else.
    assert "Only admins" in await h.reply(await h.discord.slash("quota", {"member": "bob"}, user="alice"))
    shown = fields(await embed_of(h, "quota", user="admin", member="bob"))
    assert shown["Left today"] == "**0** of 2 (+3 granted)"
    assert "personal allowance" in shown["Allowance from"]


async def test_unlimited_role_and_1080p_price(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=1)
    await admin(h, "quota unlimited-role", role="Moderator")
    await admin(h, "quota costs", cost_1080p=5)
    for _ in range(3):
        assert "unlimited" in await h.reply(await h.animate(user="mod", resolution="1080P"))
    assert fields(await embed_of(h, "quota", user="mod"))["Left today"] == "**unlimited**"
    job_id = await h.last_job_id()
    assert await job_ledger(h.running.quota, job_id) == [("charge", 5)]
    text = await h.reply(await h.animate(user="alice", resolution="1080P"))
    assert "out of credits" in text and "costs 5" in text


async def test_concurrent_job_limit(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await admin(h, "quota limits", max_concurrent=1)
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    assert "on its way" in await h.reply(await h.animate())
    first = await h.last_job_id()
    await h.wait_job(first, "queued")
    text = await h.reply(await h.animate())
    assert "1 unfinished job here already (the limit is 1)" in text
    assert "on its way" in await h.reply(await h.animate(user="bob"))  # per member
    assert len(h.runcomfy.requests_to("submit")) == 2


async def test_cooldown_and_daily_budget(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await admin(h, "quota limits", cooldown_seconds=3600, daily_budget=2)
    assert "on its way" in await h.reply(await h.animate())
    text = await h.reply(await h.animate())
    assert "Slow down" in text and "<t:" in text
    assert "on its way" in await h.reply(await h.animate(user="bob"))
    text = await h.reply(await h.animate(user="mod"))
    assert "daily /animate budget (2 of 2 credits" in text and "<t:" in text
    assert len(h.runcomfy.requests_to("submit")) == 2
    await admin(h, "quota limits", cooldown_seconds=0, daily_budget=0)
    assert "on its way" in await h.reply(await h.animate(user="mod"))


async def test_weekly_period_with_reset_hour(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await admin(h, "quota default", credits=2, period="week", reset_hour=7)
    assert "1 credit left this week" in await h.reply(await h.animate())
    shown = fields(await embed_of(h, "quota", user="alice"))
    assert shown["Left this week"] == "**1** of 2"
    row = await h.running.db.fetchone("SELECT period FROM quota_ledger")
    assert row is not None and str(row["period"]).startswith("week:") and str(row["period"]).endswith("T07")


async def test_blocklist_words_and_regexes(harness: Harness) -> None:
    h = harness
    audit = h.discord.add_channel("audit-log")
    await h.start_bot()
    await admin(h, "audit-channel", channel=audit)
    await admin(h, "moderation block", kind="word", pattern="Gore")
    await admin(h, "moderation block", kind="regex", pattern=r"b[o0]mb")
    text = await h.reply(await h.animate("lots of GORE everywhere"))
    assert "doesn't allow" in text and "GORE" in text
    assert "doesn't allow" in await h.reply(await h.animate("a b0mb explodes"))
    assert "on its way" in await h.reply(await h.animate("gorgeous gorey sunset"))  # whole words only
    assert len(h.runcomfy.requests_to("submit")) == 1
    titles = await audit_titles(h, audit, 5)
    assert titles.count("Prompt blocked") == 2
    await admin(h, "moderation unblock", pattern="Gore")
    assert "on its way" in await h.reply(await h.animate("lots of gore"))


async def test_banned_member_is_refused_until_unbanned(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await admin(h, "moderation ban", member="bob", reason="spamming")
    text = await h.reply(await h.animate(user="bob"))
    assert "blocked you from using /animate here (spamming)" in text
    assert h.runcomfy.requests_to("submit") == []
    await admin(h, "moderation unban", member="bob")
    assert "on its way" in await h.reply(await h.animate(user="bob"))


async def test_channel_allow_list_and_age_restriction(harness: Harness) -> None:
    h = harness
    adult = h.discord.add_channel("adult", nsfw=True)
    await h.start_bot()
    await admin(h, "channels allow", channel=h.discord.other_channel_id)
    await admin(h, "channels allow", channel=adult)
    text = await h.reply(await h.animate())
    assert "isn't enabled in this channel" in text and f"<#{h.discord.other_channel_id}>" in text
    assert "on its way" in await h.reply(await h.animate(channel_id=h.discord.other_channel_id))
    await admin(h, "channels age-restricted", required=True)
    text = await h.reply(await h.animate(channel_id=h.discord.other_channel_id))
    assert "age-restricted" in text
    assert "on its way" in await h.reply(await h.animate(channel_id=adult))
    await admin(h, "channels clear")
    await admin(h, "channels age-restricted", required=False)
    assert "on its way" in await h.reply(await h.animate())


async def test_audit_channel_records_job_events_and_survives_losing_access(harness: Harness) -> None:
    h = harness
    audit = h.discord.add_channel("audit-log")
    await h.start_bot()
    await admin(h, "audit-channel", channel=audit)
    await h.reply(await h.animate())
    job = await h.wait_job(await h.last_job_id(), "delivered")
    titles = await audit_titles(h, audit, 3)
    assert any(t.startswith("🚀 Submitted") for t in titles)
    await audit_titles(h, audit, 3)
    delivered = await h.discord.wait_for(
        lambda: [m for m in h.discord.messages(audit) if m["embeds"][0]["title"].startswith("✅ Delivered")]
    )
    embed = delivered[0]["embeds"][0]
    assert embed["timestamp"] and f"<@{job.user_id}>" in str(embed["fields"])
    assert f"/{job.status_message_id})" in str(embed["fields"])  # links to the status message
    assert delivered[0]["allowed_mentions"]["parse"] == []

    # The bot loses access to the audit channel: jobs still run, posting fails quietly.
    h.discord.set_overwrite(audit, "bot", deny=Perm.SEND_MESSAGES)
    await h.reply(await h.animate(user="bob"))
    await h.wait_job(await h.last_job_id(), "delivered")
