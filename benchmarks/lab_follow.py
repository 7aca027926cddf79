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

    python benchmarks/lab_follow.py [--lines N] [--keys K] [--json out.json] [--trace t.json]

``--trace`` saves Chromium's performance trace of the follow phase (open it in the
DevTools' Performance panel): where the page's main thread spends each long task.

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
  window.__bench = { phase: 'idle', keys: { idle: [], follow: [] }, nodes: [], rows: [],
                     longtasks: { idle: [], follow: [] } };
  document.addEventListener('keydown', event => {
    // from the event's creation (so time spent queued behind other work counts)
    const start = Math.min(event.timeStamp, performance.now());
    const phase = window.__bench.phase;
    requestAnimationFrame(() => setTimeout(() => {
      window.__bench.keys[phase].push(performance.now() - start);
    }, 0));
  }, true);
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) {
      window.__bench.longtasks[window.__bench.phase].push(entry.duration);
    }
  }).observe({ type: 'longtask', buffered: false });
  window.__benchTimer = setInterval(() => {
    window.__bench.nodes.push(document.getElementsByTagName('*').length);
    window.__bench.rows.push(document.querySelectorAll('.jp-AgentBuild-row').length);
  }, 250);
}
"""


#: What a trace records: tasks, scripts, GC, style/layout/paint (no screenshots: small).
TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8",
    "v8.execute",
    "disabled-by-default-v8.gc",
    "blink",
    "toplevel",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(lines: int, keys: int, trace: Path | None = None) -> dict[str, Any]:
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
            page.evaluate(PROBE)
            editor.click()
            # the baseline, in the same run on the same machine: typing with no build
            for _ in range(keys):
                page.keyboard.type("x", delay=0)
                page.wait_for_timeout(80)
            page.evaluate("() => { window.__bench.phase = 'follow'; }")
            if trace is not None:
                browser.start_tracing(page=page, path=str(trace), categories=TRACE_CATEGORIES)
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
            if trace is not None:
                browser.stop_tracing()
            bench = page.evaluate(
                "() => { clearInterval(window.__benchTimer); return window.__bench; }"
            )
            shown = int(view.get_attribute("data-lines") or 0)
            gaps = int(view.get_attribute("data-gaps") or 0)
            browser.close()

    def keys_summary(values: list[float]) -> dict[str, float]:
        return {
            "count": len(values),
            "p50": round(statistics.median(values), 1),
            "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1),
        }

    def longtask_summary(values: list[float]) -> dict[str, float]:
        return {"count": len(values), "total_ms": round(sum(values)),
                "max_ms": round(max(values, default=0))}  # fmt: skip

    return {
        "lines": lines,
        "lines_shown": shown,
        "gaps": gaps,
        "seconds": round(seconds, 1),
        "dom_nodes_max": max(bench["nodes"]),
        "log_rows_max": max(bench["rows"]),
        "keypress_to_paint_ms": {
            "idle": keys_summary(bench["keys"]["idle"]),
            "follow": keys_summary(bench["keys"]["follow"]),
        },
        "main_thread_long_tasks": {
            "idle": longtask_summary(bench["longtasks"]["idle"]),
            "follow": longtask_summary(bench["longtasks"]["follow"]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100, help="at least this many keypresses")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--trace", type=Path, help="save the follow phase's Chromium trace")
    args = parser.parse_args()
    result = run(args.lines, args.keys, args.trace)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
