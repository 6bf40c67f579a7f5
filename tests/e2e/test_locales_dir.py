"""LOCALES_DIR: a language added without reinstalling the package (README, "Languages")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import i18n
from tests.e2e.conftest import Harness

DONE = "Done — no more DMs about your jobs."


async def test_a_catalog_in_locales_dir_is_used(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The catalogs are process-wide: give this test its own copy.
    monkeypatch.setattr(i18n, "CATALOGS", {k: dict(v) for k, v in i18n.CATALOGS.items()})
    folder = tmp_path / "locales"
    folder.mkdir()
    (folder / "fr.json").write_text(json.dumps({DONE: "C'est fait — plus de MP sur vos tâches."}))
    (folder / "it.json").write_text("{oops")  # logged and skipped; the bot still starts
    (folder / "french.json").write_text("{}")  # not a locale code: skipped too
    await harness.start_bot(locales_dir=folder)

    inter = await harness.discord.slash("animate-notify", {"dm": False}, user="alice", locale="fr")
    assert await harness.reply(inter) == "C'est fait — plus de MP sur vos tâches."
    inter = await harness.discord.slash("animate-notify", {"dm": False}, user="alice", locale="en-US")
    assert await harness.reply(inter) == DONE
    assert "it" not in i18n.CATALOGS and "french" not in i18n.CATALOGS
