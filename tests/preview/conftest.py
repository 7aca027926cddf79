"""Fixtures for the preview tests: a real server, real builds, a real preview process.

The preview is ``backend.py`` (stdlib only) passed as the build's inline file ``app.py``
and started by the build's ``preview.command``; it echoes what reached it, so the tests
see exactly what the proxy forwarded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from tests.conftest import Api

BACKEND = (Path(__file__).parent / "backend.py").read_text()
PREVIEW_COMMAND = f"exec {sys.executable} app.py"
WAIT = 30.0  # upper bound for an event that must happen (never a sleep)


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "kill_grace": 1.0}


class Previews:
    """Builds with previews, and requests through the proxy, on the test server."""

    def __init__(self, api: Api, client: Any, base_url: str, token: str, port: int) -> None:
        self.api = api
        self.client = client
        self.base_url = base_url
        self.token = token
        self.port = port

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def manager(self) -> Any:
        return self.api.app.web_app.settings["agentbuild"].previews

    async def start(
        self,
        preview: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ready: bool = True,
        **spec: Any,
    ) -> dict[str, Any]:
        """Create a build whose preview is the backend; return the finished Build (whose
        preview is ready, unless ``ready=False``)."""
        body = {
            "steps": ["echo built"],
            "files": {"app.py": BACKEND},
            "preview": {"command": PREVIEW_COMMAND, "path": "/tiny", **(preview or {})},
            **spec,
        }
        code, build, _ = await self.api.call("POST", "builds", body, headers=headers)
        assert code == 201, build
        if headers:
            build = await self.finish_as(build["id"], headers)
        else:
            build = await self.api.finish(build["id"])
        if ready:
            assert build["status"] == "succeeded", build
            assert (build["preview"] or {}).get("state") == "ready", build["preview"]
        return build

    async def finish_as(self, build_id: str, headers: dict[str, str]) -> dict[str, Any]:
        ws = await self.api.ws_fetch(
            "agentbuild", "api", "builds", build_id, "stream", headers=headers
        )
        while await ws.read_message() is not None:
            pass
        code, build, _ = await self.api.call("GET", f"builds/{build_id}", headers=headers)
        assert code == 200
        return build  # type: ignore[no-any-return]

    def path(self, build_id: str, sub: str = "/") -> str:
        return f"{self.base_url}agentbuild/preview/{build_id}{sub}"

    async def fetch(
        self,
        build_id: str,
        sub: str = "/",
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        auth: bool = True,
        **kwargs: Any,
    ) -> HTTPResponse:
        all_headers = {**(self.auth if auth else {}), **(headers or {})}
        return await self.send(self.path(build_id, sub), method, all_headers, body, **kwargs)

    async def send(
        self,
        url: str,
        method: str,
        headers: dict[str, str],
        body: bytes | str | None,
        **kwargs: Any,
    ) -> HTTPResponse:
        """One request as it is: no redirect followed, no error raised for a 4xx/5xx."""
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response: HTTPResponse = await self.client.fetch(
            url,
            method=method,
            headers=headers,
            body=body,
            follow_redirects=False,
            raise_error=False,
            request_timeout=WAIT,
            allow_nonstandard_methods=True,
            **kwargs,
        )
        return response

    async def echo(self, build_id: str, sub: str = "/echo", **kwargs: Any) -> dict[str, Any]:
        response = await self.fetch(build_id, sub, **kwargs)
        assert response.code == 200, (response.code, response.body[:500])
        return json.loads(response.body)  # type: ignore[no-any-return]

    @staticmethod
    def own_host(build: dict[str, Any]) -> str:
        """The ``host:port`` of a build's own-origin preview URL."""
        url = build["preview"]["url"]
        assert url.startswith("http://") and ".localhost:" in url, url
        return str(url[len("http://") :].split("/", 1)[0])

    async def own(
        self,
        host: str,
        target: str = "/",
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        **kwargs: Any,
    ) -> HTTPResponse:
        """A request to the preview's own origin: this server's port, ``Host: host``
        (what a browser sends for ``http://{label}.localhost:PORT``), no Jupyter auth
        unless ``headers`` add it."""
        return await self.send(target, method, {"Host": host, **(headers or {})}, body, **kwargs)

    def target(self, build_id: str) -> tuple[str, int]:
        preview = self.manager.get(build_id)
        assert preview is not None and preview.pool is not None
        return preview.pool.host, preview.pool.port


@pytest.fixture
def previews(
    api: Api, http_server_client: Any, jp_base_url: str, jp_serverapp: Any, jp_http_port: int
) -> Previews:
    return Previews(
        api, http_server_client, jp_base_url, jp_serverapp.identity_provider.token, jp_http_port
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def raw_request(port: int, request: bytes, *, read: bool = True) -> bytes:
    """Send bytes as they are (no client-side URL handling); the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if not read:
            return b""
        return await asyncio.wait_for(reader.read(1 << 20), WAIT)
    finally:
        writer.close()
