"""The byte path without extra copies (issue #13): a body downloaded into one buffer of its announced
size, and an upload that sends the bytes already held instead of a copy of them.

A 100-photo burst held each photo and each 3 MB video up to four times: the download's growing
buffer and the ``bytes`` made of it, then, for every upload attempt, the copy aiohttp makes of a
``BytesIO`` that shares its bytes -- kept through discord.py's wait on a 429 (73 of 91 MiB of the
Python heap at the burst's peak, measured with tracemalloc).
"""

from __future__ import annotations

import io

import aiohttp
from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

# A body announced up to this size gets its buffer at once; a larger one grows as it arrives, so a
# lying Content-Length makes the bot hold no more than a body of that size would (both capped).
PREALLOCATE_MAX = 16 * 1024 * 1024


class BodyTooLarge(Exception):
    """The body is larger than allowed: announced so (``announced``), or it kept coming (None)."""

    def __init__(self, announced: int | None) -> None:
        super().__init__(announced)
        self.announced = announced


async def read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The response's body, at most `max_bytes` (else BodyTooLarge, the connection dropped).

    With a Content-Length (untrusted: it only sizes the buffer, up to PREALLOCATE_MAX, and the cap is
    checked on what arrives) the buffer is allocated once at that size and the chunks are copied into
    place; the bytes returned are that buffer itself, no copy. A body shorter than announced raises aiohttp's
    ClientPayloadError (aiohttp does so itself when the connection ends early); a longer one never
    yields more than announced (aiohttp stops there, or refuses the trailing bytes as malformed).
    """
    announced = response.content_length
    if announced is not None and announced > max_bytes:
        response.close()  # drop the connection instead of draining the body
        raise BodyTooLarge(announced)
    buf = io.BytesIO()
    if announced and announced <= PREALLOCATE_MAX:
        # Grow the buffer to its final size once (zero-filled), then write over it from the start.
        buf.seek(announced - 1)
        buf.write(b"\0")
        buf.seek(0)
    size = 0
    # Whatever has arrived, as aiohttp holds it (no re-slicing into fixed chunks): a few hundred KB
    # at most, as the stream stops reading from the socket while its buffer is full.
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            response.close()
            raise BodyTooLarge(None)
        buf.write(chunk)
    if announced is not None and size < announced:
        raise aiohttp.ClientPayloadError(f"body ended after {size} of {announced} bytes")
    buf.truncate(size)
    # The buffer is exactly `size` bytes and nothing else refers to it: getvalue() hands it over.
    return buf.getvalue()


# An upload is written in slices of this size (views of the bytes held, not copies).
UPLOAD_SLICE = 1024 * 1024


class UploadBody(io.BytesIO):
    """A read-only BytesIO over bytes already held, for ``discord.File``: the upload sends views of
    them (``_UploadPayload``), without the whole copy aiohttp's BytesIOPayload makes of an ordinary
    one (it sizes the body with ``getbuffer()``, which must first unshare the bytes a
    ``BytesIO(data)`` shares) -- on every attempt, for as long as the attempt lasts.

    Call ``release()`` once the post is over. aiohttp's request and response refer to each other,
    so the body of a finished upload is garbage in a cycle, kept until the collector's next full
    pass (rare, see ``tune_gc``): 18 videos (55 MiB) at a photo burst's peak, measured. Released,
    the bytes go as soon as their last holder does. (``discord.File`` stubs out ``close()`` on the
    object, and closes only files it opened itself.)
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._data = data

    def release(self) -> None:
        """Drop the bytes now, whoever still refers to this object."""
        self._data = b""
        super().close()  # the class's close: discord.File replaced the instance's with a no-op

    def getbuffer(self) -> memoryview:
        return memoryview(self._data)  # read-only: nothing can write through it

    def writable(self) -> bool:
        return False

    def write(self, data: object, /) -> int:
        raise io.UnsupportedOperation("UploadBody is read-only")


class _UploadPayload(payload.BytesIOPayload):
    """How aiohttp sends an UploadBody: slices of one view of its bytes, from where the file stands
    (discord.File rewinds it before each attempt). A plain BytesIO goes out as 256 KiB copies, each
    followed by a pass of the event loop: 13 of each for a 3 MB video (aiohttp 3.14)."""

    _value: UploadBody

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        start, view = self._value.tell(), self._value.getbuffer()
        end = len(view) if content_length is None else min(len(view), start + content_length)
        for pos in range(start, end, UPLOAD_SLICE):
            # The writer waits for the socket to take each slice (its drain) before the next.
            await writer.write(view[pos : min(end, pos + UPLOAD_SLICE)])
        self._value.seek(end)


payload.register_payload(_UploadPayload, UploadBody)  # looked up by exact type: nothing else changes
