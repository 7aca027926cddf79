"""What the benchmarks share: a real `jupyter server` subprocess and a peak-RSS sampler.

Each benchmark runs the server as its own process so that its RSS and CPU are the
server's alone, on a fresh SQLite file and fresh Jupyter dirs under a temp directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterServer:
    """`jupyter server` with the extension, answering on 127.0.0.1 with a fixed token."""

    def __init__(
        self,
        tmp: Path,
        token: str,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.tmp, self.token, self.port = tmp, token, free_port()
        (tmp / "root").mkdir(exist_ok=True)
        self.log = open(tmp / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={tmp / 'root'}",
                f"--IdentityProvider.token={token}", "--log-level=WARN",
                f"--AgentBuild.db_url=sqlite+aiosqlite:///{tmp / 'bench.db'}",
                f"--AgentBuild.workspace_root={tmp / 'sandboxes'}",
                f"--ArtifactService.root={tmp / 'artifacts'}",
                *extra_args,
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_DATA_DIR": str(tmp / "data"), **(env or {})},
        )  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                self.api("GET", "builds")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((tmp / "server.log").read_text()) from None
                time.sleep(0.1)  # waiting for another process to listen: nothing to await

    def api(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        """A JSON call to ``agentbuild/api/{path}`` with the token."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/agentbuild/api/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class RssSampler:
    """Peak RSS of the server while the block runs (every 10 ms), and its growth."""

    def __init__(self, server: JupyterServer) -> None:
        self.server, self._stop = server, threading.Event()
        self.base = self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.server.rss())

    def __enter__(self) -> RssSampler:
        self.base = self.peak = self.server.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.server.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base
