"""Metric helpers, the database collector and the health checks, piece by piece."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bot import health, metrics
from bot.runcomfy import (
    RunComfyAuthError,
    RunComfyBalanceError,
    RunComfyError,
    RunComfyUnavailableError,
    SubmitOutcomeUnknown,
)
from storage.db import Database
from storage.store import Store


def sample(collector: Any, name: str, **labels: str) -> float:
    for family in collector.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_discord_routes_hide_ids_and_tokens() -> None:
    route = metrics.discord_route
    assert route("/api/v10/channels/123456789012345678/messages") == "/channels/{id}/messages"
    assert route("/api/v10/webhooks/1234567/aW50ZXJhY3Rpb246MTIzNDU2Nzg5OjEyMw/messages/@original") == (
        "/webhooks/{id}/{x}/messages/@original"
    )
    assert route("/api/v10/interactions/12345678/SomeToken_With-Caps/callback?with_response=true") == (
        "/interactions/{id}/{x}/callback"
    )
    assert route("/api/v10/channels/1234567/messages/7654321/reactions/%F0%9F%91%8D/@me") == (
        "/channels/{id}/messages/{id}/reactions/{x}/@me"
    )


def test_discord_route_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_routes", set())
    monkeypatch.setattr(metrics, "MAX_ROUTES", 2)
    assert metrics.discord_route("/api/v10/a") == "/a"
    assert metrics.discord_route("/api/v10/b") == "/b"
    assert metrics.discord_route("/api/v10/c") == "other"
    assert metrics.discord_route("/api/v10/a") == "/a"


async def test_discord_trace_counts_429s_by_route_and_scope() -> None:
    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"retry_after": 0.1}, status=429, headers={"X-RateLimit-Scope": "shared"})

    app = web.Application()
    app.router.add_post("/api/v10/channels/{cid}/messages", limited)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    labels = {"route": "POST /channels/{id}/messages", "scope": "shared"}
    before = sample(metrics.DISCORD_RATE_LIMITS, "animate_discord_rate_limits_total", **labels)
    try:
        url = f"http://127.0.0.1:{port}/api/v10/channels/123456789/messages"
        async with (
            aiohttp.ClientSession(trace_configs=[metrics.discord_http_trace()]) as session,
            session.post(url) as resp,
        ):
            assert resp.status == 429
    finally:
        await runner.cleanup()
    assert sample(metrics.DISCORD_RATE_LIMITS, "animate_discord_rate_limits_total", **labels) == before + 1


def test_submit_outcomes_are_a_small_fixed_set() -> None:
    assert metrics.submit_outcome(None) == "accepted"
    assert metrics.submit_outcome(SubmitOutcomeUnknown("x")) == "outcome_unknown"
    assert metrics.submit_outcome(RunComfyBalanceError("x")) == "no_balance"
    assert metrics.submit_outcome(RunComfyAuthError("x")) == "token_rejected"
    assert metrics.submit_outcome(RunComfyUnavailableError("x")) == "unavailable"
    assert metrics.submit_outcome(RunComfyError("x")) == "other"


def test_runcomfy_endpoints_and_answers() -> None:
    assert metrics.runcomfy_endpoint("https://h/v1/models/wan-ai/wan-2-2/image-to-video") == "submit"
    assert metrics.runcomfy_endpoint("https://h/v1/requests/abc/status") == "status"
    assert metrics.runcomfy_endpoint("https://h/v1/requests/abc/result?x=1") == "result"
    assert metrics.runcomfy_endpoint("https://h/v1/requests/abc/cancel") == "cancel"
    assert metrics.runcomfy_endpoint("https://h/v1/whatever") == "other"
    assert metrics.http_answer(404) == "404" and metrics.http_answer(418) == "4xx"
    assert metrics.http_answer(299) == "2xx"


def test_runcomfy_call_counts_timeouts() -> None:
    labels = {"endpoint": "cancel", "answer": "timeout"}
    before = sample(metrics.RUNCOMFY_REQUESTS, "animate_runcomfy_requests_total", **labels)
    with pytest.raises(TimeoutError), metrics.runcomfy_call("https://h/v1/requests/a/cancel"):
        raise TimeoutError
    assert sample(metrics.RUNCOMFY_REQUESTS, "animate_runcomfy_requests_total", **labels) == before + 1


def test_delivery_kinds() -> None:
    def count(kind: str) -> float:
        return sample(metrics.DELIVERIES, "animate_deliveries_total", kind=kind)

    before = {k: count(k) for k in metrics.DELIVERY_KINDS}
    metrics.count_delivery(1, uploaded=True)
    metrics.mark_reencoded(2)
    metrics.count_delivery(2, uploaded=True)
    metrics.mark_reencoded(3)  # re-encoded, then Discord refused the file: a link after all
    metrics.count_delivery(3, uploaded=False)
    metrics.count_delivery(2, uploaded=True)  # the mark is used up
    assert {k: count(k) - before[k] for k in before} == {"uploaded": 2, "reencoded": 1, "link_only": 1}


def test_unknown_words_fold_into_other() -> None:
    before = sample(metrics.POLLS, "animate_polls_total", status="other")
    metrics.count_poll("some brand new word")
    assert sample(metrics.POLLS, "animate_polls_total", status="other") == before + 1
    before = sample(metrics.JOB_EVENTS_TOTAL, "animate_job_events_total", event="other")
    metrics.count_job_event("invented")
    assert sample(metrics.JOB_EVENTS_TOTAL, "animate_job_events_total", event="other") == before + 1


async def _insert_job(db: Database, state: str) -> int:
    return await db.insert(
        "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, resolution, prompt_extend, cost,"
        " upload_limit, state, created_at, updated_at) VALUES (1, 2, 3, 'p', '480P', 1, 2, 1, ?, 0, 0)",
        (state,),
    )


async def _ledger(db: Database, job_id: int, credits: int, kind: str) -> None:
    await db.insert(
        "INSERT INTO quota_ledger (guild_id, user_id, job_id, period, credits, kind, created_at)"
        " VALUES (1, 3, ?, 'd', ?, ?, 0)",
        (job_id, credits, kind),
    )


async def test_database_collector_counts_from_the_ledger_incrementally(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "m.db")
    try:
        old = await _insert_job(db, "delivered")
        await _ledger(db, old, 5, "charge")  # before the bot started: not counted
        collector = metrics.DatabaseCollector(Store(db).stats)
        await collector.start()
        queued = await _insert_job(db, "queued")
        running = await _insert_job(db, "running")
        await _ledger(db, queued, 2, "charge")
        await _ledger(db, running, 2, "charge")
        await collector.refresh()
        assert sample(collector, "animate_credits_charged_total") == 4
        assert sample(collector, "animate_jobs", state="queued") == 1
        assert sample(collector, "animate_jobs_in_flight") == 2
        await _ledger(db, running, -2, "refund")
        await db.execute("UPDATE jobs SET state = 'failed' WHERE id = ?", (running,))
        await collector.refresh()
        await collector.refresh()  # nothing new: nothing counted twice
        assert sample(collector, "animate_credits_charged_total") == 4
        assert sample(collector, "animate_credits_refunded_total") == 2
        assert sample(collector, "animate_jobs", state="running") == 0
        assert sample(collector, "animate_jobs_in_flight") == 1
        await _ledger(db, queued, 3, "grant")  # grants are neither charges nor refunds
        fresh = await _insert_job(db, "pending")
        await _ledger(db, fresh, 1, "charge")
        await asyncio.gather(collector.refresh(), collector.refresh())  # concurrent scrapes
        assert sample(collector, "animate_credits_charged_total") == 5
        text = generate_latest(metrics.build_registry(collector)).decode()
        assert "animate_credits_refunded_total 2.0" in text and "process_" in text
    finally:
        await db.close()


async def test_database_state_reports_a_closed_database(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "h.db")
    assert await health.database_state(db) == "ok"
    await db.close()
    assert await health.database_state(db) == "unreachable"
    assert await health.database_state(None) == "unreachable"


def test_loop_ticker_notices_a_stuck_loop() -> None:
    ticker = health.LoopTicker()
    assert ticker.check() == "ok"
    ticker.lag = health.STALE_TICK
    assert ticker.check() == "lagging"
    ticker.last_beat = time.monotonic() - health.STALE_TICK - 1
    assert ticker.check() == "stuck"


def test_gateway_states() -> None:
    def client(closed: bool = False, ws: Any = None, ready: bool = True) -> Any:
        return SimpleNamespace(is_closed=lambda: closed, ws=ws, is_ready=lambda: ready)

    assert health.gateway_state(client(closed=True)) == "closed"
    assert health.gateway_state(client(ws=None)) == "connecting"
    assert health.gateway_state(client(ws=SimpleNamespace(open=False))) == "disconnected"
    assert health.gateway_state(client(ws=SimpleNamespace(open=True), ready=False)) == "connecting"
    assert health.gateway_state(client(ws=SimpleNamespace(open=True))) == "ok"


def test_gateway_states_with_shards() -> None:
    def shard(closed: bool) -> Any:
        return SimpleNamespace(is_closed=lambda: closed)

    def client(shards: dict[int, Any], ready: bool = True, closed: bool = False) -> Any:
        # A sharded client's `ws` stays None: the shards decide.
        return SimpleNamespace(is_closed=lambda: closed, ws=None, shards=shards, is_ready=lambda: ready)

    assert health.gateway_state(client({0: shard(False), 1: shard(False)})) == "ok"
    assert health.gateway_state(client({0: shard(False), 1: shard(True)})) == "disconnected"
    assert health.gateway_state(client({0: shard(False)}, ready=False)) == "connecting"
    assert health.gateway_state(client({})) == "connecting"
    assert health.gateway_state(client({0: shard(False)}, closed=True)) == "closed"


async def test_healthz_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    bot: Any = SimpleNamespace(
        is_closed=lambda: False, ws=SimpleNamespace(open=True), is_ready=lambda: True, latency=0.05
    )
    server = health.OpsServer(bot, Store(db), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}"
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 200
            async with session.get(url + "/metrics") as resp:
                assert "animate_gateway_latency_seconds 0.05" in await resp.text()
            await db.close()
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["database"] == "unreachable"
            async with session.get(url + "/metrics") as resp:  # still answers, with stale figures
                assert resp.status == 200
    finally:
        await server.stop()


async def test_a_taken_port_is_an_oserror_not_a_hang(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "p.db")
    bot: Any = SimpleNamespace(is_closed=lambda: False, ws=None, is_ready=lambda: False, latency=float("nan"))
    first = health.OpsServer(bot, Store(db), host="127.0.0.1", port=0)
    await first.start()
    try:
        second = health.OpsServer(bot, Store(db), host="127.0.0.1", port=first.port)
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.stop()
        await db.close()
