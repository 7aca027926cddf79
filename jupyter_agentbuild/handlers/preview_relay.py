"""Moving a request to a preview and its answer back: shared by both ways in.

A preview is reached two ways, with the same relay underneath:

- the path proxy (:mod:`.preview`), ``{base_url}agentbuild/preview/{id}/...`` on Jupyter's
  origin, with Jupyter's authentication, the prefix stripped and a ``sandbox`` CSP;
- its own origin (:mod:`.preview_origin`), ``{label}.localhost`` or the deployment's
  template, authenticated by the capability in the host name, the path as it is.

What differs is a handful of hooks (:meth:`PreviewRelay._target`,
:meth:`PreviewRelay._public_prefix`, :meth:`PreviewRelay._make_rewriter`,
:meth:`PreviewRelay._origin_allowed`); who may reach the preview is decided in each
handler's ``prepare``, before anything is forwarded.

Streaming both ways, with back-pressure:

- request bodies arrive through ``@stream_request_body``; each chunk is awaited into the
  upstream socket before tornado reads the next one from the browser;
- response bodies are awaited into the browser's socket (``await self.flush()``) before
  the next chunk is read from the upstream (``HTTP1Connection`` awaits ``data_received``);
- a WebSocket, once the preview accepted the upgrade, is relayed as bytes both ways
  (:mod:`..preview.tunnel`), each chunk written before the next is read.
"""

from __future__ import annotations

import logging
from typing import Any

from tornado import httputil, iostream, web

from ..preview.headers import ResponseRewriter, forwarded_headers, request_headers
from ..preview.manager import Preview
from ..preview.tunnel import Tunnel
from ..preview.upstream import Exchange, UpstreamError
from ..swallow import swallowed

log = logging.getLogger(__name__)

#: Bytes of response body gathered before they are flushed to the browser (a response
#: smaller than this goes out in one write, with its headers).
FLUSH_THRESHOLD = 64 * 1024
#: Characters allowed unescaped in the request target sent upstream (RFC 3986 pchar + '/'
#: + '?' + '%'): anything else (non-ASCII from a raw request line) is percent-encoded.
TARGET_SAFE = "/:@!$&'()*+,;=-._~%?"
_XSRF_ONLY = frozenset({"_xsrf"})


def http_error(status: int, message: str) -> web.HTTPError:
    """An HTTPError whose message is shown as is (a ``%`` in it is not a format)."""
    return web.HTTPError(status, "%s", message)


class PreviewRelay(web.RequestHandler):
    """The relay of one request (or one WebSocket) to ``self.preview``: a mixin placed
    first in a handler's bases, whose ``prepare`` sets ``preview`` once access is granted."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

    preview: Preview | None = None
    exchange: Exchange | None = None
    _upgrade = False
    _send_failed = False
    _relay: _ResponseRelay | None = None

    # -- what differs between the two ways in --------------------------------------------

    def _target(self, path: str | None) -> str:
        """The request target for the upstream (path and query). Never a host: the
        connection is already made."""
        raise NotImplementedError

    def _public_prefix(self) -> str:
        """The public path of the preview without its trailing slash ("" at its own origin)."""
        raise NotImplementedError

    def _make_rewriter(self, cookie_names: frozenset[str]) -> ResponseRewriter:
        raise NotImplementedError

    def _origin_allowed(self, origin: str) -> bool:
        """May a WebSocket upgrade carrying this ``Origin`` reach the preview?"""
        raise NotImplementedError

    # -- common to both -------------------------------------------------------------------

    def compute_etag(self) -> str | None:
        return None  # the upstream's caching headers are passed on as they are

    def check_xsrf_cookie(self) -> None:
        """Requests go to the preview, never to Jupyter: its forms are its own business
        (and Jupyter's cookies are stripped from them)."""
        return

    def _start_request(self) -> None:
        # Bodies pass as the preview encoded them: no output transform (gzip) of ours, so
        # the body of a known length can go to the connection unchanged (write_body).
        self._transforms = []
        self._upgrade = (
            self.request.method == "GET"
            and self.request.headers.get("Upgrade", "").lower() == "websocket"
        )

    async def _open_body(self, max_body_size: int, path: str | None) -> None:
        """A request with a body: its head goes upstream now, the body follows chunk by
        chunk (:meth:`data_received`)."""
        if self._upgrade or not self._has_body():
            return
        if "Content-Length" not in self.request.headers and self.request.method not in (
            "POST",
            "PUT",
            "PATCH",
        ):
            raise http_error(411, "a request body without Content-Length needs POST/PUT/PATCH")
        connection: Any = self.request.connection
        connection.set_max_body_size(max_body_size)
        # A request body cannot be replayed: always a fresh upstream connection.
        self.exchange = await self._exchange(fresh=True)
        await self._send_head(self.exchange, path)

    def _has_body(self) -> bool:
        headers = self.request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return True
        length = headers.get("Content-Length")
        return length is not None and length.strip() not in ("", "0")

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        exchange = self.exchange
        if exchange is None or self._send_failed or self._finished:
            return
        try:
            await exchange.send(chunk)
        except (iostream.StreamClosedError, OSError):
            self._send_failed = True

    # -- HTTP ------------------------------------------------------------------------------

    async def _relay_http(self, path: str | None) -> None:
        preview = self.preview
        assert preview is not None
        relay = self._relay = _ResponseRelay(self, preview)
        exchange = self.exchange
        try:
            if exchange is None:
                exchange = self.exchange = await self._exchange(fresh=False)
                await self._send_head(exchange, path)
            try:
                await exchange.respond(relay, relay)
            except UpstreamError:
                if exchange.headers_seen or not exchange.reused or exchange.timed_out:
                    raise
                # A kept-alive connection the upstream had just closed: once more, fresh.
                exchange.release()
                exchange = self.exchange = await self._exchange(fresh=True)
                await self._send_head(exchange, path)
                await exchange.respond(relay, relay)
        except UpstreamError as exc:
            if relay.started or relay.client_gone:
                self._abort()  # the status line is gone: cutting the connection is all we can
                return
            raise http_error(exc.status, str(exc)) from None
        finally:
            if exchange is not None:
                exchange.release()
            # no handler <-> relay cycle left behind: garbage is freed at once, not by
            # the cycle collector (whose full passes are long pauses in a Jupyter server)
            self._relay = relay.handler = None  # type: ignore[assignment]
        if relay.client_gone:
            self._abort()
            return
        await self.finish()

    async def _exchange(self, *, fresh: bool) -> Exchange:
        assert self.preview is not None and self.preview.pool is not None
        try:
            return await Exchange.open(self.preview.pool, fresh=fresh)
        except UpstreamError as exc:
            raise http_error(exc.status, str(exc)) from None

    def _upstream_headers(self, *, websocket: bool = False) -> httputil.HTTPHeaders:
        assert self.preview is not None
        return request_headers(
            self.request.headers,
            upstream_host=self._upstream_host(),
            forwarded=self._forwarded(),
            cookie_names=self._cookie_names(),
            websocket=websocket,
            extra=self.preview.pool.headers if self.preview.pool is not None else None,
        )

    async def _send_head(self, exchange: Exchange, path: str | None) -> None:
        headers = self._upstream_headers()
        method = self.request.method or "GET"
        try:
            await exchange.send_headers(method, self._target(path), headers, body=self._has_body())
        except (iostream.StreamClosedError, OSError):
            self._send_failed = True

    def _abort(self) -> None:
        with swallowed(log, "closing a preview client connection", level=logging.DEBUG):
            self.request.connection.close()  # type: ignore[union-attr]
        self._finished = True

    def on_connection_close(self) -> None:
        """The browser went away before the response (or the upgrade) was done: stop
        reading the upstream and close its connection. (A tunnel, once made, sees the
        browser leave itself.)"""
        if self._relay is not None:
            self._relay.client_gone = True
        if self.exchange is not None:
            self.exchange.abort()
            self.exchange.release()  # the method may never run (a body cut short)
        # RequestHandler's: fail a request body that is still being streamed in, so the
        # handler ends instead of waiting for it forever.
        web.RequestHandler.on_connection_close(self)

    def answer_head(
        self,
        start_line: httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        rewriter: ResponseRewriter,
    ) -> None:
        """The preview's status and headers, as the security model rewrites them, in place
        of tornado's defaults; the handler's own default headers stay, nosniff is added."""
        self.set_status(start_line.code, start_line.reason or None)
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)
        for name, value in rewriter.headers(headers):
            try:
                self.add_header(name, value)
            except ValueError:
                log.debug("agentbuild: dropped an invalid %s header from a preview", name)
        self.set_header("X-Content-Type-Options", "nosniff")

    # -- what the upstream sees ----------------------------------------------------------

    def _upstream_host(self) -> str:
        assert self.preview is not None and self.preview.pool is not None
        pool = self.preview.pool
        default = 443 if pool.tls else 80
        return pool.host if pool.port == default else f"{pool.host}:{pool.port}"

    def _forwarded(self) -> dict[str, str]:
        forwarded = forwarded_headers(
            remote_ip=self.request.remote_ip,
            protocol=self.request.protocol,
            host=self.request.host,
            prefix=self._public_prefix(),
        )
        if not forwarded.get("X-Forwarded-Prefix"):
            forwarded.pop("X-Forwarded-Prefix", None)  # served at its own root
        return forwarded

    def _cookie_names(self) -> frozenset[str]:
        """This server's own cookie names, besides the ``_xsrf``/``username-*``/
        ``jupyterhub-*`` patterns: a configured ``IdentityProvider.cookie_name``."""
        provider = self.settings.get("identity_provider")
        configured = getattr(provider, "cookie_name", "")
        return frozenset({"_xsrf", configured}) if configured else _XSRF_ONLY

    def _rewriter(self) -> ResponseRewriter:
        """What rewrites this preview's responses (made once per preview and way in)."""
        preview = self.preview
        assert preview is not None and preview.pool is not None
        cookie_names = self._cookie_names()
        key = f"rewriter:{type(self).__name__}"
        rewriter: ResponseRewriter | None = preview.cache.get(key)
        if rewriter is None or rewriter.cookie_names != cookie_names:
            rewriter = preview.cache[key] = self._make_rewriter(cookie_names)
        return rewriter

    def _upstream_netlocs(self) -> frozenset[str]:
        """The spellings of the upstream's own address in a redirect."""
        assert self.preview is not None and self.preview.pool is not None
        host, port = self.preview.pool.host, self.preview.pool.port
        return frozenset(
            {f"{host}:{port}", self._upstream_host(), f"127.0.0.1:{port}", f"localhost:{port}"}
        )

    # -- WebSocket ---------------------------------------------------------------------------

    async def _relay_websocket(self, path: str | None, gone: str) -> None:
        """The upgrade goes to the preview as the browser sent it (its key, protocols and
        extensions; credentials stripped); the preview's ``101`` comes back, and from then
        on the two connections are one WebSocket, relayed as bytes (:mod:`..preview.tunnel`)."""
        preview = self.preview
        if preview is None or preview.pool is None:
            raise http_error(404, gone)
        if not self._origin_allowed(self.request.headers.get("Origin", "")):
            raise http_error(403, "cross-origin WebSocket refused")
        if self._has_body():
            raise http_error(400, "a WebSocket upgrade has no request body")
        headers = self._upstream_headers(websocket=True)
        exchange = self.exchange = await self._exchange(fresh=True)
        try:
            try:
                start_line, answer, upstream = await exchange.upgrade(self._target(path), headers)
            except UpstreamError as exc:
                raise http_error(exc.status, str(exc)) from None
            if upstream is None:
                raise http_error(502, f"the preview refused the WebSocket (HTTP {start_line.code})")
            if preview.stopping:
                raise http_error(404, gone)
            self.answer_head(start_line, answer, self._rewriter())
            self.set_header("Upgrade", "websocket")
            self.set_header("Connection", "Upgrade")
            self.finish()
            tunnel = Tunnel(self.detach(), upstream, preview.touch)
            preview.sockets.add(tunnel)
            try:
                await tunnel.run()
            finally:
                preview.sockets.discard(tunnel)
        finally:
            self.exchange = None
            exchange.abort()
            exchange.release()


class _ResponseRelay(httputil.HTTPMessageDelegate):
    """Receives the upstream's response and writes it to the browser, chunk by chunk."""

    def __init__(self, handler: PreviewRelay, preview: Preview) -> None:
        self.handler = handler
        self.preview = preview
        self.started = False  # the status line has been sent to the browser
        self.client_gone = False
        self.pending = 0
        self.rewriter = handler._rewriter()

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.handler.answer_head(start_line, headers, self.rewriter)

    async def write_body(self, chunk: memoryview) -> None:
        """A body of known length (``Exchange.read_body_into``): once the browser has the
        head, each piece goes to its connection as it is (no copy), awaited until the
        kernel has it. Until then, as :meth:`data_received` does."""
        if not self.started:
            await self.data_received(bytes(chunk))
            return
        if self.client_gone:
            return
        self.preview.touch()
        try:
            await self.handler.request.connection.write(chunk)  # type: ignore[arg-type, union-attr]
        except iostream.StreamClosedError:
            self._client_left()

    def client_stream(self) -> iostream.IOStream | None:
        """The browser's connection once the head is out (and the connection's own count
        of the body, which :meth:`body_moved` keeps, is where this expects it)."""
        if not self.started or self.client_gone:
            return None
        connection: Any = self.handler.request.connection
        if not isinstance(getattr(connection, "_expected_content_remaining", None), int):
            return None
        stream: iostream.IOStream = connection.stream
        return stream

    def body_moved(self, count: int) -> None:
        # HTTP1Connection checks at finish that the whole Content-Length was written
        connection: Any = self.handler.request.connection
        connection._expected_content_remaining -= count
        self.preview.touch()

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        """Buffered into the handler, flushed every ``FLUSH_THRESHOLD`` bytes: an upstream
        that fails before the first flush still gets a clean error answer."""
        if self.client_gone:
            return
        handler = self.handler
        handler.write(chunk)
        self.pending += len(chunk)
        if self.pending < FLUSH_THRESHOLD:
            return
        self.pending = 0
        self.started = True
        self.preview.touch()
        try:
            await handler.flush()
        except iostream.StreamClosedError:
            self._client_left()

    def _client_left(self) -> None:
        self.client_gone = True
        if self.handler.exchange is not None:
            self.handler.exchange.abort()


__all__ = ["FLUSH_THRESHOLD", "TARGET_SAFE", "PreviewRelay", "http_error"]
