"""Plain-text helpers shared by the rules (bot/policy.py) and the presentation (bot/ui.py).

A leaf module (no project imports), so policy can format a reply without depending on the UI.
"""

from __future__ import annotations


def ts(epoch: float, style: str = "R") -> str:
    """A Discord timestamp, rendered in each reader's own time zone."""
    return f"<t:{int(epoch)}:{style}>"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
