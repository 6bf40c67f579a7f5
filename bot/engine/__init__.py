"""The job engine; `JobEngine` in `_facade` is its only entry point (see that module for the parts)."""

from bot.engine._common import VideoBackend
from bot.engine._facade import JobEngine
from bot.engine._launch import LaunchResult

__all__ = ["JobEngine", "LaunchResult", "VideoBackend"]
