"""Previews under a real JupyterHub: alice's preview is served on its own origin through
the hub's configurable-http-proxy, and bob cannot reach it.

The hub routes user servers by host (``subdomain_host``); each preview host
(``{label}.previews.localhost``) gets its route to its owner's server from the
``agentbuild-previews`` hub service, asked by that server itself with its own token.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.notebook.test_browser import CHROMIUM, CHROMIUM_ARGS, playwright_api
from tests.notebook.test_preview_apps import APPS, Problems, check_pyapp

from .hubproc import PREVIEW_DOMAIN, SERVICE, HubProcess

pytestmark = pytest.mark.slow


def _requirements() -> None:
    if os.environ.get("CI") == "true":
        import jupyterhub  # noqa: F401  (CI installs the test extra: missing is a failure)

        assert shutil.which("npm"), "npm is needed for configurable-http-proxy"
        return
    pytest.importorskip("jupyterhub")
    if not shutil.which("npm"):
        pytest.skip("npm is needed for configurable-http-proxy")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    _requirements()
    root = tmp_path_factory.mktemp("hub")
    with HubProcess(root) as process:
        for user in ("alice", "bob"):
            home = root / "home" / user
            home.mkdir(parents=True)
            shutil.copytree(APPS / "pyapp", home / "pyapp")
        for user in ("alice", "bob"):
            process.spawn(user)
        yield process


class Through:
    """HTTP through the hub's proxy (127.0.0.1:port) for any host name, as a browser
    that resolves ``*.localhost`` to loopback would send it."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.http = httpx.Client(timeout=60, follow_redirects=False)

    def request(
        self, method: str, host: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Host": f"{host}:{self.hub.port}", **kw.pop("headers", {})}
        if token:
            headers["Authorization"] = f"token {token}"
        url = f"http://127.0.0.1:{self.hub.port}{path}"
        return self.http.request(method, url, headers=headers, **kw)

    def service(
        self, method: str, label: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        """The routes service, at the address single-user servers call it."""
        url = f"http://127.0.0.1:{self.hub.service_port}/services/{SERVICE}/api/routes/{label}"
        headers = {"Authorization": f"token {token}"} if token else {}
        return self.http.request(method, url, headers=headers, **kw)

    def api(self, user: str, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """``{user}``'s server's agentbuild API, at its host."""
        host = f"{user}.hub.localhost"
        return self.request(method, host, f"/user/{user}/agentbuild/api/{path}", token, **kw)


def wait_for_preview(through: Through, token: str, build_id: str) -> dict[str, Any]:
    """Read the build's log stream to its end (the terminal status comes after
    ``preview_ready``), then return the build."""
    from tornado.httpclient import HTTPRequest
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    async def drain() -> None:
        request = HTTPRequest(
            f"ws://127.0.0.1:{through.hub.port}/user/alice/agentbuild/api/builds/"
            f"{build_id}/stream?after=0",
            headers={
                "Host": f"alice.hub.localhost:{through.hub.port}",
                "Authorization": f"token {token}",
            },
        )
        conn = await websocket_connect(request)
        while await conn.read_message() is not None:
            pass

    IOLoop.current().run_sync(drain, timeout=120)
    build = through.api("alice", token, "GET", f"builds/{build_id}").json()
    return build  # type: ignore[no-any-return]


def ws_echo(hub: HubProcess, host: str) -> str | None:
    """The pyapp's WebSocket through the proxy, from a page of ``host``."""
    from tornado.httpclient import HTTPRequest
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    async def echo() -> str | None:
        request = HTTPRequest(
            f"ws://127.0.0.1:{hub.port}/ws",
            headers={"Host": f"{host}:{hub.port}", "Origin": f"http://{host}:{hub.port}"},
        )
        conn = await websocket_connect(request)
        conn.write_message("ping")
        message = await conn.read_message()
        conn.close()
        return message if isinstance(message, str) or message is None else message.decode()

    return IOLoop.current().run_sync(echo, timeout=60)  # type: ignore[no-any-return]


def test_a_users_preview_on_its_own_origin_through_the_hub_proxy(hub: HubProcess) -> None:
    # One user's preview through the hub's proxy from start to stop (longer than a function
    # should be: a hub with its spawned server is too slow to start once per step).
    through = Through(hub)
    alice, bob = hub.token("alice"), hub.token("bob")
    spec = {"name": "hubapp", "workspace": "pyapp", "steps": ["true"]}
    spec["preview"] = {"command": "python3 app.py"}
    created = through.api("alice", alice, "POST", "builds", content=json.dumps(spec))
    assert created.status_code == 201, created.text
    build_id = created.json()["id"]
    build = wait_for_preview(through, alice, build_id)
    assert build["status"] == "succeeded" and build["preview"]["state"] == "ready", build
    url = build["preview"]["url"]
    host = str(urlsplit(url).hostname)
    label = host.split(".", 1)[0]
    # The deployment's template: the preview domain, the hub's public port, the app at /.
    assert url == f"http://{label}.{PREVIEW_DOMAIN}:{hub.port}/", url
    assert label.startswith(f"p{build_id}-"), label
    # The hub's service routed that host to alice's server, and to nothing else.
    routes = hub.routes()
    route = routes[f"/{host}"]
    alice_route = next(r for r in routes.values() if r.get("user") == "alice")
    assert route["target"] == alice_route["target"] and route["owner"] == "alice", routes

    # Through the proxy, with no credential at all: the host is the capability.
    page = through.request("GET", host, "/")
    assert page.status_code == 200 and "Python app" in page.text, page.text
    assert "pyapp_session" in page.headers.get("set-cookie", "")
    data = through.request("GET", host, "/api/data")
    assert data.json()["items"] == [1, 2, 3]
    echoed = through.request("POST", host, "/api/echo", json={"hello": "hub"})
    assert echoed.json()["echo"] == {"hello": "hub"}
    assert ws_echo(hub, host) == "echo: ping"
    # ... and in Chromium, top level, every check of the app passes.
    _browser_checks(url, host)

    # Bob cannot obtain the URL: alice's server refuses his token, his own knows no such build.
    assert through.api("alice", bob, "GET", f"builds/{build_id}").status_code == 403
    assert through.api("bob", bob, "GET", f"builds/{build_id}").status_code == 404
    # Nor can bob take over or remove alice's route through the service.
    taken = through.service("PUT", label, bob, json={})
    assert taken.status_code == 409, taken.text
    assert through.service("DELETE", label, bob).status_code == 404
    assert through.service("PUT", label, json={}).status_code == 401
    assert hub.routes()[f"/{host}"]["target"] == alice_route["target"]
    # A route bob makes for another label leads to his own server, which serves nothing.
    forged = label[:-1] + ("a" if label[-1] != "a" else "b")
    made = through.service("PUT", forged, bob, json={})
    assert made.status_code == 201, made.text
    forged_host = f"{forged}.{PREVIEW_DOMAIN}"
    bob_route = next(r for r in hub.routes().values() if r.get("user") == "bob")
    assert hub.routes()[f"/{forged_host}"]["target"] == bob_route["target"]
    answer = through.request("GET", forged_host, "/")
    assert answer.status_code == 404 and "Python app" not in answer.text
    # An altered host without a route reaches the hub, never the app.
    altered = through.request("GET", f"x{label[1:]}.{PREVIEW_DOMAIN}", "/")
    assert "Python app" not in altered.text and altered.status_code != 200

    # Stopped: the route is gone, and the URL serves nothing.
    stop = through.api("alice", alice, "POST", f"builds/{build_id}/preview/stop")
    assert stop.status_code in (200, 202), stop.text
    assert f"/{host}" not in hub.routes()
    gone = through.request("GET", host, "/")
    assert gone.status_code != 200 and "Python app" not in gone.text
    after = through.api("alice", alice, "GET", f"builds/{build_id}").json()
    assert after["preview"]["url"] is None, after["preview"]


def _browser_checks(url: str, host: str) -> None:
    sync_api = playwright_api()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            problems = Problems(hosts={host})
            problems.watch(page)
            page.goto(url)
            states = check_pyapp(page, sync_api.expect, in_frame=False)
            assert all(state == "ok" for state in states.values()), states
            assert problems.of_apps() == [], problems.of_apps()
        finally:
            browser.close()


def test_the_routes_service_refuses_bad_labels_and_strangers(hub: HubProcess) -> None:
    through = Through(hub)
    bob = hub.token("bob")
    bad = through.service("PUT", "Not_A_Label", bob, json={})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "not a preview label"
    wrong = through.service("PUT", "pabc-x", "not-a-token", json={})
    assert wrong.status_code == 403, wrong.text


def test_routes_of_a_stopped_server_are_swept(hub: HubProcess) -> None:
    """Routes outlive nothing: when a server stops, the service removes its preview routes
    (it checks every 0.5 s here), so a later server on the same port inherits none."""
    through = Through(hub)
    bob = hub.token("bob")
    label = "pfeedface-" + "b" * 26
    made = through.service("PUT", label, bob, json={})
    assert made.status_code == 201, made.text
    assert f"/{label}.{PREVIEW_DOMAIN}" in hub.routes()
    hub.api("DELETE", "users/bob/server")
    deadline = time.monotonic() + 30
    while f"/{label}.{PREVIEW_DOMAIN}" in hub.routes():  # the proxy's table: no event to await
        assert time.monotonic() < deadline, hub.routes()
        time.sleep(0.2)
    assert through.service("PUT", label, bob, json={}).status_code == 409  # no server now
