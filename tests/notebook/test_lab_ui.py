"""In a real browser, against a real JupyterLab: starting builds without JSON (the form,
"Build this folder", re-run with secrets asked again), the artifacts and preview tabs,
the layout restored after a reload, and a stream dropped by a server restart that
resumes with no gap. Saves docs/build-form.png (tracked copy with UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .serverproc import JupyterProcess, free_port
from .test_browser import _accept_dialogs, lab_page, playwright_api
from .test_panel import api_call, create, open_lab, screenshot, view_of

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterProcess]:
    with JupyterProcess(tmp_path, app="jupyterlab") as server:
        yield server


def test_form_build_this_folder_and_rerun(lab: JupyterProcess) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    project = lab.root / "notebooks" / "proj"
    project.mkdir()
    (project / "marker.txt").write_text("in proj")
    (project / "agentbuild.json").write_text(
        json.dumps({"name": "from-spec-file", "steps": ["cat marker.txt"]})
    )
    (lab.root / "notebooks" / "bare").mkdir()
    (lab.root / "notebooks" / "bare" / "hello.txt").write_text("bare folder")
    with lab_page(sync_api, lab, height=900) as page:
        panel = open_lab(page, lab, expect)
        # the form, from the panel: name, steps, artifacts, a secret env variable
        panel.locator(".jp-AgentBuild-new").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog.locator(".jp-AgentBuild-form")).to_be_visible(timeout=10_000)
        dialog.locator("input[name=name]").fill("from-the-form")
        dialog.locator("textarea[name=steps]").fill(
            'echo "token has ${#API_TOKEN} chars"\necho built > out.txt'
        )
        dialog.locator("textarea[name=artifacts]").fill("out.txt")
        dialog.locator(".jp-AgentBuild-envAdd").click()
        dialog.locator("input[name=env-key-0]").fill("API_TOKEN")
        dialog.locator("input[name=env-secret-0]").check()
        dialog.locator("input[name=env-value-0]").fill("s3cr3t-value")
        expect(dialog.locator("input[name=env-value-0]")).to_have_attribute("type", "password")
        screenshot(dialog.locator(".jp-Dialog-content"), lab, "build-form.png")
        dialog.locator(".jp-mod-accept").click()
        view = page.locator(".jp-AgentBuild-view:visible")
        expect(view.locator(".jp-AgentBuild-headerName")).to_have_text(
            "from-the-form", timeout=30_000
        )
        expect(view.locator(".jp-AgentBuild-viewHeader [data-status=succeeded]")).to_be_visible(
            timeout=60_000
        )
        view.locator(".jp-AgentBuild-expandAll").click()  # the first step closed on success
        expect(view.locator(".jp-AgentBuild-rows")).to_contain_text("token has 12 chars")
        build_id = view.get_attribute("data-build-id")
        build = api_call(lab, "GET", f"builds/{build_id}")
        assert build["spec"]["env"]["API_TOKEN"]["secret"] is True
        assert "s3cr3t" not in json.dumps(build)
        assert build["spec"]["artifacts"]["paths"] == ["out.txt"]

        # re-run: the same spec, the secret asked again (its field empty)
        view.locator(".jp-AgentBuild-rerun").click()
        expect(dialog.locator(".jp-AgentBuild-form")).to_be_visible(timeout=10_000)
        expect(dialog.locator("input[name=name]")).to_have_value("from-the-form")
        expect(dialog.locator("input[name=env-value-0]")).to_have_value("")
        dialog.locator("input[name=env-value-0]").fill("other")
        dialog.locator(".jp-mod-accept").click()
        rerun = page.locator(".jp-AgentBuild-view:visible")
        expect(rerun).not_to_have_attribute("data-build-id", build_id or "", timeout=30_000)
        expect(rerun.locator(".jp-AgentBuild-viewHeader [data-status=succeeded]")).to_be_visible(
            timeout=60_000
        )
        rerun.locator(".jp-AgentBuild-expandAll").click()
        expect(rerun.locator(".jp-AgentBuild-rows")).to_contain_text("token has 5 chars")

        # "Build this folder" in the file browser: with its agentbuild.json...
        page.locator(".lm-TabBar-tab[data-id='filebrowser']").click()
        folder = page.locator(".jp-DirListing-item[data-isdir=true]", has_text="proj")
        expect(folder).to_be_visible(timeout=30_000)
        folder.click(button="right")
        page.locator(".lm-Menu-item", has_text="Build This Folder").click()
        built = page.locator(".jp-AgentBuild-view:visible")
        expect(built.locator(".jp-AgentBuild-headerName")).to_have_text(
            "from-spec-file", timeout=30_000
        )
        expect(built.locator(".jp-AgentBuild-rows")).to_contain_text("in proj", timeout=60_000)
        spec = api_call(lab, "GET", f"builds/{built.get_attribute('data-build-id')}")["spec"]
        assert spec["workspace"] == "proj"
        # ...and without one: the form, its workspace that folder
        folder = page.locator(".jp-DirListing-item[data-isdir=true]", has_text="bare")
        folder.click(button="right")
        page.locator(".lm-Menu-item", has_text="Build This Folder").click()
        expect(dialog.locator("input[name=workspace]")).to_have_value("bare", timeout=10_000)
        dialog.locator("textarea[name=steps]").fill("cat hello.txt")
        dialog.locator(".jp-mod-accept").click()
        bare = page.locator(".jp-AgentBuild-view:visible")
        expect(bare.locator(".jp-AgentBuild-rows")).to_contain_text("bare folder", timeout=60_000)


def test_artifacts_preview_and_restored_layout(lab: JupyterProcess) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    with lab_page(sync_api, lab, height=900) as page:
        panel = open_lab(page, lab, expect)
        expect(panel.locator(".jp-AgentBuild-message")).to_contain_text("No builds yet")
        site = "mkdir -p site/docs && echo '<h1>hello from the preview</h1>' > site/index.html"
        build = create(
            lab,
            {
                "name": "with-everything",
                "steps": [site, "echo report > site/docs/report.txt"],
                "artifacts": {"paths": ["site/**"]},
                "preview": {
                    "command": "cd site && exec python3 -m http.server $PORT --bind 127.0.0.1"
                },
            },
        )
        item = panel.locator(".jp-AgentBuild-item", has_text="with-everything")
        expect(item.locator(".jp-AgentBuild-previewReady")).to_be_visible(timeout=60_000)
        # a notification says the preview is ready, with an "Open" action
        toast = page.locator(".jp-Notification-Toast-info", has_text="preview of with-everything")
        expect(toast).to_be_visible(timeout=30_000)
        expect(toast.locator("button", has_text="Open")).to_be_visible()
        item.click()
        view = view_of(page, build)
        # artifacts: a tree with sizes; a single file downloads
        view.locator(".lm-TabBar-tab", has_text="Artifacts").click()
        report = view.locator(".jp-AgentBuild-artifact[data-path='site/docs/report.txt']")
        expect(report).to_be_visible(timeout=30_000)
        expect(report.locator(".jp-AgentBuild-artifactSize")).to_have_text("7 B")
        expect(view.locator(".jp-AgentBuild-artifactDir summary").first).to_contain_text("site/")
        with page.expect_download() as info:
            report.locator(".jp-AgentBuild-artifactDownload").click()
        download = info.value
        assert download.suggested_filename == "report.txt"
        assert Path(download.path()).read_text() == "report\n"
        html = view.locator(".jp-AgentBuild-artifact[data-path='site/index.html']")
        expect(html.locator(".jp-AgentBuild-artifactOpen")).to_have_attribute("target", "_blank")
        with page.expect_download() as info:
            view.locator(".jp-AgentBuild-zip").click()
        assert info.value.suggested_filename.endswith(".zip")
        # the preview tab shows the app, and stops it
        view.locator(".lm-TabBar-tab", has_text="Preview").click()
        frame = page.frame_locator(".jp-AgentBuild-previewFrame")
        expect(frame.locator("h1")).to_have_text("hello from the preview", timeout=30_000)
        # restart: a fresh process at the same URL, the frame loaded again; from the
        # button, the context menu and the palette
        restart_preview(page, view, "button")
        restart_preview(page, view, "context menu")
        page.keyboard.press("Control+Shift+c")
        palette = page.locator(".lm-CommandPalette-input")
        expect(palette).to_be_visible(timeout=10_000)
        palette.fill("Restart Preview")
        expect(page.locator(".lm-CommandPalette-item", has_text="Restart Preview")).to_be_visible()
        page.keyboard.press("Escape")
        view.locator(".jp-AgentBuild-previewStop").click()
        expect(view.locator(".jp-AgentBuild-preview")).to_contain_text(
            "The preview is stopped", timeout=30_000
        )
        assert api_call(lab, "GET", f"builds/{build['id']}")["preview"]["state"] == "stopped"

        # the layout is restored after a reload: the build's tab comes back
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the workspace is saved after a debounce
            workspace = json.dumps(workspace_data(lab))
            if f"agentbuild:{build['id']}" in workspace:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the workspace never recorded the build tab")
        page.reload()
        _accept_dialogs(page)
        expect(view_of(page, build).locator(".jp-AgentBuild-headerName")).to_have_text(
            "with-everything", timeout=60_000
        )


def restart_preview(page: Any, view: Any, how: str) -> None:
    """Restart the preview of the build tab ``view`` (its "Preview" tab shown) by its
    button or its context menu; the frame must load the new process's page."""
    frame_node = view.locator(".jp-AgentBuild-previewFrame")
    generation = int(frame_node.get_attribute("data-generation") or 0)
    src = str(frame_node.get_attribute("src"))
    old = next(f for f in page.frames if f.url.startswith(src))
    old.evaluate("window.__marker = 'old page'")
    with page.expect_response(lambda r: "/preview/restart?" in r.url) as answer:
        if how == "button":
            view.locator(".jp-AgentBuild-previewRestart").click()
        else:
            view.locator(".jp-AgentBuild-previewBar").click(button="right")
            page.locator(".lm-Menu-item", has_text="Restart Preview").click()
    assert answer.value.status == 200, answer.value.text()
    fresh = view.locator(f".jp-AgentBuild-previewFrame[data-generation='{generation + 1}']")
    playwright_api().expect(fresh).to_have_attribute("src", src, timeout=30_000)
    frame = page.frame_locator(".jp-AgentBuild-previewFrame")
    playwright_api().expect(frame.locator("h1")).to_have_text("hello from the preview")
    new = next(f for f in page.frames if f.url.startswith(src))
    assert new.evaluate("window.__marker") is None  # a new page, not the old one


def workspace_data(server: JupyterProcess) -> Any:
    request = urllib.request.Request(
        f"{server.url}lab/api/workspaces/default",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_stream_dropped_by_a_server_restart_resumes_with_no_gap(tmp_path: Path) -> None:
    sync_api = playwright_api()
    expect = sync_api.expect
    first = JupyterProcess(tmp_path, app="jupyterlab")
    first.__enter__()
    try:
        steps = ["for i in $(seq 1 500); do echo line-$i; done; echo batch-done; sleep 300"]
        build = create(first, {"name": "long-one", "steps": steps})
        with lab_page(sync_api, first, height=900) as page:
            panel = open_lab(page, first, expect)
            panel.locator(".jp-AgentBuild-item", has_text="long-one").click()
            view = view_of(page, build)
            expect(view.locator(".jp-AgentBuild-rows")).to_contain_text(
                "batch-done", timeout=30_000
            )
            seen = int(view.get_attribute("data-last-seq") or 0)
            wait_stored(first, build["id"], seen)
            # the server dies (no graceful shutdown that would end the build and its
            # stream cleanly): the stream drops mid-build
            assert first.proc is not None
            first.proc.kill()
            first.proc.wait(30)
            expect(view).to_have_attribute("data-stream", "waiting", timeout=30_000)
            # the same server comes back on the same port (same database, same token)
            second = JupyterProcess(tmp_path, app="jupyterlab")
            second.port, second.url, second.token = first.port, first.url, first.token
            with second:
                header = view.locator(".jp-AgentBuild-viewHeader")
                expect(header.locator("[data-status=interrupted]")).to_be_visible(timeout=60_000)
                expect(view).to_have_attribute("data-stream", "done", timeout=30_000)
                assert int(view.get_attribute("data-connections") or 0) >= 2
                entries = all_entries(second, build["id"])
                lines = [e for e in entries if e["kind"] == "log"]
                assert entries[-1]["data"]["status"] == "interrupted"
                # every entry once: the terminal one came through the resumed stream
                assert view.get_attribute("data-gaps") == "0"
                assert view.get_attribute("data-last-seq") == str(entries[-1]["seq"])
                assert view.get_attribute("data-lines") == str(len(lines)) == "501"
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.__exit__(None, None, None)


def wait_stored(server: JupyterProcess, build_id: str, seq: int) -> None:
    """Until the server has stored entry ``seq`` (a crash then loses nothing)."""
    deadline = time.monotonic() + 30
    while api_call(server, "GET", f"builds/{build_id}")["last_seq"] < seq:
        assert time.monotonic() < deadline, f"entry {seq} was never stored"
        time.sleep(0.1)


def all_entries(server: JupyterProcess, build_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api_call(server, "GET", f"builds/{build_id}/logs?after={after}&limit=10000")
        out.extend(page["entries"])
        if not page["entries"] or page["done"]:
            return out
        after = page["entries"][-1]["seq"]


def test_missing_server_extension_is_said_plainly(tmp_path: Path) -> None:
    """JupyterLab with the labextension but without the server extension: the panel says
    what is missing, instead of a JSON parse error."""
    sync_api = playwright_api()
    expect = sync_api.expect
    config = tmp_path / ".config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    disabled = {"ServerApp": {"jpserver_extensions": {"jupyter_agentbuild": False}}}
    (config / "jupyter_server_config.json").write_text(json.dumps(disabled))
    (tmp_path / "notebooks").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
        f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path / 'notebooks'}",
    ]  # fmt: skip
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:  # wait for the server: no polling
            log.append(line)
            assert "jupyter_agentbuild | extension was successfully" not in line
            if f"127.0.0.1:{port}/lab" in line:
                break
        else:
            raise AssertionError("JupyterLab did not start:\n" + "".join(log[-30:]))
        threading.Thread(target=lambda: [None for _ in proc.stderr or []], daemon=True).start()
        server = JupyterProcess(tmp_path)  # only its url and token, for open_lab
        server.url, server.token = f"http://127.0.0.1:{port}/", token
        with lab_page(sync_api, server, height=700) as page:
            panel = open_lab(page, server, expect)
            message = panel.locator(".jp-AgentBuild-message")
            expect(message).to_contain_text(
                "jupyter_agentbuild server extension is not running", timeout=30_000
            )
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_notebook_widget_opens_the_build_tab(lab: JupyterProcess) -> None:
    """From a ``%%agentbuild`` cell's widget, its context menu opens the build's tab."""
    sync_api = playwright_api()
    expect = sync_api.expect
    cells = ["%load_ext jupyter_agentbuild", "%%agentbuild --name from-notebook\necho hi-from-nb"]
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
             "execution_count": None}
            for src in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    (lab.root / "notebooks" / "nb.ipynb").write_text(json.dumps(notebook))
    with lab_page(sync_api, lab, height=900) as page:
        page.goto(f"{lab.url}lab/tree/nb.ipynb?token={lab.token}")
        cell = page.locator(".jp-Notebook .jp-Cell")
        expect(cell.nth(1)).to_be_visible(timeout=60_000)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        expect(idle).to_have_count(1, timeout=60_000)
        prompt = cell.nth(0).locator(".jp-InputPrompt")
        for attempt in range(3):  # a run issued before the kernel's socket opens is dropped
            _accept_dialogs(page)
            cell.nth(0).locator(".cm-content").click()
            page.keyboard.press("Shift+Enter")
            try:
                expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=15_000)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        page.keyboard.press("Shift+Enter")
        widget = cell.nth(1).locator(".agentbuild-build")
        expect(widget.locator(".agentbuild-status")).to_contain_text("succeeded", timeout=60_000)
        widget.locator(".agentbuild-status").click(button="right")
        page.locator(".lm-Menu-item", has_text="Open Build in a Tab").click()
        view = page.locator(".jp-AgentBuild-view:visible")
        expect(view.locator(".jp-AgentBuild-headerName")).to_have_text(
            "from-notebook", timeout=30_000
        )
        expect(view.locator(".jp-AgentBuild-rows")).to_contain_text("hi-from-nb")
