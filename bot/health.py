"""The operator's endpoints, served on the bot's own event loop: `/healthz` and `/metrics`.

`/healthz` answers 200 only while all three parts are fine, else 503, with a JSON body naming them:

    {"status": "ok" | "unhealthy", "checks": {"event_loop": "ok", "gateway": "ok", "database": "ok"}}

- event_loop: the heartbeat ticker ran recently (a blocked loop could not answer at all; a loop
  that is badly behind answers "lagging").
- gateway: the bot is connected to Discord's gateway -- every shard this process runs -- and has
  seen READY ("disconnected", "connecting", "closed").
- database: `SELECT 1` answers within a second ("unreachable", "timeout").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot import metrics

if TYPE_CHECKING:
    import discord

    from storage.db import Database
    from storage.store import Store

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between event-loop heartbeat ticks
STALE_TICK = 10.0  # no tick for this long: the loop is considered stuck
DB_TIMEOUT = 1.0


class LoopTicker:
    """Measures event-loop lag: how much later than asked each short sleep returns."""

    def __init__(self, interval: float = TICK) -> None:
        self.interval = interval
        self.last_beat = time.monotonic()
        self.lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.last_beat = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="loop-lag-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            self.lag = max(0.0, loop.time() - asked - self.interval)
            self.last_beat = time.monotonic()
            metrics.LOOP_LAG.set(self.lag)
            metrics.LOOP_LAG_HIST.observe(self.lag)

    def check(self) -> str:
        if time.monotonic() - self.last_beat > STALE_TICK:
            return "stuck"
        return "lagging" if self.lag > STALE_TICK / 2 else "ok"


def gateway_state(client: discord.Client) -> str:
    if client.is_closed():
        return "closed"
    # A sharded client has no single `ws`: every shard of this process must be connected.
    shards: dict[int, discord.ShardInfo] | None = getattr(client, "shards", None)
    if shards is not None:
        if not shards:
            return "connecting"
        if any(shard.is_closed() for shard in shards.values()):
            return "disconnected"  # discord.py is reconnecting that shard (or backing off)
        return "ok" if client.is_ready() else "connecting"
    ws = client.ws
    if ws is None:
        return "connecting"
    if not ws.open:
        return "disconnected"  # discord.py is reconnecting (or backing off)
    return "ok" if client.is_ready() else "connecting"


async def database_state(db: Database | None) -> str:
    if db is None:
        return "unreachable"
    try:
        row = await asyncio.wait_for(db.fetchone("SELECT 1 AS one"), DB_TIMEOUT)
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # a closed connection, a disk error: all mean "not usable"
        log.warning("Health check: database unusable: %s", exc)
        return "unreachable"
    return "ok" if row is not None and row["one"] == 1 else "unreachable"


class OpsServer:
    """aiohttp server for /healthz and /metrics; `start()` binds, `stop()` releases the port."""

    def __init__(self, client: discord.Client, store: Store, *, host: str, port: int) -> None:
        self.client = client
        self.db = store.db
        self.host = host
        self.port = port
        self.ticker = LoopTicker()
        self.db_metrics = metrics.DatabaseCollector(store.stats)
        self.registry = metrics.build_registry(self.db_metrics, _GatewayCollector(client))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:
            self.port = int(runner.addresses[0][1])  # the real port when 0 was asked for
        await self.db_metrics.start()
        self.ticker.start()
        log.info("Serving /healthz and /metrics on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self.ticker.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self) -> dict[str, Any]:
        checks = {
            "event_loop": self.ticker.check(),
            "gateway": gateway_state(self.client),
            "database": await database_state(self.db),
        }
        healthy = all(v == "ok" for v in checks.values())
        return {"status": "ok" if healthy else "unhealthy", "checks": checks}

    async def healthz(self, request: web.Request) -> web.Response:
        body = await self.health()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.db_metrics.refresh(), DB_TIMEOUT * 5)
        except Exception as exc:  # stale database figures are better than no metrics at all
            log.warning("Metrics: could not read the database: %s", exc)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class _GatewayCollector(Collector):
    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "animate_gateway_connected",
            "1 while connected to Discord's gateway.",
            value=1.0 if gateway_state(self.client) == "ok" else 0.0,
        )
        latency = self.client.latency
        if latency == latency and latency != float("inf"):  # NaN / inf before the first heartbeat
            yield GaugeMetricFamily(
                "animate_gateway_latency_seconds", "Gateway heartbeat round trip.", value=latency
            )
