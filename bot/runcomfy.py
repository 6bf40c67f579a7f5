"""Typed async client for the RunComfy Model API (Wan 2.2 image-to-video).

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

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn

import aiohttp

from bot import metrics
from storage.spec import GenerationSpec

__all__ = [
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

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024

DEFAULT_MODEL: Final = "wan-ai/wan-2-2/image-to-video"

# RunComfy error codes (see runcomfy-api-notes.md).
CODE_UNKNOWN_MODEL: Final = 400001
CODE_NO_BALANCE: Final = 400002
CODE_BAD_TOKEN: Final = 400004
CODE_FORBIDDEN: Final = 403001
CODE_NOT_FOUND: Final = 404001
CODE_VALIDATION: Final = 422001
CODE_SERVER_ERROR: Final = 500001

_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_MESSAGE_CHARS: Final = 300
_MAX_ERROR_CHARS: Final = 300
_BEARER_RE: Final = re.compile(r"(?i)bearer\s+\S+")


# --------------------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerationParams:
    prompt: str
    img_url: str
    negative_prompt: str | None = None
    resolution: str = "480P"
    template: str | None = None
    seed: int | None = None
    prompt_extend: bool = True
    duration: int = 5

    @classmethod
    def from_spec(cls, spec: GenerationSpec, img_url: str) -> GenerationParams:
        """The one place a job's spec becomes a submit (RunComfy's `duration` keeps its default)."""
        return cls(img_url=img_url, **spec.columns())

    def to_payload(self) -> dict[str, Any]:
        """The JSON body for a submit; ``None`` fields are omitted."""
        payload: dict[str, Any] = {
            "prompt": self.prompt,
            "img_url": self.img_url,
            "negative_prompt": self.negative_prompt,
            "resolution": self.resolution,
            "template": self.template,
            "seed": self.seed,
            "prompt_extend": self.prompt_extend,
            "duration": self.duration,
        }
        return {key: value for key, value in payload.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Submission:
    request_id: str
    status_url: str | None
    result_url: str | None
    cancel_url: str | None


class Phase(StrEnum):
    """A RunComfy status word, normalised. The words are not settled (the seed document, RunComfy's
    CLI and its docs disagree), so every known spelling maps here and anything else is UNKNOWN."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # on /status: finished, /result decides; on /result: a video is there
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


# Lower-cased words; RunComfy's CLI treats completed|succeeded|failed|cancelled|canceled as terminal on
# both endpoints and succeeded|completed on /result as success.
_WORDS: Final[Mapping[str, Phase]] = {
    "in_queue": Phase.QUEUED,
    "queued": Phase.QUEUED,
    "in_progress": Phase.RUNNING,
    "running": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "succeeded": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "cancelled": Phase.CANCELLED,
    "canceled": Phase.CANCELLED,
}
SUCCESS_WORDS: Final = frozenset(w for w, p in _WORDS.items() if p is Phase.SUCCEEDED)


def normalize_status(word: str, *, error: str | None = None) -> Phase:
    """The phase a status word means; an ``error`` field means failure unless the word says cancelled."""
    phase = _WORDS.get(word.strip().lower(), Phase.UNKNOWN)
    if error is not None and phase is not Phase.CANCELLED:
        return Phase.FAILED
    return phase


@dataclass(frozen=True, slots=True)
class JobStatus:
    status: str
    """The raw word, lower-cased (``in_queue``, ``Completed`` -> ``completed``, or anything else); empty
    when RunComfy sent only an ``error``. Decide on :attr:`phase`, log this."""
    queue_position: int | None
    error: str | None = None

    @property
    def phase(self) -> Phase:
        return normalize_status(self.status, error=self.error)


@dataclass(frozen=True, slots=True)
class JobResult:
    status: str
    """The raw word, lower-cased (``succeeded``, ``completed``, ``failed``, ...); empty when RunComfy sent
    only an ``error``. Decide on :attr:`phase`, log this."""
    video_urls: tuple[str, ...]
    error: str | None
    created_at: str | None
    finished_at: str | None

    @property
    def phase(self) -> Phase:
        """SUCCEEDED only with a video: a "success" without one is a failure (see :attr:`no_video`)."""
        phase = normalize_status(self.status, error=self.error)
        if phase is Phase.SUCCEEDED and not self.video_urls:
            return Phase.FAILED
        return phase

    @property
    def no_video(self) -> bool:
        """RunComfy said it succeeded but sent no video URL."""
        return self.error is None and self.status in SUCCESS_WORDS and not self.video_urls


@dataclass(frozen=True, slots=True)
class CancelResult:
    status: str | None
    outcome: str | None
    cancelled: bool


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


class _Transient(Exception):
    """Internal: a failure worth retrying (for idempotent calls)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        code: int | None = None,
        http_status: int | None = None,
        malformed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.code = code
        self.http_status = http_status
        self.malformed = malformed


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: Any  # parsed JSON, or _NOT_JSON
    retry_after: float | None


class _NotJson:
    def __repr__(self) -> str:
        return "<not json>"


_NOT_JSON: Final = _NotJson()


def _parse_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _has_error_code(body: Any) -> bool:
    """True when a JSON body carries a meaningful top-level ``error_code`` (null/0/"" do not count)."""
    if not isinstance(body, dict):
        return False
    value = body.get("error_code")
    return value is not None and value not in (0, "", "0") and value is not False


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _render_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - defensive
        return repr(value)


def _render_error(value: Any) -> str | None:
    """Render a failure ``error`` field of any JSON type as a short human string."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping):
        text = _render_json(value)
        for key in ("error_message", "message", "msg", "error", "detail", "reason"):
            inner = value.get(key)
            rendered = _render_error(inner) if inner not in (None, "", [], {}) else None
            if rendered:
                code = value.get("error_code", value.get("code"))
                text = rendered if code is None else f"{rendered} (code {code})"
                break
    elif isinstance(value, list | tuple):
        rendered_items = [r for r in (_render_error(item) for item in value) if r]
        text = "; ".join(rendered_items)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = _truncate(text, _MAX_ERROR_CHARS)
    return text or None


def _summarize_detail(detail: Any) -> str:
    """Readable one-line summary of a validation ``detail`` (FastAPI-style list, dict or string)."""
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    items = detail if isinstance(detail, list | tuple) else [detail]
    parts: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            msg = item.get("msg", item.get("message", item.get("error_message")))
            loc = item.get("loc")
            if isinstance(loc, list | tuple):
                loc_parts = [str(p) for p in loc if p not in ("body", "query", "path")]
                loc_text = ".".join(loc_parts)
            elif loc is not None:
                loc_text = str(loc)
            else:
                loc_text = ""
            msg_text = str(msg) if msg is not None else _render_json(item)
            parts.append(f"{loc_text}: {msg_text}" if loc_text else msg_text)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _validate_request_id(request_id: str) -> str:
    if (
        not isinstance(request_id, str)
        or not _REQUEST_ID_RE.fullmatch(request_id)
        or set(request_id) == {"."}
        or len(request_id) > 200
    ):
        raise ValueError("invalid RunComfy request_id (must be non-empty and match [A-Za-z0-9_.-]+)")
    return request_id


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


# --------------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------------

SleepFn = Callable[[float], Awaitable[None]]


class RunComfyClient:
    """Async RunComfy Model API client. The ``session`` is owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str,
        model: str = DEFAULT_MODEL,
        request_timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        sleep: SleepFn | None = None,
    ) -> None:
        if not token:
            raise ValueError("RunComfy token must not be empty")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        model = model.strip("/")
        if not model or not all(_REQUEST_ID_RE.fullmatch(part) for part in model.split("/")):
            raise ValueError("invalid RunComfy model path")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._model = model
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = max(0.0, backoff_base)
        self._backoff_cap = max(0.0, backoff_cap)
        self._sleep: SleepFn = sleep if sleep is not None else asyncio.sleep
        self._rng = random.Random()

    def __repr__(self) -> str:  # never show the token
        return f"RunComfyClient(base_url={self._base_url!r}, model={self._model!r})"

    # ---------------------------------------------------------------- public API

    async def submit(self, params: GenerationParams) -> Submission:
        """Queue a generation. Raises :class:`SubmitOutcomeUnknown` when a job may have been created."""
        url = f"{self._base_url}/models/{self._model}"
        path = f"/models/{self._model}"
        payload = params.to_payload()
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._send("POST", url, payload)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The connection was never established: the request surely never left.
                reason = f"connection failed: {type(exc).__name__}"
                if attempt >= self._max_attempts:
                    raise RunComfyUnavailableError(
                        self._safe(f"RunComfy submit failed after {attempt} attempts ({reason})")
                    ) from None
                await self._backoff("POST", path, attempt, reason, None)
                continue
            except TimeoutError:
                raise SubmitOutcomeUnknown(
                    "RunComfy submit timed out after the request was sent; the job may or may not exist"
                ) from None
            except aiohttp.ClientError as exc:
                raise SubmitOutcomeUnknown(
                    self._safe(
                        f"RunComfy submit failed after the request was sent ({type(exc).__name__}); "
                        "the job may or may not exist"
                    )
                ) from None

            if resp.status == 429:
                if attempt >= self._max_attempts:
                    raise RunComfyUnavailableError(
                        f"RunComfy rate-limited the submit {attempt} times (HTTP 429)", http_status=429
                    )
                await self._backoff("POST", path, attempt, "HTTP 429", resp.retry_after)
                continue
            return self._parse_submission(resp)

    async def status(self, request_id: str) -> JobStatus:
        rid = _validate_request_id(request_id)
        body = await self._call_idempotent("GET", f"/requests/{rid}/status")
        word, error = self._word_and_error(body, "status")
        return JobStatus(status=word, queue_position=_opt_int(body.get("queue_position")), error=error)

    async def result(self, request_id: str) -> JobResult:
        rid = _validate_request_id(request_id)
        body = await self._call_idempotent("GET", f"/requests/{rid}/result")
        word, error = self._word_and_error(body, "result")
        output = body.get("output")
        urls: list[str] = []
        if isinstance(output, Mapping):
            video = output.get("video")
            if isinstance(video, str) and video:
                urls.append(video)
            videos = output.get("videos")
            if isinstance(videos, list):
                urls.extend(v for v in videos if isinstance(v, str) and v)
            elif isinstance(videos, str) and videos:
                urls.append(videos)
        elif output is not None:
            raise RunComfyProtocolError("RunComfy result 'output' is not an object")
        return JobResult(
            status=word,
            video_urls=tuple(dict.fromkeys(urls)),
            error=error,
            created_at=_opt_str(body.get("created_at")),
            finished_at=_opt_str(body.get("finished_at")),
        )

    async def cancel(self, request_id: str) -> CancelResult:
        rid = _validate_request_id(request_id)
        body = await self._call_idempotent("POST", f"/requests/{rid}/cancel")
        raw_status = body.get("status")
        raw_outcome = body.get("outcome")
        status = raw_status.strip().lower() if isinstance(raw_status, str) and raw_status.strip() else None
        outcome = (
            raw_outcome.strip().lower() if isinstance(raw_outcome, str) and raw_outcome.strip() else None
        )
        return CancelResult(
            status=status,
            outcome=outcome,
            cancelled=Phase.CANCELLED in (_WORDS.get(outcome or ""), _WORDS.get(status or "")),
        )

    def _word_and_error(self, body: Mapping[str, Any], endpoint: str) -> tuple[str, str | None]:
        """The lower-cased status word ("" if absent) and the rendered ``error`` field (None if absent).
        An ``error`` without a word is a failure; neither is a protocol error."""
        raw_error = body.get("error")
        error = None
        if raw_error not in (None, "", [], {}, False):
            error = self._safe(_render_error(raw_error) or "unknown error")
        raw_status = body.get("status")
        word = raw_status.strip().lower() if isinstance(raw_status, str) else ""
        if not word and error is None:
            raise RunComfyProtocolError(f"RunComfy {endpoint} response has no 'status' string")
        return word, error

    # ---------------------------------------------------------------- transport

    async def _send(self, method: str, url: str, payload: dict[str, Any] | None) -> _Response:
        with metrics.runcomfy_call(url) as call:  # counted by endpoint and answer, timed
            resp = await self._send_unobserved(method, url, payload)
            call.status(resp.status)
            return resp

    async def _send_unobserved(self, method: str, url: str, payload: dict[str, Any] | None) -> _Response:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        async with self._session.request(
            method, url, json=payload, headers=headers, timeout=self._timeout
        ) as resp:
            raw = await _read_capped(resp)
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
            status = resp.status
        body: Any
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else _NOT_JSON
        except (UnicodeDecodeError, ValueError):
            body = _NOT_JSON
        return _Response(status=status, body=body, retry_after=retry_after)

    async def _call_idempotent(self, method: str, path: str) -> dict[str, Any]:
        url = f"{self._base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    resp = await self._send(method, url, None)
                except TimeoutError:
                    raise _Transient("timeout") from None
                except aiohttp.ClientError as exc:
                    raise _Transient(f"network error: {type(exc).__name__}") from None
                return self._check_idempotent_response(resp)
            except _Transient as exc:
                if attempt >= self._max_attempts:
                    self._raise_exhausted(method, path, attempt, exc)
                await self._backoff(method, path, attempt, exc.reason, exc.retry_after)

    def _check_idempotent_response(self, resp: _Response) -> dict[str, Any]:
        body = resp.body
        code = _parse_code(body.get("error_code")) if isinstance(body, dict) else None
        if resp.status == 429:
            raise _Transient("HTTP 429", retry_after=resp.retry_after, code=code, http_status=429)
        if resp.status >= 500 or code == CODE_SERVER_ERROR:
            raise _Transient(
                f"HTTP {resp.status}" + (f" error_code {code}" if code is not None else ""),
                retry_after=resp.retry_after,
                code=code,
                http_status=resp.status,
            )
        if 200 <= resp.status < 300:
            if body is _NOT_JSON:
                raise _Transient(
                    f"HTTP {resp.status} with a non-JSON body", http_status=resp.status, malformed=True
                )
            if not isinstance(body, dict):
                raise RunComfyProtocolError(
                    f"RunComfy answered HTTP {resp.status} with a JSON {type(body).__name__}, "
                    "expected an object",
                    http_status=resp.status,
                )
            if _has_error_code(body):
                raise self._map_error(resp.status, body)
            return body
        raise self._map_error(resp.status, body)

    def _raise_exhausted(self, method: str, path: str, attempts: int, exc: _Transient) -> NoReturn:
        if exc.malformed:
            raise RunComfyProtocolError(
                f"RunComfy {method} {path} returned a malformed body {attempts} times",
                http_status=exc.http_status,
            )
        raise RunComfyUnavailableError(
            self._safe(f"RunComfy {method} {path} failed after {attempts} attempts ({exc.reason})"),
            code=exc.code,
            http_status=exc.http_status,
        )

    def _parse_submission(self, resp: _Response) -> Submission:
        body = resp.body
        code = _parse_code(body.get("error_code")) if isinstance(body, dict) else None
        if resp.status >= 500 or code == CODE_SERVER_ERROR:
            message = self._server_message(body)
            raise SubmitOutcomeUnknown(
                self._safe(
                    f"RunComfy submit failed with HTTP {resp.status}"
                    + (f": {message}" if message else "")
                    + "; the job may or may not exist"
                ),
                code=code,
                http_status=resp.status,
            )
        if 200 <= resp.status < 300:
            if _has_error_code(body):
                raise self._map_error(resp.status, body)
            if not isinstance(body, dict):
                raise SubmitOutcomeUnknown(
                    f"RunComfy submit answered HTTP {resp.status} with an unreadable body; "
                    "the job may or may not exist",
                    http_status=resp.status,
                )
            request_id = body.get("request_id")
            if not isinstance(request_id, str):
                raise SubmitOutcomeUnknown(
                    f"RunComfy submit answered HTTP {resp.status} without a request_id; "
                    "the job may or may not exist",
                    http_status=resp.status,
                )
            try:
                _validate_request_id(request_id)
            except ValueError:
                raise SubmitOutcomeUnknown(
                    f"RunComfy submit answered HTTP {resp.status} with an invalid request_id; "
                    "the job may or may not exist",
                    http_status=resp.status,
                ) from None
            submission = Submission(
                request_id=request_id,
                status_url=_opt_str(body.get("status_url")),
                result_url=_opt_str(body.get("result_url")),
                cancel_url=_opt_str(body.get("cancel_url")),
            )
            log.info("RunComfy job submitted: request_id=%s", request_id)
            return submission
        raise self._map_error(resp.status, body)

    # ---------------------------------------------------------------- errors

    def _safe(self, text: str) -> str:
        """Remove the token (and any bearer credential) from a string."""
        if self._token and self._token in text:
            text = text.replace(self._token, "***")
        return _BEARER_RE.sub("Bearer ***", text)

    def _server_message(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return None
        for key in ("error_message", "message"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return _truncate(self._safe(value), _MAX_MESSAGE_CHARS)
        return None

    def _map_error(self, http_status: int, body: Any) -> RunComfyError:
        """Map an error response (any status, possibly non-JSON) to the exception hierarchy."""
        is_dict = isinstance(body, dict)
        code = _parse_code(body.get("error_code")) if is_dict else None
        message = self._server_message(body)
        detail = body.get("detail") if is_dict else None
        prefix = f"RunComfy error (HTTP {http_status}" + (f", code {code})" if code is not None else ")")

        def text(default: str) -> str:
            return f"{prefix}: {message or default}"

        if code == CODE_UNKNOWN_MODEL:
            return RunComfyModelError(text("unknown model"), code=code, http_status=http_status)
        if code == CODE_NO_BALANCE:
            return RunComfyBalanceError(text("insufficient balance"), code=code, http_status=http_status)
        if code == CODE_BAD_TOKEN:
            return RunComfyAuthError(text("invalid or expired API token"), code=code, http_status=http_status)
        if code == CODE_FORBIDDEN:
            return RunComfyForbiddenError(
                text("request belongs to another user"), code=code, http_status=http_status
            )
        if code == CODE_NOT_FOUND:
            return RunComfyNotFoundError(
                text("unknown or expired request"), code=code, http_status=http_status
            )
        if code == CODE_VALIDATION:
            return self._validation_error(prefix, message, detail, code, http_status)
        if code is None:
            if http_status in (401, 403):
                return RunComfyAuthError(
                    text("invalid or expired API token"), code=code, http_status=http_status
                )
            if http_status == 402:
                return RunComfyBalanceError(text("insufficient balance"), code=code, http_status=http_status)
            if http_status == 404:
                return RunComfyNotFoundError(
                    text("unknown or expired request"), code=code, http_status=http_status
                )
            if http_status == 422 or (http_status == 400 and detail is not None):
                return self._validation_error(prefix, message, detail, code, http_status)
            if not is_dict:
                return RunComfyProtocolError(
                    f"{prefix}: unexpected non-JSON response", code=code, http_status=http_status
                )
        return RunComfyError(text("unexpected error"), code=code, http_status=http_status)

    def _validation_error(
        self, prefix: str, message: str | None, detail: Any, code: int | None, http_status: int
    ) -> RunComfyValidationError:
        summary = _truncate(self._safe(_summarize_detail(detail)), _MAX_MESSAGE_CHARS)
        head = message or "invalid input"
        text = f"{prefix}: {head}" + (f" -- {summary}" if summary and summary != head else "")
        return RunComfyValidationError(text, code=code, http_status=http_status, detail=detail)

    # ---------------------------------------------------------------- backoff

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._backoff_cap)
        ceiling = min(self._backoff_cap, self._backoff_base * (2 ** (attempt - 1)))
        return self._rng.uniform(0.0, ceiling)

    async def _backoff(
        self, method: str, path: str, attempt: int, reason: str, retry_after: float | None
    ) -> None:
        delay = self._delay(attempt, retry_after)
        log.warning(
            "RunComfy %s %s failed (%s), attempt %d/%d; retrying in %.2fs",
            method,
            path,
            self._safe(reason),
            attempt,
            self._max_attempts,
            delay,
        )
        await self._sleep(delay)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The body, or b"" (unparseable) past MAX_BODY_BYTES: API answers are small JSON documents, so
    a runaway body is treated as garbage instead of being buffered."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)
