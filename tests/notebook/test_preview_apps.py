"""Real web apps as previews, in a real browser: top level at ``preview.url`` and inside the
notebook widget's iframe, in JupyterLab.

A notebook in JupyterLab runs four ``%%agentbuild ... --preview`` cells, each a real build
of an app under ``tests/apps/`` (its npm packages installed by the build itself from the
committed lockfile, through a cache reused across runs):

- ``pyapp``: absolute asset paths, a module script, fetch GET and JSON POST to its own API,
  a WebSocket, ``localStorage`` and cookies of its own;
- ``vite-build``: the production build under ``vite preview``;
- ``vite-dev``: the dev server, where editing a source file updates the page in place (HMR);
- ``next-app``: Next.js, built and served by ``next start`` (a server-rendered page, its
  ``/_next/static`` assets, a client component calling a route handler).

Each app is checked in the widget's iframe (a separate site from JupyterLab) and top level
in a tab, in a fresh Chromium context logged in to JupyterLab. The same builds of the
pyapp and the Vite dev server are then opened from the builds panel: the preview tab of
their build tab (a JupyterLab main-area tab, the app's own origin in its iframe) shows
them, an edit updates the dev server's page there in place, and the pyapp's preview is
restarted (the frame loads the new process's page, every check passing again) and stopped
from it. Any failed request, HTTP error or console error of the app fails the test. Saves docs/preview-widget.png with
``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from jupyter_agentbuild.client import Build, Client

from .serverproc import JupyterProcess
from .test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    _accept_dialogs,
    playwright_api,
    show_builds_panel,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
APPS = REPO / "tests" / "apps"
SCREENSHOT = REPO / "docs" / "preview-widget.png"
#: npm's cache, reused across runs (the packages come from the registry the first time).
NPM_CACHE = Path(
    os.environ.get("AGENTBUILD_TEST_NPM_CACHE", Path.home() / ".cache" / "agentbuild-npm")
)
#: What the test adds to its copy of each npm app: the shared cache, no network when the
#: cache has it all, no audit or funding requests.
NPMRC = "prefer-offline=true\naudit=false\nfund=false\nloglevel=error\n"
#: The notebook's build cells, in order (cell 0 loads the extension).
APP_CELLS = ("pyapp", "vite-build", "vite-dev", "next-app")
PY_CHECKS = ("module", "get", "post", "ws", "storage", "cookie")
#: Inside a cross-site iframe, a browser that blocks third-party storage (a fresh Chromium
#: profile) refuses the app's cookies and localStorage: the widget says so and offers a tab.
REFUSED_IN_FRAME = ("storage", "cookie")


def cell(source: str, kind: str = "code") -> dict[str, Any]:
    extra = {"outputs": [], "execution_count": None} if kind == "code" else {}
    return {"cell_type": kind, "metadata": {}, "source": source, **extra}


def notebook() -> dict[str, Any]:
    """The cells a user would write: no base path or proxy flag anywhere."""
    cells = [
        cell("%load_ext jupyter_agentbuild"),
        cell(
            "%%agentbuild --name pyapp --workspace apps/pyapp --preview 'python3 app.py'\n"
            'python3 -c "import tornado"'
        ),
        cell(
            "%%agentbuild --name vite-build --workspace apps/vite "
            "--preview 'npx vite preview --host 127.0.0.1 --port $PORT'\n"
            "npm ci\nnpx vite build"
        ),
        cell(
            "%%agentbuild --name vite-dev --workspace apps/vite "
            "--preview 'npx vite --host 127.0.0.1 --port $PORT'\n"
            "npm ci"
        ),
        cell(
            "%%agentbuild --name next-app --workspace apps/next --env NEXT_TELEMETRY_DISABLED=1 "
            "--preview 'npx next start -H 127.0.0.1 -p $PORT'\n"
            "npm ci\nnpx next build"
        ),
    ]
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@dataclass
class Problems:
    """Every failed request, HTTP error, WebSocket error and console error at a preview
    origin, as the browser reports them."""

    hosts: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)

    def ours(self, url: str) -> bool:
        return (urlsplit(url).hostname or "") in self.hosts

    def watch(self, page: Any) -> None:
        page.on("requestfailed", lambda r: self._add(r.url, f"failed: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self._add(r.url, f"HTTP {r.status}"))
        page.on("console", self._console)
        page.on("websocket", self._websocket)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self._add(str((msg.location or {}).get("url", "")), f"console: {msg.text}")

    def _websocket(self, ws: Any) -> None:
        ws.on("socketerror", lambda error: self._add(ws.url, f"WebSocket error: {error}"))

    def _add(self, url: str, what: str) -> None:
        self.seen.append(f"{what} {url}")

    def of_apps(self) -> list[str]:
        return [s for s in self.seen if self.ours(s.rsplit(" ", 1)[-1])]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    root = tmp_path_factory.mktemp("lab")
    with JupyterProcess(root, app="jupyterlab") as server:
        apps = root / "notebooks" / "apps"
        for name in ("pyapp", "vite", "next"):
            shutil.copytree(
                APPS / name,
                apps / name,
                ignore=shutil.ignore_patterns("node_modules", "dist", ".next"),
            )
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        for name in ("vite", "next"):
            (apps / name / ".npmrc").write_text(f"cache={NPM_CACHE}\n{NPMRC}")
        (root / "notebooks" / "previews.ipynb").write_text(json.dumps(notebook()))
        yield server


def run_notebook(page: Any, expect: Any, lab: JupyterProcess) -> Any:
    """Open the notebook in JupyterLab and run its cells; return the cells' locator."""
    page.goto(f"{lab.url}lab/tree/previews.ipynb?token={lab.token}")
    cells = page.locator(".jp-Notebook .jp-Cell")
    expect(cells.nth(len(APP_CELLS))).to_be_visible(timeout=60_000)
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    expect(idle).to_have_count(1, timeout=60_000)
    prompt = cells.nth(0).locator(".jp-InputPrompt")
    for attempt in range(3):  # a run issued before the kernel's socket is open is dropped
        _accept_dialogs(page)
        cells.nth(0).locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        try:
            expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=15_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    _accept_dialogs(page)
    for index in range(1, len(APP_CELLS) + 1):
        page.keyboard.press("Shift+Enter")
        # each %%agentbuild returns at once, its widget following the build
        expect(cells.nth(index).locator(".agentbuild-build")).to_be_visible(timeout=60_000)
    return cells


def ready_frame(cells: Any, index: int, expect: Any) -> Any:
    """The preview iframe of cell ``index`` once its build's preview is ready."""
    iframe = cells.nth(index).locator(".jp-OutputArea .agentbuild-preview iframe")
    expect(iframe).to_be_visible(timeout=180_000)
    return iframe


def show_frame(cells: Any, index: int) -> None:
    """Scroll cell ``index``'s preview iframe into view: the widget's frames load lazily
    (``loading="lazy"``), and JupyterLab skips rendering cells out of view."""
    cells.nth(index).locator(".agentbuild-preview iframe").scroll_into_view_if_needed()


def frame_of(page: Any, src: str) -> Any:
    for frame in page.frames:
        if frame.url.startswith(src):
            return frame
    raise AssertionError(f"no frame at {src} among {[f.url for f in page.frames]}")


def check_pyapp(target: Any, expect: Any, *, in_frame: bool) -> dict[str, str]:
    """The pyapp's checks in ``target`` (a page or a frame locator); returns their states."""
    body = target.locator("body[data-done='yes']")
    expect(body).to_have_count(1, timeout=60_000)
    states = {name: target.locator(f"#{name}").get_attribute("data-state") for name in PY_CHECKS}
    texts = {name: target.locator(f"#{name}").inner_text() for name in PY_CHECKS}
    expect(target.locator("#title")).to_have_css("color", "rgb(0, 128, 96)")
    expect(target.locator("#logo")).to_have_js_property("naturalWidth", 16)
    for name in PY_CHECKS:
        if in_frame and name in REFUSED_IN_FRAME:
            continue
        assert states[name] == "ok", (name, states[name], texts[name])
    assert texts["ws"] == "echo: ping"
    # The app sees its own cookies only: never one of Jupyter's.
    received = texts["get"].split("cookies", 1)[1]
    assert "username-" not in received and "_xsrf" not in received, received
    if not in_frame:
        assert "pyapp_session" in received, received
        assert texts["post"].endswith("own cookie from-the-server"), texts["post"]
    return {name: str(states[name]) for name in PY_CHECKS}


def check_next(target: Any, expect: Any) -> None:
    """Server-rendered page, its CSS from ``/_next/static``, the client component hydrated
    and its fetch to the app's route handler answered."""
    expect(target.locator("#api")).to_have_attribute(
        "data-state", "from the route handler", timeout=60_000
    )
    expect(target.locator("#title")).to_have_css("color", "rgb(0, 112, 243)")


def check_vite(target: Any, expect: Any, message: str = "Hello from Vite") -> None:
    expect(target.locator("#message")).to_have_text(message, timeout=60_000)
    expect(target.locator("body")).to_have_attribute("data-module-ran", "yes")
    expect(target.locator("#title")).to_have_css("color", "rgb(100, 108, 255)")
    expect(target.locator("#logo")).to_have_js_property("naturalWidth", 48)


def panel_preview_tab(page: Any, expect: Any, build: Build, src: str) -> Any:
    """Open ``build`` from the builds panel and show its tab's Preview: the tab's view, once
    its frame shows ``src`` (the preview's own origin, with the sandbox that keeps it)."""
    panel = show_builds_panel(page, expect)
    item = panel.locator(f".jp-AgentBuild-item[data-build-id='{build.id}']")
    expect(item.locator(".jp-AgentBuild-previewReady")).to_be_visible(timeout=30_000)
    item.click()
    view = page.locator(f".jp-AgentBuild-view[data-build-id='{build.id}']")
    expect(view).to_be_visible(timeout=30_000)
    view.locator(".lm-TabBar-tab", has_text="Preview").click()
    frame = view.locator(".jp-AgentBuild-previewFrame")
    expect(frame).to_have_attribute("src", src, timeout=60_000)
    sandbox = str(frame.get_attribute("sandbox")).split()
    assert "allow-same-origin" in sandbox and "allow-scripts" in sandbox, sandbox
    return view


def check_panel_preview_tabs(
    page: Any, expect: Any, builds: dict[str, Build], srcs: dict[str, str], message: Path
) -> None:
    """The builds panel's preview tabs of the pyapp and the Vite dev server (the notebook's
    builds: no npm install again): shown, hot-updated, restarted and stopped."""
    dev = panel_preview_tab(page, expect, builds["vite-dev"], srcs["vite-dev"])
    check_vite(dev.frame_locator(".jp-AgentBuild-previewFrame"), expect, "Hot update")
    dev_frame = dev.locator(".jp-AgentBuild-previewFrame").element_handle().content_frame()
    dev_frame.evaluate("window.__marker = 'kept'")
    message.write_text(message.read_text().replace("Hot update", "Hot again"))
    expect(dev_frame.locator("#message")).to_have_text("Hot again", timeout=30_000)
    assert dev_frame.evaluate("[window.__marker, window.__agentbuildLoads]") == ["kept", 1]

    py = panel_preview_tab(page, expect, builds["pyapp"], srcs["pyapp"])
    frame = py.frame_locator(".jp-AgentBuild-previewFrame")
    check_pyapp(frame, expect, in_frame=True)
    py_frame = py.locator(".jp-AgentBuild-previewFrame").element_handle().content_frame()
    py_frame.evaluate("window.__marker = 'old page'")
    with page.expect_response(lambda r: "/preview/restart?" in r.url) as answer:
        py.locator(".jp-AgentBuild-previewRestart").click()
    assert answer.value.status == 200, answer.value.text()
    fresh = py.locator(".jp-AgentBuild-previewFrame[data-generation='1']")
    expect(fresh).to_have_attribute("src", srcs["pyapp"], timeout=30_000)
    check_pyapp(frame, expect, in_frame=True)  # module, GET, POST, WebSocket: all again
    assert fresh.element_handle().content_frame().evaluate("window.__marker") is None
    py.locator(".jp-AgentBuild-previewStop").click()
    expect(py.locator(".jp-AgentBuild-preview")).to_contain_text(
        "The preview is stopped", timeout=30_000
    )


@pytest.mark.timeout(600)  # four real builds (npm ci, vite and next builds) on a busy machine
def test_real_apps_in_the_widget_iframe_and_top_level(lab: JupyterProcess) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1800})
        page = context.new_page()
        problems = Problems()
        problems.watch(page)
        try:
            cells = run_notebook(page, expect, lab)
            _run_checks(context, page, cells, problems, expect, lab)
        except Exception:
            page.screenshot(path=str(lab.root / "failure.png"))
            print("screenshot of the failure:", lab.root / "failure.png")
            print("frames:", [frame.url for frame in page.frames])
            print("what the browser reported:", *problems.seen, sep="\n  ")
            print(
                "the server's agentbuild log:", *[ln for ln in lab.log if "agentbuild" in ln][-40:]
            )
            raise
        finally:
            browser.close()


def _run_checks(
    context: Any, page: Any, cells: Any, problems: Problems, expect: Any, lab: JupyterProcess
) -> None:
    # Logged in to JupyterLab: its login cookie is in this context (on Jupyter's host).
    jupyter_cookies = [c["name"] for c in context.cookies()]
    assert any(name.startswith("username-") for name in jupyter_cookies), jupyter_cookies
    with Client(lab.url, lab.token) as client:
        builds = {b.get("name"): b for b in client.list(limit=10)}
        assert set(builds) == set(APP_CELLS), builds
        srcs: dict[str, str] = {}
        for index, name in enumerate(APP_CELLS, start=1):
            iframe = ready_frame(cells, index, expect)
            src = str(iframe.get_attribute("src"))
            build = client.get(builds[name].id)
            assert build.preview_own_origin, build.get("preview")
            # The widget shows preview.url: the app at / on a host of its own, which
            # keeps its origin in the frame.
            assert src == build.preview_url, (src, build.get("preview"))
            host = str(urlsplit(src).hostname)
            assert host.endswith(".localhost") and host != "localhost", src
            problems.hosts.add(host)
            sandbox = str(iframe.get_attribute("sandbox")).split()
            assert "allow-same-origin" in sandbox and "allow-scripts" in sandbox, sandbox
            output = cells.nth(index).locator(".jp-OutputArea")
            expect(output.locator(".agentbuild-preview-hint")).to_contain_text(
                "third-party storage"
            )
            tab_link = output.locator(".agentbuild-preview a", has_text="open in new tab")
            assert tab_link.get_attribute("href") == src
            srcs[name] = src
        assert len(set(srcs.values())) == len(APP_CELLS), srcs  # an origin per preview

        # In the widget's iframe (cross-site from JupyterLab).
        frames = {
            name: cells.nth(index).frame_locator(".agentbuild-preview iframe")
            for index, name in enumerate(APP_CELLS, start=1)
        }
        # The frames load lazily: each check first scrolls its frame into view.
        show_frame(cells, 1)
        in_frame = check_pyapp(frames["pyapp"], expect, in_frame=True)
        # Documented browser limit: storage of a cross-site frame is refused here.
        for name in REFUSED_IN_FRAME:
            assert in_frame[name] == "error: SecurityError" or (
                name == "cookie" and in_frame[name].startswith("error")
            ), in_frame
        show_frame(cells, 2)
        check_vite(frames["vite-build"], expect)
        show_frame(cells, 3)
        check_vite(frames["vite-dev"], expect)
        show_frame(cells, 4)
        check_next(frames["next-app"], expect)
        cells.nth(2).scroll_into_view_if_needed()
        shot = lab.root / SCREENSHOT.name
        cells.nth(2).screenshot(path=str(shot))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copy(shot, SCREENSHOT)

        # Top level, in tabs of the same logged-in context.
        tabs: dict[str, Any] = {}
        for name, src in srcs.items():
            tab = context.new_page()
            problems.watch(tab)
            tab.goto(src)
            tabs[name] = tab
        top = check_pyapp(tabs["pyapp"], expect, in_frame=False)
        assert all(state == "ok" for state in top.values()), top
        cookie = tabs["pyapp"].evaluate("document.cookie")
        assert "pyapp_client=set-by-script" in cookie and "username-" not in cookie, cookie
        check_vite(tabs["vite-build"], expect)
        check_vite(tabs["vite-dev"], expect)
        check_next(tabs["next-app"], expect)

        # Hot reload: an edit in the dev build's sandbox updates the tab and the frame in
        # place (the page's state survives: no reload).
        dev_frame = frame_of(page, srcs["vite-dev"])
        for target in (tabs["vite-dev"], dev_frame):
            target.evaluate("window.__marker = 'kept'")
        source = lab.root / ".data" / "sandboxes" / builds["vite-dev"].id / "work" / "src"
        message = source / "message.js"
        message.write_text(message.read_text().replace("Hello from Vite", "Hot update"))
        for target in (tabs["vite-dev"], dev_frame):
            expect(target.locator("#message")).to_have_text("Hot update", timeout=30_000)
            assert target.evaluate("[window.__marker, window.__agentbuildLoads]") == ["kept", 1]

        check_panel_preview_tabs(page, expect, builds, srcs, message)

        assert problems.of_apps() == [], problems.of_apps()
        for name, build in builds.items():
            if name != "pyapp":  # stopped from its tab
                client.preview_stop(build.id)
        # The URL dies with the preview.
        stopped = client.get(builds["pyapp"].id)
        assert not Build(stopped).preview_own_origin, stopped.get("preview")
