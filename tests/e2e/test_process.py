"""`python -m bot` as users run it: start-up, a job, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness


async def test_python_m_bot_runs_a_job_and_stops_on_sigterm(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proc = await h.spawn_bot_process(tmp_path, LOG_LEVEL="DEBUG")
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
        await asyncio.wait_for(proc.wait(), timeout=10)
        assert loop.time() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = h.process_logs[0].read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert DISCORD_TOKEN not in stderr and RUNCOMFY_TOKEN not in stderr
    assert "Shutting down" in stderr
    assert h.db_path.exists()
