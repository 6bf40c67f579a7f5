"""Media handling: normalise uploaded images for the video API, shrink finished videos, capped downloads.

- ``image``: ``normalize_image`` (Pillow) -- EXIF rotation, flattening, scaling, re-encoding.
- ``video``: ``fit_video`` (PyAV) -- re-encode a video that exceeds the upload limit.
- ``download``: ``download_capped`` and ``redact_url``.
- ``errors``: ``MediaError`` and its download subclasses, shared by all three.
- ``buffers``: ``read_body`` (a body into one buffer) and ``UploadBody`` (an upload without a copy).
- ``memory``: handing a burst's memory back to the system (glibc's allocator).

``normalize_image`` and ``fit_video`` are CPU-bound and synchronous: call them via ``asyncio.to_thread``.
``download_capped`` is a coroutine.

Nothing here changes process-wide Pillow state (no ``Image.MAX_IMAGE_PIXELS`` or ``LOAD_TRUNCATED_IMAGES``
tweaks, no ``warnings`` filter changes), so it is safe to run several calls in parallel threads. The one
process-wide knob, glibc's mmap threshold, is ``memory.cap_mmap_threshold``, called by bot/intake.py.
"""

from __future__ import annotations

from bot.media.download import download_capped, redact_url
from bot.media.errors import DownloadError, DownloadTooLarge, MediaError
from bot.media.image import MAX_PIXELS, NormalizedImage, decode_cost, normalize_image
from bot.media.video import FittedVideo, fit_video

__all__ = [
    "MAX_PIXELS",
    "DownloadError",
    "DownloadTooLarge",
    "FittedVideo",
    "MediaError",
    "NormalizedImage",
    "decode_cost",
    "download_capped",
    "fit_video",
    "normalize_image",
    "redact_url",
]
