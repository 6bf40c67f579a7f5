"""Logging set-up: the plain or JSON format, per-job context fields, and token redaction.

Context: ``log_context(job_id=..., guild_id=..., request_id=...)`` (a ``with`` block) or ``bind(...)``
(for the rest of the current asyncio task, which has its own copy of the context) attach fields to
every record logged meanwhile; ``extra={"job_id": ...}`` on one call does the same for that record.
The JSON format writes them as fields; the plain format stays as it always was.

Redaction runs as a handler filter, before either formatter: the configured tokens (and any
``Bearer``/``Bot`` credential or interaction-webhook token in a URL) are replaced in the message,
its arguments and the traceback text.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONTEXT_FIELDS = ("job_id", "guild_id", "request_id")
REDACTED = "***"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)

# Credentials that can end up in a message even when no configured token is known (e.g. a header
# echoed in an exception, an interaction token in a webhook URL logged by discord.py).
_CREDENTIALS = (
    (re.compile(r"\b(Bearer|Bot)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(/webhooks/\d+/)[A-Za-z0-9._-]{16,}"), r"\1" + REDACTED),
    (re.compile(r"(/interactions/\d+/)[A-Za-z0-9._-]{16,}"), r"\1" + REDACTED),
)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (None values are ignored) to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Attach fields for the rest of the current task (asyncio tasks each copy the context, so this
    never leaks into the task that spawned this one)."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copies the context fields onto each record; an explicit ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class Redactor(logging.Filter):
    """Removes secrets from a record before any formatter sees it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a token containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _CREDENTIALS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            # The formatters use exc_text; dropping exc_info stops them re-rendering the raw traceback.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exception, and the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_handler(
    fmt: str = "plain", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    handler.addFilter(ContextFilter())
    handler.addFilter(Redactor(secrets))
    return handler


def configure(
    level: str = "INFO", fmt: str = "plain", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one redacting handler in the chosen format."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(fmt, secrets, stream)
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py's own INFO chatter about gateway sessions is useful; its DEBUG is not.
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))
    return handler
