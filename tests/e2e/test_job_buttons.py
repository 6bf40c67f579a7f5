"""Issue #12: the persistent job buttons share one base (bot.ui.JobButton): the checks run in its
interaction_check, the handling cog is a typed attribute of the bot, and a failure in the check is
answered like any other failure (discord.py would only log it)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Harness
from tests.e2e.test_approval import approval_on, click, request
from tests.e2e.test_errors import answer, error_records
from tests.e2e.test_remix import delivered_job
from tests.ledger import job_ledger


async def test_a_failure_in_the_buttons_check_is_answered_and_logged_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    remix = h.running.remix
    assert remix is not None

    async def broken(*args: object) -> str | None:
        raise RuntimeError("check exploded")

    monkeypatch.setattr(remix, "button_refusal", broken)
    caplog.clear()
    inter = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}", user="alice")
    text = await answer(h, inter)
    assert text == "Something went wrong on my side. Nothing was charged; please try again."
    logged = error_records(caplog)
    assert len(logged) == 1 and "check exploded" in str(logged[0].exc_info and logged[0].exc_info[1])
    assert len(h.runcomfy.requests_to("submit")) == 1  # the delivered job only: nothing new started


async def test_refused_in_the_check_the_handler_never_runs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    approval = h.running.approval
    assert approval is not None
    pressed: list[str] = []

    async def record(*args: object) -> None:
        pressed.append("pressed")

    monkeypatch.setattr(approval, "button_pressed", record)
    assert "Only members with the" in await click(h, message_id, "approve", job_id, "bob")
    assert "Only the person who asked" in await click(h, message_id, "withdraw", job_id, "bob")
    assert pressed == []


async def test_buttons_of_an_unloaded_cog_say_they_are_unavailable(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    await h.running.unload_extension("cogs.approval")
    assert h.running.approval is None
    # The status message's buttons stay clickable (the view store knows them) and say so.
    text = await click(h, message_id, "approve", job_id, "mod")
    assert text == "Approvals aren't available right now. Please try again later."
    assert await job_ledger(h.running.quota, job_id) == []
