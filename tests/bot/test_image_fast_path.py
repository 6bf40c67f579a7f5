"""bot.media.normalize_image's fast path (an upload that already fits is not decoded or re-encoded)
and its reduced-scale decode of large JPEGs (issue #13)."""

from __future__ import annotations

import io
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin

from bot.media import normalize_image
from tests.bot.test_media import _exif_rotated_phone_photo, _jpeg, _photo, _px, _save


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The size of every image whose pixels were decoded."""
    seen: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        seen.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    yield seen


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    original = Image.Image.save

    def spy(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        seen.append(str(format))
        original(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", spy)
    yield seen


def test_conforming_jpeg_comes_back_byte_identical_without_a_decode(
    loads: list[tuple[int, int]], encodes: list[str]
) -> None:
    data = _jpeg((1600, 1200))
    encodes.clear()  # the sample's own encode
    result = normalize_image(data)
    assert result.data == data
    assert (result.content_type, result.filename) == ("image/jpeg", "source.jpg")
    assert (result.width, result.height) == (1600, 1200) and not result.adjusted
    assert loads == [] and encodes == []


def test_conforming_png_comes_back_byte_identical_without_a_decode(
    loads: list[tuple[int, int]], encodes: list[str]
) -> None:
    data = _save(_photo((800, 600)), "PNG")
    encodes.clear()
    result = normalize_image(data)
    assert result.data == data and result.content_type == "image/png"
    assert loads == [] and encodes == []


def test_metadata_is_dropped_without_touching_the_pixels(loads: list[tuple[int, int]]) -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 1  # upright
    jpeg = _save(_photo((800, 600)), "JPEG", quality=90, exif=exif.tobytes(), comment=b"secret")
    result = normalize_image(jpeg)
    scan = jpeg.index(b"\xff\xda")
    assert result.data.endswith(jpeg[scan:]) and len(result.data) < len(jpeg)  # same compressed scan
    with Image.open(io.BytesIO(result.data)) as im:
        assert not im.getexif() and "comment" not in im.info
    text = PngImagePlugin.PngInfo()
    text.add_text("Location", "52.5, 13.4")
    png = _save(_photo((800, 600)), "PNG", pnginfo=text)
    result = normalize_image(png)
    assert b"Location" not in result.data and len(result.data) < len(png)
    with Image.open(io.BytesIO(result.data)) as im:
        im.load()  # still a valid PNG
        assert im.size == (800, 600) and not im.text
    assert len(loads) == 1  # the test's own check of the PNG; normalize_image decoded neither


@pytest.mark.parametrize(
    "make",
    [
        lambda: _save(_photo((500, 500), "L"), "JPEG"),  # greyscale: the API wants RGB
        lambda: _jpeg((2001, 1500)),  # too large a side
        lambda: _save(_photo((600, 400), "RGBA"), "PNG"),  # alpha channel
        lambda: _save(_photo((640, 480)), "WEBP"),  # converted, as before
        lambda: _jpeg()[:-2],  # no end marker: the decoder judges it
    ],
    ids=["greyscale", "side_2001", "rgba", "webp", "no_eoi"],
)
def test_uploads_that_do_not_fit_take_the_full_path(make: Any, loads: list[tuple[int, int]]) -> None:
    data = make()
    try:
        result = normalize_image(data)
    except Exception:
        result = None
    assert loads, "decoded"
    assert result is None or result.data != data


def test_large_exif_rotated_jpeg_is_decoded_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch, loads: list[tuple[int, int]]
) -> None:
    drafts: list[tuple[Any, Any]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Image.Image, mode: Any, size: Any) -> Any:
        drafts.append((mode, size))
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = _exif_rotated_phone_photo()  # 4032x3024 (12 MP), orientation 6
    result = normalize_image(data)
    assert drafts and drafts[0][1] == (2000, 1500)
    # Decoded at half scale (DCT domain), never at full 12 MP.
    assert loads and all(w * h <= 2016 * 1512 for w, h in loads), loads
    assert (result.width, result.height) == (1500, 2000)
    assert "rotated upright from EXIF" in result.changes
    with Image.open(io.BytesIO(result.data)) as im:
        _px(1450, 50, (255, 0, 0))(im)  # the stored top-left marker is now top-right
        _px(50, 50, (0, 0, 255))(im)


def test_a_large_photo_is_resized_one_axis_at_a_time_freeing_each_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory: the decoded pixels are gone before the second axis is resized, so at most two copies
    of a photo are alive at once (one resize call of both axes holds three)."""
    sources: list[weakref.ref[Image.Image]] = []
    sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size: Any, *args: Any, **kwargs: Any) -> Image.Image:
        if sources:
            assert sources[-1]() is None, "the image resized before is still alive"
        sizes.append((self.size, tuple(size)))
        out = original(self, size, *args, **kwargs)
        sources.append(weakref.ref(self))
        return out

    monkeypatch.setattr(Image.Image, "resize", spy)
    out = normalize_image(_exif_rotated_phone_photo())
    assert sizes == [((2016, 1512), (2000, 1512)), ((2000, 1512), (2000, 1500))]
    assert (out.width, out.height) == (1500, 2000)
