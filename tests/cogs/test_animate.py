from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from bot.admission import NEGATIVE_MAX, PROMPT_MAX, DownloadGate, ImageSource, missing_permissions
from cogs.animate import Animate


class FakeAttachment:
    def __init__(
        self, content_type: str | None = "image/png", size: int = 1000, filename: str = "a.png"
    ) -> None:
        self.content_type = content_type
        self.size = size
        self.filename = filename


def check(prompt: str = "a cat", negative: str | None = None, **attachment: Any) -> str | None:
    return Animate.check_request(prompt, negative, FakeAttachment(**attachment))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x" * PROMPT_MAX}, None),
        ({"prompt": "x" * (PROMPT_MAX + 1)}, "801 characters"),
        ({"negative": "x" * NEGATIVE_MAX}, None),
        ({"negative": "x" * (NEGATIVE_MAX + 1)}, "negative prompt is 501 characters"),
        ({"content_type": "video/mp4", "filename": "clip.mp4"}, "`clip.mp4` isn't an image"),
        ({"content_type": None}, None),  # unknown type: Pillow decides after download
        ({"size": 60 * 1024 * 1024}, "under 50 MB"),
    ],
)
def test_check_request(kwargs: dict[str, Any], expected: str | None) -> None:
    result = check(**kwargs)
    if expected is None:
        assert result is None
    else:
        assert result is not None and expected in result


def test_missing_permissions_names_each_one() -> None:
    perms = discord.Permissions(view_channel=True, send_messages=True, embed_links=True)
    assert missing_permissions(perms, in_thread=False) == [
        "Attach Files",
        "Create Public Threads",
        "Send Messages in Threads",
    ]
    full = discord.Permissions(
        view_channel=True,
        send_messages=True,
        embed_links=True,
        attach_files=True,
        create_public_threads=True,
        send_messages_in_threads=True,
    )
    assert missing_permissions(full, in_thread=False) == []
    assert missing_permissions(
        discord.Permissions(view_channel=True, embed_links=True, attach_files=True), in_thread=True
    ) == ["Send Messages"]


async def test_download_gate_lets_one_request_per_member_through_at_a_time() -> None:
    gate = DownloadGate(3)
    inside: list[int] = []
    peak = 0

    async def request(user_id: int) -> tuple[bool, bool]:
        nonlocal peak
        async with gate.member(user_id, wait=5) as slot:
            inside.append(user_id)
            peak = max(peak, inside.count(7))
            await asyncio.sleep(0.01)
            inside.remove(user_id)
            return slot.acquired, slot.waited

    results = await asyncio.gather(*(request(7) for _ in range(4)), request(8))
    assert all(acquired for acquired, _ in results)
    assert [waited for _, waited in results] == [False, True, True, True, False]
    assert peak == 1
    assert gate._members == {}  # no lock kept for members who are done


async def test_download_gate_gives_up_waiting_after_the_bound() -> None:
    gate = DownloadGate(3)
    release = asyncio.Event()

    async def first() -> None:
        async with gate.member(7, wait=5):
            await release.wait()

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    async with gate.member(7, wait=0.05) as slot:
        assert not slot.acquired and slot.waited
    release.set()
    await holder
    assert gate._members == {}


def test_declared_dimensions_refuse_a_small_image_before_download() -> None:
    def source(width: int | None, height: int | None) -> ImageSource:
        return ImageSource("https://cdn/x.png", "x.png", "image/png", 1000, width, height)

    assert "too small (100x400 px)" in (Animate.check_dimensions(source(100, 400)) or "")
    assert Animate.check_dimensions(source(360, 360)) is None
    assert Animate.check_dimensions(source(None, None)) is None  # not declared: the decoder decides
