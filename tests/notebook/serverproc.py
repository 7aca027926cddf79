"""A Jupyter server (or JupyterLab) in a subprocess, for the browser test and the benchmark."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

READY = "jupyter_agentbuild | extension was successfully started"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_stderr_line(
    proc: subprocess.Popen[str], marker: str, log: list[str], what: str, *, keep: int
) -> None:
    """Block until ``proc`` writes ``marker`` to stderr (an event, not a poll), then keep its
    last ``keep`` stderr lines in ``log`` from a thread: an undrained pipe would fill and
    stall the process. Raises with the log's tail if ``proc`` exits first."""
    assert proc.stderr is not None
    stderr = proc.stderr
    for line in stderr:
        log.append(line)
        if marker in line:
            break
    else:
        raise RuntimeError(f"{what} stopped before it was ready:\n" + "".join(log[-60:]))

    def drain() -> None:
        for line in stderr:
            log.append(line)
            del log[:-keep]

    threading.Thread(target=drain, daemon=True).start()


class JupyterProcess:
    """``python -m jupyter_server`` (or ``jupyterlab``) on a free port, with its own root,
    config, database and sandboxes under ``root``. Use as a context manager."""

    def __init__(self, root: Path, app: str = "jupyter_server") -> None:
        self.root = root
        self.app = app
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def __enter__(self) -> JupyterProcess:
        config = self.root / ".config"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        # No "news" pop-up over the notebook in screenshots.
        disabled = {"@jupyterlab/apputils-extension:announcements": True}
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": disabled})
        )
        data = self.root / ".data"
        cmd = [
            sys.executable, "-m", self.app, "--no-browser", "--allow-root", "--ip=127.0.0.1",
            f"--port={self.port}", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root / 'notebooks'}",
            f"--AgentBuild.db_url=sqlite+aiosqlite:///{data / 'agentbuild.db'}",
            f"--AgentBuild.workspace_root={data / 'sandboxes'}",
            "--log-level=DEBUG",
        ]  # fmt: skip
        (self.root / "notebooks").mkdir(exist_ok=True)
        data.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(self.root / ".runtime"),
        }
        for var in (
            "AGENTBUILD_URL",
            "AGENTBUILD_TOKEN",
            "JPY_AGENTBUILD_URL",
            "JPY_AGENTBUILD_TOKEN",
        ):
            env.pop(var, None)
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        wait_for_stderr_line(self.proc, READY, self.log, "the server", keep=2000)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
