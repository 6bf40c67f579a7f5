"""bot.intake: the download-and-decode step bounded by source bytes, decodes and pixels, and the
memory handed back after a burst; bot.media.memory, the allocator calls behind that (issue #13)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.intake import DECODES_AT_ONCE, Budget, DownloadGate, ImageIntake
from bot.media import NormalizedImage, memory


def _image(raw: bytes) -> NormalizedImage:
    return NormalizedImage(raw, "source.jpg", "image/jpeg", 400, 400, 400, 400, ())


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Pipeline:
    """Downloads that return `sizes[url]` bytes at once; decodes that wait for `finish(url)`."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.downloaded: list[str] = []
        self.decoding: set[str] = set()
        self.most_decoding = 0
        self.released = 0
        self._done = {url: asyncio.Event() for url in sizes}

    async def download(self, url: str) -> bytes:
        self.downloaded.append(url)
        return url.encode().ljust(self.sizes[url], b".")

    def decode(self, raw: bytes) -> NormalizedImage:
        # Runs in a worker thread: wait there for the test to let this decode end.
        url = raw.rstrip(b".").decode()
        self.decoding.add(url)
        self.most_decoding = max(self.most_decoding, len(self.decoding))
        asyncio.run_coroutine_threadsafe(self._done[url].wait(), self.loop).result(timeout=10)
        self.decoding.discard(url)
        return _image(raw)

    def release(self) -> None:
        self.released += 1

    def finish(self, url: str) -> None:
        self._done[url].set()

    def intake(self, source_bytes: int, trim_after: int = 10**9, trim_delay: float = 0.0) -> ImageIntake:
        self.loop = asyncio.get_running_loop()
        return ImageIntake(
            download=self.download,
            decode=self.decode,
            cost=lambda raw: 1,
            gate=DownloadGate(3),
            source_bytes=source_bytes,
            release=self.release,
            trim_after=trim_after,
            trim_delay=trim_delay,
        )


async def test_sources_wait_for_their_bytes_to_fit_before_downloading() -> None:
    # Downloads are free here and decodes slow: without the byte bound all three would be downloaded
    # at once and held while they wait.
    pipe = Pipeline({"a": 600, "b": 600, "c": 300})
    intake = pipe.intake(source_bytes=1000)
    tasks = [asyncio.create_task(intake.prepare(url, 600 if url != "c" else 300)) for url in ("a", "b", "c")]
    await _settle()
    assert pipe.downloaded == ["a", "c"]  # b's 600 does not fit beside a's; c's 300 does
    pipe.finish("a")
    await tasks[0]
    await _settle()
    assert pipe.downloaded == ["a", "c", "b"]
    pipe.finish("b")
    pipe.finish("c")
    images = await asyncio.gather(*tasks)
    assert [len(i.data) for i in images] == [600, 600, 300]
    assert intake.source_bytes.free == 1000


async def test_a_body_larger_than_declared_is_counted_as_it_arrived() -> None:
    pipe = Pipeline({"liar": 900, "next": 200})
    intake = pipe.intake(source_bytes=1000)
    first = asyncio.create_task(intake.prepare("liar", 100))  # says 100 bytes, sends 900
    await _settle()
    second = asyncio.create_task(intake.prepare("next", 200))
    await _settle()
    assert pipe.downloaded == ["liar"]  # 900 + 200 would be over the budget
    pipe.finish("liar")
    await first
    await _settle()
    assert pipe.downloaded == ["liar", "next"]
    pipe.finish("next")
    await second
    assert intake.source_bytes.free == 1000


async def test_decodes_at_once_are_bounded() -> None:
    urls = [f"u{i}" for i in range(5)]
    pipe = Pipeline(dict.fromkeys(urls, 10))
    intake = pipe.intake(source_bytes=10_000)
    tasks = [asyncio.create_task(intake.prepare(url, 10)) for url in urls]
    await asyncio.sleep(0.1)
    assert len(pipe.downloaded) == 5 and len(pipe.decoding) == DECODES_AT_ONCE
    for url in urls:
        pipe.finish(url)
    await asyncio.gather(*tasks)
    assert pipe.most_decoding == DECODES_AT_ONCE


async def test_memory_is_handed_back_once_after_a_burst() -> None:
    pipe = Pipeline({"a": 600, "b": 600, "c": 600, "small": 10})
    intake = pipe.intake(source_bytes=10_000, trim_after=1000, trim_delay=0.2)
    tasks = [asyncio.create_task(intake.prepare(url, 600)) for url in ("a", "b")]
    await _settle()
    pipe.finish("a")
    await tasks[0]
    await _settle()
    assert pipe.released == 0  # b is still being decoded: the burst is not over
    pipe.finish("b")
    await tasks[1]
    await asyncio.sleep(0.05)
    pipe.finish("c")
    await intake.prepare("c", 600)  # within the delay: the same burst, the pending trim is put off
    await asyncio.sleep(0.1)
    assert pipe.released == 0
    await asyncio.sleep(0.3)  # the trim runs once the pipeline stayed empty, in a worker thread
    assert pipe.released == 1
    pipe.finish("small")
    await intake.prepare("small", 10)
    await asyncio.sleep(0.3)
    assert pipe.released == 1  # 10 bytes since the last trim: not worth one


async def test_a_failed_download_frees_its_bytes() -> None:
    async def broken(url: str) -> bytes:
        raise ConnectionError("gone")

    intake = ImageIntake(
        download=broken, decode=_image, cost=lambda raw: 1, gate=DownloadGate(3), source_bytes=1000
    )
    with pytest.raises(ConnectionError):
        await intake.prepare("x", 800)
    assert intake.source_bytes.free == 1000


async def test_budget_take_lets_a_holder_grow_past_the_total() -> None:
    budget = Budget(10)
    entered = asyncio.Event()

    async def second() -> None:
        async with budget.hold(1):
            entered.set()

    async with budget.hold(4) as held:
        budget.take(held, 8)
        assert held.amount == 12 and budget.free == -2
        task = asyncio.create_task(second())
        await _settle()
        assert not entered.is_set()
    await task
    assert entered.is_set() and budget.free == 10


def test_release_free_memory_and_the_threshold_on_this_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(memory.release_free_memory(), bool)
    memory.cap_mmap_threshold.cache_clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert memory.cap_mmap_threshold() is False  # the operator's setting wins
    memory.cap_mmap_threshold.cache_clear()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert memory.cap_mmap_threshold() is (memory._glibc() is not None)


class _FakeLibc:
    """Records mallopt calls instead of changing this test process' allocator."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: Any) -> int:
        self.calls.append((param, int(value.value)))
        return 1


def test_the_thresholds_keep_a_video_body_in_the_heap_and_its_pages_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # issue #13: at 1 MiB every 3.2 MB video was mapped afresh (a page fault per 4 KiB, then munmap);
    # and glibc's default trim threshold would hand a freed body's pages back at once.
    libc = _FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    memory.cap_mmap_threshold.cache_clear()
    assert memory.cap_mmap_threshold() is True
    assert libc.calls == [(-3, memory.MMAP_THRESHOLD), (-1, memory.TRIM_THRESHOLD)]
    assert (
        3_200_000 < memory.MMAP_THRESHOLD < 2016 * 1512 * 3
    )  # a 480p clip below, a drafted 12 MP decode above
    libc.calls.clear()
    memory.cap_mmap_threshold.cache_clear()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # the operator's trim setting wins
    assert memory.cap_mmap_threshold() is True
    assert libc.calls == [(-3, memory.MMAP_THRESHOLD)]
    memory.cap_mmap_threshold.cache_clear()
