"""The upstream pool over TLS (cloud sandboxes' https preview URLs), against a real local
TLS server whose certificate comes from a test CA (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from tornado import httputil

from jupyter_agentbuild.preview.upstream import Exchange
from jupyter_agentbuild.preview.upstream_pool import UpstreamError, UpstreamPool


class Collect(httputil.HTTPMessageDelegate):
    def __init__(self) -> None:
        self.code = 0
        self.body = b""

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        self.code = start_line.code

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: answers every request with its own target."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(target), target))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@contextlib.asynccontextmanager
async def tls_server(ca: trustme.CA) -> AsyncIterator[int]:
    """A local TLS server for ``localhost``, certified by ``ca``; yields its port."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def get(pool: UpstreamPool, target: str) -> tuple[Exchange, Collect]:
    exchange = await Exchange.open(pool)
    answer = Collect()
    await exchange.send_headers("GET", target, httputil.HTTPHeaders({"Host": "localhost"}))
    await exchange.respond(answer)
    exchange.release()
    return exchange, answer


async def test_https_upstream_verified_and_kept_alive(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with tls_server(ca) as tls_port:
        await _two_requests(tls_port, client_context)


async def _two_requests(tls_port: int, client_context: ssl.SSLContext) -> None:
    pool = UpstreamPool("localhost", tls_port, tls=True, ssl_context=client_context)
    try:
        first, answer = await get(pool, "/one?x=1")
        assert (answer.code, answer.body) == (200, b"/one?x=1")
        second, answer = await get(pool, "/two")
        assert (answer.code, answer.body) == (200, b"/two")
        assert second.reused and pool.opened == 1  # one TLS connection, kept alive
    finally:
        pool.close()


async def test_an_untrusted_certificate_is_refused(ca: trustme.CA) -> None:
    async with tls_server(ca) as tls_port:
        pool = UpstreamPool("localhost", tls_port, tls=True)  # system CAs
        try:
            with pytest.raises(UpstreamError, match="refused the connection"):
                await Exchange.open(pool)
        finally:
            pool.close()
