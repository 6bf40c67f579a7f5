"""LOG_FORMAT=json, per-job context fields, and token redaction in both formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs

ROOT = Path(__file__).resolve().parents[2]
DISCORD = "discord-secret-token-abc"
RUNCOMFY = "runcomfy-secret-token-xyz"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    """A logger with one plain and one JSON handler, both redacting the two tokens."""
    streams = {"plain": io.StringIO(), "json": io.StringIO()}
    logger = logging.getLogger("tests.logs")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handlers = [logs.make_handler(fmt, [DISCORD, RUNCOMFY], stream) for fmt, stream in streams.items()]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield logger, streams
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.propagate = True


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_context_fields(capture: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = capture
    logger.info("no context here")
    with logs.log_context(job_id=7, guild_id=42):
        logger.warning("job %s polled", 7)
        with logs.log_context(request_id="req-1"):
            logger.error("inner")
    logger.info("explicit", extra={"job_id": 9})
    first, polled, inner, explicit = json_lines(streams["json"])
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["logger"] == "tests.logs" and first["level"] == "INFO"
    assert str(first["time"]).endswith("+00:00")
    assert polled["message"] == "job 7 polled"
    assert (polled["job_id"], polled["guild_id"]) == (7, 42) and "request_id" not in polled
    assert (inner["job_id"], inner["request_id"]) == (7, "req-1")
    assert explicit["job_id"] == 9 and "guild_id" not in explicit
    # The plain format is unchanged: no extra fields.
    plain = streams["plain"].getvalue().splitlines()
    assert plain[1].endswith("WARNING tests.logs: job 7 polled")


def test_exceptions_are_one_json_line(capture: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = capture
    try:
        raise ValueError(f"bad header Authorization: Bearer {RUNCOMFY}")
    except ValueError:
        logger.exception("it broke")
    (entry,) = json_lines(streams["json"])
    assert "ValueError" in str(entry["exception"]) and "Traceback" in str(entry["exception"])
    for text in (streams["json"].getvalue(), streams["plain"].getvalue()):
        assert RUNCOMFY not in text and "***" in text


def test_tokens_are_redacted_in_both_formats(capture: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = capture
    logger.debug("token %s and %s", DISCORD, RUNCOMFY)
    logger.info(f"inline {DISCORD}")
    logger.info("header Bot %s", "some-other-token-123456")
    logger.info(
        "POST https://discord.com/api/v10/webhooks/123/aW50ZXJhY3Rpb246MTIzNDU2Nzg5/messages/@original"
    )
    for text in (streams["plain"].getvalue(), streams["json"].getvalue()):
        assert DISCORD not in text and RUNCOMFY not in text
        assert "some-other-token-123456" not in text and "aW50ZXJhY3Rpb246MTIzNDU2Nzg5" not in text
        assert "/webhooks/123/***" in text


async def test_bind_is_local_to_its_task(capture: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = capture

    async def step(job_id: int) -> None:
        logs.bind(job_id=job_id)
        await asyncio.sleep(0)
        logger.info("step")

    await asyncio.gather(step(1), asyncio.create_task(step(2)))
    logger.info("outside")
    entries = json_lines(streams["json"])
    # gather wraps each coroutine in its own task: each saw only its own job id.
    assert sorted(e.get("job_id") for e in entries[:2]) == [1, 2]  # type: ignore[type-var]
    assert "job_id" not in entries[2]


def test_configure_replaces_root_handlers() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure("WARNING", "json", [DISCORD], stream)
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("shown %s", DISCORD)
        (entry,) = json_lines(stream)
        assert entry["message"] == "shown ***"
        assert logging.getLogger("discord").level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("discord").setLevel(logging.NOTSET)


def test_log_format_json_from_the_environment(tmp_path: Path) -> None:
    """The entry point's logging set-up, configured from the environment as `python -m bot` does."""
    code = (
        "import logging; from bot.__main__ import setup_logging; from bot.settings import load_settings;"
        "s = load_settings(); setup_logging(s.log_level, s.log_format, s);"
        "logging.getLogger('bot.x').info('token is %s', s.discord_token.get_secret_value())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_", "LOG_"))}
    env.update(PYTHONPATH=str(ROOT), DISCORD_TOKEN=DISCORD, RUNCOMFY_API_TOKEN=RUNCOMFY, LOG_FORMAT="json")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (entry,) = [json.loads(line) for line in proc.stderr.splitlines()]
    assert entry["message"] == "token is ***" and entry["logger"] == "bot.x"
