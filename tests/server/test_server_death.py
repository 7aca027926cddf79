"""A server that ends, however it ends, takes its running builds and previews with it.

A real ``jupyter server`` process (stdin not a terminal, as under JupyterHub's spawner or a
service manager) runs a build and a preview; then it gets SIGINT or SIGKILL, or is shut down
through jupyter_server's API. Within 10 s no
process of either may remain on the host (found by markers in their command lines)."""

from __future__ import annotations

import secrets
import shlex
import signal
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.server.test_lifecycle import TOKEN, UNISOLATED, ServerProcess

PY = shlex.quote(sys.executable)


def _marked(*markers: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if any(m in line for m in markers) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(line)
        except psutil.Error:
            continue
    return found


def _wait_preview(server: ServerProcess, build_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        build = server.call("GET", f"builds/{build_id}")
        if (build["preview"] or {}).get("state") == "ready":
            return
        assert build["status"] in ("queued", "starting", "running", "succeeded"), build
        time.sleep(0.1)  # polling another process's public API: no event to await
    raise AssertionError("the preview never became ready")


def _shutdown(server: ServerProcess) -> None:
    """jupyter_server's own ``POST /api/shutdown``."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/shutdown",
        data=b"",
        method="POST",
        headers={"Authorization": f"token {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status in (200, 202, 204)


@pytest.mark.parametrize(
    ("sig", "provider"),
    [
        (signal.SIGINT, "local"),
        (signal.SIGINT, "process"),
        (signal.SIGKILL, "local"),
        (None, "local"),  # POST /api/shutdown
    ],
)
def test_builds_and_previews_die_with_their_server(
    tmp_path: Path, sig: signal.Signals | None, provider: str
) -> None:
    step_marker = f"agentbuild-step-{secrets.token_hex(6)}"
    preview_marker = f"agentbuild-preview-{secrets.token_hex(6)}"
    extra = UNISOLATED if provider == "process" else ()
    server = ServerProcess(tmp_path, extra_args=extra)
    server.start()
    try:
        running = server.call(
            "POST",
            "builds",
            {"steps": [f"echo READY; bash -c 'sleep 1000; :' {step_marker}"]},
        )
        assert running["provider"] == provider
        previewed = server.call(
            "POST",
            "builds",
            {
                "steps": [f"mkdir {preview_marker}"],
                "preview": {
                    "command": f"exec {PY} -m http.server --bind 127.0.0.1 $PORT "
                    f"--directory {preview_marker}"
                },
            },
        )
        server.wait_for_text(running["id"], "READY")
        _wait_preview(server, previewed["id"])
        deadline = time.monotonic() + 10
        while len(_marked(step_marker, preview_marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the step's sleep may still be starting
        assert len(_marked(step_marker, preview_marker)) >= 2, "both run, seen from the host"
        assert server.proc is not None
        if sig is None:
            _shutdown(server)
        else:
            server.proc.send_signal(sig)
        server.proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _marked(step_marker, preview_marker) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the host's process table
        assert _marked(step_marker, preview_marker) == [], "left behind by the dead server"
        if sig == signal.SIGINT:
            log = next(tmp_path.glob("server-*.log")).read_text(errors="replace")
            assert "received signal" in log, "SIGINT ran the server's stop"
    finally:
        server.stop()
