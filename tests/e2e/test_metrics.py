"""METRICS_PORT: /metrics moves with real jobs, /healthz follows the gateway (issue #16)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.client import AnimateBot
from bot.health import OpsServer
from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness
from tests.fakes.runcomfy import JobScript

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def ops_server(bot: AnimateBot) -> OpsServer | None:
    # discord.py loads extensions as fresh module objects: the cog is not an instance of cogs.ops.Ops.
    cog = bot.get_cog("Ops")
    assert cog is not None
    server = getattr(cog, "server", None)
    assert server is None or isinstance(server, OpsServer)
    return server


def ops_url(bot: AnimateBot) -> str:
    server = ops_server(bot)
    assert server is not None
    return f"http://127.0.0.1:{server.port}"


async def scrape(bot: AnimateBot) -> tuple[Samples, str]:
    async with aiohttp.ClientSession() as session, session.get(ops_url(bot) + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def healthz(bot: AnimateBot) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(ops_url(bot) + "/healthz") as resp:
        return resp.status, await resp.json()


async def test_metrics_count_a_delivered_and_a_failed_job(harness: Harness) -> None:
    h = harness
    bot = await h.start_bot(metrics_port=0)
    before, _ = await scrape(bot)

    # One 429 on the status message post: discord.py retries it; the trace still counts it.
    h.discord.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=0.01)
    inter = await h.animate("a cat blinks")
    assert "on its way" in await h.reply(inter)
    await h.wait_job(await h.last_job_id(), "delivered")

    h.runcomfy.scripts.append(JobScript(outcome="failed", error="boom"))
    inter = await h.animate("this one fails", user="bob")
    assert "on its way" in await h.reply(inter)
    await h.wait_job(await h.last_job_id(), "failed")

    after, text = await scrape(bot)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("animate_submits_total", outcome="accepted") == 2
    assert moved("animate_job_events_total", event="submitted") == 2
    assert moved("animate_job_events_total", event="delivered") == 1
    assert moved("animate_job_events_total", event="failed") == 1
    assert moved("animate_deliveries_total", kind="uploaded") == 1
    assert moved("animate_runcomfy_requests_total", endpoint="submit", answer="200") == 2
    assert moved("animate_runcomfy_requests_total", endpoint="status", answer="200") >= 2
    assert moved("animate_runcomfy_requests_total", endpoint="result", answer="200") == 2
    assert moved("animate_runcomfy_request_seconds_count", endpoint="submit") == 2
    assert moved("animate_polls_total", status="succeeded") == 2
    assert moved("animate_discord_rate_limits_total", route="POST /channels/{id}/messages", scope="user") == 1
    assert value(after, "animate_credits_charged_total") == 2
    assert value(after, "animate_credits_refunded_total") == 1
    assert value(after, "animate_jobs_in_flight") == 0
    assert value(after, "animate_jobs", state="queued") == 0
    assert value(after, "animate_gateway_connected") == 1
    assert ("animate_event_loop_lag_seconds", ()) in after
    # Nothing that identifies a person, a server or a credential.
    for secret in (
        DISCORD_TOKEN,
        RUNCOMFY_TOKEN,
        str(h.discord.guild_id),
        str(h.discord.user_ids["alice"]),
        "a cat blinks",
    ):
        assert secret not in text


async def test_jobs_in_flight_are_visible_while_queued(harness: Harness) -> None:
    h = harness
    bot = await h.start_bot(metrics_port=0)
    h.runcomfy.scripts.append(JobScript(queue_seconds=None))
    inter = await h.animate("waits in the queue")
    assert "on its way" in await h.reply(inter)
    await h.wait_job(await h.last_job_id(), "queued")
    samples, _ = await scrape(bot)
    assert value(samples, "animate_jobs_in_flight") == 1
    assert value(samples, "animate_jobs", state="queued") == 1
    assert value(samples, "animate_credits_charged_total") == 1


async def test_healthz_is_503_while_the_gateway_is_down_and_200_after(harness: Harness) -> None:
    h = harness
    # The harness' bot does not reconnect; this one does, as in production.
    bot = AnimateBot(h.settings(metrics_port=0), guild_ready_timeout=0.05)
    await bot.login(DISCORD_TOKEN)
    h.bot = bot
    h.task = asyncio.create_task(bot.connect(reconnect=True))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=10)

    status, body = await healthz(bot)
    assert (status, body) == (
        200,
        {"status": "ok", "checks": {"event_loop": "ok", "gateway": "ok", "database": "ok"}},
    )

    h.discord.refuse_gateway = True
    connections = len(h.discord.gateway_connections)
    await h.discord.disconnect_gateway(4000)

    async def unhealthy() -> tuple[int, dict[str, Any]] | None:
        answer = await healthz(bot)
        return answer if answer[0] == 503 else None

    status, body = await wait_for_async(unhealthy)
    assert body["status"] == "unhealthy"
    assert body["checks"]["gateway"] == "disconnected"
    assert body["checks"]["database"] == "ok" and body["checks"]["event_loop"] == "ok"
    await h.discord.wait_for(lambda: h.discord.refused_gateway_connections >= 1, timeout=10)
    assert (await healthz(bot))[0] == 503  # still held down

    h.discord.refuse_gateway = False

    async def healthy() -> tuple[int, dict[str, Any]] | None:
        answer = await healthz(bot)
        return answer if answer[0] == 200 else None

    status, body = await wait_for_async(healthy, timeout=30)
    assert body["checks"] == {"event_loop": "ok", "gateway": "ok", "database": "ok"}
    assert len(h.discord.gateway_connections) > connections  # it really reconnected


async def test_metrics_server_is_off_without_metrics_port(harness: Harness) -> None:
    bot = await harness.start_bot()
    assert ops_server(bot) is None


async def wait_for_async(probe: Any, timeout: float = 15) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_taken_metrics_port_is_logged_and_the_bot_runs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="cogs.ops"):
            bot = await harness.start_bot(metrics_port=port)
        assert ops_server(bot) is None
        assert f"Could not serve metrics on 127.0.0.1:{port}" in caplog.text
        inter = await harness.animate("still works")
        assert "on its way" in await harness.reply(inter)
