"""Size-capped downloads (Discord attachments): refused as soon as the body passes the limit."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from bot.media.buffers import BodyTooLarge, read_body
from bot.media.errors import DownloadError, DownloadTooLarge, MediaError, fmt_mb

logger = logging.getLogger(__name__)


def redact_url(url: str | URL) -> str:
    """The URL without credentials, query string or fragment -- safe to log."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except Exception:
        return "<unparseable url>"


async def download_capped(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    timeout: float = 60.0,
) -> bytes:
    """GET url and return the body, refusing (DownloadTooLarge) as soon as it exceeds max_bytes.

    Only http(s) URLs. HTTP status >= 400, timeouts and connection errors raise DownloadError.
    Error messages and logs never include the query string (signed URLs).
    """
    safe = redact_url(url)
    try:
        parsed = URL(url)
    except Exception:
        raise MediaError("That link isn't a valid web address.") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise MediaError("Only http:// and https:// links can be downloaded.")

    limit = fmt_mb(max_bytes)
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response,
        ):
            if response.status >= 400:
                logger.warning("download of %s failed: HTTP %d", safe, response.status)
                raise DownloadError("The download failed (HTTP {status}).", status=response.status)
            try:
                return await read_body(response, max_bytes)
            except BodyTooLarge as big:
                if big.announced is not None:
                    logger.warning(
                        "download of %s refused: Content-Length %d > %d", safe, big.announced, max_bytes
                    )
                else:
                    logger.warning("download of %s aborted: more than %d bytes", safe, max_bytes)
                raise DownloadTooLarge("The file is too large (over {limit}).", limit=limit) from None
    except MediaError:
        raise
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
        logger.warning("download of %s timed out after %gs", safe, timeout)
        raise DownloadError("The download timed out. Please try again.") from exc
    except aiohttp.ClientError as exc:
        logger.warning("download of %s failed: %s", safe, type(exc).__name__)
        # `from None`: aiohttp exceptions may carry the full (signed) URL.
        raise DownloadError("The download failed (connection problem). Please try again.") from None
