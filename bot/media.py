"""Media handling: normalise uploaded images for the video API, shrink finished videos, capped downloads.

``normalize_image`` and ``fit_video`` are CPU-bound and synchronous: call them via ``asyncio.to_thread``.
``download_capped`` is a coroutine.

Nothing here changes process-wide state (no ``Image.MAX_IMAGE_PIXELS`` or ``LOAD_TRUNCATED_IMAGES``
tweaks, no ``warnings`` filter changes), so it is safe to run several calls in parallel threads.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageFile, UnidentifiedImageError
from yarl import URL

from bot.i18n import N_, LocaleLike, Msg, render

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------

#: Refuse images that would decode to more than this many pixels (after JPEG DCT-domain downscaling).
#: 50 MP is ~150 MB as RGB; bigger JPEG photos still work because they are decoded at 1/2..1/8 scale.
MAX_PIXELS = 50_000_000

#: Formats we are willing to parse at all. Everything else (EPS via Ghostscript, exotic decoders, ...)
#: is treated as "not an image" -- a smaller attack surface for untrusted uploads.
#: (MPO files are opened by the JPEG plugin.)
_OPEN_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "GIF", "TIFF", "AVIF", "PPM", "TGA")
#: Formats the video API itself accepts; anything else gets a "converted from X" note.
_API_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "WEBP"})
#: Lossless sources: re-encoded as PNG when that fits, otherwise JPEG.
_LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "DIB", "GIF", "TIFF", "PPM", "TGA"})
_JPEG_QUALITIES = (90, 85, 80, 75, 70, 60, 50)
_SHRINK_STEP = 0.85
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, slots=True)
class NormalizedImage:
    data: bytes
    filename: str  # "source.jpg" or "source.png"
    content_type: str  # "image/jpeg" or "image/png"
    width: int
    height: int
    original_width: int  # as displayed, i.e. after EXIF orientation
    original_height: int
    changes: tuple[str, ...]  # user-visible adjustments only; empty when the picture is as sent

    @property
    def adjusted(self) -> bool:
        return bool(self.changes)


def _fmt_mb(n: int) -> str:
    return f"{n / 1_000_000:g} MB"


def _looks_like_heic(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in {b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"}


@functools.cache
def _open_formats() -> tuple[str, ...]:
    Image.init()  # register every plugin so the lookup below is complete (idempotent)
    return tuple(f for f in _OPEN_FORMATS if f in Image.OPEN)  # e.g. AVIF only if Pillow has it


def _open_image(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=_open_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning only raises if someone runs with -W error; treat it the same way.
        logger.info("refused image: %s", exc)
        raise MediaError(
            "That image has far too many pixels to process. "
            "Please upload a still JPEG, PNG or WEBP image of at most {megapixels} megapixels.",
            megapixels=max_pixels // 1_000_000,
        ) from exc
    except UnidentifiedImageError as exc:
        if _looks_like_heic(data):
            raise MediaError(
                "HEIC/HEIF photos aren't supported. Please upload a JPEG or PNG instead "
                "(on an iPhone: Settings > Camera > Formats > Most Compatible)."
            ) from exc
        raise MediaError(
            "That file isn't an image I can read. Please upload a still JPEG, PNG or WEBP image."
        ) from exc
    except Exception as exc:  # Pillow raises many types (SyntaxError, struct.error, ...) for junk headers
        logger.info("could not open image: %r", exc)
        raise MediaError(
            "That image looks damaged and can't be read. "
            "Please upload a still JPEG, PNG or WEBP image (try re-saving it)."
        ) from exc


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent or unreadable (broken EXIF must not break the upload)."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:
        logger.info("ignoring unreadable EXIF: %r", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert RGB/RGBA/CMYK images with an embedded non-sRGB ICC profile to sRGB (best effort)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in {"RGB", "RGBA", "CMYK"}:
        return im
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(src).lower():
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            im,
            src,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode=out_mode,
        )
    except Exception as exc:  # missing littlecms, broken or mismatched profile, ...
        logger.info("ignoring ICC profile: %r", exc)
        return im
    return converted if converted is not None else im


def _integer_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer greyscale to 8-bit, scaled (a plain convert("L") clips everything to white)."""
    im = im.convert("I")
    extrema = im.getextrema()
    hi = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 65535.0
    if hi <= 255:
        return im.convert("L")
    top = 65535.0 if hi <= 65535 else hi
    return im.point(lambda v: v * (255.0 / top)).convert("L")


def _float_to_l(im: Image.Image) -> Image.Image:
    extrema = im.getextrema()
    lo = float(extrema[0]) if isinstance(extrema[0], (int, float)) else 0.0
    hi = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 1.0
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    span = (hi - lo) or 1.0
    return im.point(lambda v: (v - lo) * (255.0 / span)).convert("L")


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB without alpha (transparency flattened onto white)."""
    if im.mode == "CMYK":
        notes.append(Msg("converted from CMYK"))
    im = _to_srgb(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        im = _integer_to_l(im)
        im.info.pop("transparency", None)  # a 16-bit tRNS key colour no longer matches the 8-bit pixels
    elif im.mode == "F":
        im = _float_to_l(im)

    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] == 255:  # alpha channel present but fully opaque: nothing to see
            return rgba.convert("RGB")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=alpha)
        notes.append(Msg("transparent background filled with white"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")


def _encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # No exif/icc passed: metadata (GPS etc.) is stripped; untagged output is read as sRGB.
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _fit_box(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / width, max_side / height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalize_image(
    data: bytes,
    *,
    max_side: int = 2000,
    min_side: int = 360,
    max_bytes: int = 10_000_000,
    max_pixels: int = MAX_PIXELS,
) -> NormalizedImage:
    """Turn an uploaded image into one the video API accepts, or raise MediaError.

    Output: JPEG or PNG, RGB (no alpha), both sides in ``min_side..max_side``, ``len(data) < max_bytes``,
    EXIF orientation applied and all metadata stripped. Never upscales. Synchronous and CPU-bound.
    ``original_width``/``original_height`` are the dimensions as displayed (after EXIF orientation).
    """
    if not 1 <= min_side <= max_side:
        raise ValueError("need 1 <= min_side <= max_side")
    if not data:
        raise MediaError("The file is empty. Please upload a still JPEG, PNG or WEBP image.")

    notes: list[str] = []
    with _open_image(data, max_pixels) as im:
        src_format = (im.format or "").upper()
        if src_format != "MPO" and getattr(im, "is_animated", False):
            # MPO "frames" are a phone's extra pictures (depth map, gain map), not an animation.
            raise MediaError(
                "Animated images aren't supported. Please upload a still JPEG, PNG or WEBP image "
                "(a single frame)."
            )

        orientation = _exif_orientation(im)
        stored_w, stored_h = im.size
        swapped = orientation in (5, 6, 7, 8)
        orig_w, orig_h = (stored_h, stored_w) if swapped else (stored_w, stored_h)

        if orig_w < min_side or orig_h < min_side:
            raise MediaError(
                "That image is too small ({width}x{height} px): it must be at least "
                "{min_side}x{min_side} px and small images aren't upscaled. Please upload a larger image.",
                width=orig_w,
                height=orig_h,
                min_side=min_side,
            )
        target_w, target_h = _fit_box(stored_w, stored_h, max_side)
        if min(target_w, target_h) < min_side:
            longest = max(orig_w, orig_h)
            raise MediaError(
                "That image is too long and thin ({width}x{height} px): scaled to fit {max_side} px "
                "its short side would be only {short} px, but both sides must be at least "
                "{min_side} px (at least {min_side}x{min_side}). Please crop it to an aspect ratio no more "
                "extreme than about {ratio:.1f}:1 (e.g. {longest} px long needs "
                "{across} px across).",
                width=orig_w,
                height=orig_h,
                max_side=max_side,
                short=min(target_w, target_h),
                min_side=min_side,
                ratio=max_side / min_side,
                longest=longest,
                across=math.ceil(longest * min_side / max_side),
            )

        if src_format in {"JPEG", "MPO"} and (target_w, target_h) != (stored_w, stored_h):
            im.draft(None, (target_w, target_h))  # DCT-domain downscale: much less memory and time
        if im.width * im.height > max_pixels:
            raise MediaError(
                "That image is too large to process ({width}x{height} px, "
                "{megapixels:.0f} megapixels). Please upload a still JPEG, PNG or WEBP image of at most "
                "{limit} megapixels.",
                width=orig_w,
                height=orig_h,
                megapixels=orig_w * orig_h / 1_000_000,
                limit=max_pixels // 1_000_000,
            )
        try:
            im.load()  # full decode: truncated/corrupt data fails here, not later
            img = _to_rgb(im, notes)
        except MediaError:
            raise
        except Exception as exc:
            logger.info("could not decode %s image: %r", src_format or "unknown", exc)
            raise MediaError(
                "That image looks damaged or incomplete and can't be read. "
                "Please upload a still JPEG, PNG or WEBP image (try re-saving it)."
            ) from exc

    if img.size != (target_w, target_h):
        img = img.resize((target_w, target_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation != 1:
        img = img.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
        notes.append(Msg("rotated upright from EXIF"))
    if src_format not in _API_FORMATS:
        notes.append(Msg("converted from {format}", format=src_format))
    img.info.clear()  # never let PNG/JPEG writers pick up the source's EXIF/ICC/text chunks

    encoded, kind, size_notes, img = _encode_within(img, src_format, max_bytes, min_side)
    notes.extend(size_notes)
    width, height = img.size
    if (width, height) != (orig_w, orig_h):
        notes.insert(
            0,
            Msg(
                "resized from {width}x{height} to {new_width}x{new_height}",
                width=orig_w,
                height=orig_h,
                new_width=width,
                new_height=height,
            ),
        )

    result = NormalizedImage(
        data=encoded,
        filename=f"source.{'png' if kind == 'png' else 'jpg'}",
        content_type=f"image/{kind}",
        width=width,
        height=height,
        original_width=orig_w,
        original_height=orig_h,
        changes=tuple(notes),
    )
    logger.debug(
        "normalized %s %dx%d -> %s %dx%d (%d bytes): %s",
        src_format,
        orig_w,
        orig_h,
        kind,
        width,
        height,
        len(encoded),
        "; ".join(notes) or "no changes",
    )
    return result


def _encode_within(
    img: Image.Image, src_format: str, max_bytes: int, min_side: int
) -> tuple[bytes, str, list[str], Image.Image]:
    """Encode as PNG (lossless sources) or JPEG, lowering quality then size until < max_bytes."""
    notes: list[str] = []
    limit = _fmt_mb(max_bytes)
    if src_format in _LOSSLESS_FORMATS:
        png = _encode_png(img)
        if len(png) < max_bytes:
            return png, "png", notes, img
        notes.append(Msg("saved as JPEG to stay under {limit}", limit=limit))

    for quality in _JPEG_QUALITIES:
        jpeg = _encode_jpeg(img, quality)
        if len(jpeg) < max_bytes:
            if quality != _JPEG_QUALITIES[0]:
                notes.append(
                    Msg(
                        "JPEG quality lowered to {quality} to stay under {limit}",
                        quality=quality,
                        limit=limit,
                    )
                )
            return jpeg, "jpeg", notes, img

    quality = _JPEG_QUALITIES[-1]
    while True:
        width = round(img.width * _SHRINK_STEP)
        height = round(img.height * _SHRINK_STEP)
        if min(width, height) < min_side:
            raise MediaError(
                "That image can't be compressed below {limit} without shrinking it under "
                "{min_side}x{min_side} px. Please upload a smaller or simpler image.",
                limit=limit,
                min_side=min_side,
            )
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        jpeg = _encode_jpeg(img, quality)
        if len(jpeg) < max_bytes:
            notes.append(
                Msg(
                    "JPEG quality lowered to {quality} and image shrunk to stay under {limit}",
                    quality=quality,
                    limit=limit,
                )
            )
            return jpeg, "jpeg", notes, img


# --------------------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------------------

_VIDEO_BUDGET = 0.92  # aim for this share of max_bytes
_MUX_OVERHEAD = 0.97  # share of the budget left for the video bitstream
_MIN_BPP = 0.05  # bits per pixel per frame below which we scale down instead
_MIN_VIDEO_SIDE = 64
_VIDEO_ATTEMPTS = 4
_TOO_LARGE_VIDEO = N_("The video is too large to upload even after compression.")


@dataclass(frozen=True, slots=True)
class FittedVideo:
    data: bytes
    reencoded: bool
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class _VideoInfo:
    width: int
    height: int
    fps: float
    duration: float  # seconds


def _video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _probe_video(data: bytes) -> _VideoInfo:
    import av

    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.video:
                raise MediaError("The result isn't a video file.")
            stream = container.streams.video[0]
            width = stream.codec_context.width
            height = stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            if duration <= 0 or fps <= 0:
                frames, last = 0, 0.0
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    frames += 1
                    if packet.pts is not None and packet.time_base:
                        last = max(last, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                fps = fps if fps > 0 else 24.0
                duration = duration if duration > 0 else max(last, frames / fps)
    except MediaError:
        raise
    except Exception as exc:
        logger.warning("could not read video: %r", exc)
        raise MediaError("The video couldn't be read, so it can't be uploaded.") from exc
    if width <= 0 or height <= 0:
        raise MediaError("The video couldn't be read, so it can't be uploaded.")
    return _VideoInfo(width=width, height=height, fps=fps, duration=max(duration, 1 / fps))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _dims_for_bitrate(info: _VideoInfo, bitrate: float) -> tuple[int, int]:
    width, height = _even(info.width), _even(info.height)
    bpp = bitrate / (info.width * info.height * info.fps)
    if bpp >= _MIN_BPP:
        return width, height
    scale = math.sqrt(bpp / _MIN_BPP)
    return _even(info.width * scale), _even(info.height * scale)


def _transcode(data: bytes, codec: str, width: int, height: int, bitrate: int, fps: float) -> bytes:
    import av

    options: dict[str, str] = {}
    if codec == "libx264":
        # ABR with a VBV cap keeps short clips close to the target instead of overshooting.
        options = {
            "preset": "medium",
            "maxrate": str(int(bitrate * 1.2)),
            "bufsize": str(int(bitrate)),
        }
    with tempfile.TemporaryDirectory(prefix="fit_video_") as tmp:
        path = os.path.join(tmp, "out.mp4")  # faststart needs a real file to re-read
        with (
            av.open(io.BytesIO(data), "r") as src,
            av.open(path, "w", format="mp4", container_options={"movflags": "+faststart"}) as dst,
        ):
            in_stream = src.streams.video[0]
            in_stream.thread_type = "AUTO"
            rate = Fraction(fps).limit_denominator(1001)
            out: Any = dst.add_stream(codec, rate=rate)
            out.width = width
            out.height = height
            out.pix_fmt = "yuv420p"
            out.bit_rate = bitrate
            out.options = options
            in_tb = in_stream.time_base
            time_base = in_tb if in_tb and in_tb.denominator <= 65535 else Fraction(1, 1000)
            out.codec_context.time_base = time_base
            last_pts: int | None = None
            index = 0
            for frame in src.decode(in_stream):
                scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                if frame.pts is not None and frame.time_base is not None:
                    pts = round(frame.pts * frame.time_base / time_base)
                else:
                    pts = round(index / fps / time_base)
                index += 1
                if last_pts is not None and pts <= last_pts:
                    continue  # duplicate/non-monotonic timestamps would make the muxer fail
                last_pts = pts
                scaled.pts = pts
                scaled.time_base = time_base
                for packet in out.encode(scaled):
                    dst.mux(packet)
            for packet in out.encode(None):
                dst.mux(packet)
        return Path(path).read_bytes()


def fit_video(data: bytes, max_bytes: int) -> FittedVideo:
    """Return the video unchanged if it fits in max_bytes, else re-encode (H.264/MP4, no audio) to fit.

    Raises MediaError when the data is not a decodable video or cannot be made small enough.
    Synchronous and CPU-bound.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    info = _probe_video(data)
    if len(data) <= max_bytes:
        return FittedVideo(data=data, reencoded=False, width=info.width, height=info.height)

    codec = _video_codec()
    bitrate = max_bytes * _VIDEO_BUDGET * _MUX_OVERHEAD * 8 / info.duration
    for attempt in range(1, _VIDEO_ATTEMPTS + 1):
        width, height = _dims_for_bitrate(info, bitrate)
        if min(width, height) < min(_MIN_VIDEO_SIDE, info.width, info.height):
            break
        try:
            out = _transcode(data, codec, width, height, int(bitrate), info.fps)
        except Exception as exc:
            logger.warning("video re-encode failed: %r", exc)
            raise MediaError("The video couldn't be re-encoded, so it can't be uploaded.") from exc
        logger.info(
            "fit_video attempt %d: %d -> %d bytes (limit %d) at %dx%d, %d bit/s",
            attempt,
            len(data),
            len(out),
            max_bytes,
            width,
            height,
            int(bitrate),
        )
        if len(out) <= max_bytes:
            return FittedVideo(data=out, reencoded=True, width=width, height=height)
        bitrate *= min(0.9, max_bytes * _VIDEO_BUDGET / len(out))
    raise MediaError(_TOO_LARGE_VIDEO)


# --------------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------------

_CHUNK = 64 * 1024


def redact_url(url: str | URL) -> str:
    """The URL without credentials, query string or fragment -- safe to log."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except Exception:
        return "<unparseable url>"


async def download_capped(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    timeout: float = 60.0,
) -> bytes:
    """GET url and return the body, refusing (DownloadTooLarge) as soon as it exceeds max_bytes.

    Only http(s) URLs. HTTP status >= 400, timeouts and connection errors raise DownloadError.
    Error messages and logs never include the query string (signed URLs).
    """
    safe = redact_url(url)
    try:
        parsed = URL(url)
    except Exception:
        raise MediaError("That link isn't a valid web address.") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise MediaError("Only http:// and https:// links can be downloaded.")

    limit = _fmt_mb(max_bytes)
    body = bytearray()
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response,
        ):
            if response.status >= 400:
                logger.warning("download of %s failed: HTTP %d", safe, response.status)
                raise DownloadError("The download failed (HTTP {status}).", status=response.status)
            announced = response.content_length
            if announced is not None and announced > max_bytes:
                logger.warning("download of %s refused: Content-Length %d > %d", safe, announced, max_bytes)
                response.close()  # drop the connection instead of draining the body
                raise DownloadTooLarge("The file is too large (over {limit}).", limit=limit)
            async for chunk in response.content.iter_chunked(_CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    logger.warning("download of %s aborted: more than %d bytes", safe, max_bytes)
                    response.close()
                    raise DownloadTooLarge("The file is too large (over {limit}).", limit=limit)
    except MediaError:
        raise
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
        logger.warning("download of %s timed out after %gs", safe, timeout)
        raise DownloadError("The download timed out. Please try again.") from exc
    except aiohttp.ClientError as exc:
        logger.warning("download of %s failed: %s", safe, type(exc).__name__)
        # `from None`: aiohttp exceptions may carry the full (signed) URL.
        raise DownloadError("The download failed (connection problem). Please try again.") from None
    return bytes(body)
