"""WebSockets through the preview proxy, against a real preview process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.preview.conftest import WAIT, Previews


async def connect(
    previews: Previews,
    build_id: str,
    sub: str = "/ws",
    headers: dict[str, str] | None = None,
    auth: bool = True,
    **kwargs: Any,
) -> WebSocketClientConnection:
    url = f"ws://127.0.0.1:{previews.port}{previews.path(build_id, sub)}"
    all_headers = {**(previews.auth if auth else {}), **(headers or {})}
    return await websocket_connect(HTTPRequest(url, headers=all_headers), **kwargs)


async def test_echo_of_many_messages_in_order(previews: Previews) -> None:
    build = await previews.start()
    ws = await connect(previews, build["id"], max_message_size=64 * 2**20)
    count = 2000
    for i in range(count):  # all sent before any is read: ordering under load
        await ws.write_message(f"message {i}")
    for i in range(count):
        assert await ws.read_message() == f"message {i}"
    blob = bytes(range(256)) * 8192  # 2 MiB binary
    await ws.write_message(blob, binary=True)
    assert await ws.read_message() == blob
    await ws.write_message("é ✓ 🚀")
    assert await ws.read_message() == "é ✓ 🚀"
    ws.close(1000)
    assert await ws.read_message() is None


async def test_handshake_headers_match_http_and_credentials_are_stripped(
    previews: Previews,
) -> None:
    build = await previews.start()
    bid = build["id"]
    cookie = f"_xsrf=1; app=2; username-127-0-0-1-{previews.port}=3; jupyterhub-x=4"
    ws = await connect(
        previews,
        bid,
        f"/ws?x=1&token={previews.token}",
        headers={"Cookie": cookie, "Sec-WebSocket-Protocol": "chat, superchat"},
        auth=False,
        subprotocols=["chat", "superchat"],
    )
    assert ws.selected_subprotocol == "superchat"  # the upstream's choice, passed on
    await ws.write_message("__headers__")
    info = json.loads(await ws.read_message())
    ws.close()
    assert info["target"] == "/ws?x=1"
    got = {name.lower(): value for name, value in info["headers"]}
    assert got["cookie"] == "app=2"
    assert "authorization" not in got
    http = await previews.echo(bid, "/echo", headers={"Cookie": cookie})
    http_got = {name.lower(): value for name, value in http["headers"]}
    forwarded = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-prefix",
    ]
    assert {k: got[k] for k in forwarded} == {k: http_got[k] for k in forwarded}


async def test_close_codes_cross_both_ways(previews: Previews) -> None:
    build = await previews.start()
    ws = await connect(previews, build["id"])
    await ws.write_message("__close__ 4001")
    assert await ws.read_message() is None
    assert ws.close_code == 4001 and ws.close_reason == "bye"


async def test_unauthenticated_and_unknown_upgrades_are_refused(previews: Previews) -> None:
    build = await previews.start()
    with pytest.raises(HTTPClientError) as info:
        await connect(previews, build["id"], auth=False)
    assert info.value.code == 403
    with pytest.raises(HTTPClientError) as info:
        await connect(previews, build["id"], headers={"Authorization": "token wrong"})
    assert info.value.code == 403
    with pytest.raises(HTTPClientError) as info:
        await connect(previews, "0" * 16)
    assert info.value.code == 404
    with pytest.raises(HTTPClientError) as info:  # the app has no WebSocket there
        await connect(previews, build["id"], "/echo")
    assert info.value.code == 502
    # cookie-authenticated (as a browser is): the Origin must be Jupyter's own
    login = await previews.fetch(build["id"], "/tiny")
    cookie = next(
        c.split(";")[0] for c in login.headers.get_list("Set-Cookie") if c.startswith("username-")
    )
    with pytest.raises(HTTPClientError) as info:
        await connect(
            previews,
            build["id"],
            headers={"Cookie": cookie, "Origin": "https://evil.example"},
            auth=False,
        )
    assert info.value.code == 403
    origin = f"http://127.0.0.1:{previews.port}"
    ws = await connect(
        previews, build["id"], headers={"Cookie": cookie, "Origin": origin}, auth=False
    )
    await ws.write_message("hello")
    assert await ws.read_message() == "hello"
    ws.close()


async def test_sockets_close_when_the_preview_stops(previews: Previews) -> None:
    build = await previews.start()
    ws = await connect(previews, build["id"])
    await ws.write_message("still there?")
    assert await ws.read_message() == "still there?"
    code, _, _ = await previews.api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200
    assert await ws.read_message() is None
    assert (ws.close_code, ws.close_reason) == (1001, "the preview stopped")


async def test_what_the_preview_sends_with_its_101_arrives_first(previews: Previews) -> None:
    build = await previews.start()
    ws = await connect(previews, build["id"], "/ws?greet=welcome")
    assert await ws.read_message() == "welcome"
    await ws.write_message("then this")
    assert await ws.read_message() == "then this"
    ws.close()


async def test_the_101_passes_app_cookies_only(previews: Previews) -> None:
    build = await previews.start()
    prefix = previews.path(build["id"], "")
    ws = await connect(previews, build["id"], "/ws?cookie=app")
    assert f"app=1; Path={prefix}/" in ws.headers.get_list("Set-Cookie")
    assert "sandbox" in ws.headers["Content-Security-Policy"]
    assert ws.headers["X-Content-Type-Options"] == "nosniff"
    ws.close()
    login = f"username-127-0-0-1-{previews.port}"
    ws = await connect(previews, build["id"], f"/ws?cookie={login}")
    # (Jupyter itself may set its login cookie on a token-authenticated request; the
    # preview's "=1" one must not get through)
    assert not [c for c in ws.headers.get_list("Set-Cookie") if c.startswith(f"{login}=1")]
    ws.close()


@pytest.mark.parametrize("leaves", ["with a close frame", "abruptly"])
async def test_a_browser_that_leaves_frees_the_preview_connection(
    previews: Previews, leaves: str
) -> None:
    build = await previews.start()
    preview = previews.manager.get(build["id"])
    ws = await connect(previews, build["id"])
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    (tunnel,) = preview.sockets
    assert preview.pool.in_use == 1
    if leaves == "abruptly":
        ws.protocol.stream.close()
    else:
        ws.close(1000)
    await asyncio.wait_for(tunnel.ended.wait(), WAIT)
    assert not preview.sockets and not preview.pool.in_use
    assert (await previews.fetch(build["id"], "/tiny")).body == b"ok"
