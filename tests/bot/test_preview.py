"""bot.preview.PreviewBackend: the free local backend that renders a labelled zoom/pan clip with PyAV.

Input images are generated here and served from a local aiohttp.web server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageChops, ImageDraw, ImageStat

from bot import preview
from bot.media import DownloadError, DownloadTooLarge, MediaError
from bot.preview import PREVIEW_SCHEME, PreviewBackend
from bot.runcomfy import (
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    RunComfyNotFoundError,
    RunComfyUnavailableError,
    RunComfyValidationError,
    Submission,
)

pytestmark = pytest.mark.timeout(15)


def _jpeg(width: int, height: int, *, plain: tuple[int, int, int] | None = None) -> bytes:
    """A textured test image (stripes + disc) so that zooming visibly changes the frames."""
    img = Image.new("RGB", (width, height), plain or (0, 0, 0))
    if plain is None:
        draw = ImageDraw.Draw(img)
        step = max(8, width // 16)
        for x in range(0, width, step):
            draw.rectangle(
                (x, 0, x + step // 2, height), fill=(x * 255 // width, 120, 255 - x * 255 // width)
            )
        draw.ellipse((width // 3, height // 3, 2 * width // 3, 2 * height // 3), fill=(255, 230, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


LANDSCAPE = _jpeg(1024, 768)
PORTRAIT = _jpeg(600, 1000)
WHITE = _jpeg(800, 600, plain=(255, 255, 255))


@dataclass
class Images:
    server: TestServer
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    gated_requests: int = 0

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def images() -> AsyncIterator[Images]:
    state: dict[str, Images] = {}

    def serve(body: bytes) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="image/jpeg")

        return handler

    async def gated(request: web.Request) -> web.Response:
        images = state["images"]
        images.gated_requests += 1
        await images.gate.wait()
        return web.Response(body=LANDSCAPE, content_type="image/jpeg")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such file")

    app = web.Application()
    app.router.add_get("/landscape.jpg", serve(LANDSCAPE))
    app.router.add_get("/portrait.jpg", serve(PORTRAIT))
    app.router.add_get("/white.jpg", serve(WHITE))
    app.router.add_get("/garbage.jpg", serve(b"this is not an image at all" * 10))
    app.router.add_get("/truncated.jpg", serve(LANDSCAPE[: len(LANDSCAPE) // 3]))
    app.router.add_get("/gated.jpg", gated)
    app.router.add_get("/missing.jpg", missing)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    state["images"] = Images(srv)
    try:
        yield state["images"]
    finally:
        state["images"].gate.set()
        await srv.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def make_backend(session: aiohttp.ClientSession) -> AsyncIterator[Callable[..., PreviewBackend]]:
    created: list[PreviewBackend] = []

    def factory(**kwargs: Any) -> PreviewBackend:
        opts: dict[str, Any] = {"queue_seconds": 0.0, "seconds": 1.0, "fps": 24}
        opts.update(kwargs)
        backend = PreviewBackend(session, **opts)
        created.append(backend)
        return backend

    yield factory
    for backend in created:
        await backend.close()


def params(url: str, **kwargs: Any) -> GenerationParams:
    return GenerationParams(prompt=kwargs.pop("prompt", "a gentle breeze"), img_url=url, **kwargs)


async def wait_status(
    backend: PreviewBackend, request_id: str, wanted: str, *, timeout: float = 8.0
) -> list[JobStatus]:
    """Poll status until it is ``wanted``; returns every status seen (in order, deduplicated)."""
    seen: list[JobStatus] = []
    deadline = time.monotonic() + timeout
    while True:
        status = await backend.status(request_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status.status == wanted:
            return seen
        assert time.monotonic() < deadline, f"still {status} after {timeout}s (seen {seen})"
        await asyncio.sleep(0.01)


def decode(data: bytes) -> tuple[str, list[Image.Image]]:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        return stream.codec_context.name, [_to_image(frame) for frame in container.decode(stream)]


def _to_image(frame: Any) -> Image.Image:
    image: Image.Image = frame.to_image()
    return image


def difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# ------------------------------------------------------------------------------------------ happy path


async def test_full_job_renders_a_moving_labelled_clip(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(queue_seconds=0.05, seconds=1.5, fps=20, max_side=640)
    submission = await backend.submit(params(images.url("/landscape.jpg")))
    assert isinstance(submission, Submission)
    assert len(submission.request_id) == 32 and int(submission.request_id, 16) >= 0

    seen = await wait_status(backend, submission.request_id, "completed")
    assert seen[0] == JobStatus(status="in_queue", queue_position=1)
    assert [s.status for s in seen] in (
        ["in_queue", "in_progress", "completed"],
        ["in_queue", "completed"],  # rendering finished between two polls
    )
    assert all(s.queue_position is None for s in seen[1:])

    result = await backend.result(submission.request_id)
    assert isinstance(result, JobResult)
    assert result.status == "succeeded"
    assert result.error is None
    assert result.video_urls == (f"preview://{submission.request_id}.mp4",)
    assert result.video_urls[0].startswith(f"{PREVIEW_SCHEME}://")
    assert result.created_at and result.finished_at

    data = await backend.fetch_output(result.video_urls[0], max_bytes=10_000_000)
    assert data[4:8] == b"ftyp"
    assert await backend.fetch_output(result.video_urls[0], max_bytes=len(data)) == data  # re-fetchable

    codec, frames = decode(data)
    assert codec in ("h264", "mpeg4")
    assert abs(len(frames) - 30) <= 1  # 1.5 s x 20 fps
    width, height = frames[0].size
    assert (width, height) == (640, 480)  # 4:3 source, 480P, within max_side
    assert width % 2 == 0 and height % 2 == 0
    assert difference(frames[0], frames[-1]) > 5, "the clip should visibly zoom/pan"
    assert difference(frames[0], frames[1]) < difference(frames[0], frames[-1])  # gentle, progressive


@pytest.mark.parametrize(
    ("path", "resolution", "max_side"),
    [
        ("/portrait.jpg", "480P", 640),
        ("/portrait.jpg", "1080P", 400),
        ("/landscape.jpg", "1080P", 1000),
    ],
)
async def test_dimensions_are_even_and_within_max_side(
    images: Images,
    make_backend: Callable[..., PreviewBackend],
    path: str,
    resolution: str,
    max_side: int,
) -> None:
    backend = make_backend(seconds=0.5, fps=12, max_side=max_side)
    submission = await backend.submit(params(images.url(path), resolution=resolution))
    await wait_status(backend, submission.request_id, "completed")
    result = await backend.result(submission.request_id)
    assert result.status == "succeeded", result.error
    _, frames = decode(await backend.fetch_output(result.video_urls[0], max_bytes=10_000_000))
    assert abs(len(frames) - 6) <= 1
    width, height = frames[0].size
    assert width % 2 == 0 and height % 2 == 0
    assert max(width, height) <= max_side
    if path == "/portrait.jpg":
        assert height > width
    else:
        assert width > height


async def test_preview_label_is_burnt_in(images: Images, make_backend: Callable[..., PreviewBackend]) -> None:
    backend = make_backend(seconds=0.25, fps=8)
    submission = await backend.submit(params(images.url("/white.jpg")))
    await wait_status(backend, submission.request_id, "completed")
    data = await backend.fetch_output(f"preview://{submission.request_id}.mp4", max_bytes=10_000_000)
    _, frames = decode(data)
    frame = frames[len(frames) // 2].convert("L")
    width, height = frame.size
    corner = frame.crop((width * 3 // 4, height * 7 // 8, width, height))
    rest = frame.crop((0, 0, width // 2, height // 2))
    assert ImageStat.Stat(rest).mean[0] > 240  # the white picture itself
    assert ImageStat.Stat(corner).extrema[0][0] < 128  # dark label box in the bottom-right corner


# ------------------------------------------------------------------------------------------ queueing


async def test_queue_positions_cancel_and_not_cancellable(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(max_concurrent=1, seconds=0.5, fps=12)
    first = await backend.submit(params(images.url("/gated.jpg")))
    second = await backend.submit(params(images.url("/landscape.jpg")))
    third = await backend.submit(params(images.url("/landscape.jpg")))

    # The first job takes the only slot (its image download is held open by the server).
    await wait_status(backend, first.request_id, "in_progress")
    assert await backend.status(second.request_id) == JobStatus("in_queue", 1)
    assert await backend.status(third.request_id) == JobStatus("in_queue", 2)
    assert (await backend.result(second.request_id)).status == "in_queue"

    running = await backend.cancel(first.request_id)
    assert running == CancelResult(status="in_progress", outcome="not_cancellable", cancelled=False)
    assert (await backend.result(first.request_id)).status == "in_progress"

    cancelled = await backend.cancel(second.request_id)
    assert cancelled == CancelResult(status="cancelled", outcome="cancelled", cancelled=True)
    assert await backend.cancel(second.request_id) == cancelled  # idempotent
    assert await backend.status(second.request_id) == JobStatus("cancelled", None)
    cancelled_result = await backend.result(second.request_id)
    assert (cancelled_result.status, cancelled_result.video_urls) == ("cancelled", ())
    assert await backend.status(third.request_id) == JobStatus("in_queue", 1)  # moved up

    images.gate.set()
    await wait_status(backend, first.request_id, "completed")
    await wait_status(backend, third.request_id, "completed")
    assert (await backend.result(first.request_id)).status == "succeeded"
    assert (await backend.result(third.request_id)).status == "succeeded"
    assert await backend.status(second.request_id) == JobStatus("cancelled", None)  # never ran
    done = await backend.cancel(third.request_id)
    assert (done.cancelled, done.outcome) == (False, "not_cancellable")
    with pytest.raises(DownloadError):
        await backend.fetch_output(f"preview://{second.request_id}.mp4", max_bytes=10_000_000)


async def test_queue_seconds_keeps_jobs_queued_and_cancellable(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(queue_seconds=30.0)
    submission = await backend.submit(params(images.url("/gated.jpg")))
    await asyncio.sleep(0.05)
    assert await backend.status(submission.request_id) == JobStatus("in_queue", 1)
    result = await backend.cancel(submission.request_id)
    assert result.cancelled
    await asyncio.sleep(0.05)
    assert images.gated_requests == 0  # the image was never downloaded


async def test_concurrency_limit_two(images: Images, make_backend: Callable[..., PreviewBackend]) -> None:
    backend = make_backend(max_concurrent=2, seconds=0.25, fps=8)
    jobs = [await backend.submit(params(images.url("/gated.jpg"))) for _ in range(3)]
    await wait_status(backend, jobs[0].request_id, "in_progress")
    await wait_status(backend, jobs[1].request_id, "in_progress")
    assert await backend.status(jobs[2].request_id) == JobStatus("in_queue", 1)
    images.gate.set()
    for job in jobs:
        await wait_status(backend, job.request_id, "completed")


# ------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/garbage.jpg", "could not be decoded"),
        ("/truncated.jpg", "could not be decoded"),
        ("/missing.jpg", "could not be downloaded"),
    ],
)
async def test_bad_image_fails_with_a_clear_error(
    images: Images, make_backend: Callable[..., PreviewBackend], path: str, expected: str
) -> None:
    backend = make_backend()
    submission = await backend.submit(params(images.url(path)))
    await wait_status(backend, submission.request_id, "completed")  # like RunComfy: /status says completed
    result = await backend.result(submission.request_id)
    assert result.status == "failed"
    assert result.video_urls == ()
    assert result.error is not None and expected in result.error
    assert "127.0.0.1" not in result.error
    with pytest.raises(DownloadError):
        await backend.fetch_output(f"preview://{submission.request_id}.mp4", max_bytes=10_000_000)


async def test_unreachable_image_host_fails(make_backend: Callable[..., PreviewBackend]) -> None:
    backend = make_backend()
    submission = await backend.submit(params("http://127.0.0.1:9/image.jpg"))
    await wait_status(backend, submission.request_id, "completed")
    result = await backend.result(submission.request_id)
    assert result.status == "failed"
    assert result.error is not None and "could not be downloaded" in result.error


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 801}, "prompt"),
        ({"negative_prompt": "x" * 501}, "negative_prompt"),
        ({"resolution": "720P"}, "resolution"),
        ({"resolution": "480p"}, "resolution"),
        ({"img_url": "ftp://example.com/a.jpg"}, "img_url"),
        ({"img_url": "file:///etc/passwd"}, "img_url"),
        ({"img_url": "not a url"}, "img_url"),
        ({"img_url": ""}, "img_url"),
        ({"duration": 10}, "duration"),
    ],
)
async def test_validation_errors(
    make_backend: Callable[..., PreviewBackend], changes: dict[str, Any], field_name: str
) -> None:
    backend = make_backend()
    base: dict[str, Any] = {"prompt": "waves", "img_url": "https://example.com/a.jpg"}
    base.update(changes)
    with pytest.raises(RunComfyValidationError) as info:
        await backend.submit(GenerationParams(**base))
    assert field_name in str(info.value)
    assert info.value.code == 422001
    assert any(item["loc"] == ["body", field_name] for item in info.value.detail)
    assert backend._jobs == {}  # nothing was queued


async def test_longest_prompt_and_1080p_are_accepted(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(queue_seconds=30.0)
    submission = await backend.submit(
        params(images.url("/landscape.jpg"), prompt="x" * 800, resolution="1080P", negative_prompt="y" * 500)
    )
    assert (await backend.status(submission.request_id)).status == "in_queue"


async def test_unknown_ids(make_backend: Callable[..., PreviewBackend]) -> None:
    backend = make_backend()
    for call in (backend.status, backend.result, backend.cancel):
        with pytest.raises(RunComfyNotFoundError):
            await call("0123456789abcdef0123456789abcdef")
        with pytest.raises(RunComfyNotFoundError):
            await call("../etc/passwd")
    with pytest.raises(DownloadError):
        await backend.fetch_output("preview://0123456789abcdef0123456789abcdef.mp4", max_bytes=1000)
    with pytest.raises(MediaError):
        await backend.fetch_output("https://example.com/video.mp4", max_bytes=1000)


async def test_fetch_output_respects_max_bytes(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(seconds=0.25, fps=8)
    submission = await backend.submit(params(images.url("/landscape.jpg")))
    await wait_status(backend, submission.request_id, "completed")
    url = (await backend.result(submission.request_id)).video_urls[0]
    with pytest.raises(DownloadTooLarge):
        await backend.fetch_output(url, max_bytes=100)


# ------------------------------------------------------------------------------------------ memory / shutdown


async def test_finished_jobs_are_bounded(
    images: Images, make_backend: Callable[..., PreviewBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview, "_MAX_FINISHED", 2)
    backend = make_backend(queue_seconds=30.0)
    ids = [(await backend.submit(params(images.url("/landscape.jpg")))).request_id for _ in range(3)]
    for request_id in ids:
        assert (await backend.cancel(request_id)).cancelled
    with pytest.raises(RunComfyNotFoundError):
        await backend.status(ids[0])  # oldest finished job dropped
    assert (await backend.status(ids[1])).status == "cancelled"
    assert (await backend.status(ids[2])).status == "cancelled"


async def test_fetched_videos_expire(
    images: Images, make_backend: Callable[..., PreviewBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview, "_FETCHED_TTL", 0.05)
    backend = make_backend(seconds=0.25, fps=8)
    submission = await backend.submit(params(images.url("/landscape.jpg")))
    await wait_status(backend, submission.request_id, "completed")
    url = (await backend.result(submission.request_id)).video_urls[0]
    await backend.fetch_output(url, max_bytes=10_000_000)
    await backend.fetch_output(url, max_bytes=10_000_000)  # still there right after the fetch
    await asyncio.sleep(0.1)
    with pytest.raises(DownloadError):
        await backend.fetch_output(url, max_bytes=10_000_000)
    with pytest.raises(RunComfyNotFoundError):
        await backend.result(submission.request_id)


async def test_close_cancels_background_work(
    images: Images, make_backend: Callable[..., PreviewBackend]
) -> None:
    backend = make_backend(max_concurrent=1)
    running = await backend.submit(params(images.url("/gated.jpg")))
    queued = await backend.submit(params(images.url("/landscape.jpg")))
    await wait_status(backend, running.request_id, "in_progress")
    await backend.close()
    tasks = [job.task for job in backend._jobs.values()]
    assert tasks and all(task is not None and task.done() for task in tasks)
    for request_id in (running.request_id, queued.request_id):
        result = await backend.result(request_id)
        assert result.status == "failed"
        assert result.error is not None and "shut down" in result.error
    with pytest.raises(RunComfyUnavailableError):
        await backend.submit(params(images.url("/landscape.jpg")))
    await backend.close()  # idempotent


async def test_constructor_rejects_nonsense(session: aiohttp.ClientSession) -> None:
    for kwargs in ({"max_concurrent": 0}, {"seconds": 0}, {"fps": 0}, {"max_side": 4}):
        with pytest.raises(ValueError):
            PreviewBackend(session, **kwargs)


async def test_mpeg4_fallback_without_libx264(
    images: Images, make_backend: Callable[..., PreviewBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview, "_codec", lambda: "mpeg4")
    backend = make_backend(seconds=0.5, fps=12)
    submission = await backend.submit(params(images.url("/landscape.jpg")))
    await wait_status(backend, submission.request_id, "completed")
    result = await backend.result(submission.request_id)
    assert result.status == "succeeded", result.error
    codec, frames = decode(await backend.fetch_output(result.video_urls[0], max_bytes=10_000_000))
    assert codec == "mpeg4"
    assert abs(len(frames) - 6) <= 1
    assert difference(frames[0], frames[-1]) > 5
