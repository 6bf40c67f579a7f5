"""`python -m bot` as users run it: start-up, a job, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness

ROOT = Path(__file__).resolve().parents[2]

# Loaded by the interpreter at start-up (site imports `sitecustomize`), so the bot itself runs unmodified.
SITECUSTOMIZE = """
import os
import discord.gateway, discord.http, yarl
base = os.environ["FAKE_DISCORD_URL"]
discord.http.Route.BASE = base + "/api/v10"
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http", "ws", 1) + "/gateway")
"""


async def test_python_m_bot_runs_a_job_and_stops_on_sigterm(harness: Harness, tmp_path: Path) -> None:
    h = harness
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]),
        FAKE_DISCORD_URL=h.discord.url,
        DISCORD_TOKEN=DISCORD_TOKEN,
        RUNCOMFY_API_TOKEN=RUNCOMFY_TOKEN,
        RUNCOMFY_BASE_URL=h.runcomfy.base_url,
        DATABASE_PATH=str(tmp_path / "data" / "bot.db"),
        POLL_FIRST_DELAY="0.05",
        POLL_MAX_INTERVAL="0.2",
        LOG_LEVEL="DEBUG",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await h.discord.wait_until_ready(timeout=30)
        await h.discord.wait_for(lambda: h.discord.find_command("animate"), timeout=30)
        inter = await h.animate("from a real process")
        text = await h.reply(inter, timeout=30)
        assert "on its way" in text

        def delivered() -> bool:
            return any(
                m["attachments"] and m["attachments"][0]["filename"] == "animate-1.mp4"
                for thread_id in h.discord.threads
                for m in h.discord.messages(thread_id)
            )

        await h.discord.wait_for(delivered, timeout=30)
        loop = asyncio.get_running_loop()
        started = loop.time()
        proc.send_signal(signal.SIGTERM)
        _, stderr_bytes = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert loop.time() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = stderr_bytes.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert DISCORD_TOKEN not in stderr and RUNCOMFY_TOKEN not in stderr
    assert "Shutting down" in stderr
    assert (tmp_path / "data" / "bot.db").exists()
