"""One store per bot: every consumer reaches the same repositories, so a change is seen at once."""

from __future__ import annotations

from tests.e2e.adminkit import admin
from tests.e2e.conftest import Harness


async def test_admin_admission_and_engine_share_the_one_store(harness: Harness) -> None:
    h = harness
    bot = await h.start_bot()
    store = bot.store
    # (An extension's modules are loaded afresh by each bot, so their classes are not the ones a test
    # could import: the cogs' attributes are read by name.)
    group = bot.tree.get_command("animate-admin")
    # The admin commands, admission and the engine see the very same repositories (and guild cache).
    assert getattr(group, "guilds", None) is store.guilds is bot.admission.guilds
    assert bot.engine.jobs is store.jobs is bot.jobs and bot.engine.quota is store.quota is bot.quota
    assert bot.db is store.db and bot.engine.ctx.stats is store.stats
    notify = bot.get_cog("Notify")
    assert notify is not None and vars(notify)["prefs"] is store.prefs


async def test_an_admin_change_is_seen_by_the_next_request_at_once(harness: Harness) -> None:
    h = harness
    await h.start_bot()
    # The first request caches the guild's configuration in the one GuildRepository ...
    assert "on its way" in await h.reply(await h.animate())
    # ... which the admin command's write invalidates, so admission refuses the very next request.
    await admin(h, "channels allow", channel=h.discord.other_channel_id)
    assert "isn't enabled in this channel" in await h.reply(await h.animate())
    await admin(h, "channels clear")
    assert "on its way" in await h.reply(await h.animate())
