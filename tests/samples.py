"""Sample media generated in-test (no binary fixtures)."""

from __future__ import annotations

import io
import random
from fractions import Fraction

import av


def make_clip(seconds: float = 2.0, size: tuple[int, int] = (640, 480), fps: int = 24) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 6_000_000
        stream.options = {"preset": "ultrafast"}
        rng = random.Random(5)
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame(size[0], size[1], "rgb24")
            frame.planes[0].update(rng.randbytes(size[0] * size[1] * 3))
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
