"""Buttons on a finished video (again, edit, details) and the "Animate this image" message command."""

from __future__ import annotations

from tests.e2e.conftest import Harness, jpeg_bytes
from tests.ledger import job_ledger


async def delivered_job(h: Harness, prompt: str = "a cat waves", **options: object) -> int:
    inter = await h.animate(prompt, **options)
    await h.reply(inter)
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "delivered")
    return job_id


async def test_delivery_carries_the_three_buttons(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    ids = [b["custom_id"] for b in h.buttons(job.delivery_message_id or 0)]
    assert ids == [f"animate:again:{job.id}", f"animate:edit:{job.id}", f"animate:details:{job.id}"]


async def test_animate_again_reuses_image_and_settings_with_a_new_seed(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    first = await h.job(await delivered_job(h, template="squish", resolution="1080P", negative_prompt="blur"))
    click = await h.discord.click(first.delivery_message_id or 0, f"animate:again:{first.id}", user="alice")
    assert "on its way" in await h.reply(click)
    second = await h.wait_job(first.id + 1, "delivered")
    assert (second.prompt, second.template, second.resolution, second.negative_prompt) == (
        first.prompt,
        "squish",
        "1080P",
        "blur",
    )
    assert second.seed is not None and second.seed != first.seed
    assert second.channel_id == h.discord.channel_id and second.thread_id not in (None, first.thread_id)
    # The same normalised image went to RunComfy again, re-hosted on the new status message.
    first_img = h.message(first.status_message_id or 0)["attachments"][0]["data"]
    second_img = h.message(second.status_message_id or 0)["attachments"][0]["data"]
    assert first_img == second_img
    assert await job_ledger(h.running.quota, second.id) == [("charge", 2)]  # charged like a new 1080P job


async def test_edit_prompt_opens_a_prefilled_form(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    first = await h.job(await delivered_job(h, seed=7))
    click = await h.discord.click(first.delivery_message_id or 0, f"animate:edit:{first.id}")
    await click.wait_response()
    modal = click.modal
    assert modal is not None
    values = {
        c["custom_id"]: c.get("value")
        for row in modal["components"]
        for c in ([row["component"]] if "component" in row else row.get("components", []))
    }
    assert "a cat waves" in values.values() and "7" in values.values()
    prompt_id = next(k for k, v in values.items() if v == "a cat waves")
    seed_id = next(k for k, v in values.items() if v == "7")
    submitted = await h.discord.submit_modal(click, {prompt_id: "a cat dances", seed_id: ""})
    assert "on its way" in await h.reply(submitted)
    second = await h.wait_job(first.id + 1, "delivered")
    assert second.prompt == "a cat dances" and second.seed is None


async def test_bad_form_values_are_explained(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    first = await h.job(await delivered_job(h))
    click = await h.discord.click(first.delivery_message_id or 0, f"animate:edit:{first.id}")
    await click.wait_response()
    modal = click.modal
    assert modal is not None
    fields = [
        c
        for row in modal["components"]
        for c in ([row["component"]] if "component" in row else row["components"])
    ]
    resolution_id = next(c["custom_id"] for c in fields if c.get("value") == "480P")
    submitted = await h.discord.submit_modal(click, {resolution_id: "4K"})
    assert "Resolution must be 480P or 1080P" in await h.reply(submitted)
    assert await h.running.db.fetchone("SELECT id FROM jobs WHERE id = ?", (first.id + 1,)) is None


async def test_details_and_permissions(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    details = await h.discord.click(job.delivery_message_id or 0, f"animate:details:{job.id}", user="alice")
    response = await details.wait_response()
    assert details.ephemeral
    fields = {f["name"]: f["value"] for f in response["embeds"][0]["fields"]}
    assert job.request_id in fields["Request id"] and fields["Resolution"] == "480P"
    assert "Took" in fields

    refused = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}", user="bob")
    assert "Only the person who made this video" in await h.reply(refused)
    moderator = await h.discord.click(job.delivery_message_id or 0, f"animate:details:{job.id}", user="mod")
    assert (await moderator.wait_response())["embeds"]


async def test_buttons_work_after_a_restart(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    await h.stop_bot()
    await h.start_bot()
    click = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}")
    assert "on its way" in await h.reply(click)
    await h.wait_job(job.id + 1, "delivered")


async def test_again_without_the_original_image_says_so(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    job = await h.job(await delivered_job(h))
    await h.discord.user_deletes_message(job.status_message_id or 0)
    click = await h.discord.click(job.delivery_message_id or 0, f"animate:again:{job.id}")
    assert "no longer available" in await h.reply(click)


async def test_animate_this_image_message_command(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    post = await h.discord.post_user_message(
        "look at my cat", user="bob", files=[("cat.jpg", jpeg_bytes(800, 600), "image/jpeg")]
    )
    inter = await h.discord.message_command("Animate this image", int(post["id"]), user="alice")
    await inter.wait_response()
    modal = inter.modal
    assert modal is not None
    prompt = next(
        c["custom_id"]
        for row in modal["components"]
        for c in ([row["component"]] if "component" in row else row["components"])
        if c.get("style") == 2 and "Negative" not in str(c.get("label", ""))
    )
    submitted = await h.discord.submit_modal(inter, {prompt: "the cat stretches"})
    assert "on its way" in await h.reply(submitted)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert job.prompt == "the cat stretches" and job.user_id == h.discord.user_ids["alice"]

    plain = await h.discord.post_user_message("no picture here", user="bob")
    refused = await h.discord.message_command("Animate this image", int(plain["id"]), user="alice")
    assert "no image attachment" in await h.reply(refused)
