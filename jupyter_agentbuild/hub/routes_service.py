"""A hub-managed service that routes preview hosts to their owner's server.

Run by JupyterHub (``c.JupyterHub.services``), with the proxy's API token in
``CONFIGPROXY_AUTH_TOKEN``. A single-user server that starts a preview on the host
``{label}.{domain}`` asks ``PUT {prefix}api/routes/{label}`` with its own
``JUPYTERHUB_API_TOKEN``; the service checks the token with the hub, looks up *that
user's* server in the proxy's routing table and adds the route ``{label}.{domain}`` ->
that server. ``DELETE`` removes it (only its owner may). A user can therefore only ever
route a host to their own server; the server itself serves nothing at a host whose label
is not one of its live previews. Routes of servers that stopped are swept.

    python -m jupyter_agentbuild.hub.routes_service --domain previews.hub.example.org
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("agentbuild.hub.routes")

#: One DNS label, lowercase: what a preview label looks like.
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MARK = "agentbuild_preview"  # in the route's data: ours (the hub leaves such routes alone)


def _public(label: str) -> str:
    """What a log may say of a label: its first part (``p{build_id}``), never the secret
    (the host is the preview's capability)."""
    return label.split("-", 1)[0][:33]


class ProxyApi:
    """configurable-http-proxy's REST API (``/api/routes``)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/") + "/api/routes"
        self.token = token
        self.http = AsyncHTTPClient()

    async def _call(self, method: str, path: str = "", body: Any = None) -> Any:
        request = HTTPRequest(
            self.api_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=10,
        )
        response = await self.http.fetch(request)
        return json.loads(response.body) if response.body else None

    async def routes(self) -> dict[str, dict[str, Any]]:
        return await self._call("GET") or {}  # type: ignore[no-any-return]

    async def add(self, host: str, target: str, data: dict[str, Any]) -> None:
        await self._call("POST", "/" + quote(host), {"target": target, **data})

    async def delete(self, host: str) -> None:
        try:
            await self._call("DELETE", "/" + quote(host))
        except HTTPClientError as exc:
            if exc.code != 404:
                raise


def server_target(routes: dict[str, dict[str, Any]], user: str, server: str) -> str | None:
    """The target of ``user``'s server ``server`` in the hub's routes (None: not running)."""
    for route in routes.values():
        if route.get("jupyterhub") and route.get("user") == user:
            if (route.get("server_name") or "") == server:
                return str(route["target"])
    return None


class RouteHandler(web.RequestHandler):
    def initialize(self, app: RoutesApp) -> None:
        self.routes_app = app

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API only: no cookies are used, so no XSRF to check."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message
        self.finish({"error": {"code": f"http_{status_code}", "message": reason}})

    async def _owner(self) -> str:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token:
            raise web.HTTPError(401, "a JupyterHub token is required")
        model = await self.routes_app.user_for_token(token.strip())
        if not model or model.get("kind") != "user":
            raise web.HTTPError(403, "not a user's token, or not allowed to use this service")
        return str(model["name"])

    def _host(self, label: str) -> str:
        if not LABEL.match(label):
            raise web.HTTPError(400, "not a preview label")
        return f"{label}.{self.routes_app.domain}"

    async def put(self, label: str) -> None:
        host = self._host(label)
        owner = await self._owner()
        try:
            server = str(json.loads(self.request.body or b"{}").get("server_name") or "")
        except (ValueError, AttributeError):
            raise web.HTTPError(400, "the body must be a JSON object") from None
        proxy = self.routes_app.proxy
        routes = await proxy.routes()
        target = server_target(routes, owner, server)
        if target is None:
            raise web.HTTPError(409, "your server is not running")
        existing = routes.get("/" + host)
        if existing is not None and existing.get("owner") != owner:
            raise web.HTTPError(409, "this host is taken")
        await proxy.add(host, target, {MARK: True, "owner": owner, "server_name": server})
        log.info("route %s… -> %s (%s)", _public(label), target, owner)
        self.set_status(201)
        self.finish({"host": host})

    async def delete(self, label: str) -> None:
        host = self._host(label)
        owner = await self._owner()
        route = (await self.routes_app.proxy.routes()).get("/" + host)
        if route is None or not route.get(MARK) or route.get("owner") != owner:
            raise web.HTTPError(404, "no such route")
        await self.routes_app.proxy.delete(host)
        log.info("removed route %s… (%s)", _public(label), owner)
        self.set_status(204)
        self.finish()


class RoutesApp:
    """The service: its tornado application, the hub client and the proxy client."""

    def __init__(self, domain: str, proxy: ProxyApi, prefix: str, sweep_interval: float) -> None:
        from jupyterhub.services.auth import HubAuth

        self.domain = domain.strip(".").lower()
        self.proxy = proxy
        self.hub_auth = HubAuth(cache_max_age=60)
        self.sweep_interval = sweep_interval
        self.web = web.Application(
            [(prefix.rstrip("/") + r"/api/routes/([^/]+)", RouteHandler, {"app": self})]
        )

    async def user_for_token(self, token: str) -> dict[str, Any] | None:
        """The token's owner, if the token may use this service (its access scopes)."""
        model = await self.hub_auth.user_for_token(token, sync=False)
        if not model:
            return None
        if self.hub_auth.access_scopes and not self.hub_auth.check_scopes(
            self.hub_auth.access_scopes, model
        ):
            return None
        return model  # type: ignore[no-any-return]

    async def sweep(self) -> int:
        """Remove our routes whose owner's server is no longer routed (it stopped)."""
        routes = await self.proxy.routes()
        removed = 0
        for spec, route in routes.items():
            if not route.get(MARK):
                continue
            owner, server = str(route.get("owner")), str(route.get("server_name") or "")
            if server_target(routes, owner, server) != route.get("target"):
                await self.proxy.delete(spec.lstrip("/"))
                removed += 1
        return removed

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping preview routes failed")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default=os.environ.get("AGENTBUILD_PREVIEW_DOMAIN"))
    parser.add_argument(
        "--proxy-api-url",
        default=os.environ.get("CONFIGPROXY_API_URL", "http://127.0.0.1:8001"),
    )
    parser.add_argument("--sweep-interval", type=float, default=60.0)
    opts = parser.parse_args(argv)
    if not opts.domain:
        parser.error("--domain (or AGENTBUILD_PREVIEW_DOMAIN) is required")
    token = os.environ.get("CONFIGPROXY_AUTH_TOKEN")
    if not token:
        parser.error("CONFIGPROXY_AUTH_TOKEN (the proxy's API token) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/agentbuild-previews/")
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    app = RoutesApp(opts.domain, ProxyApi(opts.proxy_api_url, token), prefix, opts.sweep_interval)
    app.web.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("routing previews at *.%s on %s", app.domain, url.geturl())
    await app.sweep_forever()


if __name__ == "__main__":
    asyncio.run(main())
