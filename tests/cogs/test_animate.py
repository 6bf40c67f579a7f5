from __future__ import annotations

from typing import Any

import discord
import pytest

from cogs.animate import NEGATIVE_MAX, PROMPT_MAX, Animate, missing_permissions


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
