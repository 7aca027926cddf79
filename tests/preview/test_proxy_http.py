"""The HTTP side of the preview proxy, against a real preview process."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any
from urllib.parse import quote

import pytest
from traitlets.config import Config

from tests.conftest import statuses, texts
from tests.preview.conftest import WAIT, Previews, port_open, raw_request
from tests.preview.test_large_bodies import stream_get

CSP_SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


@pytest.fixture
def jp_server_config(jp_server_config: Config) -> Config:
    jp_server_config.PreviewManager.read_timeout = 1.0
    return jp_server_config


def header_pairs(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_build_with_preview_streams_its_start_then_ends(previews: Previews) -> None:
    build = await previews.start()
    assert build["status"] == "succeeded" and build["exit_code"] == 0
    assert build["preview"]["state"] == "ready"
    prefix = f"{previews.base_url}agentbuild/preview/{build['id']}/"
    assert build["preview"]["path_url"] == prefix
    assert build["preview"]["url"].endswith(f".localhost:{previews.port}/")  # its own origin
    entries = await previews.api.all_logs(build["id"])
    kinds = [e.get("type") or e["kind"] for e in entries]
    # the preview's own step: its output, then preview_ready, then the terminal status (last)
    assert kinds[-3:] == ["log", "preview_ready", "status"]
    assert statuses(entries)[-1] == "succeeded"
    ready = next(e for e in entries if e.get("type") == "preview_ready")
    assert ready["data"] == {"step": 1, "url": prefix}
    preview_lines = [e for e in entries if e["kind"] == "log" and e["step"] == 1]
    # AGENTBUILD_PREVIEW_BASE: the app runs at its root, which is what the proxy sends it
    assert [e["text"] for e in preview_lines][-1] == "base /"
    assert "built" in texts(entries)
    host, port = previews.target(build["id"])
    assert host == "127.0.0.1" and port_open(port)


async def test_content_query_status_and_methods_pass_through(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    page = await previews.fetch(bid, "/")
    assert page.code == 200 and page.body == b"<h1>hello preview</h1>"
    assert page.headers["Content-Type"] == "text/html"
    # the query arrives byte for byte (order, repeats, encodings), minus the token
    query = "b=2&a=1&a=%2F%20x&empty=&flag&plus=a+b&token=" + previews.token
    echo = await previews.echo(bid, "/echo/deep/path%20x;p?" + query, auth=False)
    assert echo["target"] == "/echo/deep/path%20x;p?b=2&a=1&a=%2F%20x&empty=&flag&plus=a+b"
    for code in (201, 204, 304, 400, 404, 418, 500, 503):
        response = await previews.fetch(bid, f"/status/{code}")
        assert response.code == code, code
        if code not in (204, 304):
            assert response.body == f"status {code}".encode()
        assert response.headers.get("X-Status") == str(code)
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        echo = await previews.echo(bid, "/echo", method=method, body=b"payload" * 3)
        assert echo["method"] == method
        assert echo["body_size"] == 21
    head = await previews.fetch(bid, "/big?size=12345", method="HEAD")
    assert head.code == 200 and head.headers["Content-Length"] == "12345" and head.body == b""
    chunked = await previews.fetch(bid, "/chunked?n=4&size=100000")
    assert chunked.body == b"".join(bytes([97 + i]) * 100000 for i in range(4))


async def test_request_bodies_stream_through_unchanged(previews: Previews) -> None:
    build = await previews.start()
    body = bytes(range(256)) * 40_000  # ~10 MB
    echo = await previews.echo(build["id"], "/echo/upload", method="PUT", body=body)
    assert echo["body_size"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()

    async def chunks() -> Any:
        for i in range(50):
            yield bytes([i]) * 65536

    response = await previews.client.fetch(
        previews.path(build["id"], "/echo/chunked-upload"),
        method="POST",
        headers={**previews.auth, "Transfer-Encoding": "chunked"},
        body_producer=lambda write: _produce(write, chunks()),
        request_timeout=WAIT,
    )
    echo = json.loads(response.body)
    assert echo["body_size"] == 50 * 65536
    expected = hashlib.sha256(b"".join(bytes([i]) * 65536 for i in range(50))).hexdigest()
    assert echo["body_sha256"] == expected


async def _produce(write: Any, chunks: Any) -> None:
    async for chunk in chunks:
        await write(chunk)


async def test_headers_cross_as_the_security_model_says(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    host, port = previews.target(bid)
    echo = await previews.echo(
        bid,
        "/echo",
        headers={
            "Cookie": f"_xsrf=2|x; app=1; username-127-0-0-1-{previews.port}=s; "
            "jupyterhub-session-id=h; other=2",
            "X-XSRFToken": "x",
            "X-Custom": "kept",
            "Connection": "X-Hop",
            "X-Hop": "must not cross",
            "Keep-Alive": "timeout=1",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    got = header_pairs(echo)
    assert got["cookie"] == ["app=1; other=2"]
    assert got["x-custom"] == ["kept"]
    for name in (
        "authorization",
        "x-xsrftoken",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "forwarded",
        "transfer-encoding",
    ):
        assert name not in got, name
    assert got["host"] == [f"{host}:{port}"]
    assert got["x-forwarded-for"] == ["127.0.0.1"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-host"] == [f"127.0.0.1:{previews.port}"]
    assert got["x-forwarded-prefix"] == [f"{previews.base_url}agentbuild/preview/{bid}"]

    response = await previews.fetch(bid, "/hop")
    assert response.code == 200
    for name in ("X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in response.headers, name
    assert response.headers.get_list("X-Multi") == ["one", "two"]
    assert response.headers.get_list("X-Content-Type-Options") == ["nosniff"]
    csp = response.headers.get_list("Content-Security-Policy")
    assert any(CSP_SANDBOX in value for value in csp)  # ours
    assert "default-src 'self'" in csp  # the app's own, which only adds restrictions


async def test_every_response_carries_the_csp_and_nosniff(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    answers = [
        await previews.fetch(bid, "/"),
        await previews.fetch(bid, "/status/500"),
        await previews.fetch(bid, "/redirect?to=/x"),
        await previews.fetch(bid, "/big?size=10", method="HEAD"),
        await previews.fetch("f" * 16, "/"),  # 404: no such build
        await previews.fetch(bid, "/slow?delay=30"),  # 504
        await previews.fetch(bid, "", auth=False),  # redirect to the login page
    ]
    for response in answers:
        csp = response.headers.get("Content-Security-Policy", "")
        assert CSP_SANDBOX in csp and "frame-ancestors 'self'" in csp, response.code
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.code
        assert "allow-same-origin" not in csp


async def test_app_cookies_pass_and_jupyter_cookies_cannot_be_set(previews: Previews) -> None:
    build = await previews.start()
    prefix = f"{previews.base_url}agentbuild/preview/{build['id']}"
    response = await previews.fetch(build["id"], "/cookies")
    cookies = response.headers.get_list("Set-Cookie")
    app = [c for c in cookies if not c.startswith("username-127-0-0-1-" + str(previews.port))]
    # the login cookie Jupyter itself sets for a token-authenticated request is Jupyter's
    assert app == [
        f"app_session=abc123; Path={prefix}/; HttpOnly",
        f"theme=dark; Path={prefix}/settings",
        "plain=1",
    ]


async def test_redirects_to_the_upstream_come_back_under_the_prefix(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    prefix = f"{previews.base_url}agentbuild/preview/{bid}"
    cases = {
        "{self}/after?x=1": f"{prefix}/after?x=1",
        "/root-relative": f"{prefix}/root-relative",
        "relative": "relative",
        "https://example.org/away": "https://example.org/away",
    }
    for to, expected in cases.items():
        response = await previews.fetch(bid, "/redirect?to=" + quote(to, safe=""))
        assert response.code == 302
        assert response.headers["Location"] == expected, to
    moved = await previews.fetch(bid, "/redirect?code=307&to=%2Fx")
    assert moved.code == 307 and moved.headers["Location"] == f"{prefix}/x"
    # the preview's root without its slash: redirected to it, query kept
    bare = await previews.fetch(bid, "?a=1", headers={})
    assert bare.code == 302 and bare.headers["Location"] == f"{prefix}/?a=1"


async def test_keep_alive_connections_are_reused(previews: Previews) -> None:
    build = await previews.start()
    pool = previews.manager.get(build["id"]).pool
    for _ in range(30):
        response = await previews.fetch(build["id"], "/tiny")
        assert response.body == b"ok"
    concurrent = await asyncio.gather(*(previews.fetch(build["id"], "/tiny") for _ in range(20)))
    assert all(r.body == b"ok" for r in concurrent)
    assert pool.opened <= 21  # one for the sequential requests, at most one each concurrent


async def test_upstream_down_is_502_and_slow_is_504(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    slow = await previews.fetch(bid, "/slow?delay=30", headers={"Accept": "text/html"})
    assert slow.code == 504
    assert slow.headers["Content-Type"].startswith("text/html")
    assert b"did not send an answer within 1s" in slow.body
    # stalled before anything was sent to the browser: still a clean 504
    stalled = await previews.fetch(bid, "/slowbody?delay=30&size=10")
    assert stalled.code == 504
    assert "next part" in json.loads(stalled.body)["error"]["message"]
    # stalled after the response started: the connection is cut, the body incomplete
    status, received = await stream_get(
        previews.port, previews.path(bid, "/slowbody?delay=30&size=200000"), previews.token, None
    )
    assert status == 200 and 65536 <= received < 400000
    assert (await previews.fetch(bid, "/unlisten")).body == b"bye"
    down = await previews.fetch(bid, "/tiny")
    assert down.code == 502
    assert json.loads(down.body)["error"]["code"] == "bad_gateway"
    assert "refused" in json.loads(down.body)["error"]["message"]


async def test_nothing_in_the_request_chooses_where_to_connect(previews: Previews) -> None:
    """Absolute-form targets, Host headers, paths and queries naming another address: the
    proxy only ever connects to the build's own preview."""
    hits: list[bytes] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(1000))
        writer.close()

    evil = await asyncio.start_server(trap, "127.0.0.1", 0)
    evil_port = evil.sockets[0].getsockname()[1]
    try:
        build = await previews.start()
        bid = build["id"]
        evil_hosts = [f"127.0.0.1:{evil_port}", f"localhost:{evil_port}"]
        for sub in [
            f"//127.0.0.1:{evil_port}/x",
            f"/http://127.0.0.1:{evil_port}/",
            f"/@127.0.0.1:{evil_port}/",
            f"/%2F%2F127.0.0.1:{evil_port}/",
            "/..%2F..%2F..%2Fapi%2Fstatus",
            f"/echo?url=http://127.0.0.1:{evil_port}/&host=127.0.0.1&port={evil_port}",
        ]:
            response = await previews.fetch(bid, sub, headers={"Host": evil_hosts[0]})
            assert response.code in (200, 404), (sub, response.code)
        echo = await previews.echo(
            bid, "/echo", headers={"Host": evil_hosts[1], "X-Forwarded-Host": evil_hosts[0]}
        )
        assert header_pairs(echo)["host"] != evil_hosts
        prefix = previews.path(bid, "")
        for target in (
            f"http://127.0.0.1:{evil_port}/",
            f"http://127.0.0.1:{evil_port}{prefix}/echo",
            f"{prefix}:{evil_port}/echo",
            f"{prefix}@127.0.0.1:{evil_port}/echo",
        ):
            await raw_request(
                previews.port,
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{evil_port}\r\n"
                f"Authorization: token {previews.token}\r\nConnection: close\r\n\r\n".encode(),
            )
        ws_url = f"ws://127.0.0.1:{previews.port}{prefix}/ws"
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        request = HTTPRequest(
            ws_url, headers={**previews.auth, "Host": evil_hosts[0], "X-Forwarded-Host": "x"}
        )
        ws = await websocket_connect(request)
        await ws.write_message("__headers__")
        info = json.loads(await ws.read_message())
        assert dict(info["headers"])["Host"] not in evil_hosts
        ws.close()
        assert hits == []
    finally:
        evil.close()


async def test_unauthenticated_requests_are_refused(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    # A page: sent to Jupyter's login page. Anything else: 403. Never forwarded.
    page = await previews.fetch(bid, "/echo", auth=False)
    assert page.code == 302 and "/login?next=" in page.headers["Location"]
    assert b"/echo" not in page.body
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = await previews.fetch(bid, "/echo", method=method, auth=False, body=b"x")
        assert response.code == 403, method
    wrong = await previews.fetch(bid, "/echo", headers={"Authorization": "token nope"}, auth=False)
    assert wrong.code == 302
    forged = await previews.fetch(
        bid, "/echo", headers={"Cookie": f"username-127-0-0-1-{previews.port}=forged"}, auth=False
    )
    assert forged.code == 302
