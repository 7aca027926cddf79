"""A pooled, streaming HTTP/1.1 client for one preview's upstream.

Built on tornado's own ``HTTP1Connection`` in client mode, over plain ``IOStream``s kept
in a per-preview pool. Why not the ready-made clients:

- tornado's ``SimpleAsyncHTTPClient`` opens a new connection for every request
  (``Connection: close``), caps bodies at ``max_body_size`` unless told otherwise, and does
  not await its ``streaming_callback``: a slow browser makes it buffer the whole body;
- ``CurlAsyncHTTPClient`` pools connections but needs pycurl (a C dependency), and its
  streaming callback cannot pause the transfer either;
- httpx would add an anyio layer and a second event-loop integration on the hot path.

``HTTP1Connection`` awaits the delegate's ``data_received`` before it reads the next chunk,
so the browser's pace propagates to the upstream socket (back-pressure): memory per
exchange stays at about one chunk, whatever the body size. A body of known length given
to a :class:`BodySink` takes a shorter way: received straight into one reused buffer
(``read_into``) and written from it, with no copy between the two sockets (tornado's
buffered reads copy every byte twice and allocate a buffer per read: half the proxy's
time on large bodies). Keep-alive is ours to manage:
a connection goes back to the pool only after a complete, length-delimited response, and
is checked (a zero-timeout ``poll``) before it is reused, so a connection the upstream
closed while idle is never written to.

The pool only ever connects to the ``(host, port)`` it was made for: the build record's
target (no SSRF: nothing in a request chooses where to connect).
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

from ..swallow import swallowed
from .splice import SpliceError, splice_body, spliceable

log = logging.getLogger(__name__)

#: Bodies are relayed in pieces of at most this size (a chunk is what memory holds).
CHUNK_SIZE = 256 * 1024
#: Bodies from this size on take the direct way (:meth:`Exchange.read_body_into`); below
#: it, setting that up costs more per request than the copies it saves.
DIRECT_BODY_MIN = 256 * 1024
#: The buffer of the direct way: larger pieces, fewer trips through the event loop (a
#: 1 GiB body: about 0.25x direct with 256 KiB, 0.5x with 1 MiB). At most the stream's
#: ``max_buffer_size`` (``4 * CHUNK_SIZE + 64 KiB``): tornado refuses a larger read.
DIRECT_CHUNK_SIZE = 1024 * 1024
#: An unbounded body size: the proxy streams, it never holds a body.
_NO_BODY_LIMIT = 1 << 62


class BodySink(Protocol):
    """Where :meth:`Exchange.respond` writes a body of known length, piece by piece."""

    async def write_body(self, chunk: memoryview) -> None:
        """Pass ``chunk`` on. It is a view of a buffer reused for the next piece: it must
        have been handed on (to the kernel) when this returns."""
        ...

    def client_stream(self) -> iostream.IOStream | None:
        """The browser's connection, once everything before the body's remaining bytes
        has gone to it (the rest may then be spliced into it), else None."""
        ...

    def body_moved(self, count: int) -> None:
        """``count`` body bytes reached the browser's connection without :meth:`write_body`."""
        ...


@dataclass(frozen=True)
class UpstreamLimits:
    """Timeouts (seconds) and pool bounds of one preview's upstream connections."""

    connect_timeout: float = 10.0
    #: Longest wait for the response headers and, after them, between two body chunks.
    read_timeout: float = 300.0
    #: Idle keep-alive connections kept per preview.
    max_idle: int = 64
    #: An idle connection older than this is closed rather than reused (dev servers such
    #: as Node's close idle connections after 5 s).
    idle_ttl: float = 4.0
    max_header_size: int = 64 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or gave no usable answer: 502."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer in time: 504."""

    status = 504


def _alive(stream: iostream.IOStream) -> bool:
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
        limits: UpstreamLimits,
        *,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        #: Sent with every request and upgrade (a cloud sandbox's traffic token): secret,
        #: never logged, never shown to the browser.
        self.headers = dict(headers or {})
        self.port = port
        self.limits = limits
        #: https upstreams (cloud sandboxes' public URLs), verified against the system's
        #: CAs (or ``ssl_context``'s) and the host name.
        self.tls = tls
        self._ssl_context = (ssl_context or ssl.create_default_context()) if tls else None
        self.params = HTTP1ConnectionParameters(
            no_keep_alive=False,
            chunk_size=CHUNK_SIZE,
            max_header_size=limits.max_header_size,
            max_body_size=_NO_BODY_LIMIT,
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
            if now - since <= self.limits.idle_ttl and _alive(stream):
                self._busy.add(stream)
                return stream
            stream.close()
        return None

    async def connect(self) -> iostream.IOStream:
        """A new connection; :class:`UpstreamError` / :class:`UpstreamTimeout` on failure."""
        if self.closed:
            raise UpstreamError("the preview stopped")
        limit = self.limits.connect_timeout
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
        if len(self._idle) > self.limits.max_idle:
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


class Exchange:
    """One request and its response on one upstream connection.

    ``await send_headers(...)``, ``await send(chunk)`` any number of times, then
    ``await respond(delegate)``: the delegate gets ``headers_received``/``data_received``
    (awaited: back-pressure)/``finish``. :meth:`release` returns the connection to the
    pool, kept alive only when the exchange ended cleanly.
    """

    def __init__(self, pool: UpstreamPool, stream: iostream.IOStream, reused: bool) -> None:
        self.pool = pool
        self.stream = stream
        self.reused = reused
        self.conn = HTTP1Connection(stream, True, pool.params)
        self.method = "GET"
        self.response_keep_alive = False
        self.headers_seen = False
        self.complete = False
        self.timed_out = False
        self._last = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._released = False

    @classmethod
    async def open(cls, pool: UpstreamPool, *, fresh: bool = False) -> Exchange:
        """An exchange on an idle pooled connection, or on a new one (always with ``fresh``:
        a request whose body cannot be replayed)."""
        stream = None if fresh else pool.checkout()
        if stream is not None:
            return cls(pool, stream, reused=True)
        return cls(pool, await pool.connect(), reused=False)

    async def send_headers(
        self, method: str, target: str, headers: httputil.HTTPHeaders, *, body: bool = False
    ) -> None:
        """Send the request head; with ``body``, :meth:`send` follows (chunked when the
        headers have no ``Content-Length``: POST, PUT and PATCH only)."""
        self.method = method
        if body:
            # the head and the body are separate writes: no Nagle delay between them
            # (HTTP1Connection turns the option off again after each request)
            self.stream.set_nodelay(True)
        await self.conn.write_headers(
            httputil.RequestStartLine(method, target, "HTTP/1.1"), headers
        )

    async def send(self, chunk: bytes) -> None:
        await self.conn.write(chunk)

    async def respond(
        self, delegate: httputil.HTTPMessageDelegate, body_sink: BodySink | None = None
    ) -> None:
        """Finish the request and relay the response to ``delegate``; with ``body_sink``,
        a body of known length goes there instead of to ``data_received``.

        Raises :class:`UpstreamTimeout` when the headers, or the next body chunk, do not
        come within ``read_timeout``, and :class:`UpstreamError` when the connection breaks
        or the answer is not HTTP; ``headers_seen`` tells the caller whether the delegate
        already started its response.
        """
        self.conn.finish()
        loop = asyncio.get_running_loop()
        self._last = time.monotonic()
        self._timer = loop.call_later(self.pool.limits.read_timeout, self._check_timeout)
        wrapped = _Watched(self, delegate, body_sink)
        try:
            kept_open = await self.conn.read_response(wrapped)
        except (iostream.StreamClosedError, OSError) as exc:
            raise self._failure(exc) from None
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if wrapped.body_error is not None:
            raise self._failure(wrapped.body_error)
        if not kept_open or not self.complete:
            raise self._failure(None)

    def fixed_body_length(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> int | None:
        """The length of a response body delimited by a plain ``Content-Length`` (None for
        no body, chunked, read-until-close, or anything odd: tornado's path judges those)."""
        if self.method == "HEAD" or start_line.code in (204, 304) or start_line.code < 200:
            return None
        if "Transfer-Encoding" in headers:
            return None
        value = headers.get("Content-Length", "").strip()
        if not value.isdigit() or len(value) > 18:
            return None
        return int(value)

    async def read_body_into(self, length: int, sink: BodySink) -> None:
        """Relay ``length`` body bytes to ``sink``: inside the kernel (:mod:`.splice`) as
        soon as the browser's connection allows it, else through one reused buffer."""
        buffer = memoryview(bytearray(min(length, DIRECT_CHUNK_SIZE)))
        left = length
        while left:
            client = sink.client_stream()
            if client is not None and spliceable(self.stream, client):
                await self._splice(client, left, sink)
                return
            # (a memoryview works as well as the bytearray the stub says: it is written
            # through memoryview() and len() only)
            window = buffer[: min(left, len(buffer))]
            got = await self.stream.read_into(window, partial=True)  # type: ignore[arg-type]
            left -= got
            self.touch()
            await sink.write_body(buffer[:got])

    async def _splice(self, client: iostream.IOStream, length: int, sink: BodySink) -> None:
        def moved(count: int) -> None:
            self.touch()
            sink.body_moved(count)

        try:
            await splice_body(
                self.stream,
                client,
                length,
                moved=moved,
                idle_timeout=self.pool.limits.read_timeout,
            )
        except SpliceError as exc:
            self.timed_out = self.timed_out or exc.timed_out
            raise

    async def upgrade(
        self, target: str, headers: httputil.HTTPHeaders
    ) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders, iostream.IOStream | None]:
        """Send a WebSocket upgrade request and read the answer's head.

        Returns the status line, the headers and, for ``101``, the connection itself
        (taken from HTTP/1: it carries WebSocket frames from now on; :meth:`release`
        closes it when the tunnel ends). Any other answer is returned without its body,
        and its connection is closed. :class:`UpstreamTimeout` when no head comes within
        ``read_timeout``, :class:`UpstreamError` when the connection breaks first.
        """
        await self.send_headers("GET", target, headers)
        self.conn.finish()
        head = _UpgradeAnswer(self.conn)
        try:
            async with asyncio.timeout(self.pool.limits.read_timeout):
                await self.conn.read_response(head)
        except TimeoutError:
            self.timed_out = True
            self.stream.close()
            raise self._failure(None) from None
        except (iostream.StreamClosedError, OSError, httputil.HTTPInputError) as exc:
            raise self._failure(exc) from None
        if head.start_line is None:
            raise self._failure(None)
        if head.stream is None or head.start_line.code != 101:
            self.stream.close()
            return head.start_line, head.headers, None
        return head.start_line, head.headers, head.stream

    def _failure(self, exc: BaseException | None) -> UpstreamError:
        if self.timed_out:
            what = "the next part of its answer" if self.headers_seen else "an answer"
            return UpstreamTimeout(
                f"the preview did not send {what} within {self.pool.limits.read_timeout:g}s"
            )
        if self.headers_seen:
            return UpstreamError("the preview closed the connection in the middle of a response")
        detail = f" ({exc})" if exc is not None and str(exc) else ""
        return UpstreamError(f"the preview closed the connection without an answer{detail}")

    def touch(self) -> None:
        self._last = time.monotonic()

    def _check_timeout(self) -> None:
        self._timer = None
        timeout = self.pool.limits.read_timeout
        left = self._last + timeout - time.monotonic()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._check_timeout)
            return
        self.timed_out = True
        self.stream.close()

    def _note_response(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        """Can the connection carry another request after this response?"""
        connection = headers.get("Connection", "").lower()
        if start_line.version == "HTTP/1.1":
            keep = connection != "close"
        else:
            keep = connection == "keep-alive"
        no_body = (
            self.method == "HEAD" or start_line.code in (204, 304) or 100 <= start_line.code < 200
        )
        framed = (
            no_body
            or "Content-Length" in headers
            or "chunked" in headers.get("Transfer-Encoding", "").lower()
        )
        self.response_keep_alive = keep and framed

    def abort(self) -> None:
        """Give up on the exchange (the browser went away): the connection is closed."""
        self.stream.close()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        reusable = (
            self.complete
            and self.response_keep_alive
            and not self.timed_out
            and not self.stream.closed()
        )
        self.pool.checkin(self.stream, reusable)


class _Watched(httputil.HTTPMessageDelegate):
    """Passes the response on while keeping the exchange's read-timeout clock running."""

    def __init__(
        self,
        exchange: Exchange,
        delegate: httputil.HTTPMessageDelegate,
        body_sink: BodySink | None = None,
    ) -> None:
        self.exchange = exchange
        self.delegate = delegate
        self.body_sink = body_sink
        #: Why the body could not be relayed by :meth:`Exchange.read_body_into`.
        self.body_error: BaseException | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> asyncio.Future[None] | None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.exchange.touch()
        if 100 <= start_line.code < 200:
            return None  # an interim answer (100 Continue): the real one follows
        self.exchange.headers_seen = True
        self.exchange._note_response(start_line, headers)
        answered = self.delegate.headers_received(start_line, headers)
        length = self.exchange.fixed_body_length(start_line, headers)
        if self.body_sink is None or length is None or length < DIRECT_BODY_MIN:
            return answered  # type: ignore[return-value]
        return asyncio.ensure_future(self._relay_body(answered, length, headers))

    async def _relay_body(self, answered: Any, length: int, headers: httputil.HTTPHeaders) -> None:
        """Relay the body while ``HTTP1Connection`` awaits this (it owns the stream again
        after), then tell it the body is empty: it has nothing left to read, and the
        connection is reusable exactly as if it had read the body itself."""
        assert self.body_sink is not None
        try:
            if answered is not None:
                await answered
            await self.exchange.read_body_into(length, self.body_sink)
        except Exception as exc:  # the exchange fails (respond raises), never the server
            self.body_error = exc
            self.exchange.stream.close()
        finally:
            headers["Content-Length"] = "0"

    def data_received(self, chunk: bytes) -> asyncio.Future[None] | None:
        self.exchange.touch()
        return self.delegate.data_received(chunk)  # type: ignore[return-value]

    def finish(self) -> None:
        if self.body_error is None:
            self.exchange.complete = True
        self.delegate.finish()

    def on_connection_close(self) -> None:
        with swallowed(log, "closing a preview's upstream connection", level=logging.DEBUG):
            self.delegate.on_connection_close()


class _UpgradeAnswer(httputil.HTTPMessageDelegate):
    """Keeps the head of the answer to an upgrade and takes the connection from HTTP/1
    there and then (before ``HTTP1Connection`` would read a body or a next answer)."""

    def __init__(self, conn: HTTP1Connection) -> None:
        self.conn = conn
        self.start_line: httputil.ResponseStartLine | None = None
        self.headers = httputil.HTTPHeaders()
        self.stream: iostream.IOStream | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.start_line = start_line
        self.headers = headers
        self.stream = self.conn.detach()


__all__ = [
    "CHUNK_SIZE",
    "Exchange",
    "UpstreamError",
    "UpstreamLimits",
    "UpstreamPool",
    "UpstreamTimeout",
]
