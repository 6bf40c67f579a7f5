"""RunComfy's output URL is untrusted (issue #11): the bot fetches it only over https from public
addresses (every redirect re-checked) or from RunComfy's own origin, and posts it only if it is a video.
Anything else: the user hears the video could not be fetched (with the link if it is https), and the
log says why."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import FakeRunComfy, JobScript
from tests.ledger import job_ledger

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"elsewhere" * 300


@pytest.fixture
async def elsewhere() -> AsyncIterator[FakeRunComfy]:
    """Another server on 127.0.0.1 (a different port) that would happily serve a video."""
    async with FakeRunComfy() as server:
        server.host_file("clip.mp4", VIDEO, "video/mp4")
        yield server


async def deliver(h: Harness, output_url: str) -> dict[str, object]:
    h.runcomfy.scripts.append(JobScript(output_url=output_url))
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    # A download that was refused is not a failed generation: the existing rule (no refund) holds.
    assert await job_ledger(h.running.quota, 1) == [("charge", 1)]
    return h.message(job.delivery_message_id or 0)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused to fetch")]


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_redirect_to_a_loopback_address_is_not_followed(
    harness: Harness, elsewhere: FakeRunComfy, caplog: pytest.LogCaptureFixture, scheme: str
) -> None:
    h = harness
    caplog.set_level(logging.INFO)
    target = f"{scheme}://127.0.0.1:{elsewhere.port}/uploads/clip.mp4?sig=secret"
    url = h.runcomfy.redirect("out", target)
    delivered = await deliver(h, url)
    assert delivered["attachments"] == []
    assert url in str(delivered["content"])  # RunComfy's own origin: the link is passed on
    assert elsewhere.requests_to("upload") == []  # never fetched
    [why] = refusals(caplog)
    assert "127.0.0.1" in why and "secret" not in why
    assert not any("secret" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "host",
    [
        "localhost:{port}",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "10.1.2.3",
        "169.254.169.254",
        "[::ffff:10.0.0.1]",
    ],
)
async def test_https_to_a_non_public_host_is_refused_and_linked(
    harness: Harness, elsewhere: FakeRunComfy, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    h = harness
    url = f"https://{host.format(port=elsewhere.port)}/uploads/clip.mp4"
    delivered = await deliver(h, url)
    assert delivered["attachments"] == []
    assert url in str(delivered["content"]) and "couldn't download it" in str(delivered["content"])
    [why] = refusals(caplog)
    assert "public address" in why


@pytest.mark.parametrize(
    "where", ["http://video.invalid/clip.mp4", "http://127.0.0.1:{port}/uploads/clip.mp4"]
)
async def test_plain_http_elsewhere_is_neither_fetched_nor_linked(
    harness: Harness, elsewhere: FakeRunComfy, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    h = harness
    url = where.format(port=elsewhere.port)
    h.runcomfy.scripts.append(JobScript(output_url=url))
    await h.start_bot()
    await h.reply(await h.animate())
    # Neither the file nor a link it may pass on: the requester gets nothing, so the job fails, refunded.
    job = await h.wait_job(1, "failed")
    assert await job_ledger(h.running.quota, 1) == [("charge", 1), ("refund", -1)]
    assert "could not be fetched" in (job.error or "")
    assert job.thread_id is not None
    [told] = await h.discord.wait_for(
        lambda: [m for m in h.discord.messages(job.thread_id or 0) if "refunded" in (m["content"] or "")]
    )
    content = str(told["content"])
    assert told["attachments"] == []
    assert url not in content and "http://" not in content
    assert "could not be fetched" in content and "not a secure (https)" in content
    assert f"<@{h.discord.user_ids['alice']}>" in content
    assert elsewhere.requests_to("upload") == []
    [why] = refusals(caplog)
    assert "scheme http" in why


async def test_a_body_that_is_not_a_video_is_not_posted(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    url = h.runcomfy.host_file("page.html", b"<!doctype html><title>Sign in</title>", "text/html")
    delivered = await deliver(h, url)
    assert delivered["attachments"] == []
    assert url in str(delivered["content"])
    assert any("not a video" in r.getMessage() for r in caplog.records)


async def test_redirects_within_runcomfy_are_followed(harness: Harness) -> None:
    h = harness
    h.runcomfy.host_file("clip.mp4", VIDEO, "video/mp4")
    url = h.runcomfy.redirect("out", "/uploads/clip.mp4", status=307)
    delivered = await deliver(h, url)
    attachments = delivered["attachments"]
    assert isinstance(attachments, list) and [a["data"] for a in attachments] == [VIDEO]


async def test_a_redirect_loop_is_cut_off_after_five_hops(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    url = h.runcomfy.redirect("loop", "/redirect/loop")
    delivered = await deliver(h, url)
    assert delivered["attachments"] == []
    assert len(h.runcomfy.requests_to("redirect")) == 6  # the first request and five redirects
    [why] = refusals(caplog)
    assert "more than 5 redirects" in why
