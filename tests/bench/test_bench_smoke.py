"""The benchmark harness (bench/) still runs end to end: fakes process, bot process, table."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from bench import run
from bench.fakes_server import DISCORD_TOKEN, RUNCOMFY_TOKEN, Control, RateLimitedDiscord, Window
from tests.fakes.discord import RecordedCall
from tests.fakes.runcomfy import FakeRunComfy, RecordedRequest
from tests.pg import find_bindir


@pytest.mark.timeout(120)
def test_tiny_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    lines: list[str] = []
    raw = tmp_path / "bench.json"
    # Every scenario but the fleet, which needs PostgreSQL: test_tiny_fleet_* below.
    chosen = [name for name in run.SCENARIO_ORDER if name != "fleet"]
    argv = ["--tiny", "--json", str(raw), "--logs", str(tmp_path / "logs")]
    code = run.main(argv + [f"--scenario={name}" for name in chosen], out=lines.append)
    text = "\n".join(lines)
    # Timing targets mean nothing at 1/100 of real time with a handful of jobs (that is what the real
    # benchmark is for), so the run may report misses; what must hold is that it ran and counted right.
    assert code in (0, 1), text
    results = json.loads(raw.read_text())["results"]
    assert set(results) == {r.label for name in chosen for r in run.RUNS[name]}
    m = {label: r["metrics"] for label, r in results.items()}
    assert m["ack"]["acked"] == 5
    assert m["jobs"]["delivered"] == 3
    assert m["load"]["delivered"] == 20
    assert m["quota"]["submitted"] == 5
    assert m["quota"]["charged_jobs"] == 5
    # Issue #13: every shape's jobs delivered by the bot (cold and warm) and by the naive bot, and
    # /result calls counted: every delivered job asked for its result at least once.
    for label in ("shapes-cold", "shapes-warm", "shapes-naive"):
        assert m[label]["delivered"] == m[label]["jobs"] == 5, label
        assert {s: v["jobs"] for s, v in m[label]["shapes"].items()} == {"tight": 2, "5min": 1, "wide": 2}
        for shape in m[label]["shapes"].values():
            assert shape["result_calls"]["n"] == shape["jobs"] and shape["result_calls"]["p50"] >= 1
    assert m["shapes-warm"]["warmup_jobs"] == 3
    assert m["shapes-naive"]["bot"] == "naive" and m["shapes-warm"]["bot"] == "bot"
    # The bot's database writes are traced (it writes rows for every job); the naive bot has none.
    assert m["shapes-cold"]["db_writes_per_job"] > 0
    assert "db_writes_per_job" not in m["shapes-naive"] or m["shapes-naive"]["db_writes_per_job"] == 0
    for label, n in (("photos", 3), ("photos-naive", 3), ("phones", 2), ("phones-naive", 2)):
        assert m[label]["delivered"] == n, label
        assert m[label]["bot_cpu_seconds"] > 0 and m[label]["rss_hwm_mib"] > 0
    # The peak is sampled every 0.5 s: on a loaded machine the first jobs can finish before the last are
    # submitted, so only its bounds are a count; the figure itself belongs to the full-size bench.
    assert m["flood"]["delivered"] == 30 and 0 < m["flood"]["peak_in_flight"] <= 30
    assert "| figure" in text and "naive bot" in text and "target(s) missed" in text
    for figure in ("RunComfy calls per 60 s job", "Discord REST calls per job", "database writes per job"):
        assert figure in text


@pytest.mark.timeout(120)
def test_tiny_fleet_runs_three_shard_processes_on_one_postgres(tmp_path: Path) -> None:
    """Issue #14's fleet at a tiny scale: three bot processes (SHARD_IDS 0, 1, 2 of 3) on one throwaway
    PostgreSQL, each serving its own shard's guilds; counts only. CI installs PostgreSQL (.ci/run), so
    there a missing server fails instead of skipping, as tests/conftest.py's pg_server does."""
    if find_bindir() is None:
        message = "PostgreSQL is not installed (no initdb/postgres); `apt-get install postgresql`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    lines: list[str] = []
    raw = tmp_path / "bench.json"
    argv = ["--tiny", "-s", "fleet", "--json", str(raw), "--logs", str(tmp_path / "logs")]
    code = run.main(argv, out=lines.append)
    text = "\n".join(lines)
    assert code in (0, 1), text  # timing targets mean nothing at this scale
    m = json.loads(raw.read_text())["results"]["fleet"]["metrics"]
    # 30 commands over 6 guilds, two guilds per shard: 10 per process, each delivered exactly once.
    assert m["jobs"] == m["job_rows"] == m["delivered"] == m["delivered_once"] == 30, text
    assert m["duplicate_posts"] == 0
    assert sorted(p["shard"] for p in m["processes"]) == [0, 1, 2]
    for p in m["processes"]:
        assert (p["shard_count"], p["guilds"], p["jobs"], p["rest_rate"]) == (3, 2, 10, 16)
        assert p["bot_cpu_seconds"] > 0 and p["rss_hwm_mib"] > 0
        assert p["acked"] == p["commands"] == 10
        assert p["loop_lag"]["n"] > 0
    # The database's load is read from pg_stat_database around the driving: every job inserted a row.
    assert m["db"]["xact_commit"] > 0 and m["db"]["tup_inserted"] >= 30
    assert m["db_per_job"]["tup_inserted"] == m["db"]["tup_inserted"] / 30
    assert "Issue #14, the fleet" in text and "delivered exactly once" in text


async def test_the_fleet_drivers_hear_how_long_both_fakes_have_been_quiet() -> None:
    """A fleet driver stops waiting for videos once neither fake has seen a request for a while: a
    job that failed never posts one, and waiting for all of them hung the full-size run for an hour."""
    control = Control(RateLimitedDiscord(DISCORD_TOKEN), FakeRunComfy(RUNCOMFY_TOKEN), fleet_guilds=3)

    class Request:
        async def json(self) -> dict[str, Any]:
            return {"guilds": [control.spaces["fleet-0"][0]]}

    async def videos() -> dict[str, Any]:
        resp = await control.videos(Request())  # type: ignore[arg-type]
        return dict(json.loads(resp.text or "{}"))

    assert (await videos())["quiet_seconds"] == 0.0  # nothing asked yet: not quiet
    now = time.monotonic()
    control.runcomfy.requests.append(RecordedRequest("GET", "/status", None, {}, True, at=now - 300))
    control.discord.calls.append(RecordedCall("PATCH", "/channels/1/messages/2", {}, None, [], at=now - 40))
    got = await videos()
    assert got["posted"] == 0 and 40 <= got["quiet_seconds"] < 300  # the latest request of either


def test_rate_limit_window_refuses_over_the_limit_and_resets_whole() -> None:
    w = Window(limit=5, seconds=5.0)
    assert all(w.take(100.0 + i * 0.1) for i in range(5))
    assert w.remaining(100.5) == 0
    assert not w.take(100.6)  # sixth request inside the window: 429
    assert w.reset_after(100.6) == pytest.approx(4.4)
    assert w.take(105.0)  # the window opened at 100.0 reset: a whole bucket again
    assert w.remaining(105.0) == 4


async def test_bench_discord_answers_429_like_discord() -> None:
    import aiohttp

    from bench.fakes_server import RateLimitedDiscord

    async with RateLimitedDiscord("t0ken") as fake:
        fake.ratelimits = True
        url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
        auth = {"Authorization": "Bot t0ken"}
        async with aiohttp.ClientSession() as http:
            answers = []
            for i in range(6):
                async with http.post(url, json={"content": f"m{i}"}, headers=auth) as resp:
                    answers.append((resp.status, dict(resp.headers), await resp.json()))
    assert [a[0] for a in answers] == [200] * 5 + [429]
    ok_headers = answers[4][1]
    assert ok_headers["X-RateLimit-Limit"] == "5" and ok_headers["X-RateLimit-Remaining"] == "0"
    assert float(ok_headers["X-RateLimit-Reset-After"]) > 0 and ok_headers["X-RateLimit-Bucket"]
    _, headers, body = answers[5]
    assert body["global"] is False and 0 < body["retry_after"] <= 5
    assert headers["Via"] and headers["X-RateLimit-Scope"] == "user" and int(headers["Retry-After"]) >= 1
    assert headers["Content-Type"] == "application/json"  # exactly: discord.py parses nothing else
    assert fake.rejected == {"route": 1}
    assert len(fake.messages(fake.channel_id)) == 5  # the refused message was not posted
    assert [c.status for c in fake.calls_to("POST", r"/messages$")] == [200] * 5 + [429]


async def test_discord_py_waits_out_the_bench_429s_and_delivers_everything() -> None:
    """The bench's 429s are ones discord.py understands: it sleeps and retries, nothing is lost."""
    import re

    import aiohttp
    import discord
    from discord.http import handle_message_parameters

    from bench.fakes_server import RateLimitedDiscord
    from tests.fakes.discord import patched_discord

    limits = (("POST", re.compile(r"/channels/(\d+)/messages"), "message-create", 2, 0.3),)
    async with RateLimitedDiscord("t0ken", route_limits=limits) as fake:
        with patched_discord(fake):
            fake.ratelimits = True
            url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
            async with aiohttp.ClientSession() as raw:  # someone else fills the window first
                for _ in range(2):
                    async with raw.post(url, json={"content": "x"}, headers={"Authorization": "Bot t0ken"}):
                        pass
            http = discord.http.HTTPClient(asyncio.get_running_loop())
            await http.static_login("t0ken")
            try:
                for i in range(5):
                    with handle_message_parameters(content=f"m{i}") as params:
                        await http.send_message(fake.channel_id, params=params)
            finally:
                await http.close()
    assert fake.rejected["route"] >= 1  # discord.py met a 429 ...
    assert [m["content"] for m in fake.messages(fake.channel_id)][-5:] == [
        f"m{i}" for i in range(5)
    ]  # ... and retried
