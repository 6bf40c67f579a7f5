"""A free, local "preview" video backend (``BACKEND=preview``).

:class:`PreviewBackend` has the same async interface and return types as
:class:`bot.runcomfy.RunComfyClient` (``submit``/``status``/``result``/``cancel``), but instead of calling a
paid API it downloads the image and renders a short, clearly labelled "PREVIEW" clip from it: a gentle
Ken Burns zoom and pan, encoded as H.264 (or MPEG-4 Part 2 when libx264 is missing) yuv420p MP4 with PyAV.
No token, no network beyond fetching the image, so admins can try the whole bot for free.

Lifecycle of a job (mirrors the real API so the engine needs no special cases):

* ``in_queue`` (with a 1-based ``queue_position``) for at least ``queue_seconds`` and while waiting for one of
  the ``max_concurrent`` render slots -- cancellable;
* ``in_progress`` while the image is downloaded and rendered -- ``cancel`` answers ``not_cancellable``;
* ``completed`` on /status, then ``succeeded`` (``video_urls=("preview://{id}.mp4",)``) or ``failed`` (with
  a readable ``error``) on /result; or ``cancelled``.

The finished video lives only in memory: fetch it with :meth:`PreviewBackend.fetch_output`, which replaces
the HTTP download for ``preview://`` URLs and raises the same :class:`bot.media.MediaError` subclasses as
:func:`bot.media.download_capped`. At most ``_MAX_FINISHED`` finished jobs are kept (oldest dropped first),
and a fetched video is dropped ``_FETCHED_TTL`` seconds after its first fetch. Forgotten (and unknown)
request ids raise :class:`RunComfyNotFoundError`, exactly like an expired RunComfy request. Jobs do not
survive a restart.

Rendering is CPU-bound and runs in a worker thread (``asyncio.to_thread``); nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import aiohttp
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from yarl import URL

from bot.i18n import Msg
from bot.media import MAX_PIXELS, DownloadError, DownloadTooLarge, MediaError, download_capped
from bot.runcomfy import (
    CODE_NOT_FOUND,
    CODE_VALIDATION,
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    RunComfyNotFoundError,
    RunComfyUnavailableError,
    RunComfyValidationError,
    Submission,
)

__all__ = ["PREVIEW_SCHEME", "PreviewBackend"]

log = logging.getLogger(__name__)

PREVIEW_SCHEME: Final = "preview"
MAX_IMAGE_DOWNLOAD: Final = 20 * 1024 * 1024
PROMPT_MAX: Final = 800
NEGATIVE_MAX: Final = 500
RESOLUTIONS: Final = ("480P", "1080P")
DURATIONS: Final = (5,)
#: Short side of the clip per requested resolution (always further capped by ``max_side``).
_SHORT_SIDE: Final[dict[str, int]] = {"480P": 480, "1080P": 720}
_DOWNLOAD_TIMEOUT: Final = 60.0
_MAX_FINISHED: Final = 50
_FETCHED_TTL: Final = 600.0
_ZOOM_END: Final = 1.12
_PAN: Final = 0.04  # share of the frame the centre drifts over the clip
_LABEL: Final = "PREVIEW"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _validation_error(problems: list[tuple[str, str]]) -> RunComfyValidationError:
    detail = [{"loc": ["body", name], "msg": msg} for name, msg in problems]
    summary = "; ".join(f"{name}: {msg}" for name, msg in problems)
    return RunComfyValidationError(
        f"Preview backend rejected the input: {summary}", code=CODE_VALIDATION, detail=detail
    )


def _validate(params: GenerationParams) -> None:
    """Raise RunComfyValidationError for input the real API would reject (schema checks only)."""
    problems: list[tuple[str, str]] = []
    prompt: Any = params.prompt
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(("prompt", "Field required"))
    elif len(prompt) > PROMPT_MAX:
        problems.append(("prompt", f"String should have at most {PROMPT_MAX} characters"))
    negative: Any = params.negative_prompt
    if negative is not None and (not isinstance(negative, str) or len(negative) > NEGATIVE_MAX):
        problems.append(("negative_prompt", f"String should have at most {NEGATIVE_MAX} characters"))
    img_url: Any = params.img_url
    try:
        parsed = URL(img_url) if isinstance(img_url, str) and img_url.strip() else None
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        problems.append(("img_url", "Input should be a valid http(s) URL"))
    if params.resolution not in RESOLUTIONS:
        problems.append(("resolution", "Input should be '480P' or '1080P'"))
    duration: Any = params.duration
    if isinstance(duration, bool) or duration not in DURATIONS:
        problems.append(("duration", "Input should be 5"))
    seed: Any = params.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(("seed", "Input should be a valid integer"))
    if problems:
        raise _validation_error(problems)


class _RenderError(Exception):
    """The image could not be turned into a clip; ``str(e)`` is safe to show to users."""


# --------------------------------------------------------------------------------------------------------
# Rendering (runs in a worker thread; pure functions of their arguments)
# --------------------------------------------------------------------------------------------------------


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _fit(width: int, height: int, short_side: int, max_side: int) -> tuple[int, int]:
    """Output size: short side ~``short_side``, long side <= ``max_side``, both even."""
    scale = min(short_side / min(width, height), max_side / max(width, height))
    return min(_even(width * scale), _even(max_side)), min(_even(height * scale), _even(max_side))


def _load_image(data: bytes, short_side: int, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data``; return the working image (clip size x the final zoom) and the clip size."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                raise _RenderError(
                    Msg("the image is too large to decode ({width}x{height} px)", width=width, height=height)
                )
            # JPEG: decode at a reduced scale when the source is much bigger than the clip.
            im.draft("RGB", (max_side * 2, max_side * 2))
            im.load()
            img = ImageOps.exif_transpose(im)
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, (255, 255, 255))
                img.paste(rgba, mask=rgba.getchannel("A"))
            else:
                img = img.convert("RGB")
    except _RenderError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise _RenderError(Msg("the file is not a readable image")) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _RenderError(Msg("the image is damaged or incomplete and could not be decoded")) from exc
    out_w, out_h = _fit(img.width, img.height, short_side, max_side)
    # Keep a little more resolution than the final zoom needs so the zoomed-in frames stay sharp.
    work = (math.ceil(out_w * _ZOOM_END), math.ceil(out_h * _ZOOM_END))
    return img.resize(work, Image.Resampling.LANCZOS, reducing_gap=3.0), (out_w, out_h)


def _label_overlay(height: int) -> Image.Image:
    size = max(10, height // 18)
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont
    try:
        font = ImageFont.load_default(size=size)
    except (OSError, TypeError, AttributeError):  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), _LABEL, font=font)
    pad = max(3, size // 3)
    box = (math.ceil(right - left) + 2 * pad, math.ceil(bottom - top) + 2 * pad)
    overlay = Image.new("RGBA", box, (0, 0, 0, 170))
    ImageDraw.Draw(overlay).text((pad - left, pad - top), _LABEL, font=font, fill=(255, 255, 255, 235))
    return overlay


def _ease(t: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * t)


def _codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _render_clip(
    data: bytes, *, resolution: str, seconds: float, fps: int, max_side: int, seed: int | None
) -> bytes:
    """Decode ``data`` and return a labelled Ken Burns MP4 of ``seconds`` at ``fps``. CPU-bound."""
    import av

    short_side = min(_SHORT_SIDE.get(resolution, 480), max_side)
    source, (out_w, out_h) = _load_image(data, short_side, max_side)
    overlay = _label_overlay(out_h)
    margin = max(4, out_h // 40)
    label_pos = (out_w - overlay.width - margin, out_h - overlay.height - margin)
    frames = max(2, round(seconds * fps))

    # Pan direction: deterministic per seed, otherwise a fixed gentle drift to the upper right.
    angle = (seed % 360) * math.pi / 180 if seed is not None else -math.pi / 5
    src_w, src_h = source.size
    drift_x, drift_y = math.cos(angle) * _PAN * src_w, math.sin(angle) * _PAN * src_h

    from_image: Any = av.VideoFrame.from_image  # untyped in PyAV's stubs
    codec = _codec()
    options = {"preset": "veryfast", "crf": "23"} if codec == "libx264" else {}
    with tempfile.TemporaryDirectory(prefix="preview_") as tmp:
        path = os.path.join(tmp, "preview.mp4")  # +faststart rewrites the file, so use a real one
        with av.open(path, "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            stream: Any = out.add_stream(codec, rate=Fraction(fps))
            stream.width = out_w
            stream.height = out_h
            stream.pix_fmt = "yuv420p"
            stream.options = options
            if codec != "libx264":
                stream.bit_rate = 2_000_000
            stream.codec_context.time_base = Fraction(1, fps)
            for index in range(frames):
                t = _ease(index / (frames - 1))
                zoom = 1.0 + (_ZOOM_END - 1.0) * t
                box_w, box_h = src_w / zoom, src_h / zoom
                cx = src_w / 2 + drift_x * (t - 0.5)
                cy = src_h / 2 + drift_y * (t - 0.5)
                left = min(max(0.0, cx - box_w / 2), src_w - box_w)
                top = min(max(0.0, cy - box_h / 2), src_h - box_h)
                frame_img = source.resize(
                    (out_w, out_h),
                    Image.Resampling.BILINEAR,
                    box=(left, top, left + box_w, top + box_h),
                )
                frame_img.paste(overlay, label_pos, overlay)
                frame = from_image(frame_img).reformat(format="yuv420p")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return Path(path).read_bytes()


# --------------------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    request_id: str
    params: GenerationParams
    seq: int
    created_at: str
    state: str = "in_queue"  # in_queue | in_progress | completed | cancelled
    outcome: str | None = None  # succeeded | failed (once completed)
    error: str | None = None
    video: bytes | None = None
    finished_at: str | None = None
    finished_mono: float | None = None
    fetched_mono: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class PreviewBackend:
    """Local stand-in for :class:`RunComfyClient` that renders a labelled zoom/pan preview clip.

    The ``session`` (used only to download the input image) is owned by the caller. Call :meth:`close`
    on shutdown to cancel background work.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        queue_seconds: float = 1.0,
        max_concurrent: int = 1,
        seconds: float = 3.0,
        fps: int = 24,
        max_side: int = 640,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if not seconds > 0 or not math.isfinite(seconds):
            raise ValueError("seconds must be positive")
        if fps < 1:
            raise ValueError("fps must be >= 1")
        if max_side < 16:
            raise ValueError("max_side must be >= 16")
        self._session = session
        self._queue_seconds = max(0.0, queue_seconds)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._seconds = seconds
        self._fps = fps
        self._max_side = max_side
        self._jobs: dict[str, _Job] = {}
        self._seq = itertools.count()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"PreviewBackend(seconds={self._seconds}, fps={self._fps}, max_side={self._max_side}, "
            f"jobs={len(self._jobs)})"
        )

    # ---------------------------------------------------------------- public API (RunComfyClient-like)

    async def submit(self, params: GenerationParams) -> Submission:
        if self._closed:
            raise RunComfyUnavailableError("The preview backend is shut down")
        _validate(params)
        self._prune()
        request_id = uuid.uuid4().hex
        job = _Job(request_id=request_id, params=params, seq=next(self._seq), created_at=_now_iso())
        self._jobs[request_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"preview-{request_id}")
        log.info("Preview job submitted: request_id=%s resolution=%s", request_id, params.resolution)
        return Submission(request_id=request_id, status_url=None, result_url=None, cancel_url=None)

    async def status(self, request_id: str) -> JobStatus:
        job = self._get(request_id)
        position = self._queue_position(job) if job.state == "in_queue" else None
        return JobStatus(status=job.state, queue_position=position)

    async def result(self, request_id: str) -> JobResult:
        job = self._get(request_id)
        if job.state == "completed":
            succeeded = job.outcome == "succeeded"
            return JobResult(
                status="succeeded" if succeeded else "failed",
                video_urls=(self._video_url(job.request_id),) if succeeded else (),
                error=None if succeeded else job.error,
                created_at=job.created_at,
                finished_at=job.finished_at,
            )
        return JobResult(
            status=job.state,
            video_urls=(),
            error=None,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )

    async def cancel(self, request_id: str) -> CancelResult:
        job = self._get(request_id)
        if job.state == "in_queue":
            self._finish(job, "cancelled")
            if job.task is not None:
                job.task.cancel()
            log.info("Preview job cancelled while queued: request_id=%s", request_id)
            return CancelResult(status="cancelled", outcome="cancelled", cancelled=True)
        if job.state == "cancelled":
            return CancelResult(status="cancelled", outcome="cancelled", cancelled=True)
        return CancelResult(status=job.state, outcome="not_cancellable", cancelled=False)

    async def fetch_output(self, url: str, max_bytes: int) -> bytes:
        """The MP4 behind a ``preview://{request_id}.mp4`` URL (instead of an HTTP download).

        Raises like :func:`bot.media.download_capped`: :class:`DownloadTooLarge` over ``max_bytes``,
        :class:`DownloadError` for an unknown/expired id, :class:`MediaError` for a non-preview URL.
        """
        prefix, suffix = f"{PREVIEW_SCHEME}://", ".mp4"
        if not (url.startswith(prefix) and url.endswith(suffix)):
            raise MediaError("That isn't a preview video link.")
        request_id = url[len(prefix) : -len(suffix)]
        self._prune()
        job = self._jobs.get(request_id)
        if job is None or job.video is None:
            raise DownloadError("The preview video is no longer available.")
        if len(job.video) > max_bytes:
            raise DownloadTooLarge(
                "The file is too large (over {limit}).", limit=f"{max_bytes / 1_000_000:g} MB"
            )
        if job.fetched_mono is None:
            job.fetched_mono = time.monotonic()
        return job.video

    async def close(self) -> None:
        """Cancel all background work; later submits raise RunComfyUnavailableError."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._jobs.values():
            if job.state in ("in_queue", "in_progress"):
                self._finish(
                    job, "completed", outcome="failed", error=Msg("The preview backend was shut down.")
                )

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _video_url(request_id: str) -> str:
        return f"{PREVIEW_SCHEME}://{request_id}.mp4"

    def _get(self, request_id: str) -> _Job:
        self._prune()
        job = self._jobs.get(request_id) if isinstance(request_id, str) else None
        if job is None:
            raise RunComfyNotFoundError(
                "Preview error: unknown or expired request", code=CODE_NOT_FOUND, http_status=404
            )
        return job

    def _queue_position(self, job: _Job) -> int:
        return 1 + sum(
            1 for other in self._jobs.values() if other.state == "in_queue" and other.seq < job.seq
        )

    def _finish(self, job: _Job, state: str, *, outcome: str | None = None, error: str | None = None) -> None:
        job.state = state
        job.outcome = outcome
        job.error = error
        job.finished_at = _now_iso()
        job.finished_mono = time.monotonic()

    def _prune(self) -> None:
        """Forget fetched videos after _FETCHED_TTL and keep at most _MAX_FINISHED finished jobs."""
        now = time.monotonic()
        for rid in [
            rid
            for rid, job in self._jobs.items()
            if job.fetched_mono is not None and now - job.fetched_mono > _FETCHED_TTL
        ]:
            del self._jobs[rid]
        finished = [job for job in self._jobs.values() if job.finished_mono is not None]
        if len(finished) > _MAX_FINISHED:
            finished.sort(key=lambda job: (job.finished_mono or 0.0, job.seq))
            for job in finished[: len(finished) - _MAX_FINISHED]:
                del self._jobs[job.request_id]

    async def _run(self, job: _Job) -> None:
        try:
            if self._queue_seconds:
                await asyncio.sleep(self._queue_seconds)
            async with self._slots:
                if job.state != "in_queue":  # cancelled just before the slot was granted
                    return
                job.state = "in_progress"
                log.info("Preview job started: request_id=%s", job.request_id)
                started = time.monotonic()
                outcome, video, error = await self._produce(job.params)
            job.video = video
            self._finish(job, "completed", outcome=outcome, error=error)
            self._prune()
            if video is not None:
                log.info(
                    "Preview job finished: request_id=%s, %d bytes in %.2fs",
                    job.request_id,
                    len(video),
                    time.monotonic() - started,
                )
            else:
                log.info("Preview job failed: request_id=%s: %s", job.request_id, error)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - defensive: never leave a job stuck in progress
            log.exception("Preview job crashed: request_id=%s", job.request_id)
            self._finish(job, "completed", outcome="failed", error=Msg("The preview could not be rendered."))

    async def _produce(self, params: GenerationParams) -> tuple[str, bytes | None, str | None]:
        try:
            data = await download_capped(
                self._session, params.img_url, max_bytes=MAX_IMAGE_DOWNLOAD, timeout=_DOWNLOAD_TIMEOUT
            )
        except MediaError as exc:
            return "failed", None, Msg("The image could not be downloaded: {reason}", reason=exc.user_message)
        try:
            video = await asyncio.to_thread(
                _render_clip,
                data,
                resolution=params.resolution,
                seconds=self._seconds,
                fps=self._fps,
                max_side=self._max_side,
                seed=params.seed,
            )
        except _RenderError as exc:
            reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
            return "failed", None, Msg("The image could not be decoded: {reason}.", reason=reason)
        except Exception as exc:
            log.warning("Preview render failed: %r", exc)
            return "failed", None, Msg("The preview could not be rendered.")
        return "succeeded", video, None
