"""Issue #11: every path answers. A failure in a button, a form or a command gets one friendly, localised,
ephemeral answer -- the "thinking…" placeholder is replaced -- and is logged once with its traceback."""

from __future__ import annotations

import logging
import sys

import pytest

from tests.e2e.conftest import Harness
from tests.e2e.test_approval import approval_on, request
from tests.e2e.test_remix import delivered_job
from tests.fakes.discord import FakeInteraction
from tests.ledger import job_ledger

STORAGE = "database is unavailable"
LOADING = 1 << 7  # Discord's message flag for the "thinking…" placeholder


async def refuse_writes(h: Harness) -> None:
    await h.running.db.execute("PRAGMA query_only = 1")


async def allow_writes(h: Harness) -> None:
    await h.running.db.execute("PRAGMA query_only = 0")


async def answer(h: Harness, inter: FakeInteraction) -> str:
    """The answer, after checking it is ephemeral and nothing is left "thinking"."""
    text = await h.reply(inter)
    assert inter.ephemeral
    original = inter.original_message
    if original is not None:
        assert not int(original["flags"]) & LOADING, "still thinking…"
    assert inter.rejected_callbacks == []
    return text


async def still_alive(h: Harness) -> None:
    """After the fault is gone the bot answers as usual: nothing crashed."""
    await allow_writes(h)
    inter = await h.discord.slash("animate-notify", {"dm": True}, user="bob")
    assert "I'll DM you" in await answer(h, inter)


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("bot", "cogs"))]


async def test_cancel_while_the_database_refuses_writes_says_it_could_not_be_done(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.default_script.queue_seconds = None  # stays queued: cancellable
    assert "on its way" in await h.reply(await h.animate())
    job = await h.wait_job(await h.last_job_id(), "queued")
    await refuse_writes(h)
    caplog.clear()

    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job.id}", user="alice")
    text = await answer(h, click)
    assert STORAGE in text and "could not be completed" in text
    assert "charged" not in text  # a cancel is not about a charge
    assert "Traceback" not in text
    logged = [r for r in error_records(caplog) if "cancel button" in r.getMessage().lower()]
    assert len(logged) == 1 and logged[0].exc_info is not None

    await still_alive(h)


async def test_approve_while_the_database_refuses_writes_gets_an_answer(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    await refuse_writes(h)

    click = await h.discord.click(message_id, f"animate:approve:{job_id}", user="mod")
    text = await answer(h, click)
    assert STORAGE in text and "Nothing was charged" in text
    assert h.runcomfy.requests_to("submit") == []

    await allow_writes(h)
    assert (await h.job(job_id)).state.value == "awaiting_approval"
    assert await job_ledger(h.running.quota, job_id) == []
    click = await h.discord.click(message_id, f"animate:approve:{job_id}", user="mod")
    assert "Approved" in await answer(h, click)


async def test_reject_and_withdraw_while_the_database_refuses_writes_get_an_answer(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h)
    await refuse_writes(h)
    for action, user in (("reject", "mod"), ("withdraw", "alice")):
        click = await h.discord.click(message_id, f"animate:{action}:{job_id}", user=user)
        text = await answer(h, click)
        assert STORAGE in text and "could not be completed" in text, action
    await still_alive(h)
    assert (await h.job(job_id)).state.value == "awaiting_approval"


async def test_animate_again_while_the_database_refuses_writes_gets_an_answer(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    await refuse_writes(h)

    click = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}", user="alice")
    text = await answer(h, click)
    assert STORAGE in text and "Nothing was charged" in text
    assert len(h.runcomfy.requests_to("submit")) == 1  # only the first job

    await allow_writes(h)
    click = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}", user="alice")
    assert "on its way" in await answer(h, click)


async def test_edit_prompt_form_while_the_database_refuses_writes_gets_an_answer(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    await refuse_writes(h)

    click = await h.discord.click(job.delivery_message_id or 0, f"animate:edit:{job.id}", user="alice")
    await click.wait_response()
    assert click.modal is not None
    submitted = await h.discord.submit_modal(click, {})
    text = await answer(h, submitted)
    assert STORAGE in text and "Nothing was charged" in text
    assert len(h.runcomfy.requests_to("submit")) == 1
    await still_alive(h)


async def test_german_user_gets_the_answer_in_german(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    await refuse_writes(h)
    click = await h.discord.click(
        job.delivery_message_id or 0, f"animate:again:{job.id}", user="alice", locale="de"
    )
    text = await answer(h, click)
    assert "Datenbank" in text and "nichts berechnet" in text


async def test_unexpected_error_in_a_button_before_it_answered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("details exploded")

    # load_extension executes the cog's module afresh: patch the module the running cog came from.
    remix = sys.modules[type(h.running.get_cog("Remix")).__module__]
    monkeypatch.setattr(remix, "details_embed", broken)
    caplog.clear()
    click = await h.discord.click(job.delivery_message_id or 0, f"animate:details:{job.id}", user="alice")
    text = await answer(h, click)
    assert click.response_type == 4  # not deferred: answered directly
    assert text == "Something went wrong on my side — please try again in a moment."
    assert "exploded" not in text
    logged = error_records(caplog)
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "details exploded" in str(logged[0].exc_info[1])
    await still_alive(h)


async def test_slash_command_that_charges_nothing_does_not_mention_charges(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await refuse_writes(h)
    inter = await h.discord.slash("animate-notify", {"dm": True}, user="alice")
    text = await answer(h, inter)
    assert STORAGE in text and "could not be completed" in text and "charged" not in text


async def test_an_expired_interaction_is_only_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    await h.start_bot()
    h.runcomfy.default_script.queue_seconds = None
    assert "on its way" in await h.reply(await h.animate())
    job = await h.wait_job(await h.last_job_id(), "queued")
    await refuse_writes(h)
    # The interaction token is used up by the time the bot answers: Discord says Unknown Webhook.
    h.discord.fail_next(
        "POST", r"/webhooks/\d+/[^/]+$", 404, body={"code": 10015, "message": "Unknown Webhook"}
    )
    caplog.clear()
    click = await h.discord.click(job.status_message_id or 0, f"animate:cancel:{job.id}", user="alice")
    await h.discord.wait_for(
        lambda: any("Could not tell the user" in r.getMessage() for r in caplog.records), timeout=10
    )
    assert click.followups == []
    assert len([r for r in error_records(caplog) if "cancel button" in r.getMessage().lower()]) == 1
    await still_alive(h)
