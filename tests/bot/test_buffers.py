"""The byte path without extra copies (bot/media/buffers.py, issue #13): bodies read into one buffer,
uploads sent from the bytes held, released when the post is over."""

from __future__ import annotations

import io
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from bot.media.buffers import BodyTooLarge, UploadBody, read_body

SIZE = 4_000_000
DATA = bytes(range(256)) * (SIZE // 256)


class _Content:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.read = 0

    async def iter_any(self, n: int = 64 * 1024) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), n):
            self.read += min(n, len(self._data) - i)
            yield bytes(self._data[i : i + n])  # a fresh chunk, as aiohttp hands them out


class _Response:
    """What read_body uses of an aiohttp.ClientResponse."""

    def __init__(self, data: bytes, content_length: int | None) -> None:
        self.content = _Content(data)
        self.content_length = content_length
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def _read(response: _Response, max_bytes: int) -> bytes:
    return await read_body(response, max_bytes)  # type: ignore[arg-type]


async def _peak(coro: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = await coro
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("announced", [SIZE, None])
async def test_a_body_is_read_into_one_buffer(announced: int | None) -> None:
    body, peak = await _peak(_read(_Response(DATA, announced), SIZE))
    assert body == DATA and type(body) is bytes
    if announced is not None:  # sized once, filled in place, handed over without a copy
        assert peak < 1.1 * SIZE
    else:  # grown as it came (by an eighth at a time), still never a second whole copy
        assert peak < 1.5 * SIZE


async def test_an_announced_body_over_the_cap_is_refused_unread() -> None:
    response = _Response(DATA, SIZE)
    with pytest.raises(BodyTooLarge) as info:
        await _read(response, SIZE - 1)
    assert info.value.announced == SIZE and response.closed and response.content.read == 0


async def test_an_unannounced_body_over_the_cap_is_cut_off() -> None:
    response = _Response(DATA, None)
    with pytest.raises(BodyTooLarge) as info:
        await _read(response, 1_000_000)
    assert info.value.announced is None and response.closed
    assert response.content.read <= 1_000_000 + 64 * 1024  # stopped at the first chunk past the cap


async def test_a_body_shorter_than_announced_is_an_error_not_zeros() -> None:
    # Content-Length is untrusted: it sizes the buffer, but the zero-filled rest is never returned.
    with pytest.raises(aiohttp.ClientPayloadError):
        await _read(_Response(DATA[:1000], 5000), SIZE)


async def test_a_huge_announced_size_is_not_allocated_up_front() -> None:
    # A Content-Length is only a promise: past PREALLOCATE_MAX the buffer grows with what arrives.
    async def short() -> None:
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read(_Response(DATA[:1000], 64 * 1024 * 1024), 200 * 1024 * 1024)

    _, peak = await _peak(short())
    assert peak < 1_000_000


async def test_an_empty_body() -> None:
    assert await _read(_Response(b"", 0), SIZE) == b""
    assert await _read(_Response(b"", None), SIZE) == b""


class _Sink:
    """An aiohttp stream writer that only counts (and keeps) what is written."""

    def __init__(self) -> None:
        self.out = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.out += chunk

    async def write_eof(self, chunk: bytes = b"") -> None:
        self.out += chunk

    async def drain(self) -> None:
        pass

    def enable_compression(self, *args: Any, **kwargs: Any) -> None:
        pass

    def enable_chunking(self) -> None:
        pass


async def _multipart(fp: io.BytesIO) -> bytes:
    """The multipart body discord.py sends for one file (files[0], as in HTTPClient.request)."""
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("files[0]", fp, filename="job.mp4", content_type="application/octet-stream")
    sink = _Sink()
    await form().write(sink)  # type: ignore[arg-type]
    boundary = bytes(sink.out).split(b"\r\n", 1)[0][2:]  # random per form: compare without it
    return bytes(sink.out).replace(boundary, b"BOUNDARY")


async def _upload_peak(fp: io.BytesIO) -> int:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("files[0]", fp, filename="job.mp4", content_type="application/octet-stream")

    class Counting(_Sink):
        async def write(self, chunk: bytes) -> None:
            pass  # what is sent is not kept: only the upload's own allocations count

    tracemalloc.start()
    try:
        await form().write(Counting())  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_an_upload_sends_the_bytes_held_without_copying_them() -> None:
    assert await _upload_peak(io.BytesIO(DATA)) >= SIZE  # what aiohttp does to a plain BytesIO
    assert await _upload_peak(UploadBody(DATA)) < SIZE / 4
    body = await _multipart(UploadBody(DATA))
    assert DATA in body and body == await _multipart(io.BytesIO(DATA))  # the same bytes on the wire


async def test_a_retried_upload_sends_the_whole_file_again() -> None:
    # discord.py re-sends a file after a 429 or a 5xx: File.reset rewinds it, the next form reads all.
    file = discord.File(UploadBody(DATA), filename="job.mp4")
    first = await _multipart(file.fp)  # type: ignore[arg-type]
    file.reset(seek=1)
    second = await _multipart(file.fp)  # type: ignore[arg-type]
    assert DATA in first and first == second


def test_release_drops_the_bytes_even_behind_discord_file() -> None:
    data = bytes(SIZE)  # a fresh object: its references are this test's alone
    before = sys.getrefcount(data)
    body = UploadBody(data)
    file = discord.File(body, filename="job.mp4")
    file.close()  # discord.py's own close leaves a file it did not open alone
    assert sys.getrefcount(data) > before and body.read(4) == b"\0\0\0\0"
    body.release()
    assert sys.getrefcount(data) == before  # nothing of ours holds the bytes any more
    with pytest.raises(ValueError):
        body.read(1)


def test_an_upload_body_is_read_only() -> None:
    body = UploadBody(b"abc")
    assert not body.writable()
    with pytest.raises(io.UnsupportedOperation):
        body.write(b"x")
    with pytest.raises(TypeError):
        body.getbuffer()[0] = 0  # type: ignore[index]
    assert body.read() == b"abc"


async def test_an_upload_goes_out_in_large_views_not_small_copies() -> None:
    class Recording(_Sink):
        def __init__(self) -> None:
            super().__init__()
            self.kinds: list[type] = []

        async def write(self, chunk: bytes) -> None:
            self.kinds.append(type(chunk))
            await super().write(chunk)

    async def writes(fp: io.BytesIO) -> Recording:
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("files[0]", fp, filename="job.mp4", content_type="application/octet-stream")
        sink = Recording()
        await form().write(sink)  # type: ignore[arg-type]
        return sink

    plain, ours = await writes(io.BytesIO(DATA)), await writes(UploadBody(DATA))
    assert plain.kinds.count(bytes) > 15  # 256 KiB copies of a plain BytesIO (aiohttp 3.14)
    assert ours.kinds.count(memoryview) == -(-SIZE // (1024 * 1024))  # 4 views of the bytes held
    assert bytes(ours.out).count(DATA) == 1
