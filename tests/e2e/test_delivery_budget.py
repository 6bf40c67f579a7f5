"""Videos in memory at once: a burst of finished jobs is delivered within a byte budget (issue #13)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.engine._delivery import VIDEO_BYTES_IN_FLIGHT
from bot.intake import Budget
from bot.media.buffers import UploadBody
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript


class UploadsAtOnce:
    """Wraps the delivery's upload step: each upload is held `hold` seconds (long enough for others to
    overlap if the budget let them), and `peak` is the most that were under way at once."""

    def __init__(self, delivery: Any, hold: float) -> None:
        self.in_flight = self.peak = 0
        self._upload, self._hold = delivery._upload, hold
        delivery._upload = self

    async def __call__(self, job: Any, outgoing: Any) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self._hold)
            await self._upload(job, outgoing)
        finally:
            self.in_flight -= 1


async def test_a_burst_of_finished_jobs_holds_the_videos_within_the_budget(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = h.runcomfy.video_bytes + b"\0" * 1_200_000  # over the budget and the first guess
    await h.start_bot()
    delivery = h.running.engine.delivery
    delivery._videos = Budget(100_000)  # smaller than one video: one delivery at a time
    uploads = UploadsAtOnce(delivery, hold=0.05)
    users = ["alice", "bob", "mod", "admin"]
    for _ in users:
        h.runcomfy.scripts.append(JobScript(queue_seconds=0.1, run_seconds=0.3))
    for user in users:
        await h.reply(await h.animate(user=user))
    for job_id in range(1, len(users) + 1):
        job = await h.wait_job(job_id, "delivered")
        videos = [m for m in h.discord.messages(job.thread_id) if m["attachments"]]
        assert len(videos) == 1, job_id
    assert uploads.peak == 1
    # The next download is expected to be as large as the last video, so it waits for room at once.
    assert delivery._typical == len(h.runcomfy.video_bytes)
    assert delivery._videos.free == delivery._videos.total  # everything held was given back


async def test_every_upload_lets_go_of_its_bytes_when_the_post_is_over(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status post's image and the video are sent from the bytes already held, and released right
    # after the post: aiohttp's finished request is garbage in a cycle, which would keep them until
    # the collector's next full pass (a photo burst held 18 videos that way).
    h = harness
    bodies: list[UploadBody] = []
    released: list[int] = []
    init, release = UploadBody.__init__, UploadBody.release

    def tracked_init(self: UploadBody, data: bytes) -> None:
        init(self, data)
        bodies.append(self)

    def tracked_release(self: UploadBody) -> None:
        released.append(id(self))
        release(self)

    monkeypatch.setattr(UploadBody, "__init__", tracked_init)
    monkeypatch.setattr(UploadBody, "release", tracked_release)
    await h.start_bot()
    await h.reply(await h.animate(user="alice"))
    job = await h.wait_job(1, "delivered")
    status = h.discord.messages(job.channel_id)[0]
    video = next(m for m in h.discord.messages(job.thread_id) if m["attachments"])
    assert status["attachments"][0]["data"] and video["attachments"][0]["data"] == h.runcomfy.video_bytes
    assert len(bodies) == 2  # the image on the status message, the video
    assert sorted(released) == sorted(id(b) for b in bodies)
    assert all(b.closed and b.getbuffer().nbytes == 0 for b in bodies)


async def test_the_first_burst_of_deliveries_is_bounded_before_any_video_size_is_known(
    harness: Harness,
) -> None:
    # Before the first video has been seen each delivery holds VIDEO_FIRST_GUESS: a guess far below
    # a real clip let the whole first burst download at once (1 MB each, then 3 MB each arrived).
    h = harness
    h.runcomfy.video_bytes = h.runcomfy.video_bytes + b"\0" * 3_200_000  # a 480p clip's size
    await h.start_bot()
    delivery = h.running.engine.delivery
    uploads = UploadsAtOnce(delivery, hold=0.3)
    users = [f"user{i}" for i in range(9)]
    for user in users:
        h.discord.add_member(user)
        h.runcomfy.scripts.append(JobScript(queue_seconds=0.0, run_seconds=None))
    for user in users:
        await h.reply(await h.animate(user=user))
    # Every job finishes at the same moment, and each download takes a while: without a fitting
    # guess all of them would be under way before the first video's size is known.
    h.runcomfy.fail_next("video", 0, delay=0.5, times=len(users))
    for request_id in list(h.runcomfy.jobs):
        h.runcomfy.advance(request_id)
    for job_id in range(1, len(users) + 1):
        await h.wait_job(job_id, "delivered")
    # As many videos as fit into the budget (7 of the 9), not as many 1 MB guesses (all 9).
    assert uploads.peak <= VIDEO_BYTES_IN_FLIGHT // len(h.runcomfy.video_bytes)
    assert delivery._videos.free == delivery._videos.total
