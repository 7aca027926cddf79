"""A preview on its own origin: ``{label}.localhost`` (or the deployment's template).

Every request whose host name is a preview host (:class:`..preview.origin.PreviewOrigins`)
comes here, whatever its path: the rule is placed ahead of all of Jupyter's, so none of
Jupyter's pages or APIs is ever served at such a host. The capability in the host name is
the only authentication: a live preview whose label is exactly this one gets the request,
path and query as they are (the app runs at ``/``, unmodified: its own ``?token=`` such as
Vite's reaches it); anything else (an unknown or altered label, a stopped preview) is a
404 with nothing of the app or of Jupyter in it. This handler is not a JupyterHandler: no
Jupyter login, cookie, XSRF check or host check applies, and none of Jupyter's security
headers either (its ``frame-ancestors 'self'`` would forbid JupyterLab to embed the page,
which is on another site). Jupyter's cookies and ``Authorization`` still never reach the
app (:func:`..preview.headers.request_headers`), and the app cannot set cookies named
like Jupyter's, nor for a parent domain (``Domain=`` is removed: a cookie set here stays
on this host).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web
from tornado.httputil import HTTPHeaders
from tornado.log import access_log

from ..preview.headers import OwnOriginRewriter, ResponseRewriter
from .preview_relay import TARGET_SAFE, http_error
from .preview_socket import WebSocketRelay

log = logging.getLogger(__name__)

NOTHING = "no preview here"


@web.stream_request_body
class OwnOriginHandler(WebSocketRelay):
    """Every method and WebSocket upgrades, at any path of a preview host."""

    async def prepare(self) -> None:
        self._start_request()
        agentbuild = self.agentbuild
        previews = agentbuild.previews
        label = agentbuild.preview_origins.label_of(self.request.host_name)
        preview = previews.by_label(label) if previews is not None and label else None
        if preview is None:
            raise http_error(404, NOTHING)
        self.preview = preview
        preview.touch()
        await self._open_body(previews.max_request_size, None)

    async def serve_http(self) -> None:
        await self._relay_http(None)

    async def serve_websocket(self) -> None:
        await self.relay_websocket(None, NOTHING)

    # -- the hooks of the relay ------------------------------------------------------------

    def _upstream_headers(self, *, websocket: bool = False) -> HTTPHeaders:
        """The upstream gets ``Host: 127.0.0.1:PORT``; a request from a page of this very
        origin gets the matching ``Origin`` too, so the app sees what a direct visit at
        ``http://127.0.0.1:PORT/`` would send. Apps that compare the two (tornado's and
        many frameworks' WebSocket origin check, CSRF origin checks) then accept their own
        page; another site's ``Origin`` is passed on as it is, for the app to refuse."""
        headers = super()._upstream_headers(websocket=websocket)
        origin = headers.get("Origin")
        if origin and self._origin_allowed(origin):
            assert self.preview is not None and self.preview.pool is not None
            scheme = "https" if self.preview.pool.tls else "http"
            headers["Origin"] = f"{scheme}://{self._upstream_host()}"
        return headers

    def _public_prefix(self) -> str:
        return ""

    def _make_rewriter(self, cookie_names: frozenset[str]) -> ResponseRewriter:
        return OwnOriginRewriter(
            prefix="", upstream_netlocs=self._upstream_netlocs(), cookie_names=cookie_names
        )

    def _origin_allowed(self, origin: str) -> bool:
        """A browser's upgrade from a page of this very origin (or a client sending none):
        another site cannot drive the preview's sockets with the visitor's cookies."""
        if not origin:
            return True
        try:
            host = urlsplit(origin).hostname
        except ValueError:
            return False
        return host is not None and host == self.request.host_name.lower()

    def _target(self, path: str | None) -> str:
        """The path and query exactly as the browser sent them."""
        uri = self.request.uri or "/"
        if not uri.startswith("/"):  # absolute-form: keep only path and query
            parts = urlsplit(uri)
            uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not uri.isascii():
            uri = quote(uri.encode("latin-1", "replace"), safe=TARGET_SAFE)
        return uri

    # -- errors: a short text, never a traceback, never cached ---------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        message = NOTHING if status_code == 404 else self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message and status_code != 404:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.clear_header("Set-Cookie")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(f"{status_code} {message}\n")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Never tornado's own lines: they show the request's host (the capability)."""
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # 403/404: the answer says it all
        preview = self.preview
        if isinstance(value, web.HTTPError):  # 502/504: the upstream's failure, said
            text = value.log_message or value.reason or ""
            message = text % value.args if value.args and value.log_message else text
            log.warning(
                "agentbuild: %s %s of the preview of %s: %s",
                self.request.method,
                self.request.path,
                preview.build_id if preview is not None else "none",
                message,
            )
            return
        log.error(
            "agentbuild: %s %s of the preview of %s failed",
            self.request.method,
            self.request.path,
            preview.build_id if preview is not None else "none",
            exc_info=(typ, value, tb),
        )

    def check_etag_header(self) -> bool:
        """Never answer 304 on the app's behalf: its validators are its own business."""
        return False

    def _log(self) -> None:
        """One line per request, at the level Jupyter would use, without the host name,
        ``Referer`` or ``Origin`` (they carry the capability, which never goes into a
        log) and without the query (the app's own tokens); the build id says which
        preview. Successful requests are debug lines: building them is skipped unless
        that level is on (it was 8% of a small request)."""
        status = self.get_status()
        if status < 300 or status == 304:
            level = logging.DEBUG
        elif status < 400:
            level = logging.INFO
        elif status < 500:
            level = logging.WARNING
        else:
            level = logging.ERROR
        if not access_log.isEnabledFor(level):
            return
        preview = self.preview
        access_log.log(
            level,
            "%d %s %s (preview of %s, %s) %.2fms",
            status,
            self.request.method,
            self.request.path,
            preview.build_id if preview is not None else "none",
            self.request.remote_ip,
            1000.0 * self.request.request_time(),
        )


__all__ = ["NOTHING", "OwnOriginHandler"]
