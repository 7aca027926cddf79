"""A real JupyterHub in a subprocess: configurable-http-proxy with host routing
(``subdomain_host``), DummyAuthenticator, SimpleLocalProcessSpawner, and the
``agentbuild-previews`` service that routes preview hosts to their owner's server.

configurable-http-proxy comes from npm, pinned by ``tests/hub/package-lock.json``, and is
installed once into a cache directory reused across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.notebook.serverproc import free_port

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("AGENTBUILD_TEST_CACHE", Path.home() / ".cache"))
NPM_CACHE = Path(os.environ.get("AGENTBUILD_TEST_NPM_CACHE", CACHE / "agentbuild-npm"))
READY = "JupyterHub is now running"
SERVICE = "agentbuild-previews"
#: Previews get a registrable domain of their own, a different site from the hub's.
PREVIEW_DOMAIN = "previews.localhost"


def install_proxy() -> Path:
    """configurable-http-proxy as the lockfile pins it; the path of its executable."""
    lock = (HERE / "package-lock.json").read_bytes()
    target = CACHE / "agentbuild-hub-proxy" / hashlib.sha256(lock).hexdigest()[:16]
    chp = target / "node_modules" / ".bin" / "configurable-http-proxy"
    if not chp.exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, target / name)
        subprocess.run(
            ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", str(NPM_CACHE)],
            cwd=target,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return chp


def config(hub: HubProcess, chp: Path) -> str:
    """jupyterhub_config.py: users and their previews get host-routed by the proxy."""
    prefix = f"/services/{SERVICE}/"
    routes_url = f"http://127.0.0.1:{hub.service_port}{prefix}"
    template = f"http://{{label}}.{PREVIEW_DOMAIN}:{hub.port}"
    scopes = ["users:activity!user", "access:servers!server", f"access:services!service={SERVICE}"]
    env_path = os.environ.get("PYTHONPATH", "")
    settings: dict[str, Any] = {
        "ip": "127.0.0.1",
        "port": hub.port,
        "hub_ip": "127.0.0.1",
        "hub_port": hub.hub_port,
        "subdomain_host": f"http://hub.localhost:{hub.port}",
        "db_url": f"sqlite:///{hub.root / 'jupyterhub.sqlite'}",
        "cookie_secret_file": str(hub.root / "cookie_secret"),
        "pid_file": str(hub.root / "jupyterhub.pid"),
    }
    lines = [f"c.JupyterHub.{key} = {value!r}" for key, value in settings.items()]
    lines += [
        "c.JupyterHub.authenticator_class = 'dummy'",
        "c.Authenticator.allowed_users = {'alice', 'bob'}",
        "c.JupyterHub.spawner_class = 'simple'",
        f"c.SimpleLocalProcessSpawner.home_dir_template = {str(hub.root / 'home' / '{username}')!r}",
        f"c.Spawner.args = ['--allow-root', '--AgentBuild.preview_origin_template={template}']",
        f"c.Spawner.environment = {{'AGENTBUILD_HUB_ROUTES_URL': {routes_url!r}}}",
        f"c.Spawner.server_token_scopes = {scopes!r}",
        "c.Spawner.start_timeout = 120",
        "c.Spawner.http_timeout = 120",
        f"c.ConfigurableHTTPProxy.command = [{str(chp)!r}]",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{hub.proxy_api_port}'",
        f"c.ConfigurableHTTPProxy.auth_token = {hub.proxy_token!r}",
        "c.JupyterHub.load_roles = [",
        f"    {{'name': 'user', 'scopes': ['self', 'access:services!service={SERVICE}']}},",
        "    {'name': 'test-admin', 'scopes': ['admin:users', 'admin:servers', 'tokens'],",
        "     'services': ['test-admin']},",
        "]",
        "c.JupyterHub.services = [",
        f"    {{'name': 'test-admin', 'api_token': {hub.admin_token!r}}},",
        f"    {{'name': {SERVICE!r}, 'url': 'http://127.0.0.1:{hub.service_port}',",
        f"     'command': [{sys.executable!r}, '-m', 'jupyter_agentbuild.hub.routes_service',",
        f"                 '--domain', {PREVIEW_DOMAIN!r}, '--sweep-interval', '0.5'],",
        f"     'environment': {{'CONFIGPROXY_AUTH_TOKEN': {hub.proxy_token!r},",
        f"                     'CONFIGPROXY_API_URL': 'http://127.0.0.1:{hub.proxy_api_port}',",
        f"                     'PYTHONPATH': {env_path!r}}}}},",
        "]",
    ]
    return "\n".join(lines) + "\n"


class HubProcess:
    """``python -m jupyterhub`` with its proxy and services, all on free ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.service_port = free_port()
        self.proxy_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def __enter__(self) -> HubProcess:
        chp = install_proxy()
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        cfg = self.root / "jupyterhub_config.py"
        cfg.write_text(config(self, chp))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "AGENTBUILD_"))}
        env["JUPYTER_CONFIG_DIR"] = str(self.root / ".jupyter")  # no user-level config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
            cwd=self.root,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if READY in line:
                break
        else:
            raise RuntimeError("the hub stopped before it was ready:\n" + "".join(self.log[-60:]))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            del self.log[:-4000]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()  # the hub stops the servers, the proxy and the service
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- the hub's REST API, as the admin service --------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.hub_port}/hub/api/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"token {self.admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def spawn(self, user: str) -> None:
        """Start ``user``'s server and return once the hub reports it ready (its progress
        event stream ends with ``ready``)."""
        self.api("POST", f"users/{user}/server")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.hub_port}/hub/api/users/{user}/server/progress",
            headers={"Authorization": f"token {self.admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=180) as response:
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("ready"):
                        return
                    if event.get("failed"):
                        raise RuntimeError(f"{user}'s server failed: {event}")
        raise RuntimeError(f"{user}'s server never got ready:\n" + "".join(self.log[-60:]))

    def token(self, user: str) -> str:
        return str(self.api("POST", f"users/{user}/tokens", {"note": "test"})["token"])

    def routes(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_api_port}/api/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
