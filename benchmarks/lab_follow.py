"""Benchmark: the JupyterLab build tab following a build that prints N lines (default
1,000,000), measured in Debian's Chromium against a real JupyterLab with the extension.

The build tab is open beside a notebook and follows the log (its windowed view renders only
the rows on screen); meanwhile the benchmark types into a notebook cell and measures, in the
page, each keypress's time to the next painted frame. Reported:

- ``dom_nodes_max``: the whole page's element count, sampled while the build streams (the
  log's rows are windowed, so it stays bounded whatever N);
- ``log_rows_max``: the log view's rendered rows at most;
- ``keypress_to_paint_ms``: p50 / p95 / max over the keypresses typed while following;
- ``lines_shown`` and ``seconds``: lines the tab received and the time until the build ended.

    python benchmarks/lab_follow.py [--lines N] [--keys K] [--json out.json]

Needs Playwright and /usr/bin/chromium; run it with the Python whose JupyterLab has the
extension's labextension installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.notebook.serverproc import JupyterProcess  # noqa: E402
from tests.notebook.test_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.notebook.test_panel import create  # noqa: E402

NOTEBOOK = {
    "cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": [],
               "execution_count": None}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}  # fmt: skip

#: In the page: time from each keydown to the frame after it was painted, and samples of
#: the DOM size; both read back at the end.
PROBE = """
() => {
  window.__bench = { keys: [], nodes: [], rows: [] };
  document.addEventListener('keydown', event => {
    const start = performance.now();
    requestAnimationFrame(() => setTimeout(() => {
      window.__bench.keys.push(performance.now() - start);
    }, 0));
  }, true);
  window.__benchTimer = setInterval(() => {
    window.__bench.nodes.push(document.getElementsByTagName('*').length);
    window.__bench.rows.push(document.querySelectorAll('.jp-AgentBuild-row').length);
  }, 250);
}
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(lines: int, keys: int) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp, JupyterProcess(Path(tmp), app="jupyterlab") as lab:
        (lab.root / "notebooks" / "bench.ipynb").write_text(json.dumps(NOTEBOOK))
        page_config = lab.root / ".config" / "labconfig" / "page_config.json"
        config = json.loads(page_config.read_text())
        page_config.write_text(json.dumps({**config, "exposeAppInBrowser": True}))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{lab.url}lab/tree/bench.ipynb?token={lab.token}")
            editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            expect(editor).to_be_visible(timeout=120_000)
            # seq prints the lines as fast as the sandbox's pipe takes them
            build = create(lab, {"name": "million", "steps": [f"seq -f 'line %g' 1 {lines}"]})
            started = time.monotonic()
            page.evaluate(
                "([id]) => window.jupyterapp.commands.execute("
                "'agentbuild:open', {id, mode: 'split-right', activate: false})",
                [build["id"]],
            )
            view = page.locator(f".jp-AgentBuild-view[data-build-id='{build['id']}']")
            expect(view).to_be_visible(timeout=60_000)
            page.evaluate(PROBE)
            editor.click()
            typed = 0
            # type while the tab follows, until the build has ended (at least ``keys``)
            while typed < keys or view.get_attribute("data-stream") != "done":
                page.keyboard.type("x", delay=0)
                typed += 1
                page.wait_for_timeout(80)
                if typed % 50 == 0:
                    page.keyboard.press("Enter")
                if time.monotonic() - started > 3600:
                    raise TimeoutError("the build did not end within an hour")
            seconds = time.monotonic() - started
            bench = page.evaluate(
                "() => { clearInterval(window.__benchTimer); return window.__bench; }"
            )
            shown = int(view.get_attribute("data-lines") or 0)
            gaps = int(view.get_attribute("data-gaps") or 0)
            browser.close()
    key_ms = bench["keys"]
    return {
        "lines": lines,
        "lines_shown": shown,
        "gaps": gaps,
        "seconds": round(seconds, 1),
        "dom_nodes_max": max(bench["nodes"]),
        "log_rows_max": max(bench["rows"]),
        "keypresses": len(key_ms),
        "keypress_to_paint_ms": {
            "p50": round(statistics.median(key_ms), 1),
            "p95": round(percentile(key_ms, 95), 1),
            "max": round(max(key_ms), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100, help="at least this many keypresses")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.lines, args.keys)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
