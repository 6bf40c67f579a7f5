"""Every input the contract rejects gets a clear ephemeral answer, no submit and no charge."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.e2e.conftest import Harness, jpeg_bytes
from tests.ledger import job_ledger


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30, 0) if mode == "RGBA" else "red").save(buf, "PNG")
    return buf.getvalue()


def animated_gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (400, 400), c) for c in ("red", "blue")]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


CASES = [
    ("notes.txt", b"hello, I am not an image", "text/plain", "isn't an image"),
    ("fake.png", b"hello, I am not an image either", "image/png", "image"),
    ("tiny.png", png(100, 100), "image/png", "at least 360x360"),
    ("thin.png", png(359, 1200), "image/png", "at least 360x360"),
    ("anim.gif", animated_gif(), "image/gif", "Animated images"),
    ("empty.jpg", b"", "image/jpeg", "image"),
    ("cut.jpg", jpeg_bytes()[:400], "image/jpeg", "image"),
]


@pytest.mark.parametrize(("filename", "data", "content_type", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_bad_image_is_refused_clearly(
    harness: Harness, filename: str, data: bytes, content_type: str, expected: str
) -> None:
    h = harness
    await h.start_bot()
    inter = await h.animate(image=h.image(data, filename, content_type))
    text = await h.reply(inter)
    assert expected in text, text
    assert inter.ephemeral
    assert "Traceback" not in text
    assert h.runcomfy.requests_to("submit") == []
    assert await h.running.db.fetchone("SELECT id FROM jobs") is None
    assert h.discord.messages(h.discord.channel_id) == []


async def test_awkward_image_is_fixed_and_the_user_told(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    inter = await h.animate(image=h.image(png(2400, 1200, "RGBA"), "screenshot.png", "image/png"))
    text = await h.reply(inter)
    assert "on its way" in text and "resized from 2400x1200 to 2000x1000" in text
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert "resized" in (job.image_note or "")


async def test_oversized_upload_is_refused_before_download(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    attachment = h.image()
    attachment["size"] = 80 * 1024 * 1024  # what Discord reports; the bytes are never fetched
    inter = await h.animate(image=attachment)
    text = await h.reply(inter)
    assert "under 50 MB" in text
    assert h.runcomfy.requests_to("submit") == []


async def test_runcomfy_out_of_balance_is_not_charged(harness: Harness) -> None:
    h = harness
    h.runcomfy.balance = 0
    await h.start_bot()
    inter = await h.animate()
    text = await h.reply(inter)
    assert "out of credit" in text and "not charged" in text and "admin" in text
    job = await h.job(await h.last_job_id())
    assert job.state.value == "failed"
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1), ("refund", -1)]
    # The public status message says what happened too.
    assert "Failed" in h.status_text(job.status_message_id or 0)


async def test_runcomfy_down_is_not_charged_and_submit_sent_once(harness: Harness) -> None:
    h = harness
    h.runcomfy.fail_next("submit", 503, times=5)
    await h.start_bot()
    inter = await h.animate()
    text = await h.reply(inter)
    assert "didn't confirm" in text and "not charged" in text
    assert len(h.runcomfy.requests_to("submit")) == 1  # an ambiguous submit is never re-sent
    job = await h.job(await h.last_job_id())
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1), ("refund", -1)]


async def test_mentions_in_the_prompt_never_ping(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    prompt = "@everyone @here <@&123> <@456> dance ‮RTL‬ 🎉"
    inter = await h.animate(prompt)
    await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert job.prompt == prompt
    for call in h.discord.calls:
        if call.method in ("POST", "PATCH") and isinstance(call.json, dict) and "content" in call.json:
            mentions = call.json.get("allowed_mentions")
            assert mentions is not None, call.path
            assert mentions.get("parse") == [] and not mentions.get("roles")


async def test_rejected_runcomfy_token_is_reported_for_an_admin(harness: Harness) -> None:
    h = harness
    await h.start_bot(runcomfy_api_token="not-the-right-token")
    inter = await h.animate()
    text = await h.reply(inter)
    assert "refused the bot's API token" in text and "admin" in text and "not charged" in text
    job = await h.job(await h.last_job_id())
    assert await job_ledger(h.running.quota, job.id) == [("charge", 1), ("refund", -1)]
