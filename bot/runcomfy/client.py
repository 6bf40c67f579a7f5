"""The RunComfy client: submit, status, result and cancel with the retry policy of bot.runcomfy."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn

import aiohttp

from bot import metrics
from bot.runcomfy._parse import (
    _BEARER_RE,
    _MAX_MESSAGE_CHARS,
    _NOT_JSON,
    _REQUEST_ID_RE,
    _has_error_code,
    _opt_int,
    _opt_str,
    _parse_code,
    _parse_retry_after,
    _render_error,
    _Response,
    _summarize_detail,
    _Transient,
    _truncate,
    _validate_request_id,
)
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
    _WORDS,
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    Phase,
    Submission,
)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024

DEFAULT_MODEL: Final = "wan-ai/wan-2-2/image-to-video"

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
