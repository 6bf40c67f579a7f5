"""Helpers for the server-administration end-to-end tests."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Harness


async def admin(
    h: Harness, sub: str, user: str = "admin", channel_id: int | None = None, **options: Any
) -> str:
    """Run `/animate-admin <sub>` and return the (ephemeral) answer's text."""
    inter = await h.discord.slash("animate-admin", options, user=user, subcommand=sub, channel_id=channel_id)
    text = await h.reply(inter)
    assert inter.ephemeral
    return text


async def embed_of(h: Harness, name: str, user: str = "alice", **options: Any) -> dict[str, Any]:
    inter = await h.discord.slash(name, options, user=user)
    response = await inter.wait_response()
    assert inter.ephemeral
    embeds = response.get("embeds") or []
    assert embeds, response
    return dict(embeds[0])


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def audit_titles(h: Harness, channel_id: int, count: int, timeout: float = 5) -> list[str]:
    """Wait until the audit channel holds at least `count` embeds; return their titles."""

    def ready() -> list[str] | None:
        titles = [m["embeds"][0]["title"] for m in h.discord.messages(channel_id) if m.get("embeds")]
        return titles if len(titles) >= count else None

    result: list[str] = await h.discord.wait_for(ready, timeout=timeout)
    return result
