"""What a single-user server calls to route its previews' hosts through the hub's proxy.

Active only under JupyterHub with ``c.AgentBuild.hub_routes_url`` (or
``AGENTBUILD_HUB_ROUTES_URL``) set (the URL of the
:mod:`.routes_service`, e.g. ``http://127.0.0.1:10101/services/agentbuild-previews/``,
usually given to every server with ``c.Spawner.environment``). Authenticates with the
server's own ``JUPYTERHUB_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


class HubRoutes:
    """Adds and removes the proxy route of a preview host (``{label}.{domain}``)."""

    def __init__(self, url: str, token: str, server_name: str = "") -> None:
        self.url = url.rstrip("/") + "/api/routes/"
        self.token = token
        self.server_name = server_name

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, url: str | None = None
    ) -> HubRoutes | None:
        """``url`` (else ``AGENTBUILD_HUB_ROUTES_URL``) with this server's hub token; None
        outside JupyterHub or without a routes service."""
        env = os.environ if env is None else env
        url = url or env.get("AGENTBUILD_HUB_ROUTES_URL")
        token = env.get("JUPYTERHUB_API_TOKEN")
        if not url or not token:
            return None
        return cls(url, token, env.get("JUPYTERHUB_SERVER_NAME", ""))

    async def _call(self, method: str, label: str, body: str | None = None) -> None:
        request = HTTPRequest(
            self.url + quote(label, safe=""),
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=body,
            request_timeout=10,
        )
        await AsyncHTTPClient().fetch(request)

    async def add(self, label: str) -> None:
        await self._call("PUT", label, json.dumps({"server_name": self.server_name}))

    async def remove(self, label: str) -> None:
        try:
            await self._call("DELETE", label)
        except HTTPClientError as exc:
            if exc.code != 404:  # gone already (swept, or never added)
                raise
