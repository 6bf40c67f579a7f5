"""Spoilers (issue #15): a spoilered job's source image and video are blurred (SPOILER_ attachments),
the image never shows in clear in an embed, a link instead of the file is wrapped in `||…||`, a server
may force it, and a remix, the message command and a restart keep it."""

from __future__ import annotations

from typing import Any

from storage.jobs import Job
from tests.e2e.adminkit import admin, audit_titles, fields
from tests.e2e.conftest import Harness, jpeg_bytes
from tests.e2e.test_approval import approval_on, click, request
from tests.e2e.test_delivery import long_output_urls
from tests.fakes.discord import ATTACHMENT_IS_SPOILER
from tests.fakes.runcomfy import JobScript

VIDEO = b"\x00\x00\x00\x18ftypmp42spoilered"


def spoilered(attachment: dict[str, Any]) -> bool:
    """As Discord marks it: the SPOILER_ name as sent, and the attachment's spoiler flag."""
    return str(attachment["filename"]).startswith("SPOILER_") and bool(
        int(attachment["flags"]) & ATTACHMENT_IS_SPOILER
    )


def assert_image_hidden(h: Harness, job: Job) -> None:
    """The status message hosts the image as a spoiler, and no version of its embed ever showed it."""
    status = h.message(job.status_message_id or 0)
    [image] = status["attachments"]
    assert spoilered(image), image["filename"]
    # Every status embed the bot sent for this job (the post and each edit), by its footer.
    sent = [
        embed
        for call in h.discord.calls
        if isinstance(call.json, dict)
        for embed in (call.json.get("embeds") or [])
        if str((embed.get("footer") or {}).get("text", "")).startswith(f"Job #{job.id} ·")
    ]
    assert sent, "the status embed was sent"
    assert all("thumbnail" not in embed and "image" not in embed for embed in sent)


def assert_video_spoilered(h: Harness, job: Job) -> dict[str, Any]:
    delivered = h.message(job.delivery_message_id or 0)
    [video] = delivered["attachments"]
    assert video["filename"] == f"SPOILER_animate-{job.id}.mp4" and spoilered(video)
    assert video["data"] == VIDEO
    return delivered


async def test_spoilered_delivery_blurs_image_and_video_and_keeps_the_buttons(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    await h.start_bot()
    inter = await h.animate("a ghost waves", spoiler=True)
    assert "on its way" in await h.reply(inter)
    job = await h.wait_job(1, "delivered")
    assert job.spoiler
    assert_image_hidden(h, job)
    delivered = assert_video_spoilered(h, job)
    # The prompt is text the member chose to post: shown as usual.
    assert h.message(job.status_message_id or 0)["embeds"][0]["description"] == "a ghost waves"
    assert [b["custom_id"] for b in h.buttons(int(delivered["id"]))] == [
        f"animate:{action}:1" for action in ("again", "edit", "details")
    ]
    details = await h.discord.click(int(delivered["id"]), "animate:details:1")
    assert fields((await details.wait_response())["embeds"][0])["Spoiler"] == "on"


async def test_a_job_without_spoiler_is_shown_as_before(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    await h.reply(await h.animate())
    job = await h.wait_job(1, "delivered")
    assert not job.spoiler
    status = h.message(job.status_message_id or 0)
    assert not spoilered(status["attachments"][0])
    assert status["embeds"][0]["thumbnail"]["url"].endswith("/source.jpg")
    [video] = h.message(job.delivery_message_id or 0)["attachments"]
    assert video["filename"] == "animate-1.mp4" and not spoilered(video)


async def test_an_image_uploaded_as_a_spoiler_stays_one(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    image = h.image(filename="SPOILER_photo.jpg")
    await h.reply(await h.animate(image=image))
    job = await h.wait_job(1, "delivered")
    assert job.spoiler
    assert_image_hidden(h, job)


async def test_link_instead_of_the_file_is_wrapped_in_spoiler_bars(harness: Harness) -> None:
    h = harness
    h.runcomfy.scripts.append(JobScript(video_status=404))
    await h.start_bot()
    await h.reply(await h.animate(spoiler=True))
    job = await h.wait_job(1, "delivered")
    delivered = h.message(job.delivery_message_id or 0)
    url = h.runcomfy.output_url(job.request_id or "")
    assert delivered["attachments"] == []
    assert f"||<{url}>||" in delivered["content"] and len(delivered["content"]) <= 2000
    assert "job #1" in delivered["content"]


async def test_long_link_in_the_embed_is_wrapped_in_spoiler_bars(harness: Harness) -> None:
    h = harness
    long_output_urls(h)
    h.runcomfy.scripts.append(JobScript(video_status=404))
    await h.start_bot()
    await h.reply(await h.animate(spoiler=True))
    job = await h.wait_job(1, "delivered")
    url = h.runcomfy.output_url(job.request_id or "")
    delivered = h.message(job.delivery_message_id or 0)
    assert len(delivered["content"]) <= 2000 and url not in delivered["content"]
    assert "(link below)" in delivered["content"]
    [embed] = delivered["embeds"]
    assert embed["description"] == f"||{url}||"
    assert len(h.buttons(job.delivery_message_id or 0)) == 3


async def test_the_server_setting_forces_spoilers_and_is_shown_and_audited(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    audit = h.discord.add_channel("audit-log")
    await h.start_bot()
    await admin(h, "audit-channel", channel=audit)
    text = await admin(h, "moderation spoiler", forced=True)
    assert text.startswith("✅") and "Spoilers forced" in text
    # Members cannot change it, even where the server shows them the command.
    h.discord.enforce_command_permissions = False
    await h.running.store.guilds.update(h.discord.guild_id, None, force_spoiler=False)
    refused = await h.discord.slash(
        "animate-admin", {"forced": True}, user="alice", subcommand="moderation spoiler"
    )
    assert not (await h.reply(refused)).startswith("✅")
    assert not (await h.running.store.guilds.get(h.discord.guild_id)).force_spoiler
    assert "Spoilers forced" in await admin(h, "moderation spoiler", forced=True)

    shown = await h.discord.slash("animate-admin", {}, user="admin", subcommand="show")
    assert fields((await shown.wait_response())["embeds"][0])["Spoilers"] == "forced on every job"
    await audit_titles(h, audit, 2)
    assert any("Spoilers forced" in str(m["embeds"][0]) for m in h.discord.messages(audit))

    await h.reply(await h.animate(spoiler=False))  # the member said no: the server decides
    job = await h.wait_job(1, "delivered")
    assert job.spoiler
    assert_image_hidden(h, job)
    assert_video_spoilered(h, job)

    assert "no longer forced" in await admin(h, "moderation spoiler", forced=False)
    await h.reply(await h.animate())
    assert not (await h.wait_job(2, "delivered")).spoiler


async def test_restart_mid_job_keeps_the_spoiler(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    h.runcomfy.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    await h.start_bot()
    await h.reply(await h.animate(spoiler=True))
    job = await h.wait_job(1, "queued")
    await h.stop_bot()
    h.runcomfy.advance(job.request_id or "")
    h.runcomfy.advance(job.request_id or "")

    await h.start_bot()  # a new process, knowing the job only from the database
    job = await h.wait_job(1, "delivered")
    assert_video_spoilered(h, job)
    assert_image_hidden(h, job)


async def test_remixes_of_a_spoilered_video_stay_spoilered(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    await h.start_bot()
    await h.reply(await h.animate(spoiler=True))
    first = await h.wait_job(1, "delivered")

    again = await h.discord.click(first.delivery_message_id or 0, "animate:again:1")
    assert "on its way" in await h.reply(again)
    second = await h.wait_job(2, "delivered")
    assert second.spoiler
    assert_image_hidden(h, second)
    assert_video_spoilered(h, second)
    # The same image went along (re-hosted from the first job's spoilered attachment).
    assert (
        h.message(second.status_message_id or 0)["attachments"][0]["data"]
        == h.message(first.status_message_id or 0)["attachments"][0]["data"]
    )

    edit = await h.discord.click(first.delivery_message_id or 0, "animate:edit:1")
    await edit.wait_response()
    assert edit.modal is not None
    prompt_id = next(
        c["custom_id"]
        for row in edit.modal["components"]
        for c in ([row["component"]] if "component" in row else row["components"])
        if c.get("value") == first.prompt
    )
    assert "on its way" in await h.reply(await h.discord.submit_modal(edit, {prompt_id: "a ghost bows"}))
    third = await h.wait_job(3, "delivered")
    assert third.spoiler and third.prompt == "a ghost bows"
    assert_video_spoilered(h, third)


async def animate_message(h: Harness, filename: str) -> Job:
    post = await h.discord.post_user_message(
        "look", user="bob", files=[(filename, jpeg_bytes(800, 600), "image/jpeg")]
    )
    inter = await h.discord.message_command("Animate this image", int(post["id"]), user="alice")
    await inter.wait_response()
    assert inter.modal is not None
    prompt_id = next(
        c["custom_id"]
        for row in inter.modal["components"]
        for c in ([row["component"]] if "component" in row else row["components"])
        if c.get("style") == 2 and "Negative" not in str(c.get("label", ""))
    )
    assert "on its way" in await h.reply(await h.discord.submit_modal(inter, {prompt_id: "it moves"}))
    return await h.wait_job(await h.last_job_id(), "delivered")


async def test_the_message_command_follows_the_pictures_spoiler_flag(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    await h.start_bot()
    hidden = await animate_message(h, "SPOILER_cat.jpg")
    assert hidden.spoiler
    assert_image_hidden(h, hidden)
    assert_video_spoilered(h, hidden)
    plain = await animate_message(h, "cat.jpg")
    assert not plain.spoiler


async def test_a_request_awaiting_approval_hides_its_image_too(harness: Harness) -> None:
    h = harness
    h.runcomfy.video_bytes = VIDEO
    await h.start_bot()
    await approval_on(h)
    job_id, message_id = await request(h, spoiler=True)
    assert_image_hidden(h, await h.job(job_id))
    assert "Approved" in await click(h, message_id, "approve", job_id, user="mod")
    job = await h.wait_job(job_id, "delivered")
    assert_image_hidden(h, job)  # the image RunComfy got came from the spoilered attachment
    assert_video_spoilered(h, job)
