"""In a real browser: JupyterLab opens the example notebook, runs its ``%%agentbuild`` cell,
and the live log and final status render in the output area. Saves docs/notebook-widget.png.

Needs Playwright (PyPI ``playwright``) and Debian's Chromium at /usr/bin/chromium. The
screenshot goes to the test's tmp dir; with ``UPDATE_SCREENSHOTS=1`` it also replaces
docs/notebook-widget.png (so a test run does not modify tracked files by default).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .serverproc import JupyterProcess

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: As root, in a closed network: no sandbox, no GPU, no background downloads.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REPO = Path(__file__).parents[2]
SCREENSHOT = REPO / "docs" / "notebook-widget.png"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterProcess]:
    with JupyterProcess(tmp_path, app="jupyterlab") as server:
        shutil.copy(REPO / "examples" / "quickstart.ipynb", tmp_path / "notebooks")
        yield server


def playwright_api() -> Any:
    """``playwright.sync_api``; under ``CI=true`` a missing browser is a failure, elsewhere
    a skip."""
    if os.environ.get("CI") == "true":  # CI installs both: missing is a failure there
        import playwright.sync_api as sync_api

        assert CHROMIUM.exists(), "Debian's chromium is missing (apt-get install chromium)"
        return sync_api
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return sync_api


@contextlib.contextmanager
def lab_page(sync_api: Any, lab: JupyterProcess, *, height: int) -> Iterator[Any]:
    """A page of Debian's Chromium (headless, as root) for ``lab``; a failing test leaves
    a screenshot of it in the server's root."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            try:
                yield page
            except Exception:
                page.screenshot(path=str(lab.root / "failure.png"))
                print("screenshot of the failure:", lab.root / "failure.png")
                raise
        finally:
            browser.close()


def test_example_cell_renders_live_log_and_status(lab: JupyterProcess) -> None:
    sync_api = playwright_api()
    with lab_page(sync_api, lab, height=2000) as page:
        page.goto(f"{lab.url}lab/tree/quickstart.ipynb?token={lab.token}")
        expect = sync_api.expect
        cells = page.locator(".jp-Notebook .jp-Cell")
        expect(cells.nth(3)).to_be_visible(timeout=60_000)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        expect(idle).to_have_count(1, timeout=60_000)
        # The indicator can say idle before the kernel's WebSocket is open, and a run
        # issued then is dropped by the front end: run %load_ext until it has run.
        prompt = cells.nth(1).locator(".jp-InputPrompt")
        for attempt in range(3):
            _accept_dialogs(page)
            cells.nth(1).locator(".cm-content").click()
            page.keyboard.press("Shift+Enter")
            try:
                expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=15_000)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        _accept_dialogs(page)
        page.keyboard.press("Shift+Enter")  # past the markdown cell
        page.keyboard.press("Shift+Enter")  # %%agentbuild
        output = cells.nth(3).locator(".jp-OutputArea")
        status = output.locator(".agentbuild-status")
        log = output.locator(".agentbuild-log")
        expect(log).to_contain_text("rendering", timeout=60_000)
        expect(status).to_contain_text("succeeded", timeout=60_000)
        expect(log).to_contain_text("done")
        expect(log).to_contain_text("build succeeded")
        # Artifacts and the preview light up from the Build's fields.
        artifacts = output.locator(".agentbuild-artifacts")
        expect(artifacts).to_contain_text("public/index.html", timeout=60_000)
        frame = output.frame_locator(".agentbuild-preview iframe")
        expect(frame.locator("h1")).to_contain_text("Hello from the index page", timeout=60_000)
        # The preview is on an origin of its own (a {label}.localhost host, another site
        # than JupyterLab's), so its frame may keep that origin.
        iframe = output.locator(".agentbuild-preview iframe")
        src = urlsplit(iframe.get_attribute("src") or "")
        assert (src.hostname or "").endswith(".localhost") and src.path == "/", src
        assert "allow-same-origin" in (iframe.get_attribute("sandbox") or "").split()
        # ANSI colours arrive as styled spans, never as raw escapes.
        assert log.locator("span[style*='color']").count() > 0
        assert "\x1b[" not in log.inner_text()
        cells.nth(3).scroll_into_view_if_needed()
        shot = lab.root / SCREENSHOT.name
        cells.nth(3).screenshot(path=str(shot))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copy(shot, SCREENSHOT)


def _accept_dialogs(page: Any) -> None:
    """JupyterLab may open a modal (kernel choice, a restart notice) over the notebook on a
    busy machine; accept its default so it cannot swallow the test's clicks."""
    dialogs = page.locator(".jp-Dialog")
    while dialogs.count():
        dialogs.first.locator(".jp-mod-accept").first.click()
        dialogs.first.wait_for(state="detached", timeout=10_000)


def show_builds_panel(page: Any, expect: Any) -> Any:
    """The builds side panel, shown. Lab restores its layout (the panel open or closed, as
    last time) after the tab bar is drawn and before it drops its splash screen, so a click
    before then can be undone by the restore; a click that toggled a panel the restore was
    opening at that moment is made again."""
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=60_000)
    _accept_dialogs(page)
    panel = page.locator("#jp-agentbuild-panel")
    tab = page.locator(".lm-TabBar-tab[data-id='jp-agentbuild-panel']")
    for _attempt in range(3):
        if panel.is_visible():
            break
        tab.click()
        try:
            expect(panel).to_be_visible(timeout=5_000)
        except AssertionError:
            continue
    expect(panel).to_be_visible()
    return panel
