"""Reading RunComfy's bodies defensively: error codes, messages, Retry-After, ids (untrusted input)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_MESSAGE_CHARS: Final = 300
_MAX_ERROR_CHARS: Final = 300
_BEARER_RE: Final = re.compile(r"(?i)bearer\s+\S+")


class _Transient(Exception):
    """Internal: a failure worth retrying (for idempotent calls)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        code: int | None = None,
        http_status: int | None = None,
        malformed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.code = code
        self.http_status = http_status
        self.malformed = malformed


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: Any  # parsed JSON, or _NOT_JSON
    retry_after: float | None


class _NotJson:
    def __repr__(self) -> str:
        return "<not json>"


_NOT_JSON: Final = _NotJson()


def _parse_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _has_error_code(body: Any) -> bool:
    """True when a JSON body carries a meaningful top-level ``error_code`` (null/0/"" do not count)."""
    if not isinstance(body, dict):
        return False
    value = body.get("error_code")
    return value is not None and value not in (0, "", "0") and value is not False


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _render_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - defensive
        return repr(value)


def _render_error(value: Any) -> str | None:
    """Render a failure ``error`` field of any JSON type as a short human string."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping):
        text = _render_json(value)
        for key in ("error_message", "message", "msg", "error", "detail", "reason"):
            inner = value.get(key)
            rendered = _render_error(inner) if inner not in (None, "", [], {}) else None
            if rendered:
                code = value.get("error_code", value.get("code"))
                text = rendered if code is None else f"{rendered} (code {code})"
                break
    elif isinstance(value, list | tuple):
        rendered_items = [r for r in (_render_error(item) for item in value) if r]
        text = "; ".join(rendered_items)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = _truncate(text, _MAX_ERROR_CHARS)
    return text or None


def _summarize_detail(detail: Any) -> str:
    """Readable one-line summary of a validation ``detail`` (FastAPI-style list, dict or string)."""
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    items = detail if isinstance(detail, list | tuple) else [detail]
    parts: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            msg = item.get("msg", item.get("message", item.get("error_message")))
            loc = item.get("loc")
            if isinstance(loc, list | tuple):
                loc_parts = [str(p) for p in loc if p not in ("body", "query", "path")]
                loc_text = ".".join(loc_parts)
            elif loc is not None:
                loc_text = str(loc)
            else:
                loc_text = ""
            msg_text = str(msg) if msg is not None else _render_json(item)
            parts.append(f"{loc_text}: {msg_text}" if loc_text else msg_text)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _validate_request_id(request_id: str) -> str:
    if (
        not isinstance(request_id, str)
        or not _REQUEST_ID_RE.fullmatch(request_id)
        or set(request_id) == {"."}
        or len(request_id) > 200
    ):
        raise ValueError("invalid RunComfy request_id (must be non-empty and match [A-Za-z0-9_.-]+)")
    return request_id


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
