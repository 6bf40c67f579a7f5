"""The expensive step of admitting a request: download the source image and decode it, bounded so a
burst of large photos cannot take the bot's memory (issue #13).

Three bounds, each on what really costs memory: the source bytes held at once (downloading, waiting
to be decoded, being decoded: `SOURCE_BYTES_IN_FLIGHT`, counted by the size Discord declares and
topped up by what really arrived), the downloads at once (`DownloadGate`), and the decodes at once,
counted in the pixels they hold (`PixelBudget`). When the last image of a burst is done, the allocator's
free pages go back to the system (bot/media/memory.py). Used by bot/admission.py; its `Budget` also
bounds the video bytes bot/engine/_delivery.py holds at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.media import NormalizedImage
from bot.media.memory import cap_mmap_threshold, release_free_memory

log = logging.getLogger(__name__)

# Source images downloaded at once, bot-wide.
DOWNLOADS_AT_ONCE = 3
# Source bytes held at once, bot-wide, from the start of their download to the end of their decode:
# downloads are quicker than decodes, so without this a burst of 12 MP photos piles up in memory
# (50 x 2.7 MB waiting for 4 decoders). One source larger than this runs alone.
SOURCE_BYTES_IN_FLIGHT = 16_000_000
# Images decoded at once: a decode is CPU-bound, so more than the cores only adds memory.
DECODES_AT_ONCE = 2
# ... and their pixels in flight at once, bot-wide: memory follows pixels, not images (a 12 MP phone
# photo is decoded at ~3 MP, a conforming upload not at all). One image larger than this runs alone.
DECODE_PIXEL_BUDGET = 16_000_000
# Trim the allocator after a burst only if at least this many source bytes went through since the
# last trim: a trickle of small photos is not worth the few ms.
TRIM_AFTER_BYTES = 4_000_000
# ... and only once no image has been in the pipeline for this many seconds: conforming photos go
# through in milliseconds, so the pipeline is briefly empty many times within one burst, and a trim
# each time would hand back pages the next image faults in again.
TRIM_DELAY = 2.0


@dataclass(slots=True)
class Held:
    """What one holder of a `Budget` holds (it can grow, see `Budget.take`)."""

    amount: int


class Budget:
    """A semaphore counted in units (pixels, bytes): holders wait until their amount fits."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[Held]:
        need = max(1, min(amount, self.total))
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= need)
            self.free -= need
        held = Held(need)
        try:
            yield held
        finally:
            async with self._changed:
                self.free += held.amount
                self._changed.notify_all()

    def take(self, held: Held, more: int) -> None:
        """Add `more` to what `held` holds at once, even past the budget (a body larger than it was
        declared to be is already in memory): the next holders wait for it instead."""
        if more > 0:
            held.amount += more
            self.free -= more


PixelBudget = Budget  # the decode bound's historical name


@dataclass(slots=True)
class MemberSlot:
    acquired: bool  # False: the member's earlier request did not finish in time
    waited: bool  # True: another request of theirs went first (it may have spent the credits)


class DownloadGate:
    """Bounds the expensive part of a request -- download, decode, charge: a few at once bot-wide
    (`downloads`), and one at a time per member, so one member's burst cannot crowd out everyone."""

    def __init__(self, downloads: int) -> None:
        self.downloads = asyncio.Semaphore(downloads)
        self._members: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, requests holding or waiting

    @asynccontextmanager
    async def member(self, user_id: int, wait: float) -> AsyncIterator[MemberSlot]:
        lock, users = self._members.get(user_id, (asyncio.Lock(), 0))
        self._members[user_id] = (lock, users + 1)
        slot = MemberSlot(acquired=False, waited=lock.locked())
        try:
            try:
                async with asyncio.timeout(wait):
                    await lock.acquire()
                slot.acquired = True
            except TimeoutError:
                pass
            yield slot
        finally:
            if slot.acquired:
                lock.release()
            lock, users = self._members[user_id]
            if users <= 1:
                del self._members[user_id]
            else:
                self._members[user_id] = (lock, users - 1)


class ImageIntake:
    """Download then decode one source image under the bounds above; MediaError says what to fix."""

    def __init__(
        self,
        *,
        download: Callable[[str], Awaitable[bytes]],
        decode: Callable[[bytes], NormalizedImage],
        cost: Callable[[bytes], int],
        gate: DownloadGate,
        source_bytes: int = SOURCE_BYTES_IN_FLIGHT,
        release: Callable[[], object] = release_free_memory,
        trim_after: int = TRIM_AFTER_BYTES,
        trim_delay: float = TRIM_DELAY,
    ) -> None:
        self.download, self.decode, self.cost, self.gate = download, decode, cost, gate
        self.source_bytes = Budget(source_bytes)
        self.decoders = asyncio.Semaphore(DECODES_AT_ONCE)
        self.pixels = PixelBudget(DECODE_PIXEL_BUDGET)
        self._release, self._trim_after, self._trim_delay = release, trim_after, trim_delay
        self._pending_trim: asyncio.TimerHandle | None = None
        self._busy = 0  # images between their download's start and their decode's end
        self._since_trim = 0  # source bytes through since the last trim
        self._trims: set[asyncio.Task[object]] = set()
        cap_mmap_threshold()  # once per process: large buffers go back to the system when freed

    async def prepare(self, url: str, declared_size: int) -> NormalizedImage:
        """The normalised image from the source at `url`, which Discord says has `declared_size`
        bytes (untrusted: what arrives is counted)."""
        self._busy += 1
        if self._pending_trim is not None:  # the burst goes on
            self._pending_trim.cancel()
            self._pending_trim = None
        try:
            async with self.source_bytes.hold(declared_size) as held:
                async with self.gate.downloads:
                    raw = await self.download(url)
                self.source_bytes.take(held, len(raw) - held.amount)
                self._since_trim += len(raw)
                pixels = await asyncio.to_thread(self.cost, raw)  # the header only
                async with self.decoders, self.pixels.hold(pixels):
                    return await asyncio.to_thread(self.decode, raw)
        finally:
            self._busy -= 1
            if self._busy == 0 and self._since_trim >= self._trim_after:
                loop = asyncio.get_running_loop()
                self._pending_trim = loop.call_later(self._trim_delay, self._spawn_trim)

    def _spawn_trim(self) -> None:
        """The burst is over: hand its memory back, off the event loop."""
        self._pending_trim = None
        if self._busy:
            return
        self._since_trim = 0
        task: asyncio.Task[object] = asyncio.ensure_future(asyncio.to_thread(self._release))
        self._trims.add(task)
        task.add_done_callback(self._trimmed)

    def _trimmed(self, task: asyncio.Task[object]) -> None:
        self._trims.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("releasing memory after a burst failed: %r", task.exception())
