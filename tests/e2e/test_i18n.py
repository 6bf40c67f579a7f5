"""Languages end to end: ephemeral answers in the user's language, public messages in the server's,
English by default, and localised command descriptions in the synced payload."""

from __future__ import annotations

from typing import Any

import pytest

from bot import i18n
from tests.e2e.adminkit import admin, audit_titles, fields
from tests.e2e.conftest import Harness, jpeg_bytes

GERMAN = i18n.CATALOGS["de"]


def _embed_field_names(message: dict[str, Any]) -> list[str]:
    return [f["name"] for f in message["embeds"][0]["fields"]]


async def test_a_german_user_gets_german_ephemeral_answers(harness: Harness) -> None:
    h = harness
    await h.start_bot(daily_quota=0)

    # Out of credits: the refusal is in the user's client language.
    opts = {"image": h.image(), "prompt": "eine Katze blinzelt"}
    inter = await h.discord.slash("animate", opts, user="alice", locale="de")
    text = await h.reply(inter)
    assert inter.ephemeral
    assert text.startswith("Du hast keine Credits mehr: Dieser Job kostet 1 und du hast heute noch 0 von 0.")
    assert "<t:" in text  # the reset time stays a Discord timestamp

    # A picture that is too small: the media error is German too.
    tiny = h.image(jpeg_bytes(100, 100), filename="tiny.jpg")
    inter = await h.discord.slash("animate", {"image": tiny, "prompt": "x"}, user="bob", locale="de")
    text = await h.reply(inter)
    assert text.startswith("Dieses Bild ist zu klein (100x100 px)"), text

    # The same refusal for an English user stays byte-for-byte English.
    inter = await h.discord.slash(
        "animate", {"image": h.image(jpeg_bytes(100, 100)), "prompt": "x"}, user="bob"
    )
    text = await h.reply(inter)
    assert text.startswith("That image is too small (100x100 px): it must be at least 360x360 px"), text

    # Other ephemeral replies: /jobs and the error handler's wording.
    inter = await h.discord.slash("jobs", {}, user="mod", locale="de")
    assert (await h.reply(inter)) == "Du hast /animate auf diesem Server noch nicht genutzt."


async def test_a_german_server_gets_german_status_and_delivery(harness: Harness) -> None:
    h = harness
    h.discord.set_guild_locale("de")
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42" + b"video!" * 1000
    await h.start_bot()

    # An English-speaking member on a German server: their own answer is English, the public
    # messages are German.
    inter = await h.animate("the cat turns its head")
    text = await h.reply(inter)
    assert "on its way" in text and "4 credits left today." in text

    job_id = await h.last_job_id()
    job = await h.wait_job(job_id, "delivered")
    assert job.locale == "de"
    assert job.status_message_id is not None and job.delivery_message_id is not None

    status_id = job.status_message_id
    await h.discord.wait_for(lambda: h.status_text(status_id).startswith("✅") or None, timeout=5)
    status = h.message(status_id)
    embed = status["embeds"][0]
    assert embed["title"] == "🎬 Bild zu Video"
    assert _embed_field_names(status)[:2] == ["Angefragt von", "Auflösung"]
    state = next(f["value"] for f in embed["fields"] if f["name"] == "Status")
    assert state.startswith("✅ Fertig in ") and state.endswith("das Video ist im Thread.")
    assert embed["footer"]["text"] == f"Job #{job_id} · Wan 2.2 auf RunComfy"

    delivered = h.message(job.delivery_message_id)
    alice = h.discord.user_ids["alice"]
    assert delivered["content"] == f"<@{alice}> dein Video ist fertig! 🎬 · job #{job_id}"
    labels = [c["label"] for c in h.buttons(job.delivery_message_id)]
    assert labels == ["Nochmal animieren", "Prompt bearbeiten", "Details"]

    # Details is ephemeral: the clicking user's language, here English.
    click = await h.discord.click(job.delivery_message_id, f"animate:details:{job_id}", user="alice")
    details = (await click.wait_response())["embeds"][0]
    assert details["title"] == f"Job #{job_id}" and details["fields"][0]["name"] == "Resolution"
    click = await h.discord.click(
        job.delivery_message_id, f"animate:details:{job_id}", user="alice", locale="de"
    )
    details = (await click.wait_response())["embeds"][0]
    assert [f["name"] for f in details["fields"]][:2] == ["Auflösung", "Vorlage"]


async def test_a_german_server_gets_german_failures_and_dms(harness: Harness) -> None:
    h = harness
    h.discord.set_guild_locale("de")
    await h.start_bot()
    h.runcomfy.balance = 0  # the submit is refused: the job fails and is refunded

    inter = await h.discord.slash(
        "animate", {"image": h.image(), "prompt": "a cat"}, user="alice", locale="de"
    )
    text = await h.reply(inter)
    assert text == (
        "Das RunComfy-Konto des Bots hat kein Guthaben mehr – bitte sag einem Server-Admin Bescheid. "
        "Dir wurde nichts berechnet."
    )
    job = await h.wait_job(await h.last_job_id(), "failed")
    assert job.error == "Das RunComfy-Konto hat kein Guthaben mehr."
    status_id = job.status_message_id or 0
    await h.discord.wait_for(lambda: h.status_text(status_id).startswith("❌") or None, timeout=5)
    assert h.status_text(status_id) == (
        "❌ Fehlgeschlagen: Das RunComfy-Konto hat kein Guthaben mehr.\nDeine Credits wurden erstattet."
    )


async def test_english_stays_the_default(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    inter = await h.animate()
    assert "Your video is on its way" in await h.reply(inter)
    job = await h.wait_job(await h.last_job_id(), "delivered")
    assert job.locale == "en-US"
    status = h.message(job.status_message_id or 0)
    assert status["embeds"][0]["title"] == "🎬 Image to video"
    assert _embed_field_names(status)[:2] == ["Requested by", "Resolution"]
    labels = [c["label"] for c in h.buttons(job.delivery_message_id or 0)]
    assert labels == ["Animate again", "Edit prompt", "Details"]


def _command(commands: list[dict[str, Any]], name: str, ctype: int = 1) -> dict[str, Any]:
    return next(c for c in commands if c["name"] == name and c.get("type", 1) == ctype)


def _option(command: dict[str, Any], *path: str) -> dict[str, Any]:
    node = command
    for name in path:
        node = next(o for o in node["options"] if o["name"] == name)
    return node


async def test_synced_commands_carry_german_localisations(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    [sync] = h.discord.calls_to("PUT", r"/applications/\d+/commands")
    commands: list[dict[str, Any]] = sync.json

    animate = _command(commands, "animate")
    assert animate["description"] == "Turn an image into a 5-second video with Wan 2.2"
    assert animate["description_localizations"] == {
        "de": "Mach aus einem Bild ein 5-Sekunden-Video mit Wan 2.2"
    }
    assert not animate.get("name_localizations")  # command names stay English, like the docs
    prompt = _option(animate, "prompt")
    assert prompt["description_localizations"]["de"] == "Was im Video passieren soll"
    assert not prompt.get("name_localizations")

    admin = _command(commands, "animate-admin")
    assert (
        admin["description_localizations"]["de"] == GERMAN["Configure /animate for this server (admins only)"]
    )
    period = _option(admin, "quota", "default", "period")
    assert [(c["value"], c.get("name_localizations")) for c in period["choices"]] == [
        ("day", {"de": "Tag"}),
        ("week", {"de": "Woche"}),
    ]

    menu = _command(commands, "Animate this image", ctype=3)
    assert menu["name_localizations"] == {"de": "Dieses Bild animieren"}

    # Every slash command and option description has its German twin.
    def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node] + [n for o in node.get("options") or [] for n in walk(o)]

    for command in commands:
        if command.get("type", 1) == 1:
            for node in walk(command):
                assert node["description_localizations"].get("de"), node["name"]


async def test_a_changed_translation_triggers_a_sync(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness

    def syncs() -> int:
        return len(h.discord.calls_to("PUT", r"/applications/\d+/commands"))

    await h.start_bot()
    await h.stop_bot()
    await h.start_bot()
    assert syncs() == 1  # unchanged: not synced again
    await h.stop_bot()

    english = "See how many /animate credits you have left"
    monkeypatch.setitem(GERMAN, english, "Schau nach, wie viele /animate-Credits du noch hast")
    await h.start_bot()
    assert syncs() == 2
    quota = _command(h.discord.calls_to("PUT", r"/applications/\d+/commands")[-1].json, "quota")
    assert quota["description_localizations"]["de"] == "Schau nach, wie viele /animate-Credits du noch hast"


async def test_admin_changes_echo_in_the_admins_language_and_audit_in_the_servers(harness: Harness) -> None:
    h = harness
    h.discord.set_guild_locale("de")
    audit = h.discord.add_channel("audit-log")
    await h.start_bot()

    # An English-speaking admin on a German server.
    text = await admin(h, "audit-channel", channel=audit)
    assert text == f"✅ Audit log goes to <#{audit}>."
    inter = await h.discord.slash(
        "animate-admin", {"credits": 3}, user="admin", subcommand="quota default", locale="de"
    )
    assert (await h.reply(inter)) == "✅ Mitglieder bekommen 3 Credits pro Tag, zurückgesetzt um 00:00 UTC."

    inter = await h.animate()
    await h.reply(inter)
    job_id = await h.last_job_id()
    await h.wait_job(job_id, "delivered")
    titles = await audit_titles(h, audit, 4)
    assert titles.count("Einstellungen geändert") == 2
    assert f"🚀 Eingereicht · Job #{job_id}" in titles
    embeds = [m["embeds"][0] for m in h.discord.messages(audit) if m.get("embeds")]
    [change] = [e for e in embeds if e.get("description") == f"Das Audit-Log geht jetzt nach <#{audit}>."]
    assert fields(change) == {"Von": f"<@{h.discord.user_ids['admin']}>"}


async def test_the_animate_form_speaks_the_users_language(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    post = await h.discord.post_user_message(
        "look", user="bob", files=[("cat.jpg", jpeg_bytes(), "image/jpeg")]
    )
    inter = await h.discord.message_command("Animate this image", int(post["id"]), user="alice", locale="de")
    await inter.wait_response()
    modal = inter.modal
    assert modal is not None and modal["title"] == "Dieses Bild animieren"
    rows = modal["components"]
    inputs = [c for row in rows for c in ([row["component"]] if "component" in row else row["components"])]
    labels = [str(row.get("label") or c.get("label")) for row, c in zip(rows, inputs, strict=True)]
    assert labels[:3] == ["Prompt", "Negativ-Prompt (optional)", "Auflösung: 480P oder 1080P"]
    submitted = await h.discord.submit_modal(inter, {inputs[2]["custom_id"]: "4K"})
    assert (await h.reply(submitted)) == "Die Auflösung muss 480P oder 1080P sein, nicht „4K“."
