"""A real `jupyter server` process: kill -9 and restart, and SIGTERM, lose nothing accepted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.notebook.serverproc import free_port
from tests.sandbox.helpers import group_members

TOKEN = "lifecycle-test-token"


class ServerProcess:
    def __init__(
        self,
        tmp: Path,
        db_url: str | None = None,
        app: str = "jupyter_server",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        self.app = app
        self.extra_args = extra_args
        self.db_url = db_url or f"sqlite+aiosqlite:///{tmp / 'ab.db'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        #: The HTTP status of the last :meth:`call` (its body is what it returns).
        self.last_status = 0

    def start(self) -> None:
        self.port = free_port()
        root = self.tmp / "root"
        root.mkdir(exist_ok=True)
        args = [
            sys.executable,
            "-m",
            self.app,
            "--allow-root",
            "--no-browser",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={TOKEN}",
            f"--AgentBuild.db_url={self.db_url}",
            f"--AgentBuild.workspace_root={self.tmp / 'sandboxes'}",
            "--AgentBuild.log_flush_interval=0.05",
            "--AgentBuild.heartbeat_interval=0.5",
            *self.extra_args,
        ]
        env = {**os.environ, "JUPYTER_DATA_DIR": str(self.tmp / "data")}
        log = open(self.tmp / f"server-{self.port}.log", "wb")  # noqa: SIM115
        # stdin not a terminal, as under JupyterHub or a service manager
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / f"server-{self.port}.log").read_text()
            try:
                self.call("GET", "builds")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)  # polling for a process to listen: no event to await
        raise AssertionError("the server did not start")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = (
            json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        )
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/agentbuild/api/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.last_status = resp.status
            return json.loads(resp.read() or b"null")

    def logs(self, build_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.call("GET", f"builds/{build_id}/logs?after={after}&limit=10000")
            out.extend(page["entries"])
            if not page["entries"]:
                return out
            after = page["entries"][-1]["seq"]

    def wait_for_text(self, build_id: str, text: str, timeout: float = 30) -> None:
        """Wait until a line is in the store (the Build's ``last_seq`` counts stored entries)."""
        deadline = time.monotonic() + timeout
        seq = None
        while time.monotonic() < deadline:
            if seq is None:
                page = self.call("GET", f"builds/{build_id}/logs?limit=10000")
                seq = next((e["seq"] for e in page["entries"] if e.get("text") == text), None)
            if seq is not None and self.call("GET", f"builds/{build_id}")["last_seq"] >= seq:
                return
            time.sleep(0.05)  # polling the public API of another process
        raise AssertionError(f"{text!r} never reached the store")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path)
    srv.start()
    yield srv
    srv.stop()


#: Plain processes of the server's user: what a dead server leaves is reaped by the next.
UNISOLATED = ("--AgentBuild.allow_unisolated=True", "--AgentBuild.provider=process")


def test_kill_9_then_restart_marks_interrupted_and_reaps(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, extra_args=UNISOLATED)
    server.start()
    try:
        _kill_9_then_restart(server)
    finally:
        server.stop()


def _kill_9_then_restart(server: ServerProcess) -> None:
    build = server.call(
        "POST", "builds", {"steps": ["echo $$ > /dev/null; echo ready; sleep 1000"]}
    )
    server.wait_for_text(build["id"], "ready")
    running = server.call("GET", f"builds/{build['id']}")
    assert running["status"] == "running"
    sandboxes = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "sleep 1000" in " ".join(p.info["cmdline"] or [])
    ]
    assert sandboxes
    pgid = os.getpgid(sandboxes[0].pid)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert group_members(pgid), "the sandbox outlives a kill -9 of its server"
    server.start()
    final = server.call("GET", f"builds/{build['id']}")
    assert final["status"] == "interrupted" and final["finished_at"]
    entries = server.logs(build["id"])
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert "ready" in [e.get("text") for e in entries]
    assert entries[-1]["data"]["status"] == "interrupted"
    assert group_members(pgid) == []


def test_sigterm_stores_every_accepted_line_and_interrupts(server: ServerProcess) -> None:
    build = server.call(
        "POST", "builds", {"steps": ["i=0; while true; do echo line-$i; i=$((i+1)); done"]}
    )
    server.wait_for_text(build["id"], "line-1000")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) is not None
    server.start()
    final = server.call("GET", f"builds/{build['id']}")
    assert final["status"] == "interrupted"
    entries = server.logs(build["id"])
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    lines = [e["text"] for e in entries if e["kind"] == "log"]
    assert lines == [f"line-{i}" for i in range(len(lines))]
    assert len(lines) > 1000
    statuses = [e["data"]["status"] for e in entries if e.get("type") == "status"]
    assert statuses[-1] == "interrupted" and statuses.count("interrupted") == 1
    assert entries[-1]["type"] == "status"


def test_pip_install_enables_the_extension_in_jupyter_lab(tmp_path: Path) -> None:
    """The shipped jupyter-config JSON enables the extension; `jupyter lab` serves the API."""
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    output = listed.stdout + listed.stderr
    assert "jupyter_agentbuild" in output and "enabled" in output
    lab = ServerProcess(tmp_path, app="jupyterlab")
    lab.start()
    try:
        assert lab.call("GET", "builds") == {"builds": [], "next": None}
    finally:
        lab.stop()
