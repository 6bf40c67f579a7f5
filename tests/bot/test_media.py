"""bot.media: image normalisation table, video fitting, capped downloads. All inputs are generated here."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw

from bot.media import (
    DownloadError,
    DownloadTooLarge,
    FittedVideo,
    MediaError,
    NormalizedImage,
    download_capped,
    fit_video,
    normalize_image,
    redact_url,
)
from bot.media import video as media_video
from tests.samples import make_clip

API_MAX_BYTES = 10_000_000

# Expected noise from Pillow for the hostile inputs below (they are handled, not ignored).
pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]

# --------------------------------------------------------------------------------------------------------
# Image builders
# --------------------------------------------------------------------------------------------------------


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth gradient with some shapes: compresses like a photo, deterministic."""
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    draw.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(200, 60, 40))
    return im if mode == "RGB" else im.convert(mode)


def _noise(size: tuple[int, int], seed: int = 1) -> Image.Image:
    w, h = size
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(w * h * 3))


def _jpeg(size: tuple[int, int] = (800, 600), **params: object) -> bytes:
    return _save(_photo(size), "JPEG", quality=90, **params)


def _transparent_rgba(size: tuple[int, int]) -> Image.Image:
    im = Image.new("RGBA", size, (0, 0, 0, 0))  # transparent *black*: must come out white
    ImageDraw.Draw(im).rectangle(
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(0, 0, 255, 255)
    )
    return im


def _palette_with_transparency() -> bytes:
    im = Image.new("P", (500, 400), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    ImageDraw.Draw(im).rectangle((100, 100, 300, 300), fill=1)
    return _save(im, "PNG", transparency=0)


def _exif_rotated_phone_photo() -> bytes:
    im = Image.new("RGB", (4032, 3024), (0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 999, 999), fill=(255, 0, 0))  # marker in the *stored* top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    exif[0x010F] = "PhoneMaker"
    return _save(im, "JPEG", quality=85, exif=exif.tobytes())


def _huge_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "description"
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"x" * 60_000  # UserComment
    return _save(_photo((800, 600)), "JPEG", exif=exif.tobytes())


def _broken_exif() -> bytes:
    return _save(_photo((800, 600)), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage-not-an-ifd" + b"\xff" * 50)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (400, 400), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _mpo() -> bytes:
    """Multi-picture JPEG as phones write it (main image + extra picture): not an animation."""
    return _save(_photo((800, 600)), "MPO", save_all=True, append_images=[_photo((400, 300))])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(side: int = 30_000) -> bytes:
    """A real, valid ~110 KB 1-bit PNG of side x side pixels (900 MP for 30000)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    data = _save(_noise((800, 600)), "JPEG", quality=90)
    return data[: len(data) // 2]


def _sixteen_bit_png() -> bytes:
    im = Image.new("I;16", (500, 400), 40000)  # ~61% grey; a naive convert would clip it to white
    return _save(im, "PNG")


# --------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    size: tuple[int, int]
    changes: tuple[str, ...] = ()  # each must be a substring of one note; () means "no notes at all"
    content_type: str | None = None
    original: tuple[int, int] | None = None
    check: Callable[[Image.Image], None] | None = None
    extra_changes_ok: bool = False


@dataclass(frozen=True)
class Refuse:
    fragments: tuple[str, ...] = field(default_factory=tuple)


def _px(x: int, y: int, expected: tuple[int, int, int], tol: int = 24) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        actual = im.convert("RGB").getpixel((x, y))
        assert isinstance(actual, tuple)
        assert all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True)), (actual, expected)

    return check


def _both(*checks: Callable[[Image.Image], None]) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        for c in checks:
            c(im)

    return check


WHITE = (255, 255, 255)
FILLED = "transparent background filled with white"
TOO_SMALL = "at least 360x360"

CASES: list[tuple[str, Callable[[], bytes], Accept | Refuse]] = [
    # --- plain, already acceptable ------------------------------------------------------------------
    ("jpeg_ok", lambda: _jpeg(), Accept((800, 600), content_type="image/jpeg")),
    ("png_rgb_ok", lambda: _save(_photo((800, 600)), "PNG"), Accept((800, 600), content_type="image/png")),
    ("bmp_ok", lambda: _save(_photo((640, 480)), "BMP"), Accept((640, 480), content_type="image/png")),
    ("webp_ok", lambda: _save(_photo((640, 480)), "WEBP"), Accept((640, 480), content_type="image/jpeg")),
    ("greyscale_jpeg", lambda: _save(_photo((500, 500), "L"), "JPEG"), Accept((500, 500))),
    (
        "bilevel_png",
        lambda: _save(_photo((500, 500), "1"), "PNG"),
        Accept((500, 500), content_type="image/png"),
    ),
    ("opaque_rgba_png", lambda: _save(_photo((600, 400), "RGBA"), "PNG"), Accept((600, 400))),
    ("mpo_phone_jpeg", _mpo, Accept((800, 600), content_type="image/jpeg")),
    ("exact_360", lambda: _jpeg((360, 360)), Accept((360, 360))),
    ("exact_2000", lambda: _jpeg((2000, 2000)), Accept((2000, 2000))),
    # --- formats the API doesn't take ---------------------------------------------------------------
    (
        "gif_single_frame",
        lambda: _save(_photo((500, 500), "P"), "GIF"),
        Accept((500, 500), ("converted from GIF",), "image/png"),
    ),
    (
        "tiff",
        lambda: _save(_photo((500, 500)), "TIFF"),
        Accept((500, 500), ("converted from TIFF",), "image/png"),
    ),
    # --- colour modes ------------------------------------------------------------------------------
    (
        "rgba_transparent_png",
        lambda: _save(_transparent_rgba((800, 600)), "PNG"),
        Accept((800, 600), (FILLED,), "image/png", check=_both(_px(5, 5, WHITE), _px(300, 200, (0, 0, 255)))),
    ),
    (
        "la_png",
        lambda: _save(Image.new("LA", (500, 400), (0, 0)), "PNG"),
        Accept((500, 400), (FILLED,), check=_px(10, 10, WHITE)),
    ),
    (
        "palette_png_transparency",
        _palette_with_transparency,
        Accept((500, 400), (FILLED,), check=_both(_px(10, 10, WHITE), _px(200, 200, (255, 0, 0)))),
    ),
    (
        "cmyk_jpeg",
        lambda: _save(Image.new("CMYK", (600, 400), (0, 255, 255, 0)), "JPEG", quality=95),
        Accept((600, 400), ("converted from CMYK",), "image/jpeg", check=_px(300, 200, (255, 0, 0), tol=40)),
    ),
    (
        "png_16bit",
        _sixteen_bit_png,
        Accept((500, 400), content_type="image/png", check=_px(10, 10, (155, 155, 155), tol=3)),
    ),
    # --- sizes -------------------------------------------------------------------------------------
    ("one_pixel", lambda: _save(Image.new("RGB", (1, 1)), "PNG"), Refuse((TOO_SMALL, "1x1"))),
    ("side_359", lambda: _jpeg((359, 800)), Refuse((TOO_SMALL, "359x800"))),
    (
        "side_2001",
        lambda: _jpeg((2001, 1500)),
        Accept((2000, 1499), ("resized from 2001x1500 to 2000x1499",), "image/jpeg"),
    ),
    (
        "phone_4032x3024_exif_6",
        _exif_rotated_phone_photo,
        Accept(
            (1500, 2000),
            ("resized from 3024x4032 to 1500x2000", "rotated upright from EXIF"),
            "image/jpeg",
            original=(3024, 4032),
            # stored top-left marker must now be top-right; top-left is blue
            check=_both(_px(1450, 50, (255, 0, 0)), _px(50, 50, (0, 0, 255))),
        ),
    ),
    (
        "jpeg_8000x8000",
        lambda: _save(Image.new("L", (8000, 8000), 128), "JPEG"),
        Accept((2000, 2000), ("resized from 8000x8000 to 2000x2000",), "image/jpeg"),
    ),
    (
        "png_8000x8000_too_many_pixels",
        lambda: _save(Image.new("1", (8000, 8000), 1), "PNG"),
        Refuse(("megapixels",)),
    ),
    (
        "png_screenshot_2560_alpha",
        lambda: _save(_transparent_rgba((2560, 1440)), "PNG"),
        Accept((2000, 1125), ("resized from 2560x1440 to 2000x1125", FILLED), "image/png"),
    ),
    ("narrow_100x4000", lambda: _jpeg((100, 4000)), Refuse((TOO_SMALL, "100x4000"))),
    ("extreme_aspect_400x4000", lambda: _jpeg((400, 4000)), Refuse(("400x4000", TOO_SMALL, "crop"))),
    # --- broken / hostile --------------------------------------------------------------------------
    ("zero_bytes", lambda: b"", Refuse(("empty",))),
    ("text_named_png", lambda: b"this is not a png, just some text\n" * 20, Refuse(("isn't an image",))),
    ("heic", lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200, Refuse(("HEIC",))),
    ("truncated_jpeg", _truncated_jpeg, Refuse(("damaged",))),
    ("animated_gif", lambda: _animated("GIF"), Refuse(("Animated", "still"))),
    ("animated_webp", lambda: _animated("WEBP"), Refuse(("Animated", "still"))),
    ("animated_png", lambda: _animated("PNG"), Refuse(("Animated", "still"))),
    ("huge_exif_60kb", _huge_exif, Accept((800, 600), content_type="image/jpeg")),
    ("broken_exif", _broken_exif, Accept((800, 600), content_type="image/jpeg")),
    ("decompression_bomb_30000", _png_bomb, Refuse(("too many pixels",))),
    (
        "noise_2000_png_incompressible",
        lambda: _save(_noise((2000, 2000)), "PNG", compress_level=1),
        Accept((2000, 2000), ("saved as JPEG",), "image/jpeg"),
    ),
]


def _assert_api_valid(result: NormalizedImage) -> Image.Image:
    """Everything the video API demands, checked by re-reading the bytes."""
    assert 0 < len(result.data) < API_MAX_BYTES
    im = Image.open(io.BytesIO(result.data))
    im.load()
    assert im.format in {"JPEG", "PNG"}
    assert (im.format, result.content_type, result.filename) in {
        ("JPEG", "image/jpeg", "source.jpg"),
        ("PNG", "image/png", "source.png"),
    }
    assert im.mode == "RGB"  # no alpha, no palette, 8-bit
    assert "transparency" not in im.info
    assert 360 <= im.width <= 2000 and 360 <= im.height <= 2000
    assert im.size == (result.width, result.height)
    assert not im.getexif(), "metadata must be stripped"
    assert "icc_profile" not in im.info
    return im


@pytest.mark.parametrize(("make", "expected"), [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_normalize_table(make: Callable[[], bytes], expected: Accept | Refuse) -> None:
    data = make()
    if isinstance(expected, Refuse):
        with pytest.raises(MediaError) as info:
            normalize_image(data)
        message = info.value.user_message
        assert message and message[0].isupper() and message.endswith((".", ")"))
        for fragment in expected.fragments:
            assert fragment in message, message
        return

    result = normalize_image(data)
    im = _assert_api_valid(result)
    assert (result.width, result.height) == expected.size
    if expected.content_type:
        assert result.content_type == expected.content_type
    if expected.original:
        assert (result.original_width, result.original_height) == expected.original
    if not expected.changes:
        assert result.changes == () and not result.adjusted
    else:
        assert result.adjusted
        for wanted in expected.changes:
            assert any(wanted in note for note in result.changes), result.changes
        if not expected.extra_changes_ok:
            assert len(result.changes) == len(expected.changes), result.changes
    if expected.check:
        expected.check(im)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 24


def test_size_limit_loop_lowers_quality_then_shrinks() -> None:
    data = _save(_noise((1500, 1500), seed=7), "PNG", compress_level=1)
    result = normalize_image(data, max_bytes=400_000)
    assert len(result.data) < 400_000
    assert min(result.width, result.height) >= 360
    assert result.content_type == "image/jpeg"
    assert any("stay under 0.4 MB" in note for note in result.changes), result.changes


def test_size_limit_unreachable_is_refused() -> None:
    with pytest.raises(MediaError, match="can't be compressed below"):
        normalize_image(_save(_noise((800, 800), seed=3), "PNG", compress_level=1), max_bytes=20_000)


def test_custom_limits_and_bad_arguments() -> None:
    result = normalize_image(_jpeg((1200, 900)), max_side=1000, min_side=100)
    assert (result.width, result.height) == (1000, 750)
    with pytest.raises(ValueError):
        normalize_image(_jpeg(), max_side=300, min_side=400)


def test_decompression_bomb_does_not_touch_global_state() -> None:
    before = Image.MAX_IMAGE_PIXELS
    for data in (_png_bomb(), _png_bomb(9500)):  # 900 MP (Pillow error) and 90 MP (Pillow warning)
        with pytest.raises(MediaError):
            normalize_image(data)
    assert before == Image.MAX_IMAGE_PIXELS


# --------------------------------------------------------------------------------------------------------
# fit_video
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_clip() -> bytes:
    return make_clip()


def _decode_all(data: bytes) -> tuple[int, int, int, float]:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        last = frames[-1]
        assert last.time is not None
        return len(frames), frames[0].width, frames[0].height, last.time


def test_fit_video_unchanged_when_small_enough(noisy_clip: bytes) -> None:
    fitted = fit_video(noisy_clip, len(noisy_clip))
    assert fitted == FittedVideo(data=noisy_clip, reencoded=False, width=640, height=480)


def test_fit_video_reencodes_to_fit_keeping_resolution(noisy_clip: bytes) -> None:
    limit = len(noisy_clip) // 3
    assert limit > 300_000  # enough bits per pixel to keep 640x480
    fitted = fit_video(noisy_clip, limit)
    assert fitted.reencoded and len(fitted.data) <= limit
    assert (fitted.width, fitted.height) == (640, 480)
    frames, width, height, last_time = _decode_all(fitted.data)
    assert (width, height) == (640, 480)
    assert frames == 48 and last_time == pytest.approx(47 / 24, abs=0.05)
    assert fitted.data[4:8] == b"ftyp"
    assert fitted.data.find(b"moov") < fitted.data.find(b"mdat"), "faststart: moov before mdat"


def test_fit_video_scales_down_when_bitrate_is_too_low(noisy_clip: bytes) -> None:
    fitted = fit_video(noisy_clip, 60_000)
    assert fitted.reencoded and len(fitted.data) <= 60_000
    assert fitted.width < 640 and fitted.height < 480
    assert fitted.width % 2 == 0 and fitted.height % 2 == 0
    assert fitted.width / fitted.height == pytest.approx(640 / 480, rel=0.05)
    frames, width, height, _ = _decode_all(fitted.data)
    assert (width, height) == (fitted.width, fitted.height) and frames == 48


def test_fit_video_mpeg4_fallback(noisy_clip: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_video, "_video_codec", lambda: "mpeg4")
    fitted = fit_video(noisy_clip, 200_000)
    assert fitted.reencoded and len(fitted.data) <= 200_000
    assert _decode_all(fitted.data)[0] == 48


def test_fit_video_gives_up(noisy_clip: bytes) -> None:
    with pytest.raises(MediaError, match="too large to upload even after compression"):
        fit_video(noisy_clip, 2_000)


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 10, b"definitely not a video" * 1000], ids=["empty", "zeros", "text"]
)
def test_fit_video_garbage(data: bytes) -> None:
    with pytest.raises(MediaError):
        fit_video(data, 5)
    with pytest.raises(MediaError):
        fit_video(data, 10_000_000)


# --------------------------------------------------------------------------------------------------------
# download_capped
# --------------------------------------------------------------------------------------------------------

BODY = bytes(range(256)) * 40  # 10,240 bytes


async def _ok(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/octet-stream")


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # chunked: no Content-Length
    await response.prepare(request)
    for _ in range(200):
        await response.write(b"x" * 65536)
    await response.write_eof()
    return response


async def _missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="nope")


async def _slow_headers(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(body=BODY)


async def _slow_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"partial")
    await asyncio.sleep(5)
    return response


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/big", _ok)  # 10 KB with Content-Length, fetched with a smaller cap
    app.router.add_get("/stream", _stream)
    app.router.add_get("/missing", _missing)
    app.router.add_get("/slow-headers", _slow_headers)
    app.router.add_get("/slow-body", _slow_body)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _url(srv: TestServer, path: str) -> str:
    return str(srv.make_url(path))


async def test_download_ok(server: TestServer, session: aiohttp.ClientSession) -> None:
    assert await download_capped(session, _url(server, "/ok?sig=abc"), max_bytes=len(BODY)) == BODY


async def test_download_content_length_too_large(server: TestServer, session: aiohttp.ClientSession) -> None:
    with pytest.raises(DownloadTooLarge):
        await download_capped(session, _url(server, "/big"), max_bytes=len(BODY) - 1)


async def test_download_streamed_too_large(server: TestServer, session: aiohttp.ClientSession) -> None:
    with pytest.raises(DownloadTooLarge) as info:
        await download_capped(session, _url(server, "/stream"), max_bytes=100_000)
    assert isinstance(info.value, MediaError) and "too large" in info.value.user_message


async def test_download_404_does_not_leak_query(
    server: TestServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.media")
    with pytest.raises(DownloadError) as info:
        await download_capped(session, _url(server, "/missing?X-Signature=SECRET123"), max_bytes=1000)
    assert "404" in info.value.user_message
    assert "SECRET123" not in str(info.value) and "SECRET123" not in caplog.text
    assert "/missing" in caplog.text


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
async def test_download_timeout(server: TestServer, session: aiohttp.ClientSession, path: str) -> None:
    with pytest.raises(DownloadError, match="timed out"):
        await download_capped(session, _url(server, path), max_bytes=1000, timeout=0.3)


async def test_download_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError):
        await download_capped(session, f"http://127.0.0.1:{port}/x?token=SECRET", max_bytes=1000)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/file.png", "file:///etc/passwd", "javascript:alert(1)", "http://", "not a url"]
)
async def test_download_refuses_non_http(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(MediaError) as info:
        await download_capped(session, url, max_bytes=1000)
    assert not isinstance(info.value, DownloadTooLarge)


def test_redact_url() -> None:
    assert (
        redact_url("https://user:pw@cdn.example.com/a/b.png?ex=1&hm=SECRET#frag")
        == "https://cdn.example.com/a/b.png"
    )


async def _raw_server(response: bytes) -> tuple[asyncio.Server, int]:
    """A server that answers every request with `response`, byte for byte, then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def test_download_shorter_than_its_content_length_is_a_failed_download(
    session: aiohttp.ClientSession,
) -> None:
    # The buffer is sized by the (untrusted) Content-Length: a body that ends early is an error,
    # never the body padded with zeros.
    srv, port = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + BODY[:1000])
    async with srv:
        with pytest.raises(DownloadError, match="connection problem"):
            await download_capped(session, f"http://127.0.0.1:{port}/x", max_bytes=100_000)


async def test_download_longer_than_its_content_length_never_yields_more(
    session: aiohttp.ClientSession,
) -> None:
    # aiohttp stops at the announced length; trailing bytes arriving with it are a malformed answer.
    srv, port = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + BODY)
    async with srv:
        try:
            got = await download_capped(session, f"http://127.0.0.1:{port}/x", max_bytes=1000)
        except DownloadError:
            return
        assert got == BODY[:1000]
