"""The fake Discord's user installs (issue #15): command payloads with `integration_types`/`contexts`,
interactions from DMs, group DMs and servers without the bot, the bot's channel requests refused
there, and the interaction token's lifetime -- driven by the real discord.py client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fakes.discord import FakeDiscord, patched_discord


class UserAppBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[discord.Interaction] = []

        @self.tree.command(name="hello", description="Installable by users, usable anywhere")
        @app_commands.allowed_installs(guilds=True, users=True)
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def hello(interaction: discord.Interaction) -> None:
            self.seen.append(interaction)
            await interaction.response.defer(ephemeral=True)
            await interaction.edit_original_response(content="status")

        @self.tree.command(name="server", description="Servers only")
        @app_commands.guild_only()
        async def server(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("ok")

    async def setup_hook(self) -> None:
        await self.tree.sync()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as f:
        yield f


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[UserAppBot]:
    with patched_discord(fake):
        b = UserAppBot()
        await b.login(fake.token)
        task = asyncio.create_task(b.connect(reconnect=False))
        try:
            await asyncio.wait_for(b.wait_until_ready(), 5)
            yield b
        finally:
            await b.close()
            await asyncio.wait_for(task, 5)


async def test_commands_carry_where_they_may_be_installed_and_run(fake: FakeDiscord, bot: UserAppBot) -> None:
    hello = fake.find_command("hello", 0)
    assert hello is not None
    assert sorted(hello["integration_types"]) == [0, 1] and sorted(hello["contexts"]) == [0, 1, 2]
    server = fake.find_command("server", 0)
    assert server is not None and server["contexts"] == [0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("integration_types", [2]), ("contexts", [0, 0]), ("contexts", []), ("contexts", "0")],
)
async def test_invalid_install_fields_are_refused_on_sync(
    fake: FakeDiscord, field: str, value: object
) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    body = [{"name": "x", "description": "x", "type": 1, field: value}]
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{fake.api_base}/applications/{fake.application_id}/commands"
        async with session.put(url, json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == 50035


async def test_a_group_dm_interaction_is_a_user_install_without_the_bot(
    fake: FakeDiscord, bot: UserAppBot
) -> None:
    group = fake.add_group_dm(["alice", "bob"], name="pals")
    inter = await fake.slash("hello", user="alice", channel_id=group)
    await inter.wait_followups(1)
    payload = inter.payload
    assert payload["context"] == 2 and "guild_id" not in payload and "member" not in payload
    assert payload["authorizing_integration_owners"] == {"1": str(fake.user_ids["alice"])}
    assert payload["channel"]["type"] == 3 and len(payload["channel"]["recipients"]) == 2
    [seen] = bot.seen
    assert seen.is_user_integration() and not seen.is_guild_integration()
    assert inter.original_message is not None and inter.original_message["content"] == "status"
    # The bot itself cannot post (or read) there: only the interaction answers.
    channel = bot.get_partial_messageable(group)
    with pytest.raises(discord.Forbidden) as refused:
        await channel.send("hi")
    assert refused.value.code == 50001
    # Commands only a server may use are not shown there.
    with pytest.raises(PermissionError):
        await fake.slash("server", user="alice", channel_id=group)


async def test_a_server_without_the_bot(fake: FakeDiscord, bot: UserAppBot) -> None:
    elsewhere = fake.add_guild("Elsewhere", with_bot=False)
    chat = fake.add_channel("chat", guild_id=elsewhere)
    fake.add_member("alice", guild_id=elsewhere)
    assert bot.get_guild(elsewhere) is None  # no GUILD_CREATE for it
    inter = await fake.slash("hello", user="alice", channel_id=chat)
    await inter.wait_followups(1)
    assert inter.payload["context"] == 0 and inter.payload["guild_id"] == str(elsewhere)
    assert inter.payload["authorizing_integration_owners"] == {"1": str(fake.user_ids["alice"])}
    assert not bot.seen[0].is_guild_integration()
    with pytest.raises(discord.Forbidden):
        await bot.get_partial_messageable(chat).send("hi")
    # A guild install cannot be used where the server did not add the app's bot... but a user's can.
    with pytest.raises(PermissionError):
        await fake.slash("server", user="alice", channel_id=chat, installed_by="user")


async def test_the_bots_dm_is_context_1_and_the_token_expires(fake: FakeDiscord, bot: UserAppBot) -> None:
    dm = fake.open_dm("alice")
    inter = await fake.slash("hello", user="alice", channel_id=dm)
    await inter.wait_followups(1)
    assert inter.payload["context"] == 1 and inter.payload["user"]["id"] == str(fake.user_ids["alice"])
    fake.interaction_token_lifetime = 0.0
    with pytest.raises(discord.HTTPException) as expired:
        await bot.seen[0].edit_original_response(content="late")
    assert (expired.value.status, expired.value.code) == (401, 50027)
    assert inter.expired_calls == 1
    await bot.get_partial_messageable(dm).send("the bot may post in its own DM")
    assert fake.messages(dm)[-1]["content"] == "the bot may post in its own DM"
