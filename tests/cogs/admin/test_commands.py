"""The `/animate-admin` tree is exactly what it was before the cog became a package.

The bot re-syncs its commands only when their fingerprint changes, so the payload it builds (and syncs,
translations included) must stay byte-for-byte the same. `animate_admin_payload.json` was captured from
the single-file cog. Changing an admin command, its wording or its German translation on purpose?
Regenerate it with `.venv/bin/python -m tests.cogs.admin.test_commands` and review the diff.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from discord import app_commands

from bot import i18n
from bot.client import AnimateBot
from bot.settings import Settings

FIXTURE = Path(__file__).with_name("animate_admin_payload.json")
TOKENS: dict[str, Any] = {"discord_token": "x", "runcomfy_api_token": "y"}


async def _bot() -> AnimateBot:
    settings = Settings(_env_file=None, **TOKENS)  # type: ignore[call-arg]
    bot = AnimateBot(settings)
    await bot.load_extension("cogs.admin")
    return bot


async def _payloads(bot: AnimateBot) -> dict[str, Any]:
    command = bot.tree.get_command("animate-admin")
    assert isinstance(command, app_commands.Group)
    return {
        "to_dict": command.to_dict(bot.tree),
        "translated": await command.get_translated_payload(bot.tree, i18n.CatalogTranslator()),
    }


@pytest.fixture
async def bot() -> AnimateBot:
    return await _bot()


async def test_payload_is_byte_for_byte_the_one_before_the_split(bot: AnimateBot) -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    actual = await _payloads(bot)
    # What the fingerprint hashes (bot.client.command_fingerprint) and what tree.sync sends.
    for kind in ("to_dict", "translated"):
        assert json.dumps(actual[kind], sort_keys=True) == json.dumps(expected[kind], sort_keys=True), kind
    # Order matters too (Discord lists subcommands in payload order), and so do hidden-ness and DMs.
    assert [o["name"] for o in actual["to_dict"]["options"]] == [
        "quota",
        "channels",
        "moderation",
        "show",
        "admin-role",
        "audit-channel",
    ]
    assert actual["to_dict"]["default_member_permissions"] == 1 << 5  # Manage Server
    assert actual["to_dict"]["dm_permission"] is False


async def test_every_subcommand_runs_the_admin_check(bot: AnimateBot) -> None:
    # Imported now: closing a bot (the end-to-end tests) unloads its extensions, so the classes the
    # loaded cog uses are re-imported ones.
    from cogs.admin._base import SettingsGroup

    root = bot.tree.get_command("animate-admin")
    assert isinstance(root, SettingsGroup)
    commands = [c for c in root.walk_commands() if isinstance(c, app_commands.Command)]
    assert len(commands) == 20  # 19 + moderation spoiler (issue #15)
    for command in commands:
        # discord.py runs the check of a command's binding (and of a parent that isn't the binding).
        assert isinstance(command.binding, SettingsGroup), command.qualified_name
        assert command.parent is command.binding, command.qualified_name


async def test_removing_the_cog_removes_its_commands(bot: AnimateBot) -> None:
    cog = bot.get_cog("Admin")
    assert cog is not None
    await bot.remove_cog("Admin")
    assert bot.tree.get_command("animate-admin") is None
    await bot.add_cog(cog)  # and it comes back
    assert bot.tree.get_command("animate-admin") is not None


async def _write_fixture() -> None:
    bot = await _bot()
    text = json.dumps(await _payloads(bot), indent=1, ensure_ascii=False)
    FIXTURE.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(_write_fixture())
