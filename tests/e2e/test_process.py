"""`python -m bot` as users run it: start-up, a job, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.conftest import DISCORD_TOKEN, RUNCOMFY_TOKEN, Harness
from tests.fakes.discord import FakeDiscord


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


# ---------------------------------------------------------------------------------------------- start-up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_log(h: Harness, proc: asyncio.subprocess.Process, text: str, timeout: float = 30) -> str:
    """The process log once it contains `text` (fails at once if the process exits first)."""
    log = h.process_logs[h.processes.index(proc)]

    def seen() -> bool:
        if proc.returncode is not None:
            raise AssertionError(
                f"bot exited ({proc.returncode}) before logging {text!r}:\n{log.read_text()}"
            )
        return text in log.read_text()

    await h.discord.wait_for(seen, timeout=timeout)
    return log.read_text()


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), timeout=15)


def assert_clean(stderr: str) -> None:
    for bad in ("Traceback", "Event loop is closed", "Unclosed client session", "Unclosed connector"):
        assert bad not in stderr, stderr
    assert DISCORD_TOKEN not in stderr


async def test_discord_unreachable_at_start_is_retried_until_it_comes_up(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    port = free_port()  # nothing listens here yet: connection refused
    proc = await h.spawn_bot_process(tmp_path, FAKE_DISCORD_URL=f"http://127.0.0.1:{port}")
    await wait_for_log(h, proc, "Discord unreachable")
    await wait_for_log(h, proc, "retrying in")
    async with FakeDiscord(DISCORD_TOKEN, port=port) as late:
        await late.wait_until_ready(timeout=30)
        assert await stop(proc) == 0
    stderr = h.process_logs[0].read_text()
    assert_clean(stderr)
    lines = [line for line in stderr.splitlines() if "Discord unreachable" in line]
    assert lines and all("WARNING" in line and "retrying in" in line for line in lines)


async def test_discord_5xx_on_login_is_retried(harness: Harness, tmp_path: Path) -> None:
    h = harness
    # 503 is not one of the statuses discord.py retries by itself.
    h.discord.fail_next("GET", r"/users/@me$", 503, times=2)
    proc = await h.spawn_bot_process(tmp_path)
    await h.discord.wait_until_ready(timeout=30)
    assert await stop(proc) == 0
    stderr = h.process_logs[0].read_text()
    assert_clean(stderr)
    assert stderr.count("Discord unreachable") == 2, stderr
    assert len(h.discord.calls_to("GET", r"/users/@me$")) == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_stopping_while_discord_is_unreachable_exits_cleanly(
    harness: Harness, tmp_path: Path, sig: int
) -> None:
    h = harness
    proc = await h.spawn_bot_process(tmp_path, FAKE_DISCORD_URL=f"http://127.0.0.1:{free_port()}")
    await wait_for_log(h, proc, "retrying in")
    assert await stop(proc, sig) == 0
    assert_clean(h.process_logs[0].read_text())


async def test_rejected_token_stops_with_one_line(harness: Harness, tmp_path: Path) -> None:
    h = harness
    proc = await h.spawn_bot_process(tmp_path, DISCORD_TOKEN="not-the-token")
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 1
    stderr = h.process_logs[0].read_text()
    assert_clean(stderr)
    assert "Discord rejected DISCORD_TOKEN" in stderr
    assert "Discord unreachable" not in stderr
    assert "not-the-token" not in stderr


async def test_other_refusal_at_login_stops_with_one_line(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.discord.fail_next("GET", r"/users/@me$", 403, body={"code": 50001, "message": "Missing Access"})
    proc = await h.spawn_bot_process(tmp_path)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 1
    stderr = h.process_logs[0].read_text()
    assert_clean(stderr)
    assert "Discord refused the bot at start-up: 403" in stderr
    assert "Discord unreachable" not in stderr


async def test_unusable_database_path_fails_before_logging_in(harness: Harness, tmp_path: Path) -> None:
    h = harness
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    proc = await h.spawn_bot_process(tmp_path, DATABASE_PATH=str(blocker / "animate.db"))
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 2
    stderr = h.process_logs[0].read_text()
    assert_clean(stderr)
    errors = [line for line in stderr.splitlines() if "Database error" in line]
    assert len(errors) == 1 and str(blocker) in errors[0]
    assert h.discord.calls_to("GET", r"/users/@me$") == []  # never logged in
