"""The job engine; `JobEngine` in `_facade` is its only entry point (see that module for the parts)."""

from bot.engine._common import ORPHAN_AGE, VideoBackend
from bot.engine._facade import JobEngine
from bot.engine._launch import LaunchResult
from bot.engine._surface import (
    GUILD_CONTEXT,
    OriginalResponse,
    Place,
    place_of,
    place_of_interaction,
    surface_of,
)

__all__ = [
    "GUILD_CONTEXT",
    "ORPHAN_AGE",
    "JobEngine",
    "LaunchResult",
    "OriginalResponse",
    "Place",
    "VideoBackend",
    "place_of",
    "place_of_interaction",
    "surface_of",
]
