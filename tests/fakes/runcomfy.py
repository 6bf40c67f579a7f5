"""A fake RunComfy Model API server (aiohttp.web on 127.0.0.1, random port).

Faithful to /work/shared/runcomfy-wan-2-2-image-to-video.txt and runcomfy-api-notes.md:

* ``POST /v1/models/{model}``            submit (validates payload and, optionally, the image)
* ``GET  /v1/requests/{id}/status``      in_queue (+queue_position) / in_progress / completed / cancelled
* ``GET  /v1/requests/{id}/result``      succeeded / failed / in_queue / in_progress / cancelled
* ``POST /v1/requests/{id}/cancel``      202 {request_id, status, outcome}
* ``GET  /files/{id}.mp4``               the output video (no auth, like a pre-signed URL)
* ``GET  /uploads/{name}``               files registered with :meth:`FakeRunComfy.host_file` (test images)

Usage::

    async with FakeRunComfy() as fake:
        client = RunComfyClient(session, base_url=fake.base_url, token=fake.token)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import aiohttp
from aiohttp import web
from PIL import Image

KNOWN_MODEL = "wan-ai/wan-2-2/image-to-video"
ENDPOINTS = frozenset({"submit", "status", "result", "cancel", "video"})

# How the fake words its statuses (the docs, RunComfy's CLI and its notes disagree; the bot must accept
# them all). Per dialect: endpoint -> state -> word; a None word means "no status, only an `error`".
#   seed:  the seed document -- /status completed for success and failure, /result succeeded | failed
#   cli:   as RunComfy's CLI expects -- /result completed on success, /status failed on failure,
#          American "canceled", mixed case (IN_QUEUE, Completed)
#   terse: succeeded on both, and a failure is only an `error` field, with no status word at all
DIALECTS = ("seed", "cli", "terse")
_WORDS: dict[str, dict[str, dict[str, str | None]]] = {
    "seed": {
        "status": {
            "in_queue": "in_queue",
            "in_progress": "in_progress",
            "succeeded": "completed",
            "failed": "completed",
            "cancelled": "cancelled",
        },
        "result": {
            "in_queue": "in_queue",
            "in_progress": "in_progress",
            "succeeded": "succeeded",
            "failed": "failed",
            "cancelled": "cancelled",
        },
    },
    "cli": {
        "status": {
            "in_queue": "IN_QUEUE",
            "in_progress": "In_Progress",
            "succeeded": "Completed",
            "failed": "failed",
            "cancelled": "canceled",
        },
        "result": {
            "in_queue": "IN_QUEUE",
            "in_progress": "In_Progress",
            "succeeded": "completed",
            "failed": "Failed",
            "cancelled": "Canceled",
        },
    },
    "terse": {
        "status": {
            "in_queue": "in_queue",
            "in_progress": "in_progress",
            "succeeded": "succeeded",
            "failed": None,
            "cancelled": "cancelled",
        },
        "result": {
            "in_queue": "in_queue",
            "in_progress": "in_progress",
            "succeeded": "succeeded",
            "failed": None,
            "cancelled": "CANCELLED",
        },
    },
}
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE = 360
MAX_SIDE = 2000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP"})
SUPPORTED_TEXT = "JPEG, JPG, PNG (no alpha), BMP, WEBP"

# A tiny "mp4-ish" blob: ftyp box + free box + empty mdat. Not decodable, but sniffable as MP4.
DEFAULT_VIDEO_BYTES = (
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    + b"\x00\x00\x00\x08free"
    + b"\x00\x00\x00\x10mdat"
    + b"fake-video-data!"
)


@dataclass
class JobScript:
    """How a submitted job behaves. Times are seconds of loop time since the previous phase began."""

    queue_seconds: float | None = 0.2  # None = stays queued until fake.advance(request_id)
    run_seconds: float | None = 0.2  # None = stays in progress until advanced
    outcome: str = "succeeded"  # or "failed"
    error: Any = None  # error payload returned on a failed result (any JSON type)
    output_shape: str = "video"  # "video" (string), "videos" (list), or "none" (success without a video)
    video: bytes | None = None  # bytes served at the output URL; default fake.video_bytes
    video_status: int = 200  # e.g. 404 to make the output URL 404
    status_when_failed: str | None = None  # what /status says for a failed job (None: the dialect's word)
    initial_queue_position: int = 3
    unknown_status: str | None = None  # if set, /status reports this string while the job is running
    output_url: str | None = None  # the URL /result hands out instead of the fake's own /files/{id}.mp4
    dialect: str | None = None  # this job speaks another dialect than the fake's (None: fake.dialect)


@dataclass
class RecordedRequest:
    method: str
    path: str
    json: Any  # parsed JSON body, or None (no/invalid body)
    query: dict[str, str]
    authorized: bool
    at: float  # loop time when received
    endpoint: str | None = None  # "submit" | "status" | "result" | "cancel" | "video" | "upload" | None


@dataclass
class FakeJob:
    request_id: str
    model: str
    params: dict[str, Any]
    script: JobScript
    submitted_at: float  # loop time
    created_at: str  # ISO-8601 UTC
    phase: str = "in_queue"  # in_queue | in_progress | done | cancelled
    phase_started: float = 0.0
    finished_at: str | None = None
    status_calls: int = 0
    result_calls: int = 0
    cancel_calls: int = 0
    video_calls: int = 0

    @property
    def state(self) -> str:
        """in_queue | in_progress | succeeded | failed | cancelled (as of the last refresh)."""
        if self.phase == "done":
            return "failed" if self.script.outcome == "failed" else "succeeded"
        return self.phase


@dataclass
class _Fault:
    status: int
    body: Any
    raw: bytes | None
    times: int
    retry_after: str | None
    delay: float


def _now_iso(ago: float = 0.0) -> str:
    """Now (or `ago` seconds before now), as RunComfy writes times."""
    return (datetime.now(UTC) - timedelta(seconds=ago)).isoformat().replace("+00:00", "Z")


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, code: int | None, message: str, detail: Any = None) -> web.Response:
    body: dict[str, Any] = {"error_message": message}
    if code is not None:
        body["error_code"] = code
    if detail is not None:
        body["detail"] = detail
    return _json_response(body, status=status)


_DEFAULT_FAULT_BODIES: dict[int, dict[str, Any]] = {
    400: {"error_code": 400001, "error_message": "Bad request"},
    401: {"error_code": 400004, "error_message": "Invalid or expired token"},
    402: {"error_message": "Insufficient balance"},
    403: {"error_code": 403001, "error_message": "Request belongs to another user"},
    404: {"error_code": 404001, "error_message": "Request not found or expired"},
    422: {"error_code": 422001, "error_message": "Validation error", "detail": []},
    429: {"error_message": "Too many requests"},
    500: {"error_code": 500001, "error_message": "Internal server error"},
}


class FakeRunComfy:
    """In-process fake of the RunComfy Model API. See tests/fakes/README.md."""

    def __init__(
        self,
        token: str = "test-runcomfy-token",
        *,
        validate_images: bool = True,
        port: int = 0,
        dialect: str = "seed",
    ) -> None:
        self.token = token
        self.dialect = dialect
        self.port = port  # 0 = pick a free port; the real one is known after start()
        self.validate_images = validate_images
        self.default_script = JobScript()
        self.scripts: list[JobScript] = []
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[RecordedRequest] = []
        self.video_bytes: bytes = DEFAULT_VIDEO_BYTES
        self.balance: int | None = None
        self.hosted: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, tuple[str, int]] = {}
        self.url = ""
        self.base_url = ""
        self._faults: dict[str, deque[_Fault]] = {name: deque() for name in ENDPOINTS}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Event | None = None
        self._ids = itertools.count(1)

    @property
    def dialect(self) -> str:
        """Which wording the fake speaks (see DIALECTS); may be changed at any time."""
        return self._dialect

    @dialect.setter
    def dialect(self, value: str) -> None:
        if value not in DIALECTS:
            raise ValueError(f"unknown dialect {value!r}; expected one of {DIALECTS}")
        self._dialect = value

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post("/v1/models/{model:.*}", self._handle_submit)
        app.router.add_get("/v1/requests/{request_id}/status", self._handle_status)
        app.router.add_get("/v1/requests/{request_id}/result", self._handle_result)
        app.router.add_post("/v1/requests/{request_id}/cancel", self._handle_cancel)
        app.router.add_get("/files/{request_id}.mp4", self._handle_video)
        app.router.add_get("/uploads/{name}", self._handle_upload)
        app.router.add_get("/redirect/{name}", self._handle_redirect)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = runner.addresses[0][1]
        self.port = port
        self._runner = runner
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self,
        endpoint: str,
        status: int,
        *,
        body: Any = None,
        raw: bytes | None = None,
        times: int = 1,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` calls to ``endpoint`` misbehave.

        ``status`` 0 means "wait ``delay`` seconds, then run the real handler" (slow response).
        Otherwise the fake waits ``delay`` seconds and answers ``status`` with ``raw`` bytes, or ``body``
        as JSON, or a contract-like default error body for that status. ``retry_after`` sets the
        Retry-After header. Faults queue up FIFO per endpoint.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults[endpoint].append(_Fault(status, body, raw, times, retry_after, delay))

    def clear_faults(self) -> None:
        for queue in self._faults.values():
            queue.clear()

    def advance(self, request_id: str) -> None:
        """Move a job to its next state (in_queue -> in_progress -> finished)."""
        job = self.jobs[request_id]
        now = self._loop_time()
        self._refresh(job, now)
        if job.phase == "in_queue":
            job.phase, job.phase_started = "in_progress", now
        elif job.phase == "in_progress":
            job.phase, job.phase_started = "done", now
            job.finished_at = _now_iso()

    def status_calls(self, request_id: str) -> int:
        return self.jobs[request_id].status_calls

    def job_state(self, request_id: str) -> str:
        """Current state: in_queue | in_progress | succeeded | failed | cancelled."""
        job = self.jobs[request_id]
        self._refresh(job, self._loop_time())
        return job.state

    def host_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at ``{url}/uploads/{name}`` (e.g. input images for img_url); returns the URL."""
        self.hosted[name] = (data, content_type)
        return f"{self.url}/uploads/{name}"

    def redirect(self, name: str, location: str, status: int = 302) -> str:
        """Serve a ``status`` redirect to ``location`` at ``{url}/redirect/{name}``; returns that URL."""
        self.redirects[name] = (location, status)
        return f"{self.url}/redirect/{name}"

    def output_url(self, request_id: str) -> str:
        """The URL /result hands out for this job (``script.output_url``, else the fake's own file)."""
        job = self.jobs.get(request_id)
        if job is not None and job.script.output_url is not None:
            return job.script.output_url
        return f"{self.url}/files/{request_id}.mp4"

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint]

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    def _refresh(self, job: FakeJob, now: float) -> None:
        script = job.script
        if job.phase == "in_queue" and script.queue_seconds is not None:
            end = job.phase_started + script.queue_seconds
            if now >= end:
                job.phase, job.phase_started = "in_progress", end
        if job.phase == "in_progress" and script.run_seconds is not None:
            end = job.phase_started + script.run_seconds
            if now >= end:
                job.phase, job.phase_started = "done", end
                # When the job finished, as RunComfy reports it -- not when somebody next asked.
                job.finished_at = _now_iso(ago=now - end)

    def _queue_position(self, job: FakeJob, now: float) -> int:
        initial = max(1, job.script.initial_queue_position)
        qs = job.script.queue_seconds
        if qs is None or qs <= 0:
            return initial
        remaining = max(0.0, 1.0 - (now - job.phase_started) / qs)
        return max(1, math.ceil(initial * remaining))

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, returning early when the fake is closing."""
        if delay <= 0:
            return
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=delay)

    async def _record(self, request: web.Request, endpoint: str | None) -> RecordedRequest:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        auth = request.headers.get("Authorization", "")
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            json=body,
            query=dict(request.query),
            authorized=auth == f"Bearer {self.token}",
            at=self._loop_time(),
            endpoint=endpoint,
        )
        self.requests.append(rec)
        return rec

    async def _fault(self, endpoint: str) -> web.StreamResponse | None:
        """Apply a queued fault, if any. Returns a response to send, or None to run the real handler."""
        queue = self._faults[endpoint]
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        await self._wait(fault.delay)
        if fault.status == 0:
            return None
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.raw is not None:
            return web.Response(
                body=fault.raw, status=fault.status, content_type="application/json", headers=headers
            )
        body = fault.body
        if body is None:
            body = _DEFAULT_FAULT_BODIES.get(fault.status, {"error_message": f"HTTP {fault.status}"})
        return _json_response(body, status=fault.status, headers=headers)

    def _unauthorized(self) -> web.Response:
        return _error(401, 400004, "Invalid or expired API token")

    def _lookup(self, request: web.Request) -> FakeJob | web.Response:
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return _error(404, 404001, "Request not found or expired")
        self._refresh(job, self._loop_time())
        return job

    def _status_string(self, job: FakeJob) -> str | None:
        state = job.state
        if state in ("in_queue", "in_progress") and job.script.unknown_status is not None:
            return job.script.unknown_status
        if state == "failed" and job.script.status_when_failed is not None:
            return job.script.status_when_failed
        return _WORDS[self._dialect_of(job)]["status"][state]

    def _dialect_of(self, job: FakeJob) -> str:
        dialect = job.script.dialect or self.dialect
        if dialect not in _WORDS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
        return dialect

    def _failure_error(self, job: FakeJob) -> Any:
        """The `error` a failed job carries; a dialect without a failure word always sends one."""
        if job.script.error is not None:
            return job.script.error
        return None if _WORDS[self._dialect_of(job)]["result"]["failed"] else {"message": "generation failed"}

    def _job_urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.base_url}/requests/{request_id}"
        return {
            "status_url": f"{base}/status",
            "result_url": f"{base}/result",
            "cancel_url": f"{base}/cancel",
        }

    # ------------------------------------------------------------------ handlers

    async def _handle_submit(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "submit")
        if (fault := await self._fault("submit")) is not None:
            return fault
        if not rec.authorized:
            return self._unauthorized()
        model = request.match_info["model"].strip("/")
        if model != KNOWN_MODEL:
            return _error(400, 400001, f"Unknown model: {model}")
        payload = rec.json
        if not isinstance(payload, dict):
            return _error(
                422,
                422001,
                "Validation error",
                [{"loc": ["body"], "msg": "Request body must be a JSON object"}],
            )
        problems = self._validate_payload(payload)
        if not problems and self.validate_images:
            problems = await self._validate_image(payload["img_url"])
        if problems:
            return _error(422, 422001, problems[0]["msg"], problems)
        if self.balance is not None:
            if self.balance <= 0:
                return _error(400, 400002, "Insufficient balance")
            self.balance -= 1
        script = self.scripts.pop(0) if self.scripts else self.default_script
        request_id = f"{uuid.uuid4()}-{next(self._ids)}"
        now = self._loop_time()
        self.jobs[request_id] = FakeJob(
            request_id=request_id,
            model=model,
            params=dict(payload),
            script=script,
            submitted_at=now,
            created_at=_now_iso(),
            phase_started=now,
        )
        return _json_response({"request_id": request_id, **self._job_urls(request_id)})

    @staticmethod
    def _validate_payload(payload: dict[str, Any]) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []

        def bad(name: str, msg: str) -> None:
            problems.append({"loc": ["body", name], "msg": msg})

        prompt = payload.get("prompt")
        if prompt is None:
            bad("prompt", "Field required")
        elif not isinstance(prompt, str):
            bad("prompt", "Input should be a valid string")
        elif len(prompt) > 800:
            bad("prompt", "String should have at most 800 characters")
        negative = payload.get("negative_prompt")
        if negative is not None:
            if not isinstance(negative, str):
                bad("negative_prompt", "Input should be a valid string")
            elif len(negative) > 500:
                bad("negative_prompt", "String should have at most 500 characters")
        img_url = payload.get("img_url")
        if img_url is None:
            bad("img_url", "Field required")
        elif not isinstance(img_url, str) or not img_url.strip():
            bad("img_url", "Input should be a valid URL string")
        if "resolution" in payload and payload["resolution"] not in ("480P", "1080P"):
            bad("resolution", "Input should be '480P' or '1080P'")
        if "duration" in payload and (isinstance(payload["duration"], bool) or payload["duration"] != 5):
            bad("duration", "Input should be 5")
        if "prompt_extend" in payload and not isinstance(payload["prompt_extend"], bool):
            bad("prompt_extend", "Input should be a valid boolean")
        if "seed" in payload and (isinstance(payload["seed"], bool) or not isinstance(payload["seed"], int)):
            bad("seed", "Input should be a valid integer")
        if "template" in payload and not isinstance(payload["template"], str):
            bad("template", "Input should be a valid string")
        return problems

    async def _validate_image(self, img_url: str) -> list[dict[str, Any]]:
        def bad(msg: str) -> list[dict[str, Any]]:
            return [{"loc": ["body", "img_url"], "msg": msg}]

        assert self._session is not None
        try:
            async with self._session.get(img_url) as resp:
                if resp.status != 200:
                    return bad(f"Could not download the image (HTTP {resp.status}).")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= MAX_IMAGE_BYTES:
                        break
                data = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return bad("Could not download the image.")
        if len(data) >= MAX_IMAGE_BYTES:
            return bad("File size must be less than 10 MB.")
        try:
            fmt, mode, has_transparency, (width, height) = await asyncio.to_thread(_inspect_image, data)
        except Exception:
            return bad(
                "Unsupported or corrupt image. Supported formats: JPEG, JPG, PNG (no alpha), BMP, WEBP."
            )
        if fmt not in ALLOWED_FORMATS:
            return bad(f"Unsupported image format {fmt}. Supported formats: {SUPPORTED_TEXT}.")
        if fmt == "PNG" and (mode in ("RGBA", "LA", "PA", "RGBa", "La") or has_transparency):
            return bad("PNG images with an alpha channel are not supported.")
        if width > MAX_SIDE or height > MAX_SIDE:
            return bad("The uploaded image width and height must not exceed 2000 pixels.")
        if width < MIN_SIDE or height < MIN_SIDE:
            return bad("The uploaded image width and height must be at least 360 pixels.")
        return []

    async def _handle_status(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "status")
        if (fault := await self._fault("status")) is not None:
            return fault
        if not rec.authorized:
            return self._unauthorized()
        job = self._lookup(request)
        if isinstance(job, web.Response):
            return job
        job.status_calls += 1
        body: dict[str, Any] = {"request_id": job.request_id}
        word = self._status_string(job)
        if word is not None:
            body["status"] = word
        else:
            body["error"] = self._failure_error(job)
        if job.state == "in_queue":
            body["queue_position"] = self._queue_position(job, self._loop_time())
        urls = self._job_urls(job.request_id)
        body["status_url"] = urls["status_url"]
        body["result_url"] = urls["result_url"]
        return _json_response(body)

    async def _handle_result(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "result")
        if (fault := await self._fault("result")) is not None:
            return fault
        if not rec.authorized:
            return self._unauthorized()
        job = self._lookup(request)
        if isinstance(job, web.Response):
            return job
        job.result_calls += 1
        state = job.state
        body: dict[str, Any] = {"request_id": job.request_id}
        word = _WORDS[self._dialect_of(job)]["result"][state]
        if word is not None:
            body["status"] = word
        body["created_at"] = job.created_at
        body["finished_at"] = job.finished_at
        if state == "succeeded" and job.script.output_shape != "none":
            url = self.output_url(job.request_id)
            body["output"] = {"videos": [url]} if job.script.output_shape == "videos" else {"video": url}
        elif state == "failed" and (error := self._failure_error(job)) is not None:
            body["error"] = error
        return _json_response(body)

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "cancel")
        if (fault := await self._fault("cancel")) is not None:
            return fault
        if not rec.authorized:
            return self._unauthorized()
        job = self._lookup(request)
        if isinstance(job, web.Response):
            return job
        job.cancel_calls += 1
        cancelled = "canceled" if self._dialect_of(job) == "cli" else "cancelled"
        if job.phase == "in_queue":
            job.phase, job.phase_started = "cancelled", self._loop_time()
            job.finished_at = _now_iso()
            outcome = cancelled
        elif job.phase == "cancelled":
            outcome = cancelled
        else:
            outcome = "not_cancellable"
        return _json_response(
            {"request_id": job.request_id, "status": self._status_string(job), "outcome": outcome},
            status=202,
        )

    async def _handle_video(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "video")
        if (fault := await self._fault("video")) is not None:
            return fault
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return web.Response(status=404, text="Not Found")
        self._refresh(job, self._loop_time())
        if job.state != "succeeded":
            return web.Response(status=404, text="Not Found")
        job.video_calls += 1
        if job.script.video_status != 200:
            return web.Response(status=job.script.video_status, text=f"HTTP {job.script.video_status}")
        data = job.script.video if job.script.video is not None else self.video_bytes
        return web.Response(body=data, content_type="video/mp4")

    async def _handle_redirect(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "redirect")
        entry = self.redirects.get(request.match_info["name"])
        if entry is None:
            return web.Response(status=404, text="Not Found")
        location, status = entry
        return web.Response(status=status, headers={"Location": location})

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, "upload")
        entry = self.hosted.get(request.match_info["name"])
        if entry is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = entry
        return web.Response(body=data, content_type=content_type)


def _inspect_image(data: bytes) -> tuple[str, str, bool, tuple[int, int]]:
    """(format, mode, has_transparency, size); raises on undecodable data. Runs in a worker thread."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format or ""
        mode = img.mode
        size = img.size
        has_transparency = "transparency" in img.info
        img.load()
    return fmt, mode, has_transparency, size


def make_image(
    width: int = 640,
    height: int = 480,
    fmt: str = "PNG",
    mode: str = "RGB",
    color: int | tuple[int, ...] = (200, 100, 50),
) -> bytes:
    """Encode a solid-colour test image (handy for ``FakeRunComfy.host_file``)."""
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format=fmt)
    return buf.getvalue()
