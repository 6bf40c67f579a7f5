"""Operations: the /healthz + /metrics server (METRICS_PORT) and the job-event counters.

A cog, so the server starts with the bot (extensions load in setup_hook, after the database is open)
and stops when discord.py unloads the extensions on close, before the database is closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from discord.ext import commands

from bot import metrics
from bot.health import OpsServer
from storage.jobs import Job
from storage.lifecycle import JobEvent

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)


class Ops(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        self.server: OpsServer | None = None

    async def cog_load(self) -> None:
        settings = self.bot.settings
        if settings.metrics_port is None:
            return
        server = OpsServer(self.bot, self.bot.store, host=settings.metrics_host, port=settings.metrics_port)
        try:
            await server.start()
        except OSError as exc:
            # The bot itself still works; the operator sees this line and a failing health check.
            log.error(
                "Could not serve metrics on %s:%s (%s); running without /healthz and /metrics",
                settings.metrics_host,
                settings.metrics_port,
                exc.strerror or exc,
            )
            return
        self.server = server

    async def cog_unload(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    @commands.Cog.listener()
    async def on_job_event(self, job: Job, event: JobEvent, actor_id: int | None) -> None:
        metrics.count_job_event(event)


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Ops(bot))
