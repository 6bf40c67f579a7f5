"""Video fitting: re-encode a finished video (H.264/MP4, no audio) until it fits an upload limit.

``fit_video`` is CPU-bound and synchronous: call it via ``asyncio.to_thread``. PyAV is imported lazily
so importing the bot does not load FFmpeg.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from bot.i18n import N_
from bot.media.errors import MediaError

logger = logging.getLogger(__name__)

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
            # veryfast: about a third of medium's CPU for a 1080p clip, so the member waits seconds,
            # not tens of seconds; at the bitrates a 10 MiB cap leaves for a short clip the quality
            # difference does not show.
            "preset": "veryfast",
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
