"""bot/ui.py helpers shared by the cogs: durations, message links, video names, the mentions setting."""

from __future__ import annotations

import discord
import pytest

from bot import errors, ui


@pytest.mark.parametrize(
    ("seconds", "cut", "rounded"),
    [
        (0, "0s", "0s"),
        (42.4, "42s", "42s"),
        (42.6, "42s", "43s"),
        (59.7, "59s", "1m 00s"),
        (185.2, "3m 05s", "3m 05s"),
        (-3, "0s", "0s"),
    ],
)
def test_duration_cuts_off_or_rounds(seconds: float, cut: str, rounded: str) -> None:
    assert ui.duration(seconds) == cut  # a job's own time (status, Details)
    assert ui.duration(seconds, nearest=True) == rounded  # a median (/animate-stats)


def test_message_link() -> None:
    assert ui.message_link(1, 2, 3) == "https://discord.com/channels/1/2/3"
    assert ui.message_link(1, 2) == "https://discord.com/channels/1/2"  # a channel or thread


def test_video_filename() -> None:
    assert ui.video_filename(17) == "animate-17.mp4"


def test_a_spoilered_video_is_named_so_discord_blurs_it() -> None:
    assert ui.video_filename(17, spoiler=True) == "SPOILER_animate-17.mp4"
    assert ui.video_filename(17, spoiler=False) == "animate-17.mp4"


def test_spoiler_name_prefixes_once() -> None:
    assert ui.spoiler_name("source.jpg", True) == "SPOILER_source.jpg"
    assert ui.spoiler_name("SPOILER_source.jpg", True) == "SPOILER_source.jpg"
    assert ui.spoiler_name("source.jpg", False) == "source.jpg"


def test_spoiler_text_and_link_embed() -> None:
    assert ui.spoiler_text("<https://cdn.example/v.mp4>", True) == "||<https://cdn.example/v.mp4>||"
    assert ui.spoiler_text("plain", False) == "plain"
    assert (
        ui.link_embed("https://cdn.example/v.mp4", spoiler=True).description
        == "||https://cdn.example/v.mp4||"
    )
    assert ui.link_embed("https://cdn.example/v.mp4").description == "https://cdn.example/v.mp4"


def test_one_no_mentions_setting() -> None:
    assert ui.NO_MENTIONS is errors.NO_MENTIONS
    assert ui.NO_MENTIONS.to_dict() == discord.AllowedMentions.none().to_dict()
