"""Fetching RunComfy's output video without letting a remote service point the bot anywhere.

The output URL arrives in a RunComfy response, so it is untrusted data. :class:`OutputFetcher` downloads
it only

* over ``https`` from a host whose every address is public: the check runs inside the connector's
  resolver (:class:`PublicOnlyResolver`), so the address that was checked is the one connected to and a
  DNS answer that changes between check and connect (rebinding) gains nothing; or
* from the same origin (scheme, host, port) as ``RUNCOMFY_BASE_URL`` -- the API itself, which is trusted
  as much as everything else it says (the tests' fake RunComfy serves its videos there, over http).

Redirects are followed by hand, at most ``max_redirects``, and every hop is checked again. The body is
size-capped like :func:`bot.media.download_capped`, and :func:`check_video` makes sure it is a video
before anyone posts it. Logs name the host and path, never the (signed) query string.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bot.i18n import Msg
from bot.media import DownloadError, DownloadTooLarge, MediaError, redact_url
from bot.media.buffers import BodyTooLarge, read_body

__all__ = [
    "FetchRefused",
    "NotAVideo",
    "OutputFetcher",
    "PublicOnlyResolver",
    "UnsafeAddressError",
    "check_video",
    "is_public_address",
]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]

MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Ranges Python's ipaddress does not already classify as non-global (or classifies inconsistently
# across versions): CGNAT, cloud metadata, NAT64, and the IPv4 "this network" block.
_BLOCKED_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "64:ff9b::/96", "64:ff9b:1::/48", "fc00::/7")
)

_REFUSED = Msg("The video's address is not one the bot may download from.")
_NOT_VIDEO = Msg("The download is not a video.")


class FetchRefused(DownloadError):
    """The URL, or a redirect, points where the bot must not fetch from. ``reason`` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(_REFUSED)
        self.reason = reason


class NotAVideo(MediaError):
    """The body is not an MP4/MOV or WebM/Matroska file."""

    def __init__(self) -> None:
        super().__init__(_NOT_VIDEO)


class UnsafeAddressError(OSError):
    """Raised by :class:`PublicOnlyResolver`; aiohttp wraps it in a ClientConnectorError."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64, IPv4-compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _BLOCKED_NETS[3]:  # 64:ff9b::/96 carries the IPv4 address in its last 32 bits
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 0xFFFF:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address: never loopback, private, link-local (incl.
    169.254.169.254 metadata), CGNAT, multicast, reserved, unspecified or IPv6 ULA, in any notation."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public_address(inner)
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return False
    return not any(ip.version == net.version and ip in net for net in _BLOCKED_NETS)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves through ``inner`` (default: the loop's getaddrinfo) and refuses the host if ANY address
    fails ``policy``. Part of the connector, so every connection -- redirects included -- goes to an
    address that passed the check."""

    def __init__(
        self, inner: AbstractResolver | None = None, policy: AddressPolicy = is_public_address
    ) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise UnsafeAddressError(f"{host} did not resolve")
        for result in results:
            ip = _parse_ip(result["host"])
            if ip is None or not self._policy(ip):
                raise UnsafeAddressError(f"{host} resolves to a non-public address ({result['host']})")
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def check_video(data: bytes) -> bytes:
    """``data`` if it starts like a video Discord can play (ISO BMFF ``ftyp`` box: MP4/MOV; EBML
    header: WebM/Matroska), else :class:`NotAVideo`. A signature check only: cheap on the loop, and
    nothing untrusted is handed to a decoder just to be posted."""
    if data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3":
        return data
    raise NotAVideo()


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower().rstrip("."), url.port)


class OutputFetcher:
    """Downloads output videos under the rules in the module docstring.

    It owns a second, long-lived ClientSession whose connector carries the :class:`PublicOnlyResolver`.
    The bot's shared session cannot do this job: it also talks to RunComfy's API and Discord's CDN,
    which may legitimately sit on private or loopback addresses (a self-hosted proxy, the test fakes),
    and aiohttp cannot swap a session's connector or resolver per request. Trusted-origin hops use the
    shared session.

    ``schemes``, ``resolver`` and ``policy`` exist for tests (plain-http servers on 127.0.0.1, a stub
    resolver, a policy that tells two loopback addresses apart); production uses the defaults.
    """

    def __init__(
        self,
        shared: aiohttp.ClientSession,
        *,
        trusted_origin: str | None,
        max_redirects: int = MAX_REDIRECTS,
        resolver: AbstractResolver | None = None,
        policy: AddressPolicy = is_public_address,
        schemes: frozenset[str] = frozenset({"https"}),
        user_agent: str | None = None,
    ) -> None:
        self._shared = shared
        trusted = URL(trusted_origin) if trusted_origin else None
        self._trusted = _origin(trusted) if trusted is not None and trusted.host else None
        self._max_redirects = max_redirects
        self._resolver = resolver
        self._policy = policy
        self._schemes = schemes
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def trusted(self, url: str | URL) -> bool:
        """Same origin as RUNCOMFY_BASE_URL."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (TypeError, ValueError):
            return False
        return self._trusted is not None and _origin(parsed) == self._trusted

    def linkable(self, url: str) -> bool:
        """Whether the URL may be shown to users as a link (https, or RunComfy's own origin)."""
        try:
            parsed = URL(url)
        except (TypeError, ValueError):
            return False
        return bool(parsed.host) and (parsed.scheme.lower() == "https" or self.trusted(parsed))

    def _guarded(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = PublicOnlyResolver(self._resolver, self._policy)
            connector = aiohttp.TCPConnector(resolver=resolver, limit=16, ttl_dns_cache=10)
            headers = {"User-Agent": self._user_agent} if self._user_agent else None
            # trust_env=False: an environment proxy would do the resolving, bypassing the check.
            self._session = aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for(self, url: URL) -> aiohttp.ClientSession:
        """The session allowed to fetch ``url``, or FetchRefused."""
        if self.trusted(url):
            return self._shared
        scheme = url.scheme.lower()
        if scheme not in self._schemes:
            raise FetchRefused(f"scheme {scheme or '(none)'} is not allowed")
        if not url.host:
            raise FetchRefused("no host")
        if url.user is not None or url.password is not None:
            raise FetchRefused("credentials in the URL")
        # aiohttp does not resolve IP literals, so the resolver never sees them: check them here.
        ip = _parse_ip(url.host)
        if ip is not None and not self._policy(ip):
            raise FetchRefused(f"{ip} is not a public address")
        return self._guarded()

    async def fetch(self, url: str, *, max_bytes: int, timeout: float = 120.0) -> bytes:
        """The body behind ``url`` (following checked redirects), at most ``max_bytes``.

        Raises FetchRefused (policy), DownloadTooLarge, or DownloadError (HTTP error, timeout, network).
        """
        try:
            current = URL(url)
        except (TypeError, ValueError):
            raise FetchRefused("unparseable URL") from None
        try:
            async with asyncio.timeout(timeout):
                for _hop in range(self._max_redirects + 1):
                    session = self._session_for(current)
                    async with session.get(
                        current, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
                    ) as response:
                        if response.status in _REDIRECTS:
                            location = response.headers.get("Location")
                            if not location:
                                raise DownloadError(
                                    "The download failed (HTTP {status}).", status=response.status
                                )
                            following = current.join(URL(location))
                            log.info("output %s redirects to %s", redact_url(current), redact_url(following))
                            current = following
                            continue
                        if response.status >= 400:
                            log.warning(
                                "download of %s failed: HTTP %d", redact_url(current), response.status
                            )
                            raise DownloadError(
                                "The download failed (HTTP {status}).", status=response.status
                            )
                        return await _read_capped(response, max_bytes, redact_url(current))
                raise FetchRefused(f"more than {self._max_redirects} redirects")
        except FetchRefused as exc:
            log.warning("refused to fetch %s: %s", redact_url(current), exc.reason)
            raise
        except MediaError:
            raise
        except TimeoutError:
            log.warning("download of %s timed out after %gs", redact_url(current), timeout)
            raise DownloadError("The download timed out. Please try again.") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, UnsafeAddressError):
                log.warning("refused to fetch %s: %s", redact_url(current), exc.os_error)
                raise FetchRefused(str(exc.os_error)) from None
            log.warning("download of %s failed: %s", redact_url(current), type(exc).__name__)
            raise DownloadError("The download failed (connection problem). Please try again.") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # `from None`: aiohttp exceptions may carry the full (signed) URL.
            log.warning("download of %s failed: %s", redact_url(current), type(exc).__name__)
            raise DownloadError("The download failed (connection problem). Please try again.") from None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int, safe_url: str) -> bytes:
    try:
        return await read_body(response, max_bytes)
    except BodyTooLarge as big:
        if big.announced is not None:
            log.warning("download of %s refused: Content-Length %d > %d", safe_url, big.announced, max_bytes)
        else:
            log.warning("download of %s aborted: more than %d bytes", safe_url, max_bytes)
        limit = f"{max_bytes / 1_000_000:g} MB"
        raise DownloadTooLarge("The file is too large (over {limit}).", limit=limit) from None
