"""Typed async client for the RunComfy Model API (Wan 2.2 image-to-video).

Modules: ``client`` (RunComfyClient), ``models`` (parameters, statuses, results, phases), ``errors``
(exceptions and error codes), ``_parse`` (defensive reading of response bodies).

Contract: /work/shared/runcomfy-wan-2-2-image-to-video.txt and runcomfy-api-notes.md.

Retry policy
------------
* ``status``/``result``/``cancel`` are retried on network errors, timeouts, HTTP 5xx, ``error_code``
  500001, HTTP 429 and unparseable (non-JSON / truncated) bodies, with capped exponential backoff and full
  jitter, honouring ``Retry-After`` (seconds or HTTP-date, capped at ``backoff_cap``).
* ``submit`` has no idempotency key, so it is retried only when the request surely never reached the
  server (connection refused / connect timeout) or was explicitly rejected (HTTP 429). Anything that may
  have created a paid job (timeout or disconnect after sending, 5xx, garbage 2xx body) raises
  :class:`SubmitOutcomeUnknown`.

The API token is only ever placed in the ``Authorization`` header; it is redacted from every message the
server echoes back and never logged.
"""

from __future__ import annotations

from bot.runcomfy.client import DEFAULT_MODEL, MAX_BODY_BYTES, RunComfyClient
from bot.runcomfy.errors import (
    CODE_BAD_TOKEN,
    CODE_FORBIDDEN,
    CODE_NO_BALANCE,
    CODE_NOT_FOUND,
    CODE_SERVER_ERROR,
    CODE_UNKNOWN_MODEL,
    CODE_VALIDATION,
    RunComfyAuthError,
    RunComfyBalanceError,
    RunComfyError,
    RunComfyForbiddenError,
    RunComfyModelError,
    RunComfyNotFoundError,
    RunComfyProtocolError,
    RunComfyUnavailableError,
    RunComfyValidationError,
    SubmitOutcomeUnknown,
)
from bot.runcomfy.models import (
    SUCCESS_WORDS,
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    Phase,
    Submission,
    normalize_status,
)

__all__ = [
    "CODE_BAD_TOKEN",
    "CODE_FORBIDDEN",
    "CODE_NOT_FOUND",
    "CODE_NO_BALANCE",
    "CODE_SERVER_ERROR",
    "CODE_UNKNOWN_MODEL",
    "CODE_VALIDATION",
    "DEFAULT_MODEL",
    "MAX_BODY_BYTES",
    "SUCCESS_WORDS",
    "CancelResult",
    "GenerationParams",
    "JobResult",
    "JobStatus",
    "Phase",
    "RunComfyAuthError",
    "RunComfyBalanceError",
    "RunComfyClient",
    "RunComfyError",
    "RunComfyForbiddenError",
    "RunComfyModelError",
    "RunComfyNotFoundError",
    "RunComfyProtocolError",
    "RunComfyUnavailableError",
    "RunComfyValidationError",
    "Submission",
    "SubmitOutcomeUnknown",
    "normalize_status",
]
