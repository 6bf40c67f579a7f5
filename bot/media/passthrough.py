"""Passing an upload on as it is: drop its metadata segments without decoding or re-encoding the
pixels (the fast path of bot/media/image.py for uploads that already meet the API's rules)."""

from __future__ import annotations

import zlib

# JPEG segments kept when an upload is passed on as it is: JFIF (APP0) and Adobe (APP14, it says how the
# colours are stored). Everything else before the scan is metadata (EXIF/XMP in APP1, IPTC, comments).
_JPEG_KEEP_APPS = frozenset({0xE0, 0xEE})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# PNG ancillary chunks kept likewise (colour interpretation and pixel size); text, EXIF, time... go.
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"sBIT"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_jpeg(data: bytes) -> bytes | None:
    """The JPEG without its metadata segments, the compressed scan untouched (no decode, no
    re-encode); None if its structure is not plainly sound (the full decode then decides)."""
    if not data.startswith(b"\xff\xd8") or not data.endswith(b"\xff\xd9"):
        return None  # truncated, or trailing data: let the decoder judge it
    out, pos = [b"\xff\xd8"], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            return None
        if marker == 0xDA:  # start of scan: the rest is the image itself
            out.append(data[pos:])
            return b"".join(out)
        if not (0xE1 <= marker <= 0xEF or marker == 0xFE) or marker in _JPEG_KEEP_APPS:
            out.append(data[pos:end])
        pos = end
    return None


def strip_png(data: bytes) -> bytes | None:
    """The PNG with only the chunks that describe its pixels (CRCs checked); None if it is not
    plainly sound."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, pos = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if zlib.crc32(data[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return None
        if kind == b"eXIf":
            return None  # it may say to rotate: the full path reads it
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        if kind == b"IEND":
            return b"".join(out) if end == len(data) else None
        pos = end
    return None
