"""The errors every media step raises, and the size wording they share."""

from __future__ import annotations

from typing import Any

from bot.i18n import LocaleLike, Msg, render


class MediaError(Exception):
    """Raised for input that cannot be fixed.

    ``user_message`` is a friendly sentence for the Discord user telling them what to upload instead
    (English; ``localized(locale)`` in the reader's language). It never contains URLs or other secrets.
    The message is a template whose named placeholders are filled from ``params`` (see bot/i18n.py).
    """

    user_message: str

    def __init__(self, user_message: str, /, **params: Any) -> None:
        message = Msg(user_message, **params)
        super().__init__(message)
        self.user_message = message

    def localized(self, locale: LocaleLike) -> str:
        return render(self.user_message, locale)


class DownloadError(MediaError):
    """HTTP error status, timeout or connection failure while downloading."""


class DownloadTooLarge(MediaError):
    """The body (announced or streamed) is larger than the allowed maximum."""


def fmt_mb(n: int) -> str:
    """A byte limit as users read it in error messages ("10 MB")."""
    return f"{n / 1_000_000:g} MB"
