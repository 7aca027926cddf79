"""Keep-alive connections to one preview's upstream, and how reaching it fails.

The pool only ever connects to the ``(host, port)`` it was made for: the build record's
target (no SSRF: nothing in a request chooses where to connect). A connection goes back
to the pool only after a complete, length-delimited response, and is checked (a
zero-timeout ``poll``) before it is reused, so a connection the upstream closed while
idle is never written to.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections.abc import Mapping

from tornado import iostream
from tornado.http1connection import HTTP1ConnectionParameters

#: Bodies are relayed in pieces of at most this size (a chunk is what memory holds).
CHUNK_SIZE = 256 * 1024
#: An unbounded body size: the proxy streams, it never holds a body.
NO_BODY_LIMIT = 1 << 62
#: Idle keep-alive connections kept per preview.
MAX_IDLE = 64
#: An idle connection older than this (s) is closed rather than reused (dev servers such
#: as Node's close idle connections after 5 s).
IDLE_TTL = 4.0
MAX_HEADER_SIZE = 64 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or gave no usable answer: 502."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer in time: 504."""

    status = 504


def reusable(stream: iostream.IOStream) -> bool:
    """Is an idle keep-alive connection still usable (not closed, nothing unread)?
    A readable idle socket has either reached EOF or holds bytes nobody asked for: either
    way it is not reusable. (``poll``, not a peeking ``recv``: TLS sockets take no flags.)"""
    if stream.closed():
        return False
    try:
        poller = select.poll()
        poller.register(stream.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class UpstreamPool:
    """Keep-alive connections to one ``(host, port)``; LIFO, bounded, closed on stop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        #: Sent with every request and upgrade (a cloud sandbox's traffic token): secret,
        #: never logged, never shown to the browser.
        self.headers = dict(headers or {})
        self.port = port
        self.connect_timeout = connect_timeout
        #: Longest wait for the response headers and, after them, between two body chunks.
        self.read_timeout = read_timeout
        #: https upstreams (cloud sandboxes' public URLs), verified against the system's
        #: CAs (or ``ssl_context``'s) and the host name.
        self.tls = tls
        self._ssl_context = (ssl_context or ssl.create_default_context()) if tls else None
        self.params = HTTP1ConnectionParameters(
            no_keep_alive=False,
            chunk_size=CHUNK_SIZE,
            max_header_size=MAX_HEADER_SIZE,
            max_body_size=NO_BODY_LIMIT,
            decompress=False,
        )
        self._idle: list[tuple[iostream.IOStream, float]] = []
        self._busy: set[iostream.IOStream] = set()
        self.closed = False
        #: How many connections were opened (tests and benchmarks check reuse).
        self.opened = 0

    @property
    def in_use(self) -> int:
        """Connections carrying an exchange now."""
        return len(self._busy)

    @property
    def idle(self) -> int:
        """Keep-alive connections waiting for the next exchange."""
        return len(self._idle)

    def checkout(self) -> iostream.IOStream | None:
        """The most recently used idle connection that is still usable, or None."""
        now = time.monotonic()
        while self._idle:
            stream, since = self._idle.pop()
            if now - since <= IDLE_TTL and reusable(stream):
                self._busy.add(stream)
                return stream
            stream.close()
        return None

    async def connect(self) -> iostream.IOStream:
        """A new connection; :class:`UpstreamError` / :class:`UpstreamTimeout` on failure."""
        if self.closed:
            raise UpstreamError("the preview stopped")
        limit = self.connect_timeout
        try:
            async with asyncio.timeout(limit):
                addresses = await asyncio.get_running_loop().getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"the preview's host cannot be resolved ({exc!r})") from None
        stream: iostream.IOStream | None = None
        error: BaseException | None = None
        timed_out = False
        # every address in turn (localhost: ::1, then 127.0.0.1), each with its own limit,
        # so one that drops packets does not use up the others' time
        for family, kind, proto, _, address in addresses:
            try:
                stream = self._stream(socket.socket(family, kind, proto))
                async with asyncio.timeout(limit):
                    if isinstance(stream, iostream.SSLIOStream):
                        await stream.connect(address, server_hostname=self.host)
                    else:
                        await stream.connect(address)
                break
            except (OSError, iostream.StreamClosedError, TimeoutError) as exc:
                timed_out = timed_out or isinstance(exc, TimeoutError)
                error = (stream.error if stream is not None else None) or exc
                if stream is not None:
                    stream.close()
                stream = None
        if stream is None:
            if timed_out:
                raise UpstreamTimeout(
                    f"the preview did not accept a connection within {limit:g}s"
                ) from None
            raise UpstreamError(f"the preview refused the connection ({error})")
        if self.closed:
            stream.close()
            raise UpstreamError("the preview stopped")
        stream.set_nodelay(True)
        self.opened += 1
        self._busy.add(stream)
        return stream

    def _stream(self, sock: socket.socket) -> iostream.IOStream:
        if self._ssl_context is not None:
            stream: iostream.IOStream = iostream.SSLIOStream(
                sock, ssl_options=self._ssl_context, max_buffer_size=4 * CHUNK_SIZE + 65536
            )
        else:
            stream = iostream.IOStream(sock, max_buffer_size=4 * CHUNK_SIZE + 65536)
        stream.read_chunk_size = CHUNK_SIZE
        return stream

    def checkin(self, stream: iostream.IOStream, reusable: bool) -> None:
        """Return a connection after an exchange; it is kept only if ``reusable``."""
        self._busy.discard(stream)
        if not reusable or self.closed or stream.closed():
            stream.close()
            return
        self._idle.append((stream, time.monotonic()))
        if len(self._idle) > MAX_IDLE:
            oldest, _ = self._idle.pop(0)
            oldest.close()

    def close(self) -> None:
        """Close every connection, idle or busy (the preview stopped)."""
        self.closed = True
        for stream, _ in self._idle:
            stream.close()
        self._idle.clear()
        for stream in list(self._busy):
            stream.close()
        self._busy.clear()


__all__ = [
    "CHUNK_SIZE",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamTimeout",
    "reusable",
]
