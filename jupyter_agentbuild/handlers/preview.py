"""The path proxy of a preview (``{base_url}agentbuild/preview/{id}/...``) and its stop endpoint.

The way in for token clients (curl, agents) on Jupyter's own origin: Jupyter's identity
(token, cookie or JupyterHub) on HTTP and on WebSocket upgrades alike (an unauthenticated
upgrade is refused with 403, GHSA-w3vc-fx9p-wp4v), then the authorizer (resource
``agentbuild``), then the owner check, all in ``prepare`` before anything is forwarded.
The prefix is stripped (the app is told it runs at ``/``), and every response carries the
``sandbox`` CSP: a page seen here runs in an opaque origin, never as Jupyter. Browsers
get the preview's own origin instead (:mod:`.preview_origin`). Who may reach which
preview is the service's answer (owner only, 404 otherwise), where to connect is the
preview's record (never the request), what crosses is :mod:`..preview.headers`, and the
bytes are moved by :mod:`.preview_relay`.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from ..errors import Conflict, Forbidden, NotFound, Unavailable
from ..identity import owner_of
from ..preview.headers import ResponseRewriter, cross_site_request, strip_credentials
from .artifacts import serve_static_preview
from .base import AUTH_RESOURCE, JsonErrors, error_body
from .builds import BuildHandlerBase
from .preview_relay import TARGET_SAFE, PreviewRelay, http_error


def _nothing(handler: Any) -> None:
    return None


@web.stream_request_body
class PreviewProxyHandler(PreviewRelay, JsonErrors, JupyterHandler):
    """HTTP (every method) and WebSocket reverse proxy to one build's preview, at a path
    of Jupyter's origin."""

    auth_resource = AUTH_RESOURCE

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

    # -- authentication, authorization, owner: before anything is forwarded ---------------

    async def prepare(self) -> None:  # type: ignore[override]
        self._start_request()
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
            raise http_error(403, "the preview needs Jupyter authentication")
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
            raise http_error(403, "not authorized to use previews")
        agentbuild = self.agentbuild
        owner = owner_of(self.identity_provider, user, agentbuild.personal_owner)
        build_id = self.path_kwargs["build_id"]
        self.preview = await agentbuild.service.preview_target(owner, build_id)
        if self.preview is None:
            if self.request.method not in ("GET", "HEAD") or self._upgrade:
                raise http_error(404, f"no preview is running for build {build_id}")
            return  # the method serves the static fallback or a 404
        self.preview.touch()
        await self._open_body(agentbuild.preview_max_request_size, self.path_kwargs.get("path"))

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
        await self._relay_http(path)

    async def _static_fallback(self, build_id: str, path: str | None) -> None:
        """No live preview here: the build's artifacts, served as a static site (the owner
        was checked in ``prepare``); 404 when the artifacts do not have the page either."""
        nothing = f"no preview is running for build {build_id}"
        sub = (path or "")[1:]  # after "preview/{id}/", percent-decoded
        try:
            await serve_static_preview(self, build_id, sub, head=self.request.method == "HEAD")
        except NotFound as exc:
            raise http_error(404, f"{nothing}, and {exc.message}") from None
        except Unavailable:
            raise http_error(404, nothing) from None

    # -- the hooks of the relay ------------------------------------------------------------

    def _public_prefix(self) -> str:
        assert self.preview is not None
        return self.preview.prefix.rstrip("/")

    def _make_rewriter(self, cookie_names: frozenset[str]) -> ResponseRewriter:
        return ResponseRewriter(
            prefix=self._public_prefix(),
            upstream_netlocs=self._upstream_netlocs(),
            cookie_names=cookie_names,
        )

    def _origin_allowed(self, origin: str) -> bool:
        return bool(self.check_origin(origin))

    def _target(self, path: str | None) -> str:
        """The raw path under the prefix (the app runs at ``/``: its base and the path it
        receives agree), and the query without Jupyter's token."""
        assert self.preview is not None
        prefix = self.preview.prefix.rstrip("/")
        raw = self.request.path
        if raw.startswith(prefix + "/"):
            sub = raw[len(prefix) :]
        else:
            sub = quote("/" + (path or "").lstrip("/"), safe=TARGET_SAFE)
        if not sub.isascii():
            sub = quote(sub.encode("latin-1", "replace"), safe=TARGET_SAFE)
        query = strip_credentials(self.request.query)
        return f"{sub}?{query}" if query else sub

    # -- WebSocket ---------------------------------------------------------------------------

    @ws_authenticated
    async def _websocket(self, build_id: str, path: str | None) -> None:
        await self._relay_websocket(path, f"no preview is running for build {build_id}")

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


class PreviewStopHandler(BuildHandlerBase):
    """``POST api/builds/{id}/preview/stop``: stop the preview and its sandbox."""

    @web.authenticated
    @authorized
    async def post(self, build_id: str) -> None:
        row, done = await self.agentbuild.service.preview_stop(self.owner, build_id)
        self.write_json(self._build(row), status=200 if done else 202)


class PreviewRestartHandler(BuildHandlerBase):
    """``POST api/builds/{id}/preview/restart``: a fresh preview process, same URLs.

    The running process is stopped and the spec's preview command started again in the
    same sandbox (edited files are served, a hung app is replaced); the Build answers,
    its ``preview`` ``ready`` again or ``failed`` with the error. 404 for a build that is
    not the caller's; 409 when there is nothing to restart here (``error.code``:
    ``no_preview``, ``preview_starting``, ``preview_elsewhere``, or ``preview_gone`` once
    the preview stopped, since its sandbox and the files the steps made went with it).
    """

    @web.authenticated
    @authorized
    async def post(self, build_id: str) -> None:
        service = self.agentbuild.service
        row = await service.get(self.owner, build_id)
        if service.previews is None:
            raise Conflict("previews are off on this server", code="no_preview")
        await service.previews.restart(row)
        self.write_json(self._build(await service.get(self.owner, build_id)))


__all__ = ["PreviewProxyHandler", "PreviewRestartHandler", "PreviewStopHandler"]
