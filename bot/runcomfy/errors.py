"""The errors the RunComfy client raises, and the API's error codes (runcomfy-api-notes.md)."""

from __future__ import annotations

from typing import Any, Final

# RunComfy error codes (see runcomfy-api-notes.md).
CODE_UNKNOWN_MODEL: Final = 400001
CODE_NO_BALANCE: Final = 400002
CODE_BAD_TOKEN: Final = 400004
CODE_FORBIDDEN: Final = 403001
CODE_NOT_FOUND: Final = 404001
CODE_VALIDATION: Final = 422001
CODE_SERVER_ERROR: Final = 500001


class RunComfyError(Exception):
    """Base class. ``str(e)`` is a safe, human-readable message that never contains the API token."""

    code: int | None
    http_status: int | None

    def __init__(
        self, message: str = "RunComfy error", *, code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, http_status={self.http_status!r})"
        )


class RunComfyAuthError(RunComfyError):
    """Bad, missing or expired API token (400004, HTTP 401/403 other than 403001)."""


class RunComfyBalanceError(RunComfyError):
    """Account has no balance left (400002 or HTTP 402)."""


class RunComfyValidationError(RunComfyError):
    """The input was rejected (422001 / HTTP 422 / HTTP 400 with ``detail``)."""

    detail: Any

    def __init__(
        self,
        message: str = "RunComfy rejected the input",
        *,
        code: int | None = None,
        http_status: int | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.detail = detail


class RunComfyNotFoundError(RunComfyError):
    """Unknown or expired request (404001 / HTTP 404)."""


class RunComfyForbiddenError(RunComfyError):
    """The request belongs to another user (403001)."""


class RunComfyModelError(RunComfyError):
    """Unknown model (400001)."""


class RunComfyUnavailableError(RunComfyError):
    """Transient failure (5xx, 500001, 429, network error, timeout) that outlived all retries."""


class RunComfyProtocolError(RunComfyError):
    """The server answered something that does not match the contract."""


class SubmitOutcomeUnknown(RunComfyError):
    """A submit may or may not have created a (paid) job; it must not be blindly retried."""
