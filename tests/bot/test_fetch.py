"""bot.fetch: the address policy, the pinning resolver, redirects, caps and the video signature check."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.fetch import (
    FetchRefused,
    NotAVideo,
    OutputFetcher,
    PublicOnlyResolver,
    UnsafeAddressError,
    check_video,
    is_public_address,
)
from bot.media import DownloadError, DownloadTooLarge
from tests.samples import make_clip

pytestmark = pytest.mark.timeout(20)

MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 32


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "169.254.1.1",
        "100.64.0.1",  # CGNAT
        "100.127.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "198.18.0.1",  # benchmarking
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",  # ULA
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "2001:db8::1",  # documentation
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_video_signatures() -> None:
    assert check_video(MP4) == MP4
    mov = b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 8
    assert check_video(mov) == mov
    webm = b"\x1a\x45\xdf\xa3" + b"\x9f\x42\x86\x81\x01" + b"\x00" * 8
    assert check_video(webm) == webm
    clip = make_clip(seconds=0.2, size=(64, 48))
    assert check_video(clip) == clip
    for bad in (b"", b"<!doctype html>", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, b"GIF89a", b"\x00\x00ftypisom"):
        with pytest.raises(NotAVideo):
            check_video(bad)


class StubResolver(AbstractResolver):
    """Answers from a table (name -> addresses), like a DNS server the test controls."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def test_resolver_refuses_a_host_if_any_address_is_not_public() -> None:
    stub = StubResolver({"cdn.test": ["93.184.216.34"], "mixed.test": ["93.184.216.34", "10.0.0.7"]})
    resolver = PublicOnlyResolver(stub)
    [ok] = await resolver.resolve("cdn.test", 443)
    assert ok["host"] == "93.184.216.34"
    with pytest.raises(UnsafeAddressError, match=r"10\.0\.0\.7"):
        await resolver.resolve("mixed.test", 443)


async def test_resolver_uses_the_loops_getaddrinfo_by_default() -> None:
    with pytest.raises(UnsafeAddressError, match="non-public"):
        await PublicOnlyResolver().resolve("localhost", 443)


# ---------------------------------------------------------------------------------------------- fetching
# A plain-http server on 127.0.0.1, a stub resolver for names, and a policy under which 127.0.0.1 counts
# as "public" and 127.0.0.2 does not: the real mechanics (pinning, redirects, caps) without the internet.

GOOD, BAD = "127.0.0.1", "127.0.0.2"


def only_good(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return str(ip) == GOOD


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.host.split(':')[0]}{request.path_qs}")
        name = request.match_info["name"]
        if name == "video":
            return web.Response(body=MP4, content_type="video/mp4")
        if name == "big":
            return web.Response(body=MP4 + b"\x00" * 5000, content_type="video/mp4")
        if name.startswith("to-"):
            return web.Response(status=302, headers={"Location": request.query["next"]})
        if name == "loop":
            return web.Response(status=301, headers={"Location": "/loop"})
        if name == "nolocation":
            return web.Response(status=302)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, GOOD, 0)
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def fetcher() -> AsyncIterator[tuple[OutputFetcher, StubResolver]]:
    stub = StubResolver({"cdn.test": [GOOD], "evil.test": [BAD], "both.test": [GOOD, BAD]})
    async with aiohttp.ClientSession() as shared:
        outputs = OutputFetcher(
            shared,
            trusted_origin=None,
            resolver=stub,
            policy=only_good,
            schemes=frozenset({"http", "https"}),
        )
        try:
            yield outputs, stub
        finally:
            await outputs.close()


async def test_fetch_connects_to_the_checked_address(
    server: tuple[int, list[str]], fetcher: tuple[OutputFetcher, StubResolver]
) -> None:
    port, seen = server
    outputs, stub = fetcher
    # cdn.test exists only in the stub: reaching the server proves the connection used its answer.
    assert await outputs.fetch(f"http://cdn.test:{port}/video", max_bytes=1000) == MP4
    assert stub.asked == ["cdn.test"] and seen == ["cdn.test/video"]


@pytest.mark.parametrize("host", ["evil.test", "both.test", BAD])
async def test_hosts_failing_the_policy_are_never_contacted(
    server: tuple[int, list[str]], fetcher: tuple[OutputFetcher, StubResolver], host: str
) -> None:
    port, seen = server
    outputs, _ = fetcher
    with pytest.raises(FetchRefused):
        await outputs.fetch(f"http://{host}:{port}/video", max_bytes=1000)
    assert seen == []


async def test_every_redirect_is_checked_again(
    server: tuple[int, list[str]], fetcher: tuple[OutputFetcher, StubResolver]
) -> None:
    port, seen = server
    outputs, _ = fetcher
    ok = await outputs.fetch(f"http://cdn.test:{port}/to-a?next=/video", max_bytes=1000)
    assert ok == MP4 and seen == ["cdn.test/to-a?next=/video", "cdn.test/video"]
    seen.clear()
    for target in (f"http://evil.test:{port}/video", f"http://{BAD}:{port}/video", "file:///etc/passwd"):
        with pytest.raises(FetchRefused):
            await outputs.fetch(f"http://cdn.test:{port}/to-b?next={target}", max_bytes=1000)
    assert all(s.startswith("cdn.test/to-b") for s in seen)  # the redirect targets were never reached


async def test_redirect_limit_and_missing_location(
    server: tuple[int, list[str]], fetcher: tuple[OutputFetcher, StubResolver]
) -> None:
    port, seen = server
    outputs, _ = fetcher
    with pytest.raises(FetchRefused) as refused:
        await outputs.fetch(f"http://cdn.test:{port}/loop", max_bytes=1000)
    assert "more than 5 redirects" in refused.value.reason and len(seen) == 6
    with pytest.raises(DownloadError):
        await outputs.fetch(f"http://cdn.test:{port}/nolocation", max_bytes=1000)


async def test_size_cap_and_http_errors(
    server: tuple[int, list[str]], fetcher: tuple[OutputFetcher, StubResolver]
) -> None:
    port, _ = server
    outputs, _ = fetcher
    with pytest.raises(DownloadTooLarge):
        await outputs.fetch(f"http://cdn.test:{port}/big", max_bytes=1000)
    with pytest.raises(DownloadError, match="HTTP 404"):
        await outputs.fetch(f"http://cdn.test:{port}/missing", max_bytes=1000)
    with pytest.raises(DownloadError, match="connection problem"):
        await outputs.fetch(f"http://unknown.test:{port}/video", max_bytes=1000)


async def test_defaults_allow_only_https_except_runcomfys_origin(server: tuple[int, list[str]]) -> None:
    port, seen = server
    async with aiohttp.ClientSession() as shared:
        outputs = OutputFetcher(shared, trusted_origin=f"http://{GOOD}:{port}/v1")
        try:
            # RunComfy's own origin (scheme, host and port) is fetched through the shared session.
            assert await outputs.fetch(f"http://{GOOD}:{port}/video", max_bytes=1000) == MP4
            for url in (
                f"http://localhost:{port}/video",  # same address, different origin
                f"http://{GOOD}:{port + 1}/video",
                "ftp://example.com/video.mp4",
                f"https://{GOOD}:{port}/video",
                "https://user:pw@example.com/video.mp4",
                "not a url at all",
            ):
                with pytest.raises(FetchRefused):
                    await outputs.fetch(url, max_bytes=1000)
            # A trusted-origin redirect to anywhere else is checked like any URL.
            with pytest.raises(FetchRefused):
                await outputs.fetch(f"http://{GOOD}:{port}/to-x?next=https://127.0.0.1:1/x", max_bytes=1000)
        finally:
            await outputs.close()
    assert seen == [f"{GOOD}/video", f"{GOOD}/to-x?next=https://127.0.0.1:1/x"]
    assert outputs.linkable("https://cdn.example/v.mp4?sig=1")
    assert outputs.linkable(f"http://{GOOD}:{port}/files/x.mp4")
    assert not outputs.linkable("http://cdn.example/v.mp4")
    assert not outputs.linkable("javascript:alert(1)")


async def test_a_video_shorter_than_its_content_length_is_a_failed_download() -> None:
    # The body is read into a buffer sized by the (untrusted) Content-Length: one that ends early
    # is a failed download, never a video padded with zeros.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"\0\0\0\x18ftypmp42" * 100)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, aiohttp.ClientSession() as shared:
        fetcher = OutputFetcher(shared, trusted_origin=f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(DownloadError, match="connection problem"):
                await fetcher.fetch(f"http://127.0.0.1:{port}/v.mp4", max_bytes=1_000_000)
        finally:
            await fetcher.close()
