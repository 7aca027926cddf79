"""A preview on its own origin (``{label}.localhost:PORT``), against a real server and a
real preview process: raw requests with the ``Host`` a browser would send."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import texts
from tests.preview.conftest import Previews

LABEL = re.compile(r"p(?P<id>[0-9a-f]+)-(?P<secret>[a-z2-7]{26})")


def pairs(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_the_url_is_an_origin_of_its_own_and_the_path_url_stays(previews: Previews) -> None:
    build = await previews.start()
    preview = build["preview"]
    match = re.fullmatch(rf"http://(?P<label>[^./]+)\.localhost:{previews.port}/", preview["url"])
    assert match, preview["url"]
    label = LABEL.fullmatch(match["label"])
    assert label and label["id"] == build["id"]
    assert preview["path_url"] == previews.path(build["id"])
    assert "label" not in preview  # the capability is in the URL, not a field of its own


async def test_the_app_runs_at_root_unmodified(previews: Previews) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    page = await previews.own(host, "/")
    assert page.code == 200 and page.body == b"<h1>hello preview</h1>"
    # no sandbox CSP: a separate site may keep its own origin; nosniff stays
    assert "sandbox" not in page.headers.get("Content-Security-Policy", "")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    echo = await previews.own(
        host,
        "/echo/a%20b/c?token=vite-own&x=1&x=2",
        headers={
            "Cookie": "app=1; _xsrf=jx; username-127-0-0-1-8888=login; jupyterhub-session-id=h",
            "Authorization": f"token {previews.token}",
        },
    )
    assert echo.code == 200, echo.body
    got = json.loads(echo.body)
    assert got["target"] == "/echo/a%20b/c?token=vite-own&x=1&x=2"  # path and query as sent
    headers = pairs(got)
    assert headers["cookie"] == ["app=1"]
    assert "authorization" not in headers
    assert headers["x-forwarded-host"] == [host]
    assert "x-forwarded-prefix" not in headers
    assert previews.token not in echo.body.decode()


async def test_redirects_and_cookies_belong_to_the_own_origin(previews: Previews) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    moved = await previews.own(host, "/redirect?to={self}/after%3Fx=1")
    assert moved.code == 302 and moved.headers["Location"] == "/after?x=1"
    rooted = await previews.own(host, "/redirect?to=/x")
    assert rooted.headers["Location"] == "/x"
    cookies = (await previews.own(host, "/cookies")).headers.get_list("Set-Cookie")
    assert cookies == [
        "app_session=abc123; Path=/; HttpOnly",
        "theme=dark; Path=/settings",
        "plain=1",
    ]


async def test_jupyter_is_never_served_at_a_preview_host(previews: Previews) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    auth = {"Authorization": f"token {previews.token}"}
    for target in ("/api/status", "/api/contents", "/lab", "/login", "/agentbuild/api/builds"):
        answer = await previews.own(host, target, headers=auth)
        # the app's own answer (its 404 page for paths it does not have), never Jupyter's
        assert b"jupyter" not in answer.body.lower(), (target, answer.body[:200])
        assert answer.code == 404 and answer.body == b"not found", (target, answer.code)
    api = await previews.own(host, "/echo", headers=auth)
    assert "authorization" not in pairs(json.loads(api.body))


@pytest.mark.parametrize(
    "change",
    [
        "secret",  # one character of the secret
        "build",  # another build's id, same secret
        "shorter",  # a secret cut short
        "nothing",  # a host that is no label at all
        "case",  # the same label, one letter upper-case (host names are case-insensitive)
    ],
)
async def test_an_altered_label_serves_nothing(previews: Previews, change: str) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    label, rest = host.split(".", 1)
    match = LABEL.fullmatch(label)
    assert match
    secret = match["secret"]
    if change == "secret":
        flipped = "a" if secret[-1] != "a" else "b"
        bad = f"p{match['id']}-{secret[:-1]}{flipped}"
    elif change == "build":
        bad = f"p{'0' * len(match['id'])}-{secret}"
    elif change == "shorter":
        bad = f"p{match['id']}-{secret[:-1]}"
    elif change == "case":
        same = await previews.own(f"{label.upper()}.{rest}", "/tiny")
        assert same.code == 200 and same.body == b"ok"
        return
    else:
        bad = "www"
    for target in ("/", "/echo", "/api/status"):
        answer = await previews.own(f"{bad}.{rest}", target)
        assert b"hello preview" not in answer.body and b'"target"' not in answer.body
        if change == "nothing" or change == "shorter":
            # not a preview host: Jupyter's own host check refuses it
            assert answer.code == 403, (bad, target, answer.code)
        else:
            assert answer.code == 404 and answer.body == b"404 no preview here\n"


async def test_the_url_dies_when_the_preview_stops(previews: Previews) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    assert (await previews.own(host, "/tiny")).body == b"ok"
    code, stopped, _ = await previews.api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200, stopped
    assert stopped["preview"]["state"] == "stopped"
    assert stopped["preview"]["url"] is None
    assert stopped["preview"]["path_url"] == previews.path(build["id"])
    dead = await previews.own(host, "/tiny")
    assert dead.code == 404 and dead.body == b"404 no preview here\n"
    assert dead.headers["Cache-Control"] == "no-store"


async def test_websocket_on_the_own_origin(previews: Previews) -> None:
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    build = await previews.start()
    host = previews.own_host(build)
    url = f"ws://127.0.0.1:{previews.port}/ws?token=app-own"
    request = HTTPRequest(url, headers={"Host": host, "Origin": f"http://{host}"})
    ws = await websocket_connect(request)
    try:
        await ws.write_message("__headers__")
        handshake = json.loads(await ws.read_message())  # type: ignore[arg-type]
        await ws.write_message("hi")
        assert await ws.read_message() == "hi"
    finally:
        ws.close()
    assert handshake["target"] == "/ws?token=app-own"
    evil = HTTPRequest(url, headers={"Host": host, "Origin": "http://evil.example"})
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(evil)
    assert refused.value.code == 403


async def test_readiness_warns_of_a_404_at_the_spec_path(previews: Previews) -> None:
    build = await previews.start(preview={"path": "/status/404"})
    entries = await previews.api.all_logs(build["id"])
    assert any(
        "agentbuild: warning: the preview answers 404 Not Found at '/status/404'" in t
        for t in texts(entries)
    ), texts(entries)[-5:]
    assert build["preview"]["state"] == "ready"


async def test_readiness_warns_of_a_redirect_loop(previews: Previews) -> None:
    build = await previews.start(preview={"path": "/loop"})
    lines = texts(await previews.api.all_logs(build["id"]))
    assert any("redirects in a loop" in t for t in lines), lines[-5:]


async def test_response_headers_on_the_own_origin(previews: Previews) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    given = [
        "Access-Control-Allow-Origin: *",
        'Clear-Site-Data: "cookies"',
        "X-Accel-Redirect: /etc/passwd",
        "Strict-Transport-Security: max-age=1",
        "Set-Cookie: s=1; Domain=localhost; Path=/; HttpOnly",
        "Set-Cookie: t=2; domain=.example.org",
        "Content-Security-Policy: default-src 'self'",
    ]
    query = "&".join(f"h={quote(h)}" for h in given)
    answer = await previews.own(host, f"/headers?{query}")
    assert answer.code == 200
    # the app's own CORS concerns only its own origin
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    # Clear-Site-Data's "cookies" would reach the registrable domain (other previews')
    assert "Clear-Site-Data" not in answer.headers
    # what a front proxy or the host would obey never crosses
    assert "X-Accel-Redirect" not in answer.headers
    assert "Strict-Transport-Security" not in answer.headers
    # cookies stay on this host: no Domain (no tossing to a parent domain)
    assert answer.headers.get_list("Set-Cookie") == ["s=1; Path=/; HttpOnly", "t=2"]
    assert answer.headers["Content-Security-Policy"] == "default-src 'self'"  # the app's, alone


async def test_a_post_from_the_page_reaches_the_app_without_jupyter(previews: Previews) -> None:
    """The own origin has no Jupyter session to protect: the app's own forms and fetches
    (its own CSRF defences included) reach it, from its own page or not."""
    build = await previews.start()
    host = previews.own_host(build)
    answer = await previews.own(
        host,
        "/echo/form",
        method="POST",
        body=b"a=1",
        headers={"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.code == 200
    got = json.loads(answer.body)
    assert got["method"] == "POST" and got["body_size"] == 3


async def test_the_capability_never_goes_into_the_log(
    previews: Previews, caplog: pytest.LogCaptureFixture
) -> None:
    build = await previews.start()
    host = previews.own_host(build)
    label = host.split(".", 1)[0]
    secret = label.rsplit("-", 1)[1]
    caplog.set_level(logging.DEBUG)
    seen = {"Referer": f"http://{host}/page?x=1", "Origin": f"http://{host}"}
    assert (await previews.own(host, "/tiny?token=app-secret", headers=seen)).code == 200
    assert (await previews.own(host, "/missing", headers=seen)).code == 404
    assert (await previews.own(host, "/status/503", headers=seen)).code == 503
    dead = host.replace(secret, "a" * len(secret))
    assert (await previews.own(dead, "/x", headers=seen)).code == 404
    assert (await previews.own(host, "/unlisten")).code == 200
    assert (await previews.own(host, "/tiny", headers=seen)).code == 502  # nobody listens
    assert f"502 GET /tiny (preview of {build['id']}" in caplog.text
    assert f"404 GET /missing (preview of {build['id']}" in caplog.text
    assert "503 GET /status/503" in caplog.text and "404 GET /x (preview of none" in caplog.text
    assert secret not in caplog.text and "app-secret" not in caplog.text
