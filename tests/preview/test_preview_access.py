"""Who may reach a preview: the authenticated owner only (HTTP, WebSocket, stop)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from tests.conftest import as_user, multi_user_config
from tests.preview.conftest import Previews
from tests.preview.test_proxy_ws import connect


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return multi_user_config(agentbuild_config)


async def test_only_the_owner_reaches_the_preview(previews: Previews) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    build = await previews.start(headers=alice)
    bid = build["id"]
    assert build["owner"] == "alice" and build["preview"]["state"] == "ready"
    echo = await previews.echo(bid, "/echo", headers=alice)
    assert echo["path"] == "/echo"
    for method in ("GET", "POST", "DELETE", "HEAD"):
        response = await previews.fetch(bid, "/echo", method=method, headers=bob)
        assert response.code == 404, method
        if method != "HEAD":
            assert json.loads(response.body)["error"]["code"] == "not_found"
    with pytest.raises(HTTPClientError) as info:
        await connect(previews, bid, headers=bob)
    assert info.value.code == 404
    code, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop", headers=bob)
    assert code == 404 and body["error"]["code"] == "not_found"
    ws = await connect(previews, bid, headers=alice)
    await ws.write_message("mine")
    assert await ws.read_message() == "mine"
    ws.close()
    code, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop", headers=alice)
    assert code == 200 and body["preview"]["state"] == "stopped"


async def test_a_token_without_a_user_is_refused(previews: Previews) -> None:
    """The identity provider names no user (token valid, no X-Test-User): not forwarded,
    for pages (login page), other methods (403) and WebSockets (403)."""
    build = await previews.start(headers=as_user("alice"))
    page = await previews.fetch(build["id"], "/echo")
    assert page.code == 302 and "/login?next=" in page.headers["Location"]
    response = await previews.fetch(build["id"], "/echo", method="POST")
    assert response.code == 403
    with pytest.raises(HTTPClientError) as info:
        await connect(previews, build["id"])
    assert info.value.code == 403


async def test_only_the_owner_restarts_the_preview(previews: Previews) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    build = await previews.start(headers=alice)
    bid = build["id"]
    code, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/restart", headers=bob)
    assert code == 404 and body["error"]["code"] == "not_found", body
    assert (await previews.fetch(bid, "/tiny", headers=alice)).body == b"ok"  # untouched
    code, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/restart", headers=alice)
    assert code == 200 and body["preview"]["state"] == "ready", body
    assert (await previews.fetch(bid, "/tiny", headers=alice)).body == b"ok"
