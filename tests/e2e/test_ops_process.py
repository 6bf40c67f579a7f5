"""`python -m bot` with METRICS_PORT and LOG_FORMAT=json, as docker-compose runs it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness


async def test_process_serves_health_and_metrics_and_logs_json(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proc = await h.spawn_bot_process(tmp_path, METRICS_PORT="0", LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    log_path = h.process_logs[0]
    try:
        await h.discord.wait_until_ready(timeout=30)

        def port() -> int | None:
            found = re.search(r"/metrics on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            return int(found.group(1)) if found else None

        base = f"http://127.0.0.1:{await h.discord.wait_for(port, timeout=30)}"
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, str]:
                async with session.get(base + path) as resp:
                    return resp.status, await resp.text()

            async def healthy() -> bool:
                return (await get("/healthz"))[0] == 200

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not await healthy():
                assert loop.time() < deadline, await get("/healthz")
                await asyncio.sleep(0.05)

            await h.discord.wait_for(lambda: h.discord.find_command("animate"), timeout=30)
            inter = await h.animate("from a real process")
            assert "on its way" in await h.reply(inter, timeout=30)

            def delivered() -> bool:
                return any(
                    m["attachments"] and m["attachments"][0]["filename"] == "animate-1.mp4"
                    for thread_id in h.discord.threads
                    for m in h.discord.messages(thread_id)
                )

            await h.discord.wait_for(delivered, timeout=30)
            status, text = await get("/metrics")
            assert status == 200
            assert 'animate_deliveries_total{kind="uploaded"} 1.0' in text
            assert 'animate_submits_total{outcome="accepted"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = log_path.read_text()
    assert proc.returncode == 0, stderr
    assert DISCORD_TOKEN not in stderr and RUNCOMFY_TOKEN not in stderr
    entries: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    submitted = next(e for e in entries if re.fullmatch(r"Job 1 submitted as \S+", e["message"]))
    assert submitted["job_id"] == 1 and submitted["guild_id"] == h.discord.guild_id
    request_id = submitted["message"].rsplit(" ", 1)[1]
    delivered_line = next(e for e in entries if e["message"] == "Job 1 delivered")
    assert delivered_line["job_id"] == 1 and delivered_line["request_id"] == request_id
