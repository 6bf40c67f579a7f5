"""End-to-end tests of tests/fakes/discord/ with the real discord.py client."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, Intent, Perm, patched_discord, shard_of

AGAIN_ID = "animate:again"
STYLES = ["cinematic", "cartoon", "claymation", "watercolor"]


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, "PNG")
    return buf.getvalue()


class AgainView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", style=discord.ButtonStyle.primary, custom_id=AGAIN_ID)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[AgainView]) -> None:
        await interaction.response.send_message("again!", ephemeral=True)


class PromptModal(discord.ui.Modal, title="Prompt"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(label="Prompt", custom_id="modal:prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"prompt={self.prompt.value}", ephemeral=True)


class TinyBot(commands.Bot):
    def __init__(self, guild_id: int) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            guild_ready_timeout=0.05,
        )
        self.guild_id = guild_id
        self.seen: dict[str, Any] = {}
        self._register()

    async def setup_hook(self) -> None:
        self.add_view(AgainView())
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        self.seen["synced"] = await self.tree.sync(guild=guild)

    def _register(self) -> None:
        tree = self.tree

        @tree.command(name="animate", description="Animate an image")
        @app_commands.describe(image="The image", prompt="What should happen")
        async def animate(interaction: discord.Interaction, image: discord.Attachment, prompt: str) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            self.seen["image"] = (image.filename, image.width, image.height, len(data))
            await interaction.followup.send(f"Animating {prompt!r} ({len(data)} bytes)")
            channel = interaction.channel
            assert isinstance(channel, discord.TextChannel)
            msg = await channel.send(
                "Here you go",
                file=discord.File(io.BytesIO(b"fake-mp4"), filename="result.mp4"),
                view=AgainView(),
            )
            thread = await msg.create_thread(name=f"animate {prompt}")
            await thread.send("Details in the thread")
            self.seen["thread"] = thread.id

        @tree.command(name="slow", description="Acks too late")
        async def slow(interaction: discord.Interaction, delay: float) -> None:
            await asyncio.sleep(delay)
            try:
                await interaction.response.defer()
            except discord.NotFound as exc:
                self.seen["slow_error"] = exc

        @tree.command(name="ping", description="Pong")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @tree.command(name="style", description="Pick a style")
        async def style(interaction: discord.Interaction, style: str) -> None:
            await interaction.response.send_message(style)

        @style.autocomplete("style")
        async def style_autocomplete(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=s, value=s) for s in STYLES if s.startswith(current)]

        @tree.command(name="private", description="Ephemeral deferral")
        async def private(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.followup.send("only you")  # no ephemeral flag: inherits the deferral's
            await interaction.followup.send("everyone")

        @tree.command(name="ask", description="Opens a modal")
        async def ask(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal())


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as f:
        yield f


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    with patched_discord(fake):
        b = TinyBot(fake.guild_id)
        await b.login(fake.token)
        task = asyncio.create_task(b.connect(reconnect=False))
        try:
            await fake.wait_until_ready()
            await asyncio.wait_for(b.wait_until_ready(), 5)
            yield b
        finally:
            await b.close()
            await asyncio.wait_for(task, 5)


async def test_slash_command_button_and_thread_end_to_end(fake: FakeDiscord, bot: TinyBot) -> None:
    # The bot synced its commands to the guild; the fake stored them with ids.
    animate_cmd = fake.find_command("animate")
    assert animate_cmd is not None
    assert [(o["name"], o["type"]) for o in animate_cmd["options"]] == [("image", 11), ("prompt", 3)]
    assert {c.name for c in bot.seen["synced"]} == {"animate", "slow", "ping", "style", "private", "ask"}

    att = fake.add_attachment("cat photo.png", png_bytes(), "image/png")
    assert att["filename"] == "cat_photo.png"  # Discord sanitizes filenames
    assert (att["width"], att["height"]) == (64, 48)

    inter = await fake.slash("animate", {"image": att, "prompt": "a cat"})
    assert inter.payload["data"]["id"] == animate_cmd["id"]
    await inter.wait_followups(1)
    await fake.wait_for(lambda: "thread" in bot.seen)

    # Deferred publicly, acked quickly; the first follow-up replaced the "thinking..." message.
    assert inter.callbacks[0]["type"] == 5
    assert inter.ack_latency is not None and inter.ack_latency < 1.0
    assert not inter.ephemeral
    first = inter.followups[0]
    assert first["id"] == str(inter.original_message_id)
    assert first["content"] == "Animating 'a cat' (" + str(att["size"]) + " bytes)"
    assert first["flags"] & 128 == 0  # LOADING cleared
    assert bot.seen["image"] == ("cat_photo.png", 64, 48, att["size"])
    assert any(att["url"].split("?")[0].endswith(p) for p in fake.cdn_requests)

    # Channel: the interaction response, then the result message with file + button.
    original, result = fake.messages(fake.channel_id)
    assert original["interaction_metadata"]["name"] == "animate"
    assert result["content"] == "Here you go"
    assert result["author"]["id"] == str(fake.application_id)
    [video] = result["attachments"]
    assert (video["filename"], video["data"], video["content_type"]) == (
        "result.mp4",
        b"fake-mp4",
        "video/mp4",
    )
    assert video["url"].startswith(fake.url + "/attachments/")
    button = result["components"][0]["components"][0]
    assert (button["custom_id"], button["label"]) == (AGAIN_ID, "Again")
    post = fake.calls_to("POST", rf"^/channels/{fake.channel_id}/messages$")[-1]
    assert post.files == [("result.mp4", b"fake-mp4", "application/octet-stream")]
    assert post.json["components"][0]["components"][0]["custom_id"] == AGAIN_ID

    # The attachment URL is served by the fake CDN.
    async with aiohttp.ClientSession() as session, session.get(video["url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == b"fake-mp4"

    # Thread created from the message: same id as the starter message, THREAD_CREATE dispatched.
    thread_id = bot.seen["thread"]
    assert thread_id == int(result["id"])
    assert fake.threads[thread_id]["name"] == "animate a cat"
    assert [m["content"] for m in fake.messages(thread_id)] == ["Details in the thread"]
    assert any(f["t"] == "THREAD_CREATE" and f["d"]["id"] == str(thread_id) for f in fake.dispatched)
    assert result["flags"] & 32  # HAS_THREAD

    # Persistent view: a click from another user gets an ephemeral answer.
    click = await fake.click(int(result["id"]), AGAIN_ID, user="bob")
    answer = await click.wait_response()
    assert answer["content"] == "again!"
    assert click.ephemeral and click.response_type == 4
    assert answer not in fake.messages(fake.channel_id)
    assert any(m["id"] == answer["id"] for m in fake.messages(fake.channel_id, include_ephemeral=True))
    with pytest.raises(ValueError, match="no component"):
        await fake.click(int(result["id"]), "nope")

    assert fake.unknown_routes == []
    assert all(c.authorized or c.path.startswith(("/interactions/", "/webhooks/")) for c in fake.calls)


async def test_late_ack_is_rejected(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.ack_deadline = 0.1
    inter = await fake.slash("slow", {"delay": 0.3})
    await fake.wait_for(lambda: "slow_error" in bot.seen)
    assert bot.seen["slow_error"].code == 10062
    assert inter.ack_latency is None and not inter.acked
    [rejected] = inter.rejected_callbacks
    assert (rejected["status"], rejected["code"], rejected["type"]) == (404, 10062, 5)
    assert rejected["latency"] >= 0.3


async def test_double_ack_is_rejected(fake: FakeDiscord, bot: TinyBot) -> None:
    inter = await fake.slash("ping")
    assert (await inter.wait_response())["content"] == "pong"
    url = f"{fake.api_base}/interactions/{inter.id}/{inter.token}/callback?with_response=1"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"type": 4, "data": {"content": "x"}}) as r,
    ):
        assert r.status == 400
        assert r.headers["Content-Type"] == "application/json"
        assert (await r.json())["code"] == 40060
    assert len(inter.callbacks) == 1
    assert inter.rejected_callbacks[0]["code"] == 40060


async def test_deferred_followups_and_webhook_before_ack(fake: FakeDiscord, bot: TinyBot) -> None:
    inter = await fake.slash("private")
    first, second = await inter.wait_followups(2)
    assert inter.ephemeral
    # Like real Discord, the first follow-up replaces the "thinking..." message and stays ephemeral.
    assert first["id"] == str(inter.original_message_id) and first["flags"] & 64
    assert second["content"] == "everyone" and not second["flags"] & 64
    assert [m["content"] for m in fake.messages()] == ["everyone"]

    fake.ack_deadline = 10
    slow = await fake.slash("slow", {"delay": 0.3})
    url = f"{fake.api_base}/webhooks/{fake.application_id}/{slow.token}?wait=1"
    async with aiohttp.ClientSession() as session, session.post(url, json={"content": "too early"}) as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == 10015
    await slow.wait_acked()


async def test_fault_injection_rate_limit_and_forbidden(fake: FakeDiscord, bot: TinyBot) -> None:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    msg = await channel.send("v1")
    fault = fake.fail_next("PATCH", r"^/channels/\d+/messages/\d+$", 429, retry_after=0.05)
    await msg.edit(content="v2")  # discord.py sleeps retry_after and retries
    assert fault.hits == 1
    patches = fake.calls_to("PATCH", rf"/messages/{msg.id}$")
    assert [c.status for c in patches] == [429, 200]
    assert fake.messages()[-1]["content"] == "v2"

    fake.fail_next("PATCH", r"/messages/\d+$", 403)
    with pytest.raises(discord.Forbidden) as forbidden:
        await msg.edit(content="v3")
    assert forbidden.value.code == 50013
    assert fake.messages()[-1]["content"] == "v2"


async def test_discord_limits_are_enforced(fake: FakeDiscord, bot: TinyBot) -> None:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    fake.upload_limit = 1024
    with pytest.raises(discord.HTTPException) as too_big:
        await channel.send(file=discord.File(io.BytesIO(b"x" * 2048), filename="big.bin"))
    assert (too_big.value.status, too_big.value.code) == (413, 40005)

    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert (too_long.value.status, too_long.value.code) == (400, 50035)
    assert "content" in str(too_long.value)

    fake.set_overwrite(fake.other_channel_id, "bot", deny=Perm.SEND_MESSAGES)
    other = bot.get_channel(fake.other_channel_id)
    assert isinstance(other, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as forbidden:
        await other.send("hello")
    assert forbidden.value.code == 50013
    assert fake.messages(fake.other_channel_id) == []


async def test_autocomplete_and_modal(fake: FakeDiscord, bot: TinyBot) -> None:
    ac = await fake.autocomplete("style", {"style": "c"}, "style")
    await ac.wait_acked()
    assert ac.choices is not None
    assert [c["value"] for c in ac.choices] == ["cinematic", "cartoon", "claymation"]

    ask = await fake.slash("ask")
    await ask.wait_acked()
    assert ask.modal is not None and ask.modal["title"] == "Prompt"
    submitted = await fake.submit_modal(ask, {"modal:prompt": "a dog"})
    answer = await submitted.wait_response()
    assert answer["content"] == "prompt=a dog"
    assert submitted.ephemeral


async def test_gateway_events_resume_and_dms(fake: FakeDiscord, bot: TinyBot) -> None:
    thread_id = fake.add_thread(fake.channel_id, "user thread", owner="alice")
    await fake.dispatch("THREAD_CREATE", {**fake.channel_payload(thread_id), "newly_created": True})
    await fake.wait_for(lambda: bot.get_channel(thread_id))

    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    await fake.request_reconnect()
    await asyncio.wait_for(resumed.wait(), 5)
    assert [c["resumed"] for c in fake.gateway_connections] == [False, True]
    assert fake.gateway_connections[0]["query"]["v"] == "10"
    inter = await fake.slash("ping", user="mod")
    assert (await inter.wait_response())["content"] == "pong"
    assert inter.payload["member"]["permissions"] == str(fake.permissions_for("mod", fake.channel_id))
    assert int(inter.payload["member"]["permissions"]) & Perm.MANAGE_MESSAGES

    alice = await bot.fetch_user(fake.user_ids["alice"])
    await alice.send("hi alice")
    dm = fake.dm_channel_id("alice")
    assert dm is not None and [m["content"] for m in fake.messages(dm)] == ["hi alice"]
    fake.close_dms("bob")
    bob = await bot.fetch_user(fake.user_ids["bob"])
    with pytest.raises(discord.Forbidden) as closed:
        await bob.send("hi bob")
    assert closed.value.code == 50007

    await fake.remove_guild(fake.guild_id)
    await fake.wait_for(lambda: bot.get_guild(fake.guild_id) is None)
    assert fake.unknown_routes == []


async def test_bad_token_and_unknown_routes(fake: FakeDiscord) -> None:
    with patched_discord(fake):
        client = discord.Client(intents=discord.Intents.default())
        with pytest.raises(discord.LoginFailure):
            await client.login("wrong-token")
        await client.close()
    assert fake.calls[-1].status == 401

    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{fake.api_base}/definitely/not/a/route") as resp:
            assert resp.status == 404
            assert await resp.json() == {"message": "404: Not Found", "code": 0}
        async with session.put(f"{fake.api_base}/users/@me") as resp:
            assert resp.status == 405
    assert [c.route for c in fake.unknown_routes] == ["GET /definitely/not/a/route", "PUT /users/@me"]


async def test_nonce_with_enforce_nonce_returns_the_first_message(fake: FakeDiscord, bot: TinyBot) -> None:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    first = await channel.send("once", nonce="v1.abc")
    again = await channel.send("once", nonce="v1.abc")  # discord.py sets enforce_nonce
    assert again.id == first.id
    assert [m["content"] for m in fake.messages()] == ["once"]
    # Without enforce_nonce Discord posts again, as it does once the window has passed.
    fake.calls.clear()
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    await bot.http.request(route, json={"content": "once", "nonce": "v1.abc"})
    fake.nonce_window = 0.0
    await channel.send("once", nonce="v1.abc")
    assert [m["content"] for m in fake.messages()] == ["once"] * 3
    # Reading messages back does not return the nonce (Discord does not keep it).
    assert all("nonce" not in m for m in await bot.http.logs_from(channel.id, 10))


async def test_fail_after_store_stores_then_answers_badly(fake: FakeDiscord, bot: TinyBot) -> None:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    fake.fail_after_store("POST", r"/channels/\d+/messages$", 503)
    with pytest.raises(discord.DiscordServerError):
        await channel.send("stored anyway")
    assert [m["content"] for m in fake.messages()] == ["stored anyway"]

    # A 500 is retried by discord.py itself: with the same nonce the retry gets the stored message.
    fake.fail_after_store("POST", r"/channels/\d+/messages$", 500)
    message = await channel.send("retried", nonce="n-500")
    assert [m["content"] for m in fake.messages()][-1:] == ["retried"]
    assert len(fake.messages()) == 2 and message.id == int(fake.messages()[-1]["id"])

    fake.fail_after_store("POST", r"/channels/\d+/messages$", "drop")
    with pytest.raises(aiohttp.ClientError):
        await channel.send("dropped")
    fake.fail_after_store("POST", r"/channels/\d+/messages$", "timeout", hold=5.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(channel.send("unanswered"), 0.3)
    assert [m["content"] for m in fake.messages()][-2:] == ["dropped", "unanswered"]

    # A request that fails on its own does not use the fault up.
    fake.set_overwrite(fake.other_channel_id, "bot", deny=Perm.SEND_MESSAGES)
    fault = fake.fail_after_store("POST", r"/channels/\d+/messages$", 503)
    other = bot.get_channel(fake.other_channel_id)
    assert isinstance(other, discord.TextChannel)
    with pytest.raises(discord.Forbidden):
        await other.send("refused")
    assert fault.remaining == 1


async def test_locked_threads_and_link_buttons(fake: FakeDiscord, bot: TinyBot) -> None:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    root = await channel.send("root")
    thread = await root.create_thread(name="job")
    await thread.send("in the thread")
    await fake.set_thread_state(thread.id, archived=True, locked=True)
    with pytest.raises(discord.HTTPException) as archived:
        await thread.send("refused")
    assert (archived.value.status, archived.value.code) == (400, 50083)
    await fake.set_thread_state(thread.id, archived=False)
    with pytest.raises(discord.HTTPException) as locked:
        await thread.send("refused")
    assert (locked.value.status, locked.value.code) == (400, 160005)
    await fake.set_thread_state(thread.id, archived=True, locked=False)
    await thread.send("unarchives it")
    assert fake.channels[thread.id]["thread_metadata"]["archived"] is False

    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="Open", url="https://example.com/" + "a" * 493))  # 513 chars
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("link", view=view)
    assert too_long.value.code == 50035 and "url" in str(too_long.value)
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="Open", url="https://example.com/" + "a" * 492))  # 512 chars
    await channel.send("link", view=view)


# ---------------------------------------------------------------------------------------------------
# Shards: GET /gateway/bot, IDENTIFY's shard, per-shard READY and dispatch
# ---------------------------------------------------------------------------------------------------


async def identify(
    fake: FakeDiscord, session: aiohttp.ClientSession, shard: Any = None
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], list[dict[str, Any]]]:
    """A raw gateway client: HELLO, IDENTIFY (with ``shard`` if given); returns READY and the
    GUILD_CREATEs that follow it (one per guild READY listed)."""
    ws = await session.ws_connect(fake.gateway_url + "?v=10&encoding=json")
    assert (await ws.receive_json())["op"] == 10
    d: dict[str, Any] = {"token": fake.token, "intents": Intent.GUILDS, "properties": {}}
    if shard is not None:
        d["shard"] = shard
    await ws.send_json({"op": 2, "d": d})
    msg = await ws.receive()
    if msg.type is not aiohttp.WSMsgType.TEXT:
        return ws, {}, []
    ready = msg.json()
    assert ready["t"] == "READY"
    creates = [await ws.receive_json() for _ in ready["d"]["guilds"]]
    return ws, ready, creates


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, dict[str, Any]]:
    frame = await asyncio.wait_for(ws.receive_json(), 5)
    return frame["t"], frame["d"]


async def test_every_heartbeat_is_acked_at_once_also_with_the_fleets_300_guilds(fake: FakeDiscord) -> None:
    """The fleet bench's bots log discord.py's "Can't keep up, shard ID N websocket is 41.3s behind":
    not a late ACK (a heartbeat's ACK is the very next frame, 300 guilds or not), but discord.py
    2.7.1 computing the latency from the previous heartbeat when the ACK beats its keep-alive thread
    (a race with a gateway this fast; fixed upstream, discord.py PR #10448)."""
    for i in range(300):
        fake.add_guild(f"Fleet {i}", shard=(i % 3, 3))
    async with aiohttp.ClientSession() as session:
        ws, ready, creates = await identify(fake, session, shard=[0, 3])
        assert len(creates) == len(ready["d"]["guilds"]) >= 100  # and the default guild, perhaps
        for seq in (None, 100, 101):
            await ws.send_json({"op": 1, "d": seq})
            assert (await asyncio.wait_for(ws.receive_json(), 5))["op"] == 11
        await ws.close()
    assert fake.gateway_connections[0]["heartbeats"] == 3


def test_add_guild_places_guilds_on_chosen_shards(fake: FakeDiscord) -> None:
    made = []
    for count in (1, 2, 3, 7):
        for shard_id in range(count):
            gid = fake.add_guild(f"g{shard_id}/{count}", shard=(shard_id, count))
            assert shard_of(gid, count) == shard_id
            made.append(gid)
    assert made == sorted(made) and len(set(made)) == len(made)  # still increasing snowflakes
    assert fake._snowflake() > made[-1]
    with pytest.raises(ValueError):
        fake.add_guild("nowhere", shard=(2, 2))
    assert shard_of(None, 5) == 0  # DMs: shard 0


async def test_gateway_bot_reports_the_recommended_count_and_limits(fake: FakeDiscord) -> None:
    fake.recommended_shards = 3
    fake.session_start_limit["max_concurrency"] = 4
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{fake.api_base}/gateway/bot") as resp:
            body = await resp.json()
        assert body == {
            "url": fake.gateway_url,
            "shards": 3,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000,
                "reset_after": 86_400_000,
                "max_concurrency": 4,
            },
        }
        ws, _, _ = await identify(fake, session, [0, 3])
        async with session.get(f"{fake.api_base}/gateway/bot") as resp:
            assert (await resp.json())["session_start_limit"]["remaining"] == 999  # one IDENTIFY used
        await ws.close()


async def test_each_shard_gets_only_its_guilds_and_their_events(fake: FakeDiscord) -> None:
    home = shard_of(fake.guild_id, 2)
    other_guild = fake.add_guild("Other", shard=(1 - home, 2))
    other_channel = fake.add_channel("elsewhere", guild_id=other_guild)
    fake.add_member("alice", guild_id=other_guild)
    by_shard = {home: fake.guild_id, 1 - home: other_guild}
    async with aiohttp.ClientSession() as session:
        ws0, ready0, creates0 = await identify(fake, session, [0, 2])
        ws1, ready1, creates1 = await identify(fake, session, [1, 2])
        for shard_id, ready, creates in ((0, ready0, creates0), (1, ready1, creates1)):
            assert ready["d"]["shard"] == [shard_id, 2]
            assert [g["id"] for g in ready["d"]["guilds"]] == [str(by_shard[shard_id])]
            assert [(c["t"], c["d"]["id"]) for c in creates] == [("GUILD_CREATE", str(by_shard[shard_id]))]
        assert [c["shard"] for c in fake.gateway_connections] == [[0, 2], [1, 2]]
        assert fake.connected_shards == {0: 2, 1: 2}
        ws = {0: ws0, 1: ws1}

        # A guild-scoped event goes only to its shard: the other shard's next event is the marker.
        await fake.dispatch("CHANNEL_UPDATE", fake.channel_payload(other_channel))
        await fake.dispatch("GUILD_UPDATE", fake.guild_payload(fake.guild_id))
        assert await next_event(ws[1 - home]) == ("CHANNEL_UPDATE", fake.channel_payload(other_channel))
        event, data = await next_event(ws[home])
        assert (event, data["id"]) == ("GUILD_UPDATE", str(fake.guild_id))

        # A user's command in a guild reaches that guild's shard; a DM interaction goes to shard 0.
        await fake.post_user_message("hello", channel_id=other_channel)  # no GUILD_MESSAGES intent
        inter = fake._base_interaction(2, {"name": "ping", "type": 1}, fake.user_ids["alice"], other_channel)
        await fake._dispatch_interaction(inter, fake.user_ids["alice"])
        event, data = await next_event(ws[1 - home])
        assert (event, data["guild_id"]) == ("INTERACTION_CREATE", str(other_guild))
        dm = {"type": 1, "id": "1", "channel_id": "5", "user": fake.user_payload("bob")}
        await fake.dispatch("INTERACTION_CREATE", dm)
        assert await next_event(ws0) == ("INTERACTION_CREATE", dm)
        await fake.dispatch("GUILD_DELETE", {"id": str(other_guild), "unavailable": True})
        assert (await next_event(ws[1 - home]))[0] == "GUILD_DELETE"

        await ws[1 - home].close()
        await fake.wait_for(lambda: fake.connected_shards == {home: 2})
        with pytest.raises(RuntimeError, match=f"shard of guild {other_guild}"):
            await fake.dispatch("CHANNEL_UPDATE", fake.channel_payload(other_channel))
        await ws[home].close()


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], [0], "0,1", [0.0, 1], [True, 2]])
async def test_an_invalid_shard_is_closed_with_4010(fake: FakeDiscord, shard: Any) -> None:
    async with aiohttp.ClientSession() as session:
        ws, ready, _ = await identify(fake, session, shard)
        assert ready == {} and ws.close_code == 4010
    assert fake.identify_payloads == [] and not fake.connected


async def test_too_many_guilds_on_one_shard_is_closed_with_4011(fake: FakeDiscord) -> None:
    fake.max_guilds_per_shard = 1
    fake.add_guild("Second", shard=(1 - shard_of(fake.guild_id, 2), 2))
    async with aiohttp.ClientSession() as session:
        ws, ready, _ = await identify(fake, session)  # no shard: one shard with both guilds
        assert ready == {} and ws.close_code == 4011
        ws0, ready0, _ = await identify(fake, session, [0, 2])
        ws1, ready1, _ = await identify(fake, session, [1, 2])
        assert len(ready0["d"]["guilds"]) == len(ready1["d"]["guilds"]) == 1
        await ws0.close()
        await ws1.close()


async def test_spoiler_attachments_keep_their_name_and_carry_the_flag(
    fake: FakeDiscord, bot: TinyBot
) -> None:
    from tests.fakes.discord import ATTACHMENT_IS_SPOILER

    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send(
        files=[
            discord.File(io.BytesIO(b"hidden"), filename="cat.png", spoiler=True),
            discord.File(io.BytesIO(b"shown"), filename="dog.png"),
        ]
    )
    hidden, shown = sent.attachments  # as discord.py reads Discord's answer
    assert hidden.filename == "SPOILER_cat.png" and hidden.is_spoiler() and hidden.flags.spoiler
    assert shown.filename == "dog.png" and not shown.is_spoiler() and not shown.flags.spoiler
    stored = fake.messages(fake.channel_id)[-1]["attachments"]
    assert [a["flags"] & ATTACHMENT_IS_SPOILER for a in stored] == [ATTACHMENT_IS_SPOILER, 0]
    upload = fake.add_attachment("SPOILER_user.png", b"x", "image/png")
    assert upload["flags"] == ATTACHMENT_IS_SPOILER
