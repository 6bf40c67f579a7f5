"""Pieces of the delivery path: nonces that name one logical message, and links that never push a
message over Discord's 2,000 characters."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest

from bot import ratelimit
from bot.engine import _common, _delivery
from storage.jobs import Job, JobState


def make_job(**overrides: Any) -> Job:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(Job)}
    values.update(
        id=42,
        guild_id=1,
        channel_id=2,
        user_id=3,
        prompt="a cat",
        resolution="480P",
        prompt_extend=True,
        cost=1,
        upload_limit=10 * 1024 * 1024,
        state=JobState.DELIVERING,
        poll_count=0,
        status_has_image=True,
        created_at=1_796_000_000.25,
        updated_at=1_796_000_000.25,
        result_url="https://cdn.example/video.mp4?sig=abc",
    )
    values.update(overrides)
    return Job(**values)


def test_nonces_are_deterministic_short_and_distinct() -> None:
    job = make_job()
    assert _common.nonce("v", job) == _common.nonce("v", make_job())  # the same after a restart
    nonces = {
        _common.nonce("v", job),
        _common.nonce("s", job),
        _common.nonce("r", job, 1577257791570051072),
        _common.nonce("r", job, 1577257791570051073),
        _common.nonce("v", make_job(id=43)),
        _common.nonce("v", make_job(created_at=1_796_000_100.0)),  # a fresh database reusing id 42
    }
    assert len(nonces) == 6
    huge = make_job(id=2**63 - 1)
    assert all(len(_common.nonce(kind, huge, 2**63 - 1)) <= 25 for kind in "vsrd")


def test_short_links_stay_inline() -> None:
    out = _delivery._linked(None, "https://cdn.example/v.mp4", lambda link: f"ready: {link} · job #1")
    assert out.content == "ready: <https://cdn.example/v.mp4> · job #1" and out.link is None


def test_long_links_move_out_of_the_text() -> None:
    url = "https://cdn.example/v.mp4?sig=" + "s" * 1990
    out = _delivery._linked(None, url, lambda link: f"ready: {link} · job #1")
    assert out.content == "ready: (link below) · job #1" and out.link == url
    plain = _delivery._linked(None, url, lambda link: f"ready: {link}", extras=False)
    assert plain.link is None and url not in plain.content and "too long" in plain.content
    # Nowhere to show it: not http(s), or longer than an embed holds.
    for odd in ("javascript:" + "x" * 2000, "https://cdn.example/" + "x" * 5000):
        out = _delivery._linked(None, odd, lambda link: f"ready: {link}")
        assert out.link is None and len(out.content) <= _common.MAX_CONTENT


def test_spoilered_links_are_wrapped_and_still_fit() -> None:
    out = _delivery._linked(
        None, "https://cdn.example/v.mp4", lambda link: f"ready: {link} · job #1", spoiler=True
    )
    assert out.content == "ready: ||<https://cdn.example/v.mp4>|| · job #1" and out.link is None
    # A link that fits only without the four extra characters moves into the embed (wrapped there).
    template = "ready: {} · job #1"
    url = "https://cdn.example/v.mp4?sig="
    url += "s" * (_common.MAX_CONTENT - len(template.format(f"<{url}>")) - 2)
    assert len(template.format(f"<{url}>")) <= _common.MAX_CONTENT
    out = _delivery._linked(None, url, template.format, spoiler=True)
    assert out.link == url and url not in out.content and len(out.content) <= _common.MAX_CONTENT


def test_spoilered_job_status_embed_has_no_thumbnail() -> None:
    from bot import ui

    shown = ui.status_embed(make_job(image_url="https://cdn.example/a/1/source.jpg"))
    assert shown.thumbnail.url == "attachment://source.jpg"
    hidden = ui.status_embed(make_job(image_url="https://cdn.example/a/1/SPOILER_source.jpg", spoiler=True))
    assert hidden.thumbnail.url is None


class _Target:
    """A channel whose send records the task it runs in (and may never answer)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def send(self, **fields: Any) -> str:
        self.tasks.append(asyncio.current_task())
        if self.hang:
            # Its request leaves (what RestRateLimiter's hook tells the call's deadline), then no answer.
            limit = ratelimit._DEADLINE.get()
            assert limit is not None
            limit.start()
            await asyncio.sleep(30)
        return str(fields["nonce"])


async def test_a_post_runs_in_the_callers_task_and_keeps_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # issue #13: asyncio.wait_for (Python 3.11) ran every post in a task of its own.
    target = _Target()
    assert await _common.send(cast(Any, target), nonce="v1.abc", content="hi") == "v1.abc"
    assert target.tasks == [asyncio.current_task()]
    monkeypatch.setattr(_common, "POST_TIMEOUT", 0.05)
    hanging = _Target(hang=True)
    with pytest.raises(TimeoutError):  # one of _common.AMBIGUOUS: the caller checks before posting again
        await _common.send(cast(Any, hanging), nonce="v1.abd", content="hi")
    assert TimeoutError in _common.AMBIGUOUS
