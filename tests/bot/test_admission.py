"""bot.admission without Discord: requests built from plain values, a real (temporary) database, a
downloader that records its calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.admission import (
    Admission,
    AdmissionRequest,
    Admitted,
    ChannelFacts,
    ImageSource,
    Refused,
)
from bot.i18n import render
from bot.media import NormalizedImage
from bot.quota_rules import Standing
from bot.settings import Settings
from storage.db import Database
from storage.guilds import GuildRepository
from storage.jobs import JobRepository, JobState, NewJob
from storage.quota import Check, QuotaRepository
from storage.spec import GenerationSpec
from tests.fakes.runcomfy import make_image
from tests.ledger import job_ledger

GUILD, USER, CHANNEL, OTHER_CHANNEL = 1, 7, 10, 11
TOKENS: dict[str, Any] = {"discord_token": "x", "runcomfy_api_token": "y"}


class CountingQuota(QuotaRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reserves = 0

    async def reserve(
        self, new: NewJob, check: Check, *, await_approval: bool = False
    ) -> tuple[int, Standing]:
        self.reserves += 1
        return await super().reserve(new, check, await_approval=await_approval)


@dataclass
class World:
    admission: Admission
    guilds: GuildRepository
    jobs: JobRepository
    quota: CountingQuota
    downloads: list[str] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    accepting: bool = True
    image: bytes = field(default_factory=lambda: make_image(640, 480))

    async def ledger(self, job_id: int) -> list[tuple[str, int]]:
        return await job_ledger(self.quota, job_id)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await Database.open(tmp_path / "a.db")
    guilds, jobs, quota = GuildRepository(db), JobRepository(db), CountingQuota(db)
    holder: list[World] = []

    async def download(url: str) -> bytes:
        holder[0].downloads.append(url)
        return holder[0].image

    async def abandon(job_id: int, reason: str) -> None:
        holder[0].abandoned.append(job_id)

    admission = Admission(
        settings=Settings(_env_file=None, **TOKENS),  # type: ignore[call-arg]
        guilds=guilds,
        jobs=jobs,
        quota=quota,
        download=download,
        accepting=lambda: holder[0].accepting,
        abandon=abandon,
        member_wait=0.5,
    )
    holder.append(World(admission, guilds, jobs, quota))
    yield holder[0]
    await db.close()


def request(**changes: Any) -> AdmissionRequest:
    base = AdmissionRequest(
        guild_id=GUILD,
        user_id=USER,
        role_ids=frozenset({GUILD}),
        channel=ChannelFacts(CHANNEL),
        permissions=discord.Permissions.all(),
        spec=GenerationSpec(prompt="a cat turns its head"),
        source=ImageSource("https://cdn.example/cat.png", "cat.png", "image/png", 5000, 640, 480),
        upload_limit=10 * 1024 * 1024,
    )
    return replace(base, **changes)


async def refused(world: World, req: AdmissionRequest) -> Refused:
    result = await world.admission.admit(req)
    assert isinstance(result, Refused), result
    return result


async def test_each_refusal_in_order_and_none_downloads(world: World) -> None:
    """Everything is wrong at once; fixing one thing at a time shows the next check in order."""
    await world.guilds.ban(GUILD, USER, "spam", actor_id=1)
    await world.guilds.set_channel(GUILD, OTHER_CHANNEL, allowed=True)
    await world.guilds.add_block(GUILD, "word", "cat", actor_id=1)
    await world.guilds.set_user_override(GUILD, USER, 0)
    req = request(
        spec=GenerationSpec(prompt="   "),
        source=ImageSource("https://cdn.example/x.png", "x.png", "image/png", 5000, 100, 100),
        permissions=discord.Permissions.none(),
    )
    assert "blocked you from using /animate here (spam)" in (await refused(world, req)).reason
    await world.guilds.unban(GUILD, USER)
    assert "isn't enabled in this channel" in (await refused(world, req)).reason
    req = replace(req, channel=ChannelFacts(CHANNEL + 100, parent_id=OTHER_CHANNEL, in_thread=True))
    assert "prompt is empty" in (await refused(world, req)).reason
    req = replace(req, spec=GenerationSpec(prompt="a cat turns its head"))
    assert "too small (100x100 px)" in (await refused(world, req)).reason
    req = replace(req, source=request().source)
    reason = (await refused(world, req)).reason
    assert "missing these permissions here: Send Messages, Embed Links" in reason
    assert "Create Public Threads" not in reason  # in a thread, no thread is created
    req = replace(req, permissions=discord.Permissions.all())
    blocked = await refused(world, req)
    assert blocked.blocked is not None and "matched `cat`" in blocked.blocked.details
    req = replace(req, spec=GenerationSpec(prompt="a dog wags its tail"))
    affordability = await refused(world, req)
    assert affordability.blocked is None and "credit" in affordability.reason
    assert world.downloads == [] and world.quota.reserves == 0


async def test_the_blocklist_uses_a_worker_thread_only_where_a_server_has_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most servers have no blocklist: their commands skip the two trips to a worker thread."""
    trips: list[str] = []
    original = asyncio.to_thread

    async def counting(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    channel = ChannelFacts(CHANNEL)
    assert await world.admission._cheap_checks(request(), channel, await world.guilds.get(GUILD)) is None
    assert trips == []
    await world.guilds.add_block(GUILD, "word", "cat", actor_id=1)
    blocked = await world.admission._cheap_checks(request(), channel, await world.guilds.get(GUILD))
    assert blocked is not None and blocked.blocked is not None and "matched `cat`" in blocked.blocked.details
    assert trips == ["compiled_blocklist", "check"]


async def test_affordability_is_checked_before_the_download(world: World) -> None:
    await world.guilds.set_user_override(GUILD, USER, 0)
    result = await refused(world, request())
    assert "credit" in result.reason
    assert world.downloads == []  # a member without credits costs no download
    assert world.quota.reserves == 0
    assert await world.jobs.recent_for_user(GUILD, USER, limit=5) == []


async def test_admitted_reserves_exactly_once(world: World) -> None:
    result = await world.admission.admit(request())
    assert isinstance(result, Admitted)
    assert world.downloads == ["https://cdn.example/cat.png"]
    assert world.quota.reserves == 1
    assert result.job.state is JobState.PENDING and not result.awaiting_approval
    assert result.job.prompt == "a cat turns its head" and result.job.cost == 1
    assert isinstance(result.image, NormalizedImage) and not result.image.adjusted
    assert result.standing.remaining == 4
    assert await world.ledger(result.job.id) == [("charge", 1)]
    assert world.abandoned == []


async def test_approval_mode_admits_uncharged_awaiting_approval(world: World) -> None:
    await world.guilds.update(GUILD, None, approval_required=True)
    result = await world.admission.admit(request())
    assert isinstance(result, Admitted) and result.awaiting_approval
    assert result.job.state is JobState.AWAITING_APPROVAL
    assert await world.ledger(result.job.id) == []  # nothing charged until a moderator approves
    assert world.quota.reserves == 1


async def test_restarting_and_unpostable_channels_are_refused_first(world: World) -> None:
    await world.guilds.ban(GUILD, USER, None, actor_id=1)
    world.accepting = False
    assert "restarting" in (await refused(world, request(channel=None))).reason
    world.accepting = True
    assert "this kind of channel" in (await refused(world, request(channel=None))).reason
    assert "blocked you from using /animate here." in (await refused(world, request())).reason


async def test_an_image_that_does_not_decode_is_refused_uncharged(world: World) -> None:
    world.image = b"not an image at all"
    result = await refused(world, request())
    assert world.downloads == ["https://cdn.example/cat.png"] and world.quota.reserves == 0
    assert render(result.reason, "de") != ""  # a media error's own message, localisable


async def test_an_adjusted_image_is_noted_on_the_job_in_its_language(world: World) -> None:
    world.image = make_image(3000, 2400)
    result = await world.admission.admit(request(guild_locale="de"))
    assert isinstance(result, Admitted) and result.image.adjusted
    stored = await world.jobs.get(result.job.id)
    assert stored is not None and stored.image_note == result.job.image_note
    assert stored.image_note and stored.image_note.startswith("Für das Modell angepasst")


async def test_one_unfinished_job_per_origin(world: World) -> None:
    first = await world.admission.admit(request(origin="again:1:2"))
    assert isinstance(first, Admitted)
    again = await refused(world, request(origin="again:1:2"))
    assert f"already started as job #{first.job.id}" in again.reason
    # The read-only check already sees it: no second download, no second reserve, one charge.
    assert len(world.downloads) == 1 and world.quota.reserves == 1
    assert await world.ledger(first.job.id) == [("charge", 1)]


async def test_allowance_limits_and_price_are_the_shared_rules(world: World) -> None:
    admission = world.admission
    config = await world.guilds.update(GUILD, None, cost_1080p=5, allowance=9)
    assert admission.price(config, "480P") == 1 and admission.price(config, "1080P") == 5
    assert (await admission.allowance(config, USER, {GUILD})).credits == 9
    await world.guilds.set_user_override(GUILD, USER, 3)
    assert (await admission.limits(config, USER, {GUILD})).allowance == 3


async def test_a_failure_after_reserving_ends_the_job(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.image = make_image(3000, 2400)  # adjusted: the note is stored by the reserve itself

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    # Reading the reserved job back is the step after the reserve.
    monkeypatch.setattr(world.jobs, "get", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await world.admission.admit(request())
    assert world.quota.reserves == 1 and len(world.abandoned) == 1  # reserved, then handed back


async def test_a_members_second_request_waits_and_is_re_checked(world: World) -> None:
    await world.guilds.set_user_override(GUILD, USER, 1)
    first, second = await asyncio.gather(world.admission.admit(request()), world.admission.admit(request()))
    assert isinstance(first, Admitted)
    # The first spent the only credit; the second (waiting for it, or after it) is refused before any
    # download of its own.
    assert isinstance(second, Refused) and "credit" in second.reason
    assert len(world.downloads) == 1 and world.quota.reserves == 1
