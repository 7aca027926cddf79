"""Shared fixtures: a real Jupyter server with the extension, on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from traitlets.config import Config

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def agentbuild_config(tmp_path: Path) -> dict[str, Any]:
    """``c.AgentBuild`` for the test server; tests may change it before the server starts."""
    return {
        "db_url": f"sqlite+aiosqlite:///{tmp_path / 'agentbuild.db'}",
        "workspace_root": str(tmp_path / "sandboxes"),
        "heartbeat_interval": 0.5,
        "stale_after": 5.0,
        "kill_grace": 2.0,
        "log_flush_interval": 0.05,
    }


def server_config(
    agentbuild_config: dict[str, Any],
    *,
    legacy: dict[str, Any] | None = None,
    **server_app: Any,
) -> Config:
    """The test server's config: the extension enabled, as root, plus ``ServerApp`` extras.

    ``agentbuild_config`` is flat (the tests' one vocabulary of settings); each setting goes
    to the section of the component that owns it now (``c.Runner.stale_after``, ...), so
    the servers start without deprecation warnings. ``legacy`` settings are put under
    ``c.AgentBuild`` as an old config file would (the forwarding tests use it).
    """
    config = Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_agentbuild": True},
                "allow_root": True,
                **server_app,
            },
        }
    )
    for section, name, value in place_settings(agentbuild_config):
        config[section][name] = value
    for name, value in (legacy or {}).items():
        config["AgentBuild"][name] = value
    return config


def place_settings(settings: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``(section, trait, value)`` for flat settings named as the app or the old
    ``c.AgentBuild`` spelling names them (the ``legacy`` tags say where each went)."""
    from jupyter_agentbuild.app import AgentBuild
    from jupyter_agentbuild.legacy_config import legacy_names
    from jupyter_agentbuild.wiring import CONFIGURABLES

    own = set(AgentBuild.class_trait_names(config=True))
    moves = legacy_names(CONFIGURABLES)
    placed: list[tuple[str, str, Any]] = []
    for name, value in settings.items():
        if name in own or name not in moves:
            placed.append(("AgentBuild", name, value))
        else:
            placed.extend((section, trait, value) for section, trait in moves[name])
    return placed


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return server_config(agentbuild_config)


class HeaderIdentityProvider(IdentityProvider):
    """A stand-in for JupyterHub's per-user identities: the token authenticates the request,
    the ``X-Test-User`` header names the user."""

    async def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        user = await super().get_user(handler)
        name = handler.request.headers.get("X-Test-User")
        return User(username=name) if user is not None and name else None


def multi_user_config(agentbuild_config: dict[str, Any]) -> Config:
    """A server whose requests name their user (see :class:`HeaderIdentityProvider`)."""
    return server_config(agentbuild_config, identity_provider_class=HeaderIdentityProvider)


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name}


class Api:
    """A thin JSON wrapper over pytest-jupyter's ``jp_fetch`` / ``jp_ws_fetch``."""

    def __init__(self, fetch: Callable[..., Any], ws_fetch: Callable[..., Any], app: Any) -> None:
        self.fetch = fetch
        self.ws_fetch = ws_fetch
        self.app = app

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        elif method == "POST":
            kwargs["body"] = ""
        resp = await self.fetch(
            "agentbuild", "api", *path.split("/"), params=params, headers=headers, **kwargs
        )
        data = json.loads(resp.body) if resp.body else None
        return resp.code, data, resp.headers

    async def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        code, data, _ = await self.call("POST", "builds", spec)
        assert code == 201, data
        return data  # type: ignore[no-any-return]

    async def get(self, build_id: str) -> dict[str, Any]:
        code, data, _ = await self.call("GET", f"builds/{build_id}")
        assert code == 200, data
        return data  # type: ignore[no-any-return]

    async def stream(
        self, build_id: str, after: int = 0
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Read the WebSocket until the server closes it: (entries, close code)."""
        ws = await self.ws_fetch(
            "agentbuild", "api", "builds", build_id, "stream", params={"after": str(after)}
        )
        entries: list[dict[str, Any]] = []
        while True:
            msg = await ws.read_message()
            if msg is None:
                return entries, ws.close_code
            entries.extend(json.loads(msg))

    async def finish(self, build_id: str) -> dict[str, Any]:
        """Wait (by streaming) until the build has its terminal status; return the Build."""
        await self.stream(build_id)
        return await self.get(build_id)

    async def all_logs(self, build_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            code, page, _ = await self.call(
                "GET", f"builds/{build_id}/logs", params={"after": after, "limit": limit}
            )
            assert code == 200, page
            out.extend(page["entries"])
            if page["entries"]:
                after = page["entries"][-1]["seq"]
            if page["done"] or not page["entries"]:
                return out


@pytest.fixture
def api(jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any, jp_asyncio_loop: Any) -> Api:
    """The extension started (migrations, runner) on a real server."""
    # a sync fixture (pytest-jupyter runs no async fixtures), on the tests' own loop
    jp_asyncio_loop.run_until_complete(jp_serverapp._post_start())
    return Api(jp_fetch, jp_ws_fetch, jp_serverapp)


async def read_until(ws: Any, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Read a build's stream until ``done(entries so far)``: an event awaited, not a sleep."""
    seen: list[dict[str, Any]] = []
    while not done(seen):
        message = await ws.read_message()
        assert message is not None, f"the stream ended first: {seen[-3:]}"
        seen.extend(json.loads(message))
    return seen


def texts(entries: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in entries if e["kind"] == "log"]


def statuses(entries: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] for e in entries if e.get("type") == "status"]
