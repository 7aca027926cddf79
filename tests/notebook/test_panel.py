"""In a real browser: the JupyterLab side panel lists the user's builds and follows the
selected one live (status and log), from the extension's prebuilt labextension."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .serverproc import JupyterProcess
from .test_browser import _accept_dialogs, lab, lab_page, playwright_api

__all__ = ["lab"]  # the fixture, shared with test_browser

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).parents[2] / "docs" / "side-panel.png"


def create(server: JupyterProcess, spec: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}agentbuild/api/builds",
        data=json.dumps(spec).encode(),
        method="POST",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_side_panel_lists_builds_and_follows_one_live(lab: JupyterProcess, tmp_path: Path) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    create(lab, {"name": "finished-one", "steps": ["echo earlier"]})
    go = tmp_path / "go"
    with lab_page(sync_api, lab, height=900) as page:
        page.goto(f"{lab.url}lab?token={lab.token}")
        tab = page.locator(".lm-TabBar-tab[data-id='jp-agentbuild-panel']")
        expect(tab).to_be_visible(timeout=60_000)
        _accept_dialogs(page)
        tab.click()
        panel = page.locator("#jp-agentbuild-panel")
        items = panel.locator(".jp-AgentBuild-item")
        expect(items.filter(has_text="finished-one")).to_be_visible(timeout=30_000)
        # a build started while the panel is open shows up, and is followed live
        create(
            lab,
            {
                "name": "live-one",
                "steps": [
                    f"echo live-1; while [ ! -e {go} ]; do sleep 0.05; done; echo live-2",
                    "echo out > out.txt",
                ],
                "artifacts": {"paths": ["out.txt"]},
            },
        )
        live = items.filter(has_text="live-one")
        expect(live).to_be_visible(timeout=30_000)
        live.click()
        log = panel.locator(".jp-AgentBuild-log")
        status = panel.locator(".jp-AgentBuild-detail .jp-AgentBuild-status")
        expect(log).to_contain_text("live-1", timeout=30_000)
        expect(status).to_contain_text("running")
        go.write_text("")
        expect(log).to_contain_text("live-2", timeout=30_000)
        expect(status).to_contain_text("succeeded", timeout=30_000)
        expect(live.locator(".jp-AgentBuild-badge")).to_have_text("succeeded", timeout=30_000)
        expect(panel.locator("a", has_text="Full log")).to_be_visible()
        expect(panel.locator("a", has_text="Artifacts (1, zip)")).to_be_visible()
        shot = lab.root / SCREENSHOT.name
        panel.screenshot(path=str(shot))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copy(shot, SCREENSHOT)
        # a running build can be cancelled from the panel
        create(lab, {"name": "to-cancel", "steps": ["echo waiting; sleep 300"]})
        doomed = items.filter(has_text="to-cancel")
        expect(doomed).to_be_visible(timeout=30_000)
        doomed.click()
        expect(log).to_contain_text("waiting", timeout=30_000)
        panel.locator("button", has_text="Cancel").click()
        expect(status).to_contain_text("cancelled", timeout=30_000)
        expect(doomed.locator(".jp-AgentBuild-badge")).to_have_text("cancelled", timeout=30_000)
        # a preview can be opened, and stopped, from the panel
        server = "exec python3 -m http.server $PORT --bind 127.0.0.1"
        create(lab, {"name": "with-preview", "steps": ["true"], "preview": {"command": server}})
        previewed = items.filter(has_text="with-preview")
        expect(previewed.locator(".jp-AgentBuild-badge")).to_have_text("succeeded", timeout=30_000)
        previewed.click()
        opener = panel.locator("a", has_text="Open preview")
        expect(opener).to_be_visible(timeout=30_000)
        assert ".localhost:" in (opener.get_attribute("href") or "")  # its own origin
        panel.locator("button", has_text="Stop preview").click()
        expect(opener).to_have_count(0, timeout=30_000)
