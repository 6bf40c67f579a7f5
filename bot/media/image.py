"""Image normalisation: turn an uploaded picture into one the video API accepts, or say what to fix.

``normalize_image`` is CPU-bound and synchronous: call it via ``asyncio.to_thread``. An upload that
already meets the API's rules is judged from its header and passed on without decoding (only its
metadata segments are dropped); large JPEGs are decoded at reduced scale (``draft``). Nothing here
changes process-wide Pillow state, so several calls may run in parallel threads.
"""

from __future__ import annotations

import functools
import io
import logging
import math
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from bot.i18n import Msg
from bot.media.errors import MediaError, fmt_mb
from bot.media.passthrough import strip_jpeg, strip_png

logger = logging.getLogger(__name__)


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


def _as_is(
    data: bytes, im: ImageFile.ImageFile, src_format: str, orientation: int, limits: tuple[int, int, int]
) -> NormalizedImage | None:
    """The upload itself (metadata dropped) when it already meets the API's rules -- JPEG or PNG, RGB
    without transparency or colour profile, upright, sides and size in bounds -- judged from the
    header alone; None when it needs the full treatment."""
    min_side, max_side, max_bytes = limits
    width, height = im.size
    if (
        src_format not in {"JPEG", "PNG"}
        or im.mode != "RGB"
        or orientation != 1
        or "transparency" in im.info
        or "icc_profile" in im.info
        or not (min_side <= width <= max_side and min_side <= height <= max_side)
        or len(data) >= max_bytes
    ):
        return None
    kept = strip_jpeg(data) if src_format == "JPEG" else strip_png(data)
    if kept is None:
        return None
    kind = "jpeg" if src_format == "JPEG" else "png"
    logger.debug("image %s %dx%d already fits the API: passed on as is", src_format, width, height)
    return NormalizedImage(
        data=kept,
        filename=f"source.{'jpg' if kind == 'jpeg' else 'png'}",
        content_type=f"image/{kind}",
        width=width,
        height=height,
        original_width=width,
        original_height=height,
        changes=(),
    )


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


def _resize(decoded: list[Image.Image], target: tuple[int, int]) -> Image.Image:
    """The image taken out of `decoded` (so nothing else holds it), resized to `target` one axis at a
    time: Pillow resizes both axes in two passes anyway, but within one call the source, the half-way
    image and the result are alive at once; so each step holds two copies of the pixels, not three
    (a 12 MP photo's: 24 MB instead of 36)."""
    img = decoded.pop()
    width, height = target
    if img.size == target:
        return img
    if img.width != width and img.height != height:
        img = img.resize((width, img.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _check_sides(
    orig: tuple[int, int], stored: tuple[int, int], min_side: int, max_side: int
) -> tuple[int, int]:
    """The stored size scaled to fit ``max_side``; MediaError when a side is (or would end up) too short."""
    orig_w, orig_h = orig
    if orig_w < min_side or orig_h < min_side:
        raise MediaError(
            "That image is too small ({width}x{height} px): it must be at least "
            "{min_side}x{min_side} px and small images aren't upscaled. Please upload a larger image.",
            width=orig_w,
            height=orig_h,
            min_side=min_side,
        )
    target_w, target_h = _fit_box(*stored, max_side)
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
    return target_w, target_h


def _decode(
    im: ImageFile.ImageFile,
    src_format: str,
    orig: tuple[int, int],
    target: tuple[int, int],
    max_pixels: int,
    notes: list[str],
) -> Image.Image:
    """Decode the pixels (JPEG at reduced scale when that suffices) into 8-bit RGB."""
    orig_w, orig_h = orig
    if src_format in {"JPEG", "MPO"} and target != im.size:
        im.draft(None, target)  # DCT-domain downscale: much less memory and time
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
        return _to_rgb(im, notes)
    except MediaError:
        raise
    except Exception as exc:
        logger.info("could not decode %s image: %r", src_format or "unknown", exc)
        raise MediaError(
            "That image looks damaged or incomplete and can't be read. "
            "Please upload a still JPEG, PNG or WEBP image (try re-saving it)."
        ) from exc


def decode_cost(data: bytes, max_side: int = 2000) -> int:
    """Pixels `normalize_image` will hold decoded for this upload, from its header alone (a large
    JPEG is decoded at 1/2, 1/4 or 1/8 scale, as `draft` picks); 1 for what is no image."""
    try:
        with Image.open(io.BytesIO(data), formats=_open_formats()) as im:
            width, height = im.size
            if (im.format or "").upper() in {"JPEG", "MPO"}:
                target_w, target_h = _fit_box(width, height, max_side)
                scale = 1
                while scale < 8 and width // (scale * 2) >= target_w and height // (scale * 2) >= target_h:
                    scale *= 2
                width, height = -(-width // scale), -(-height // scale)
            return max(1, width * height)
    except Exception:  # the decoder itself says what is wrong with it
        return 1


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

        limits = (min_side, max_side, max_bytes)
        if src_format == "PNG" and "exif" not in im.info:
            # Pillow decodes a PNG to look for EXIF after the pixels; a PNG with an eXIf chunk
            # anywhere never takes the fast path, so it can go first, assuming upright.
            _check_sides(im.size, im.size, min_side, max_side)
            if (as_is := _as_is(data, im, src_format, 1, limits)) is not None:
                return as_is
        orientation = _exif_orientation(im)
        stored_w, stored_h = im.size
        swapped = orientation in (5, 6, 7, 8)
        orig_w, orig_h = (stored_h, stored_w) if swapped else (stored_w, stored_h)
        target = _check_sides((orig_w, orig_h), (stored_w, stored_h), min_side, max_side)
        if (as_is := _as_is(data, im, src_format, orientation, limits)) is not None:
            return as_is
        decoded = [_decode(im, src_format, (orig_w, orig_h), target, max_pixels, notes)]
    del im  # `decoded` holds the only reference: freed as soon as it is resized or rotated
    return _finish(decoded, src_format, (orig_w, orig_h), target, orientation, max_bytes, min_side, notes)


def _finish(
    decoded: list[Image.Image],
    src_format: str,
    original: tuple[int, int],
    target: tuple[int, int],
    orientation: int,
    max_bytes: int,
    min_side: int,
    notes: list[str],
) -> NormalizedImage:
    """Resize, rotate upright and encode a decoded image within the API's limits, noting each change.
    The image comes in a list it is taken out of, so that at most two copies of its pixels (before
    and after each step) are alive at once."""
    orig_w, orig_h = original
    img = _resize(decoded, target)
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
    return NormalizedImage(
        data=encoded,
        filename=f"source.{'png' if kind == 'png' else 'jpg'}",
        content_type=f"image/{kind}",
        width=width,
        height=height,
        original_width=orig_w,
        original_height=orig_h,
        changes=tuple(notes),
    )


def _encode_within(
    img: Image.Image, src_format: str, max_bytes: int, min_side: int
) -> tuple[bytes, str, list[str], Image.Image]:
    """Encode as PNG (lossless sources) or JPEG, lowering quality then size until < max_bytes."""
    notes: list[str] = []
    limit = fmt_mb(max_bytes)
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
