"""A real `jupyter server` process: its previews stop with it (SIGTERM) and are reaped
by its successor after a kill -9."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import psutil

from tests.preview.conftest import BACKEND, PREVIEW_COMMAND, port_open
from tests.preview.test_preview_lifecycle import preview_pids
from tests.server.test_lifecycle import UNISOLATED, ServerProcess


def ready_preview(server: ServerProcess) -> tuple[dict[str, Any], int]:
    build = server.call(
        "POST",
        "builds",
        {
            "steps": ["true"],
            "files": {"app.py": BACKEND},
            "preview": {"command": PREVIEW_COMMAND, "path": "/tiny"},
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        build = server.call("GET", f"builds/{build['id']}")
        if build["status"] not in ("queued", "starting", "running"):
            break
        time.sleep(0.05)  # polling the public API of another process
    assert build["status"] == "succeeded" and build["preview"]["state"] == "ready", build
    line = next(
        e["text"]
        for e in server.logs(build["id"])
        if e.get("text", "").startswith("backend listening")
    )
    return build, int(line.rsplit(":", 1)[1])


def test_previews_are_reaped_after_a_crash_and_stop_with_the_server(tmp_path: Path) -> None:
    # plain processes outlive a kill -9 (isolated ones die with it: test_server_death)
    server = ServerProcess(tmp_path, extra_args=UNISOLATED)
    server.start()
    started: list[str] = []
    try:
        crashed, port = ready_preview(server)
        started.append(crashed["id"])
        pids = preview_pids(crashed["id"])
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        assert pids and all(psutil.pid_exists(pid) for pid in pids), "it outlives kill -9"
        assert port_open(port)
        server.start()
        assert preview_pids(crashed["id"]) == [] and not port_open(port)
        record = server.call("GET", f"builds/{crashed['id']}")["preview"]
        assert record["state"] == "failed"
        assert record["reason"] == "the server running the preview stopped"
        assert not (tmp_path / "sandboxes" / crashed["id"]).exists()

        graceful, port = ready_preview(server)
        started.append(graceful["id"])
        assert preview_pids(graceful["id"]) and port_open(port)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) is not None
        assert preview_pids(graceful["id"]) == [] and not port_open(port)
        with sqlite3.connect(tmp_path / "ab.db") as db:
            (stored,) = db.execute(
                "SELECT preview FROM builds WHERE id = ?", (graceful["id"],)
            ).fetchone()
        record = json.loads(stored)
        assert record["state"] == "stopped" and record["reason"] == "the Jupyter server stopped"
    finally:
        server.stop()
        for build_id in started:  # a failed assertion must not leave a preview running
            for pid in preview_pids(build_id):
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
