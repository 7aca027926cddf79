"""In a real browser, against a real JupyterLab with the extension's built labextension:
the side panel lists, filters and searches the user's builds; a build opens in its own
tab, followed live (steps, search, a line link); a running build is cancelled.

Saves docs/side-panel.png and docs/build-tab.png (copied over the tracked ones only with
``UPDATE_SCREENSHOTS=1``)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .serverproc import JupyterProcess
from .test_browser import lab, lab_page, playwright_api, show_builds_panel

__all__ = ["lab"]  # the fixture, shared with test_browser

pytestmark = pytest.mark.slow

DOCS = Path(__file__).parents[2] / "docs"


#: Type ``text`` into an input key by key (an input event per key), all in one task.
TYPE_IN_ONE_GO = """(input, text) => {
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  input.focus();
  for (let i = 1; i <= text.length; i++) {
    setValue.call(input, text.slice(0, i));
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }
}"""


def api_call(server: JupyterProcess, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{server.url}agentbuild/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
        return json.loads(data) if data else None


def create(server: JupyterProcess, spec: dict[str, Any]) -> dict[str, Any]:
    return api_call(server, "POST", "builds", spec)  # type: ignore[no-any-return]


def screenshot(page_or_locator: Any, server: JupyterProcess, name: str) -> None:
    shot = server.root / name
    page_or_locator.screenshot(path=str(shot))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, DOCS / name)


def view_of(page: Any, build: dict[str, Any]) -> Any:
    """The build's tab content."""
    return page.locator(f".jp-AgentBuild-view[data-build-id='{build['id']}']")


def open_lab(page: Any, server: JupyterProcess, expect: Any, query: str = "") -> Any:
    """Lab with the builds panel shown; returns the panel."""
    page.goto(f"{server.url}lab{query}{'&' if query else '?'}token={server.token}")
    tab = page.locator(".lm-TabBar-tab[data-id='jp-agentbuild-panel']")
    expect(tab).to_be_visible(timeout=60_000)
    return show_builds_panel(page, expect)


def test_panel_lists_filters_and_follows_a_build_in_its_tab(
    lab: JupyterProcess, tmp_path: Path
) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    create(lab, {"name": "finished-one", "steps": ["echo earlier"]})
    create(lab, {"name": "broken-one", "steps": ["echo bad >&2; exit 3"]})
    with lab_page(sync_api, lab, height=900) as page:
        panel = open_lab(page, lab, expect)
        items = panel.locator(".jp-AgentBuild-item")
        expect(items.filter(has_text="finished-one")).to_be_visible(timeout=30_000)
        expect(items.filter(has_text="broken-one").locator("[data-status=failed]")).to_be_visible(
            timeout=30_000
        )
        # newest first, with provider and a relative start time
        expect(items.first).to_contain_text("broken-one")
        expect(items.first.locator(".jp-AgentBuild-provider")).to_have_text("local")
        expect(items.first.locator(".jp-AgentBuild-started")).to_contain_text("ago")
        # filter by status and search by name, both on the server (so they reach builds
        # no page has loaded yet); the search is sent once the typing pauses
        panel.locator(".jp-AgentBuild-statusFilter").select_option("failed")
        expect(items).to_have_count(1, timeout=30_000)
        expect(items.first).to_contain_text("broken-one")
        panel.locator(".jp-AgentBuild-statusFilter").select_option("")
        expect(items).to_have_count(2, timeout=30_000)
        searches: list[str] = []
        page.on(
            "request",
            lambda r: searches.append(r.url) if "agentbuild/api/builds?" in r.url else None,
        )
        search_box = panel.locator(".jp-AgentBuild-nameSearch")
        with page.expect_response(lambda r: "q=FINISHED" in r.url and r.status == 200):
            # typed key by key in one task (as a fast typist would, and no focus change
            # can come between the keys)
            search_box.evaluate(TYPE_IN_ONE_GO, "FINISHED")
        expect(items).to_have_count(1)
        expect(items.first).to_contain_text("finished-one")
        # one request per pause, not one per key: no prefix was ever asked for
        asked = [u for u in searches if "q=" in u]
        assert asked and all("q=FINISHED" in u for u in asked), asked
        search_box.fill("")
        expect(items).to_have_count(2, timeout=30_000)

        # a build started while the panel is open shows up; its tab follows it live
        steps = [
            {"name": "prepare", "run": "for i in $(seq 1 300); do echo prep-$i; done"},
            {
                "name": "wait",
                "run": "echo live-1; printf '\\033[32mgreen\\033[0m\\n'; "
                "while [ ! -e go ]; do sleep 0.05; done; echo live-2",
            },
        ]
        live_build = create(lab, {"name": "live-one", "steps": steps})
        live = items.filter(has_text="live-one")
        expect(live).to_be_visible(timeout=30_000)
        live.click()
        view = view_of(page, live_build)
        expect(view).to_be_visible(timeout=30_000)
        rows = view.locator(".jp-AgentBuild-rows")
        expect(rows).to_contain_text("live-1", timeout=30_000)
        expect(view.locator(".jp-AgentBuild-viewHeader [data-status=running]")).to_be_visible()
        # steps as groups: the finished one closed, with its duration; the running one open
        headers = view.locator(".jp-AgentBuild-stepHeader")
        expect(headers.filter(has_text="prepare")).to_have_class(
            "jp-AgentBuild-row jp-AgentBuild-stepHeader jp-mod-closed jp-mod-ok"
        )
        expect(headers.filter(has_text="prepare")).to_contain_text("300 lines")
        expect(headers.filter(has_text="wait")).to_have_class(
            "jp-AgentBuild-row jp-AgentBuild-stepHeader jp-mod-open jp-mod-running"
        )
        # ANSI colours as classes, never as raw escapes
        expect(rows.locator(".jp-AgentBuild-fg2")).to_have_text("green")
        # the status bar counts running builds
        running = page.locator(".jp-AgentBuild-statusItem [data-running]")
        expect(running).to_have_text("1 build running", timeout=30_000)
        # into the build's own dir: an isolated build sees nothing else of the host
        (lab.root / ".data" / "sandboxes" / live_build["id"] / "work" / "go").write_text("")
        expect(rows).to_contain_text("live-2", timeout=30_000)
        header = view.locator(".jp-AgentBuild-viewHeader")
        expect(header.locator("[data-status=succeeded]")).to_be_visible(timeout=30_000)
        expect(header).to_contain_text("Exit code")
        expect(live.locator("[data-status=succeeded]")).to_be_visible(timeout=30_000)
        # a notification says it finished, with an "Open" action
        toast = page.locator(".jp-Notification-Toast-success", has_text="live-one succeeded")
        expect(toast).to_be_visible(timeout=30_000)
        expect(toast.locator("button", has_text="Open")).to_be_visible()
        expect(running).to_have_attribute("data-running", "0", timeout=30_000)
        # commands are in the palette
        page.keyboard.press("Control+Shift+c")
        palette = page.locator(".lm-CommandPalette-input")
        expect(palette).to_be_visible(timeout=10_000)
        palette.fill("New Build")
        page.locator(".lm-CommandPalette-item", has_text="New Build…").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog.locator(".jp-AgentBuild-form")).to_be_visible(timeout=10_000)
        dialog.locator(".jp-mod-reject").click()
        expect(dialog).to_have_count(0)

        # search with next/previous: opens the closed step and shows the match
        search = view.locator(".jp-AgentBuild-search")
        search.fill("prep-2")
        count = view.locator(".jp-AgentBuild-matchCount")
        # prep-2, prep-20..29, prep-200..299: 111 lines
        expect(count).to_have_text("1 of 111", timeout=10_000)
        expect(view.locator(".jp-AgentBuild-line.jp-mod-current")).to_contain_text("prep-2")
        screenshot(page, lab, "build-tab.png")
        search.press("Enter")
        expect(count).to_have_text("2 of 111")
        expect(view.locator(".jp-AgentBuild-line.jp-mod-current")).to_contain_text("prep-20")
        search.press("Shift+Enter")
        search.press("Shift+Enter")
        expect(count).to_have_text("111 of 111")
        expect(view.locator(".jp-AgentBuild-line.jp-mod-current")).to_contain_text("prep-299")
        expect(view.locator(".jp-AgentBuild-match").first).to_be_visible()
        # windowed: far fewer rows in the DOM than lines in the log
        assert view.locator(".jp-AgentBuild-row").count() < 150

        # a line link: the URL opens the tab scrolled to that line
        link = view.locator(".jp-AgentBuild-line", has_text="prep-299").locator(
            ".jp-AgentBuild-lineno"
        )
        href = link.get_attribute("href") or ""
        seq = int(link.inner_text())
        assert href.endswith(f"lab?agentbuild={live_build['id']}#L{seq}"), href
        page.goto(f"{href.split('#')[0]}&token={lab.token}#L{seq}")
        view = view_of(page, live_build)
        expect(view).to_be_visible(timeout=60_000)
        selected = view.locator(".jp-AgentBuild-line.jp-mod-selected")
        expect(selected).to_contain_text("prep-299", timeout=30_000)
        expect(selected).to_be_in_viewport()

        panel = open_lab(page, lab, expect)
        items = panel.locator(".jp-AgentBuild-item")
        screenshot(panel.locator(".jp-AgentBuild-panelInner"), lab, "side-panel.png")
        # a running build is cancelled from its tab
        doomed_build = create(lab, {"name": "to-cancel", "steps": ["echo waiting; sleep 300"]})
        doomed = items.filter(has_text="to-cancel")
        expect(doomed).to_be_visible(timeout=30_000)
        doomed.click()
        view = view_of(page, doomed_build)
        expect(view.locator(".jp-AgentBuild-rows")).to_contain_text("waiting", timeout=30_000)
        view.locator(".jp-AgentBuild-cancel").click()
        header = view.locator(".jp-AgentBuild-viewHeader")
        expect(header.locator("[data-status=cancelled]")).to_be_visible(timeout=30_000)
        expect(doomed.locator("[data-status=cancelled]")).to_be_visible(timeout=30_000)
        # ...and from the context menu
        other = create(lab, {"name": "menu-cancel", "steps": ["sleep 300"]})
        target = items.filter(has_text="menu-cancel")
        expect(target.locator("[data-status=running]")).to_be_visible(timeout=30_000)
        target.click(button="right")
        page.locator(".lm-Menu-item", has_text="Cancel Build").click()
        expect(target.locator("[data-status=cancelled]")).to_be_visible(timeout=30_000)
        assert api_call(lab, "GET", f"builds/{other['id']}")["status"] == "cancelled"
