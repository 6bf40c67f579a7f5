"""Realistic benchmark inputs, generated deterministically once and cached in ``bench/.inputs/``.

A flat-colour 5 KB JPEG and a 60-byte "video" flatter the bot (issue #13), so the benchmark feeds it
what members really upload and what the model really returns:

* ``photo`` -- 1600x1200 JPEG, quality 90: gradients, shapes and grain, so size and decode cost are real;
* ``phone`` -- 4032x3024 (12 MP) JPEG, quality 90, EXIF orientation 6 like a phone held upright;
* ``screenshot`` -- 2560x1440 RGBA PNG with UI-like blocks, text and transparent corners;
* ``flat`` -- the old 640x480 flat-colour JPEG (the 1,000 / 10,000 in-flight scenarios);
* ``clip480`` -- 5 s H.264 MP4, 854x480, about 3 MB;
* ``clip1080`` -- 5 s H.264 MP4, 1920x1080, about 12 MB: over the 10 MiB upload limit, so the bot must
  re-encode it.

Videos are encoded with PyAV's ``libx264`` (the wheel bundles it; ``mpeg4`` is the fallback when it does
not). Noise that changes every frame keeps the encoder at its bit-rate, so the sizes are stable.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent / ".inputs"
VERSION = 1  # bump to regenerate every cached input
NAMES = ("flat", "photo", "phone", "screenshot", "clip480", "clip1080")
CONTENT_TYPES = {
    "flat": "image/jpeg",
    "photo": "image/jpeg",
    "phone": "image/jpeg",
    "screenshot": "image/png",
    "clip480": "video/mp4",
    "clip1080": "video/mp4",
}
FILENAMES = {
    "flat": "flat.jpg",
    "photo": "IMG_1600.jpg",
    "phone": "IMG_20261130_101500.jpg",
    "screenshot": "Screenshot 2026-11-30 at 10.15.00.png",
    "clip480": "clip480.mp4",
    "clip1080": "clip1080.mp4",
}


def _noise(size: tuple[int, int], seed: int, blur: float) -> Image.Image:
    rng = random.Random(seed)
    grain = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    return grain.filter(ImageFilter.GaussianBlur(blur)) if blur else grain


def _scene(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like RGB picture: smooth sky/ground gradients, soft shapes, fine and coarse texture."""
    w, h = size
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize(size)
    red = Image.eval(sky, lambda v: 60 + v // 2)
    green = Image.eval(sky, lambda v: 110 + v // 3)
    blue = Image.eval(sky, lambda v: 200 - v // 3)
    img = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(w // 40, w // 6)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(max(2, w // 400)))
    # Coarse texture (foliage, fabric) and sensor grain: what makes a real JPEG a few MB.
    coarse = _noise((w // 4, h // 4), seed + 1, 1.0).resize(size, Image.Resampling.BICUBIC)
    fine = _noise(size, seed + 2, 0.6)
    textured = Image.blend(img, Image.merge("RGB", (coarse, coarse, coarse)), 0.25)
    return Image.blend(textured, Image.merge("RGB", (fine, fine, fine)), 0.12)


def make_photo() -> bytes:
    buf = io.BytesIO()
    _scene((1600, 1200), 1600).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_phone() -> bytes:
    """Stored landscape (4032x3024) with EXIF orientation 6: shown upright (portrait) after rotation."""
    img = _scene((4032, 3024), 4032)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    exif[0x010F] = "BenchPhone"  # Make
    exif[0x0110] = "Model 12"  # Model
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def make_screenshot() -> bytes:
    w, h = 2560, 1440
    rng = random.Random(2560)
    img = Image.new("RGBA", (w, h), (246, 247, 249, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, 64), fill=(32, 34, 37, 255))  # title bar
    draw.rectangle((0, 64, 320, h), fill=(47, 49, 54, 255))  # side bar
    for i in range(30):
        draw.text((24, 90 + i * 42), f"# channel-{i:02d}", fill=(200, 200, 205, 255))
    for row in range(60):
        y = 90 + row * 22
        x = 360
        for _ in range(rng.randrange(4, 14)):
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10)))
            draw.text((x, y), word, fill=(40, 40, 45, 255))
            x += 8 * len(word) + 10
    for _ in range(12):
        x, y = rng.randrange(360, w - 400), rng.randrange(100, h - 300)
        draw.rounded_rectangle(
            (x, y, x + rng.randrange(120, 400), y + rng.randrange(60, 260)),
            radius=12,
            fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256), 255),
        )
    # Transparent rounded window corners and a translucent overlay: real alpha to flatten.
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=40, fill=255)
    overlay = Image.new("L", (w, h), 255)
    ImageDraw.Draw(overlay).rectangle((w - 700, h - 400, w - 40, h - 40), fill=140)
    alpha = Image.composite(overlay, mask, mask)
    img.putalpha(alpha)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_flat() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (40, 120, 160)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _frames(size: tuple[int, int], count: int, seed: int) -> Iterator[Image.Image]:
    base = _scene((size[0] + count * 4, size[1]), seed)
    for i in range(count):
        frame = base.crop((i * 4, 0, i * 4 + size[0], size[1]))  # a slow pan
        grain = _noise(size, seed + 100 + i, 0.0)
        yield Image.blend(frame, Image.merge("RGB", (grain, grain, grain)), 0.06)


def make_clip(size: tuple[int, int], bit_rate: int, seed: int, seconds: int = 5, fps: int = 24) -> bytes:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        if codec == "libx264":
            stream.options = {
                "preset": "veryfast",
                "x264-params": f"nal-hrd=cbr:vbv-maxrate={bit_rate // 1000}:vbv-bufsize={bit_rate // 1000}",
            }
        stream.codec_context.time_base = Fraction(1, fps)
        for i, img in enumerate(_frames(size, seconds * fps, seed)):
            frame = av.VideoFrame.from_image(img)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


MAKERS = {
    "flat": make_flat,
    "photo": make_photo,
    "phone": make_phone,
    "screenshot": make_screenshot,
    "clip480": lambda: make_clip((854, 480), 4_800_000, 480),
    "clip1080": lambda: make_clip((1920, 1080), 19_000_000, 1080),
}


def load(name: str) -> bytes:
    """The named input's bytes, generating and caching them on first use."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # generated, never committed
    path = CACHE / f"v{VERSION}-{name}.bin"
    if not path.exists():
        logger.info("generating bench input %s", name)
        data = MAKERS[name]()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path.read_bytes()


def describe() -> dict[str, str]:
    """name -> 'WxH, N.N MB' for the report."""
    out: dict[str, str] = {}
    for name in NAMES:
        data = load(name)
        if CONTENT_TYPES[name].startswith("image/"):
            with Image.open(io.BytesIO(data)) as img:
                dims = f"{img.width}x{img.height} {img.format}"
        else:
            with av.open(io.BytesIO(data)) as container:
                v = container.streams.video[0]
                dims = f"{v.codec_context.width}x{v.codec_context.height} {v.codec_context.name}"
        out[name] = f"{dims}, {len(data) / 1e6:.1f} MB"
    return out


if __name__ == "__main__":
    for key, value in describe().items():
        print(f"{key}: {value}")
