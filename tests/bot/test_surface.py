"""Where a job lives (bot/engine/_surface.py): the path decision, the token's life, and the status
surface's translation of the engine's calls into interaction webhook calls."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.engine import _surface as surface
from bot.engine._surface import (
    OriginalResponse,
    Place,
    TokenGone,
    Tokens,
    delivery_targets,
    place_of,
    token_gone,
)
from bot.quota_rules import USER_INSTALL_SCOPE, default_allowance
from storage.jobs import Job, JobState
from storage.spec import Resolution

GUILD = 1_100_000_000_000_000_000
USER = 2_200_000_000_000_000_000


def test_the_servers_own_install_where_the_bot_is_a_member_keeps_the_channel_path() -> None:
    assert place_of(GUILD, {0: GUILD}, bot_in_guild=True, context=0) == Place(False, GUILD, 0)


@pytest.mark.parametrize(
    ("guild_id", "owners", "member", "expected"),
    [
        # The server installed the commands but the bot is not in it: its rules, the interaction.
        (GUILD, {0: GUILD}, False, Place(True, GUILD, 0)),
        # A member's own install inside a server that has the bot: the server's rules still apply.
        (GUILD, {1: USER}, True, Place(True, GUILD, 0)),
        # A server that did not add the bot: the user-install scope.
        (GUILD, {1: USER}, False, Place(True, USER_INSTALL_SCOPE, 0)),
        # Another server's install id does not count.
        (GUILD, {0: GUILD + 1, 1: USER}, False, Place(True, USER_INSTALL_SCOPE, 0)),
    ],
)
def test_everywhere_else_the_job_lives_in_the_interaction(
    guild_id: int, owners: dict[int, int], member: bool, expected: Place
) -> None:
    assert place_of(guild_id, owners, bot_in_guild=member, context=0) == expected


@pytest.mark.parametrize("context", [1, 2])
def test_dms_and_private_channels_use_the_user_install_scope(context: int) -> None:
    place = place_of(None, {0: 0, 1: USER}, bot_in_guild=False, context=context)
    assert place == Place(True, USER_INSTALL_SCOPE, context) and not place.server_rules


def test_the_user_install_scope_has_its_own_default_allowance() -> None:
    assert default_allowance(USER_INSTALL_SCOPE, 5, 2) == 2
    assert default_allowance(GUILD, 5, 2) == 5


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "x"


@pytest.mark.parametrize(
    ("status", "code", "gone"),
    [(401, 50027, True), (404, 10015, True), (404, 10008, False), (403, 50001, False), (500, 0, False)],
)
def test_which_answers_mean_the_token_is_gone(status: int, code: int, gone: bool) -> None:
    exc = discord.HTTPException(_Response(status), {"code": code, "message": "m"})  # type: ignore[arg-type]
    assert token_gone(exc) is gone
    assert token_gone(TokenGone())


def make_job(**changes: Any) -> Job:
    now = time.time()
    values: dict[str, Any] = dict(
        id=7, guild_id=USER_INSTALL_SCOPE, channel_id=333, user_id=USER, status_message_id=444,
        thread_id=None, prompt="p", negative_prompt=None, resolution=Resolution("480P"), template=None,
        seed=None, prompt_extend=True, image_url=None, image_note=None, cost=1, upload_limit=10,
        request_id="r", state=JobState.QUEUED, queue_position=None, error=None, result_url=None,
        delivery_message_id=None, poll_count=0, delivery_started_at=None, overdue_notified_at=None,
        status_has_image=True, status_channel_id=None, created_at=now, submitted_at=now, started_at=None,
        finished_at=None, updated_at=now, locale=None, delivery_channel_id=None, surface="interaction",
        interaction_app_id=99, interaction_token="secret-token", interaction_expires_at=now + 900,
        interaction_context=2,
    )  # fmt: skip
    values.update(changes)
    return Job(**values)


@dataclass
class _Jobs:
    updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    async def update(self, job_id: int, **changes: Any) -> bool:
        self.updates.append((job_id, changes))
        return True


class _Client:
    def __init__(self) -> None:
        self.dms: list[int] = []

    def get_user(self, user_id: int) -> Any:
        return SimpleNamespace(dm_channel=SimpleNamespace(id=555))

    def get_partial_messageable(self, channel_id: int, **_: Any) -> Any:
        return SimpleNamespace(id=channel_id)


def make_ctx() -> Any:
    ctx = SimpleNamespace(jobs=_Jobs(), client=_Client())
    ctx.tokens = Tokens(ctx)  # type: ignore[arg-type]
    return ctx


def test_a_token_is_used_until_shortly_before_it_expires() -> None:
    ctx = make_ctx()
    assert ctx.tokens.of(make_job()).token == "secret-token"
    assert ctx.tokens.of(make_job(interaction_expires_at=time.time() + 10)) is None  # within the margin


def test_the_last_token_seen_outlives_the_rows_cleared_column_until_forgotten() -> None:
    """The ending's write clears the column; its last status edit still needs the token."""
    ctx = make_ctx()
    ctx.tokens.of(make_job())
    ended = make_job(state=JobState.DELIVERED, interaction_token=None)
    assert ctx.tokens.of(ended) is not None
    ctx.tokens.forget(ended.id)
    assert ctx.tokens.of(ended) is None
    with pytest.raises(TokenGone):
        ctx.tokens.webhook(ended)


async def test_a_rejected_token_is_cleared_in_storage_and_never_used_again() -> None:
    ctx = make_ctx()
    job = make_job()
    ctx.tokens.of(job)
    await ctx.tokens.gone(job, TokenGone())
    assert ctx.jobs.updates == [(job.id, {"interaction_token": None})]
    assert job.interaction_token is None and ctx.tokens.of(job) is None
    assert ctx.tokens.of(make_job()) is None  # a row read before the rejection does not revive it
    assert "secret-token" not in repr(job)  # a credential never shows in a log line


async def test_delivery_goes_to_the_follow_up_while_the_token_lives_then_to_the_dm() -> None:
    ctx = make_ctx()
    # The DM (listed as 0) is looked up only when something is sent there.
    live = delivery_targets(ctx, make_job())
    assert [target_id for target_id, _ in live] == [333, 0]
    expired = delivery_targets(ctx, make_job(interaction_expires_at=time.time() - 1))
    assert [target_id for target_id, _ in expired] == [0]
    # In the DM with the bot (context 1) the fallback DM is that very channel.
    bot_dm = delivery_targets(ctx, make_job(interaction_context=1, interaction_token=None, id=8))
    assert [target_id for target_id, _ in bot_dm] == [333]


class _SlowClient(_Client):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.sent: list[tuple[int, dict[str, Any]]] = []

    def get_user(self, user_id: int) -> Any:
        return None

    async def fetch_user(self, user_id: int) -> Any:
        self.lookups += 1
        if self.lookups == 1:
            await asyncio.sleep(10)  # Discord hangs
        return SimpleNamespace(dm_channel=SimpleNamespace(id=555))

    def get_partial_messageable(self, channel_id: int, **_: Any) -> Any:
        client = self

        class _Channel:
            async def send(self, **fields: Any) -> str:
                client.sent.append((channel_id, fields))
                return "message"

        return _Channel()


async def test_the_dm_is_looked_up_only_when_sent_to_and_a_hang_is_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(surface, "DM_TIMEOUT", 0.05)
    ctx = make_ctx()
    ctx.client = _SlowClient()
    [_, (listed, dm)] = delivery_targets(ctx, make_job())
    assert ctx.client.lookups == 0  # the follow-up goes first, with no DM lookup before it
    with pytest.raises(TimeoutError):  # what a lost post raises: the delivery is retried later
        await dm.send(content="v", nonce="n")
    assert ctx.client.sent == [] and surface.delivered_in(dm, listed) == 0
    assert await dm.send(content="v", nonce="n") == "message"
    assert ctx.client.sent == [(555, {"content": "v", "nonce": "n"})]
    assert surface.delivered_in(dm, listed) == 555


async def test_posting_the_status_edits_the_original_response_with_the_image() -> None:
    calls: list[dict[str, Any]] = []

    class _Interaction:
        async def edit_original_response(self, **fields: Any) -> str:
            calls.append(fields)
            return "message"

    file = discord.File(io.BytesIO(b"img"), filename="a.png")
    target = OriginalResponse(_Interaction())  # type: ignore[arg-type]
    assert await target.send(nonce="s1", embed="E", file=file, view=None) == "message"
    assert calls == [{"embed": "E", "attachments": [file], "view": None}]


def test_the_user_install_quota_defaults_to_daily_quota() -> None:
    from bot.settings import Settings

    base = {"discord_token": "t", "runcomfy_api_token": "r", "daily_quota": 7}
    assert Settings(_env_file=None, **base).user_install_quota == 7  # type: ignore[call-arg]
    assert Settings(_env_file=None, **base, user_install_daily_quota="").user_install_quota == 7  # type: ignore[call-arg]
    assert Settings(_env_file=None, **base, user_install_daily_quota=3).user_install_quota == 3  # type: ignore[call-arg]


async def test_expired_tokens_of_jobs_that_never_got_a_last_edit_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(surface, "PRUNE_INTERVAL", 0.0)
    ctx = make_ctx()
    tokens: Tokens = ctx.tokens
    soon = time.time() + 0.05
    tokens.of(make_job(id=1, interaction_expires_at=soon))
    tokens.of(make_job(id=2))
    await tokens.gone(make_job(id=3, interaction_expires_at=soon), TokenGone())
    assert set(tokens._live) == {1, 2} and set(tokens._dead) == {3}
    await asyncio.sleep(0.06)
    tokens.of(make_job(id=2))
    assert set(tokens._live) == {2} and tokens._dead == {}
