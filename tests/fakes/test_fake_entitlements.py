"""The fake Discord's Premium Apps seam: SKUs, entitlements, their events and routes, premium buttons."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import discord
import pytest

from tests.fakes.discord import FakeDiscord, patched_discord
from tests.fakes.discord._entitlements import SKU_DURABLE


class Recorder(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.none())
        self.events: list[tuple[str, discord.Entitlement]] = []

    async def on_entitlement_create(self, ent: discord.Entitlement) -> None:
        self.events.append(("create", ent))

    async def on_entitlement_delete(self, ent: discord.Entitlement) -> None:
        self.events.append(("delete", ent))


@pytest.fixture
async def client() -> AsyncIterator[tuple[FakeDiscord, Recorder]]:
    async with FakeDiscord() as fake:
        with patched_discord(fake):
            bot = Recorder()
            await bot.login(fake.token)
            task = asyncio.create_task(bot.connect(reconnect=False))
            try:
                await asyncio.wait_for(bot.wait_until_ready(), 5)
                yield fake, bot
            finally:
                await bot.close()
                await asyncio.wait_for(task, 5)


async def test_purchase_refund_list_and_consume(client: tuple[FakeDiscord, Recorder]) -> None:
    fake, bot = client
    pack = fake.add_sku("10 credits")
    durable = fake.add_sku("Forever", SKU_DURABLE)
    assert {s.id for s in await bot.fetch_skus()} == {pack, durable}
    ent = await fake.purchase("alice", pack)
    eid = int(ent["id"])
    await fake.wait_for(lambda: bot.events)
    created = bot.events[0][1]
    assert (created.id, created.sku_id, created.user_id, created.consumed) == (
        eid,
        pack,
        fake.user_ids["alice"],
        False,
    )
    listed = [e async for e in bot.entitlements(limit=None, skus=[discord.Object(pack)])]
    assert [e.id for e in listed] == [eid]
    assert [e.id async for e in bot.entitlements(user=discord.Object(fake.user_ids["bob"]))] == []
    assert fake._interaction_entitlements(fake.user_ids["alice"], fake.guild_id)[0]["id"] == str(eid)
    await created.consume()
    await created.consume()  # a second consume answers 204 again unless told otherwise
    assert (
        fake.entitlements[eid]["consumed"]
        and fake._interaction_entitlements(fake.user_ids["alice"], None) == []
    )
    fake.reconsume_error = (400, 40060, "Entitlement already consumed")
    with pytest.raises(discord.HTTPException) as again:
        await created.consume()
    assert (again.value.status, again.value.code) == (400, 40060)
    with pytest.raises(discord.NotFound) as unknown:
        await bot.http.consume_entitlement(fake.application_id, 12345)
    assert unknown.value.code == 10069
    durable_ent = await fake.purchase("bob", durable, dispatch=False)
    with pytest.raises(discord.HTTPException) as not_consumable:
        await bot.http.consume_entitlement(fake.application_id, int(durable_ent["id"]))
    assert not_consumable.value.status == 400
    await fake.refund(eid)
    await fake.wait_for(lambda: len(bot.events) == 2)
    assert bot.events[1][0] == "delete" and bot.events[1][1].deleted
    assert [e.id async for e in bot.entitlements(limit=None, skus=[discord.Object(pack)])] == []
    page = await bot.http.get_entitlements(fake.application_id, limit=1, exclude_deleted=False)
    assert [int(e["id"]) for e in page] == [eid]
    assert fake.unknown_routes == []


async def test_premium_buttons_are_validated_like_discord(client: tuple[FakeDiscord, Recorder]) -> None:
    fake, bot = client
    sku = fake.add_sku("10 credits")
    channel = bot.get_partial_messageable(fake.channel_id)
    view = discord.ui.View()
    view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=sku))
    await channel.send("buy", view=view)
    sent = fake.messages(fake.channel_id)[-1]["components"][0]["components"][0]
    assert (sent["style"], sent["sku_id"]) == (6, str(sku))
    bad = [
        {"type": 2, "style": 6},  # no sku_id
        {"type": 2, "style": 6, "sku_id": str(sku), "label": "Buy"},
        {"type": 2, "style": 6, "sku_id": str(sku), "custom_id": "x"},
        {"type": 2, "style": 6, "sku_id": str(sku), "url": "https://example.com"},
        {"type": 2, "style": 1, "label": "Buy", "custom_id": "x", "sku_id": str(sku)},
    ]
    for button in bad:
        with pytest.raises(discord.HTTPException) as refused:
            await bot.http.send_message(
                fake.channel_id, params=_params({"components": [{"type": 1, "components": [button]}]})
            )
        assert (refused.value.status, refused.value.code) == (400, 50035), button


def _params(payload: dict[str, object]) -> discord.http.MultipartParameters:
    return discord.http.MultipartParameters(payload={"content": "x", **payload}, multipart=None, files=None)


async def test_the_list_route_leaves_out_deleted_entitlements_unless_told_and_pages_after(
    client: tuple[FakeDiscord, Recorder],
) -> None:
    fake, bot = client
    pack = fake.add_sku("10 credits")
    ids = [int((await fake.purchase("alice", pack, dispatch=False))["id"]) for _ in range(3)]
    await fake.refund(ids[1], dispatch=False)
    route = discord.http.Route(
        "GET", "/applications/{application_id}/entitlements", application_id=fake.application_id
    )

    async def listed(**params: str) -> list[int]:
        return [int(e["id"]) for e in await bot.http.request(route, params=params)]

    assert await listed() == [ids[0], ids[2]]  # Discord's default: exclude_deleted=true
    assert await listed(exclude_deleted="true") == [ids[0], ids[2]]
    assert await listed(exclude_deleted="false") == ids
    assert await listed(exclude_deleted="false", limit="2") == ids[:2]
    assert await listed(exclude_deleted="false", limit="2", after=str(ids[1])) == [ids[2]]
