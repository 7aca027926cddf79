"""The preview reverse proxy (``{base_url}agentbuild/preview/{id}/...``) and its stop endpoint.

One handler serves every HTTP method and WebSocket upgrades of a preview. It is thin in
the sense of the other handlers: who may reach which preview is the service's answer
(owner only, 404 otherwise), where to connect is the preview's record (never the
request), what crosses is :mod:`..preview.headers`, and the upstream connections are
:mod:`..preview.upstream`; this module moves bytes between the two sides.

Streaming both ways, with back-pressure:

- request bodies arrive through ``@stream_request_body``; each chunk is awaited into the
  upstream socket before tornado reads the next one from the browser;
- response bodies are awaited into the browser's socket (``await self.flush()``) before
  the next chunk is read from the upstream (``HTTP1Connection`` awaits ``data_received``);
- a WebSocket, once the preview accepted the upgrade, is relayed as bytes both ways
  (:mod:`..preview.tunnel`), each chunk written before the next is read.

Authentication happens in ``prepare``, before anything is forwarded: Jupyter's identity
(token, cookie or JupyterHub) on HTTP and on WebSocket upgrades alike (an unauthenticated
upgrade is refused with 403, GHSA-w3vc-fx9p-wp4v), then the authorizer (resource
``agentbuild``), then the owner check.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import quote

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import JupyterHandler
from tornado import httputil, iostream, web

from ..errors import Forbidden, NotFound, Unavailable
from ..identity import owner_of
from ..preview.headers import (
    ResponseRewriter,
    cross_site_request,
    forwarded_headers,
    request_headers,
    strip_credentials,
)
from ..preview.manager import Preview
from ..preview.tunnel import Tunnel
from ..preview.upstream import Exchange, UpstreamError
from ..swallow import swallowed
from .artifacts import serve_static_preview
from .base import AUTH_RESOURCE, JsonErrors, error_body
from .builds import BuildHandlerBase

log = logging.getLogger(__name__)

#: Bytes of response body gathered before they are flushed to the browser (a response
#: smaller than this goes out in one write, with its headers).
FLUSH_THRESHOLD = 64 * 1024
#: Characters allowed unescaped in the request target sent upstream (RFC 3986 pchar + '/'
#: + '?' + '%'): anything else (non-ASCII from a raw request line) is percent-encoded.
_TARGET_SAFE = "/:@!$&'()*+,;=-._~%?"
_XSRF_ONLY = frozenset({"_xsrf"})


def _nothing(handler: Any) -> None:
    return None


def _http_error(status: int, message: str) -> web.HTTPError:
    """An HTTPError whose message is shown as is (a ``%`` in it is not a format)."""
    return web.HTTPError(status, "%s", message)


@web.stream_request_body
class PreviewProxyHandler(JsonErrors, JupyterHandler):
    """HTTP (every method) and WebSocket reverse proxy to one build's preview."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]
    auth_resource = AUTH_RESOURCE

    preview: Preview | None = None
    exchange: Exchange | None = None
    _upgrade = False
    _send_failed = False
    _relay: _ResponseRelay | None = None

    # -- configuration --------------------------------------------------------------------

    @property
    def agentbuild(self) -> Any:
        return self.settings["agentbuild"]

    @property
    def content_security_policy(self) -> str:
        """Jupyter's own policy (``frame-ancestors 'self'``...) plus the preview's
        ``sandbox`` directive: the page runs in an opaque origin, never as Jupyter."""
        extra = self.agentbuild.preview_csp
        base = super().content_security_policy
        return f"{base}; {extra}" if extra else base

    def compute_etag(self) -> str | None:
        return None  # the upstream's caching headers are passed on as they are

    def check_xsrf_cookie(self) -> None:
        """Requests go to the preview, never to Jupyter: its forms are its own business
        (and Jupyter's cookies are stripped from them)."""
        return

    # -- authentication, authorization, owner: before anything is forwarded ---------------

    async def prepare(self) -> None:  # type: ignore[override]
        # Bodies pass as the preview encoded them: no output transform (gzip) of ours, so
        # the body of a known length can go to the connection unchanged (write_body).
        self._transforms = []
        self._upgrade = (
            self.request.method == "GET"
            and self.request.headers.get("Upgrade", "").lower() == "websocket"
        )
        # JupyterHandler.prepare authenticates: a GET without credentials is sent to the
        # login page, anything else (a WebSocket upgrade included) gets 403.
        await super().prepare(_redirect_to_login=not self._upgrade)
        if self._finished:
            return
        user = self.current_user
        if user is None:  # also where the server allows unauthenticated access
            if self.request.method in ("GET", "HEAD") and not self._upgrade:
                web.authenticated(_nothing)(self)  # a page: to the login page, as Jupyter does
                return
            raise _http_error(403, "the preview needs Jupyter authentication")
        if not self.token_authenticated and cross_site_request(
            self.request.method or "GET",
            self.request.headers,
            host=self.request.host,
        ):
            # The browser attached Jupyter's cookies to a page of another site's request:
            # forwarding it would let that site act on the preview as the user.
            raise Forbidden(
                "a state-changing request from another site with Jupyter's cookies is "
                "refused; send a token (Authorization header) instead",
                code="cross_site_request",
            )
        method = "WEBSOCKET" if self._upgrade else (self.request.method or "GET")
        action = HTTP_METHOD_TO_AUTH_ACTION.get(method, "write")
        if not await ensure_async(self.authorizer.is_authorized(self, user, action, AUTH_RESOURCE)):
            raise _http_error(403, "not authorized to use previews")
        agentbuild = self.agentbuild
        owner = owner_of(self.identity_provider, user, agentbuild.personal_owner)
        build_id = self.path_kwargs["build_id"]
        self.preview = await agentbuild.service.preview_target(owner, build_id)
        if self.preview is None:
            if self.request.method not in ("GET", "HEAD") or self._upgrade:
                raise _http_error(404, f"no preview is running for build {build_id}")
            return  # the method serves the static fallback or a 404
        self.preview.touch()
        if not self._upgrade and self._has_body():
            if "Content-Length" not in self.request.headers and self.request.method not in (
                "POST",
                "PUT",
                "PATCH",
            ):
                raise _http_error(411, "a request body without Content-Length needs POST/PUT/PATCH")
            connection: Any = self.request.connection
            connection.set_max_body_size(agentbuild.preview_max_request_size)
            # A request body cannot be replayed: always a fresh upstream connection; the
            # head goes now, the body follows chunk by chunk (data_received).
            self.exchange = await self._exchange(fresh=True)
            await self._send_head(self.exchange, self.path_kwargs.get("path"))

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

    async def get(self, build_id: str, path: str | None = None) -> None:  # type: ignore[override]
        if self._upgrade:
            await self._websocket(build_id, path)
        else:
            await self._http(build_id, path)

    async def head(self, build_id: str, path: str | None = None) -> None:
        await self._http(build_id, path)

    async def post(self, build_id: str, path: str | None = None) -> None:
        await self._http(build_id, path)

    async def put(self, build_id: str, path: str | None = None) -> None:
        await self._http(build_id, path)

    async def patch(self, build_id: str, path: str | None = None) -> None:
        await self._http(build_id, path)

    async def delete(self, build_id: str, path: str | None = None) -> None:
        await self._http(build_id, path)

    async def options(self, build_id: str, path: str | None = None) -> None:  # type: ignore[override]
        await self._http(build_id, path)

    async def _http(self, build_id: str, path: str | None) -> None:
        preview = self.preview
        if preview is None:
            await self._static_fallback(build_id, path)
            return
        if path is None and self.request.method in ("GET", "HEAD"):
            query = self.request.query
            self.redirect(preview.prefix + (f"?{query}" if query else ""))
            return
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
            raise _http_error(exc.status, str(exc)) from None
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
            raise _http_error(exc.status, str(exc)) from None

    async def _send_head(self, exchange: Exchange, path: str | None) -> None:
        assert self.preview is not None
        headers = request_headers(
            self.request.headers,
            upstream_host=self._upstream_host(),
            forwarded=self._forwarded(),
            cookie_names=self._cookie_names(),
            extra=self.preview.pool.headers if self.preview.pool is not None else None,
        )
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
        # RequestHandler's: fail a request body that is still being streamed in, so the handler ends instead of waiting for it forever.
        web.RequestHandler.on_connection_close(self)

    async def _static_fallback(self, build_id: str, path: str | None) -> None:
        """No live preview here: the build's artifacts, served as a static site (the owner
        was checked in ``prepare``); 404 when the artifacts do not have the page either."""
        nothing = f"no preview is running for build {build_id}"
        sub = (path or "")[1:]  # after "preview/{id}/", percent-decoded
        try:
            await serve_static_preview(self, build_id, sub, head=self.request.method == "HEAD")
        except NotFound as exc:
            raise _http_error(404, f"{nothing}, and {exc.message}") from None
        except Unavailable:
            raise _http_error(404, nothing) from None

    def answer_head(
        self,
        start_line: httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        rewriter: ResponseRewriter,
    ) -> None:
        """The preview's status and headers, as the security model rewrites them, in place
        of tornado's defaults; our CSP (a default header) stays, nosniff is added."""
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
        assert self.preview is not None
        return forwarded_headers(
            remote_ip=self.request.remote_ip,
            protocol=self.request.protocol,
            host=self.request.host,
            prefix=self.preview.prefix.rstrip("/"),
        )

    def _cookie_names(self) -> frozenset[str]:
        """This server's own cookie names, besides the ``_xsrf``/``username-*``/
        ``jupyterhub-*`` patterns: a configured ``IdentityProvider.cookie_name``."""
        configured = getattr(self.identity_provider, "cookie_name", "")
        return frozenset({"_xsrf", configured}) if configured else _XSRF_ONLY

    def _rewriter(self) -> ResponseRewriter:
        """What rewrites this preview's responses (made once per preview)."""
        preview = self.preview
        assert preview is not None and preview.pool is not None
        cookie_names = self._cookie_names()
        rewriter: ResponseRewriter | None = preview.cache.get("rewriter")
        if rewriter is None or rewriter.cookie_names != cookie_names:
            host, port = preview.pool.host, preview.pool.port
            rewriter = ResponseRewriter(
                prefix=preview.prefix.rstrip("/"),
                upstream_netlocs=frozenset(
                    {
                        f"{host}:{port}",
                        self._upstream_host(),
                        f"127.0.0.1:{port}",
                        f"localhost:{port}",
                    }
                ),
                cookie_names=cookie_names,
            )
            preview.cache["rewriter"] = rewriter
        return rewriter

    def _target(self, path: str | None) -> str:
        """The request target for the upstream: the raw path under the prefix, and the
        query without credentials. Never a host: the connection is already made."""
        assert self.preview is not None
        prefix = self.preview.prefix.rstrip("/")
        raw = self.request.path
        if raw.startswith(prefix + "/"):
            sub = raw[len(prefix) :]
        else:
            sub = quote("/" + (path or "").lstrip("/"), safe=_TARGET_SAFE)
        if not sub.isascii():
            sub = quote(sub.encode("latin-1", "replace"), safe=_TARGET_SAFE)
        query = strip_credentials(self.request.query)
        return f"{sub}?{query}" if query else sub

    # -- WebSocket ---------------------------------------------------------------------------

    @ws_authenticated
    async def _websocket(self, build_id: str, path: str | None) -> None:
        """The upgrade goes to the preview as the browser sent it (its key, protocols and
        extensions; credentials stripped); the preview's ``101`` comes back, and from then
        on the two connections are one WebSocket, relayed as bytes (:mod:`..preview.tunnel`)."""
        preview = self.preview
        if preview is None or preview.pool is None:
            raise _http_error(404, f"no preview is running for build {build_id}")
        if not self.check_origin(self.request.headers.get("Origin", "")):
            raise _http_error(403, "cross-origin WebSocket refused")
        if self._has_body():
            raise _http_error(400, "a WebSocket upgrade has no request body")
        headers = request_headers(
            self.request.headers,
            upstream_host=self._upstream_host(),
            forwarded=self._forwarded(),
            cookie_names=self._cookie_names(),
            websocket=True,
            extra=preview.pool.headers,
        )
        exchange = self.exchange = await self._exchange(fresh=True)
        try:
            try:
                start_line, answer, upstream = await exchange.upgrade(self._target(path), headers)
            except UpstreamError as exc:
                raise _http_error(exc.status, str(exc)) from None
            if upstream is None:
                raise _http_error(
                    502, f"the preview refused the WebSocket (HTTP {start_line.code})"
                )
            if preview.stopping:
                raise _http_error(404, f"no preview is running for build {build_id}")
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

    # -- errors: short, never a traceback, with the security headers ------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The contract's JSON error (:class:`JsonErrors`), or the same message as a short
        page for a browser; never a traceback, never cached."""
        self.set_header("Cache-Control", "no-store")
        if "text/html" not in self.request.headers.get("Accept", ""):
            super().write_error(status_code, **kwargs)
            return
        exc_info = kwargs.get("exc_info")
        status_code, body = error_body(status_code, exc_info[1] if exc_info else None, self._reason)
        self.set_status(status_code)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        title = f"{status_code} {html.escape(self._reason)}"
        self.finish(
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title></head><body><h1>{title}</h1>"
            f"<p>{html.escape(body['error']['message'])}</p>"
            "<p><small>agentbuild preview proxy</small></p></body></html>"
        )

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # 403/404: the answer says it all
        super().log_exception(typ, value, tb)


class _ResponseRelay(httputil.HTTPMessageDelegate):
    """Receives the upstream's response and writes it to the browser, chunk by chunk."""

    def __init__(self, handler: PreviewProxyHandler, preview: Preview) -> None:
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


class PreviewStopHandler(BuildHandlerBase):
    """``POST api/builds/{id}/preview/stop``: stop the preview and its sandbox."""

    @web.authenticated
    @authorized
    async def post(self, build_id: str) -> None:
        row, done = await self.agentbuild.service.preview_stop(self.owner, build_id)
        self.write_json(self._build(row), status=200 if done else 202)


__all__ = ["PreviewProxyHandler", "PreviewStopHandler"]
