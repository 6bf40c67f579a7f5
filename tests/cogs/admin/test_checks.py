"""cogs/admin/checks.py: who may administer /animate, and how a refusal reaches the caller.

The check raises (a `CommandRefused`, or `NoPrivateMessage` outside a server) instead of answering,
and the tree's one error handler renders it: ephemeral, in the caller's language, pinging nobody."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord import app_commands

from bot.client import AnimateBot
from bot.errors import CommandRefused
from bot.i18n import CATALOGS, render
from bot.settings import Settings
from cogs.admin.checks import AdminRequired, admin_config, ensure_admin
from storage.db import StorageError
from storage.guilds import GuildRepository
from tests.e2e.adminkit import admin, audit_titles
from tests.e2e.conftest import Harness
from tests.fakes.discord import FakeInteraction, Perm

GERMAN = CATALOGS["de"]
ONLY_MANAGE = "Only members with the Manage Server permission can do that."
ONLY_MANAGE_OR_ROLE = "Only members with the Manage Server permission or the <@&{role}> role can do that."

# ------------------------------------------------------------------------------------------- units
TOKENS: dict[str, Any] = {"discord_token": "x", "runcomfy_api_token": "y"}


class _Response:
    def __init__(self, done: bool = False) -> None:
        self.done = done
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return self.done

    async def send_message(self, text: str, **kwargs: Any) -> None:
        self.sent.append((text, kwargs))


def _bot() -> AnimateBot:
    return AnimateBot(Settings(_env_file=None, **TOKENS))  # type: ignore[call-arg]


def test_refusal_says_who_may() -> None:
    assert AdminRequired(None).message == ONLY_MANAGE
    with_role = AdminRequired(42)
    assert with_role.message == ONLY_MANAGE_OR_ROLE.format(role=42)
    assert render(with_role.message, "de") == GERMAN[ONLY_MANAGE_OR_ROLE].format(role=42)
    assert isinstance(with_role, CommandRefused) and isinstance(with_role, app_commands.CheckFailure)


@pytest.mark.parametrize("locale", ["en-US", "de"])
async def test_tree_error_handler_renders_a_refusal_ephemeral_in_the_callers_language(locale: str) -> None:
    response = _Response()
    interaction: Any = SimpleNamespace(
        locale=discord.Locale(locale), response=response, command=None, user=SimpleNamespace(id=7)
    )
    await _bot().on_app_command_error(interaction, AdminRequired(42))
    [(text, kwargs)] = response.sent
    template = ONLY_MANAGE_OR_ROLE if locale == "en-US" else GERMAN[ONLY_MANAGE_OR_ROLE]
    assert text == template.format(role=42)
    assert kwargs["ephemeral"] is True
    assert kwargs["allowed_mentions"].to_dict() == discord.AllowedMentions.none().to_dict()


async def test_check_outside_a_server_is_refused_with_the_usual_words() -> None:
    interaction: Any = SimpleNamespace(
        guild_id=None,
        locale=discord.Locale("en-US"),
        response=_Response(),
        command=None,
        user=SimpleNamespace(id=7),
    )
    with pytest.raises(app_commands.NoPrivateMessage) as refused:
        await ensure_admin(interaction)
    await _bot().on_app_command_error(interaction, refused.value)
    assert interaction.response.sent[0][0] == "This command only works in a server."


def test_admin_config_needs_the_check_to_have_run() -> None:
    interaction: Any = SimpleNamespace(extras={})
    with pytest.raises(RuntimeError, match="admin check"):
        admin_config(interaction)


# ------------------------------------------------------------------- against the bot and the fakes


async def _run(h: Harness, sub: str, user: str, locale: str = "en-US", **options: Any) -> FakeInteraction:
    inter = await h.discord.slash("animate-admin", options, user=user, subcommand=sub, locale=locale)
    await inter.wait_response()
    return inter


def _answer(inter: FakeInteraction) -> dict[str, Any]:
    [callback] = inter.callbacks
    assert callback["type"] == 4 and inter.ephemeral
    return dict(callback["data"])


@pytest.mark.parametrize("user", ["admin", "owner", "boss"])
async def test_manage_server_owner_and_administrator_may_administer(harness: Harness, user: str) -> None:
    h = harness
    h.discord.add_member("boss", roles=[h.discord.add_role("Boss", Perm.ADMINISTRATOR)])
    await h.start_bot()
    text = await admin(h, "channels clear", user=user)
    assert text == "✅ Channel allow-list cleared: /animate works in every channel."


async def test_configured_admin_role_may_administer_and_is_named_to_others(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.enforce_command_permissions = False
    role = h.discord.role_ids["moderator"]
    assert await admin(h, "show", user="mod") == ONLY_MANAGE
    assert (await admin(h, "admin-role", role="Moderator")).startswith("✅ Admin role set")

    answer = _answer(await _run(h, "quota grant", "alice", member="bob", credits=2))
    assert answer["content"] == ONLY_MANAGE_OR_ROLE.format(role=role)
    assert answer["allowed_mentions"]["parse"] == []
    assert "Granted" in await admin(h, "quota grant", user="mod", member="bob", credits=2)
    # The same check guards admin commands of other cogs.
    stats = await h.discord.slash("animate-stats", {}, user="mod")
    assert (await stats.wait_response())["embeds"]
    assert await h.reply(await h.discord.slash("animate-stats", {}, user="alice")) == answer["content"]


async def test_refusal_is_in_the_callers_language(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    h.discord.enforce_command_permissions = False
    answer = _answer(await _run(h, "moderation ban", "alice", locale="de", member="bob"))
    assert answer["content"] == GERMAN[ONLY_MANAGE]


async def test_refused_command_changes_and_audits_nothing(harness: Harness) -> None:
    h = harness
    audit = h.discord.add_channel("audit-log")
    await h.start_bot()
    await admin(h, "audit-channel", channel=audit)
    await audit_titles(h, audit, 1)
    h.discord.enforce_command_permissions = False
    refused: list[tuple[str, dict[str, Any]]] = [
        ("quota default", {"credits": 100}),
        ("moderation block", {"kind": "word", "pattern": "cats"}),
        ("moderation ban", {"member": "bob"}),
        ("channels allow", {"channel": h.discord.other_channel_id}),
    ]
    for sub, options in refused:
        assert await admin(h, sub, user="alice", **options) == ONLY_MANAGE, sub
    await admin(h, "channels clear")  # an allowed change after the refused ones: audited right away
    assert len(await audit_titles(h, audit, 2)) == 2
    config = await h.running.store.guilds.get(h.discord.guild_id)
    assert config.allowance is None and config.blocklist == () and config.channels == frozenset()
    assert await h.running.store.guilds.get_ban(h.discord.guild_id, h.discord.user_ids["bob"]) is None


async def test_database_failure_during_the_check_is_reported(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.start_bot()

    async def broken(self: GuildRepository, guild_id: int) -> None:
        raise StorageError("disk I/O error")

    monkeypatch.setattr(GuildRepository, "get", broken)
    text = await admin(h, "show")
    # /animate-admin cannot charge anything: the answer says the action was not completed.
    assert "database is unavailable" in text and "could not be completed" in text


async def test_blocklist_autocomplete_only_for_admins(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await admin(h, "moderation block", kind="word", pattern="gore")
    h.discord.enforce_command_permissions = False  # a server may show the command to anyone

    async def choices(user: str) -> list[dict[str, Any]]:
        inter = await h.discord.autocomplete(
            "animate-admin", {"pattern": "go"}, "pattern", user=user, subcommand="moderation unblock"
        )
        await inter.wait_acked()
        assert inter.choices is not None
        return inter.choices

    assert await choices("admin") == [{"name": "word: gore", "value": "gore"}]
    assert await choices("alice") == []
