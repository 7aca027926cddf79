"""In Debian's Chromium: a preview page on its own origin cannot use the user's Jupyter
identity. The user is logged in to Jupyter (its cookie set at 127.0.0.1); the page at
``http://{label}.localhost:PORT/`` cannot read that cookie, cannot call Jupyter's API as
the user (a read fails, a write does nothing), while its own cookie, ``fetch`` and
WebSocket work as on the app's own host.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.notebook.serverproc import JupyterProcess
from tests.notebook.test_browser import CHROMIUM, CHROMIUM_ARGS, playwright_api
from tests.preview.conftest import BACKEND, PREVIEW_COMMAND

pytestmark = pytest.mark.slow


def call(server: JupyterProcess, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {server.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        return json.loads(response.read() or b"null")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JupyterProcess]:
    with JupyterProcess(tmp_path) as proc:
        yield proc


def ready_build(server: JupyterProcess) -> dict[str, Any]:
    spec = {
        "steps": ["true"],
        "files": {"app.py": BACKEND},
        "preview": {"command": PREVIEW_COMMAND, "path": "/tiny"},
    }
    build = call(server, "POST", "agentbuild/api/builds", spec)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        build = call(server, "GET", f"agentbuild/api/builds/{build['id']}")
        if (build["preview"] or {}).get("state") in ("ready", "failed", "stopped"):
            break
        time.sleep(0.05)  # polling the public API of another process
    assert build["preview"]["state"] == "ready", build
    return build  # type: ignore[no-any-return]


def test_the_preview_page_cannot_act_as_the_user(server: JupyterProcess) -> None:
    # One browser session, every attempt a hostile page could make, in order (longer than
    # a function should be: each step needs the same signed-in page, which is slow to get).
    sync_api = playwright_api()
    build = ready_build(server)
    own = build["preview"]["url"]
    assert own.startswith("http://p") and own.endswith(f".localhost:{server.port}/")
    before = sorted(p.name for p in (server.root / "notebooks").iterdir())
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            # Logged in to Jupyter: its login cookie is set for 127.0.0.1, and works.
            page.goto(f"{server.url}tree?token={server.token}")
            names = [c["name"] for c in context.cookies(server.url)]
            assert any(n.startswith("username-") for n in names), names
            api = page.goto(f"{server.url}api/contents")
            assert api is not None and api.status == 200  # the cookie alone authenticates

            page.goto(own)
            assert page.inner_text("h1") == "hello preview"
            jupyter = server.url.rstrip("/")
            seen = page.evaluate(
                """async (jupyter) => {
                    const out = {cookie: document.cookie, origin: location.origin};
                    document.cookie = "app_own=1; path=/";
                    const echo = await (await fetch("/echo?token=app")).json();
                    out.echoCookie = echo.headers.filter(h => h[0].toLowerCase() === "cookie");
                    out.echoTarget = echo.target;
                    const post = await fetch("/echo/json", {method: "POST",
                        headers: {"Content-Type": "application/json"}, body: '{"a": 1}'});
                    out.post = post.status;
                    try {
                        const r = await fetch(jupyter + "/api/contents", {credentials: "include"});
                        out.read = "status " + r.status;
                    } catch (e) { out.read = "blocked: " + e.name; }
                    try {
                        const r = await fetch(jupyter + "/agentbuild/api/builds",
                                              {credentials: "include"});
                        out.builds = "status " + r.status;
                    } catch (e) { out.builds = "blocked: " + e.name; }
                    // a write that needs no CORS answer: the request leaves, unread
                    await fetch(jupyter + "/api/contents", {method: "POST", mode: "no-cors",
                        credentials: "include", headers: {"Content-Type": "text/plain"},
                        body: '{"type": "file"}'});
                    out.ws = await new Promise((resolve) => {
                        const ws = new WebSocket(`ws://${location.host}/ws`);
                        ws.onopen = () => ws.send("over the own origin");
                        ws.onmessage = (m) => { resolve(m.data); ws.close(); };
                        ws.onerror = () => resolve("error");
                    });
                    return out;
                }""",
                jupyter,
            )
        finally:
            browser.close()
    assert seen["origin"] == own.rstrip("/")
    assert "username-" not in seen["cookie"] and "_xsrf" not in seen["cookie"]
    assert seen["echoCookie"] == [["Cookie", "app_own=1"]]  # its own cookie, nothing else
    assert seen["echoTarget"] == "/echo?token=app"
    assert seen["post"] == 200
    assert seen["read"].startswith("blocked"), seen["read"]
    assert seen["builds"].startswith("blocked"), seen["builds"]
    assert seen["ws"] == "over the own origin"
    # the blind write created nothing in Jupyter
    assert sorted(p.name for p in (server.root / "notebooks").iterdir()) == before
    # ...and reached Jupyter without the user's identity ("(@ip)": no user), refused
    log = "".join(server.log)
    refused = re.findall(r"\] (\d{3}) POST /api/contents \((\S*)@127\.0\.0\.1\)", log)
    assert refused and all(code[0] == "4" and not user for code, user in refused), refused
