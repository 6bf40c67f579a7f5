"""`Presenter.show_if_still`: a state shown only if it lingers ("uploading") costs no read of the job
once this process has shown it finished (issue #13: one read of the row per delivered job)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from bot.engine._presenter import Presenter
from bot.engine._scheduler import Tasks
from storage.jobs import Job, JobState
from tests.bot.test_delivery_parts import make_job


@dataclass
class CountingJobs:
    rows: dict[int, Job]
    reads: list[int] = field(default_factory=list)

    async def get(self, job_id: int) -> Job | None:
        self.reads.append(job_id)
        return self.rows.get(job_id)


@dataclass
class FakeContext:
    jobs: CountingJobs
    settings: Any = None
    closing: bool = False


def presenter(rows: dict[int, Job]) -> tuple[Presenter, CountingJobs]:
    jobs = CountingJobs(rows)
    return Presenter(cast(Any, FakeContext(jobs)), cast(Tasks, None)), jobs


async def test_a_job_shown_finished_is_not_read_again_to_see_whether_it_still_uploads() -> None:
    delivered = make_job(id=7, state=JobState.DELIVERED, status_message_id=None)
    p, jobs = presenter({7: delivered})
    await p.present(delivered, force=True)  # what the delivery does once the video is posted
    await p.show_if_still(7, JobState.DELIVERING, 0)
    assert jobs.reads == []


async def test_a_job_not_shown_finished_here_is_read_and_shown_while_it_lingers() -> None:
    uploading = make_job(id=8, state=JobState.DELIVERING, status_message_id=None)
    p, jobs = presenter({8: uploading})
    shown: list[Job] = []

    async def present(job: Job, *, force: bool = False) -> None:
        shown.append(job)

    p.present = present  # type: ignore[method-assign]
    await p.show_if_still(8, JobState.DELIVERING, 0)
    assert jobs.reads == [8] and shown == [uploading]  # still uploading: shown
    # Finished elsewhere (another process, a cancel): the read tells, and nothing is shown.
    jobs.rows[8] = dataclasses.replace(uploading, state=JobState.FAILED)
    await p.show_if_still(8, JobState.DELIVERING, 0)
    assert jobs.reads == [8, 8] and shown == [uploading]
