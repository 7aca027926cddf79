"""A fake E2B control plane: the API the SDK calls outside debug mode, over real HTTP.

It serves what the provider uses (create, connect, kill, set_timeout, list) with the wire
format of the SDK's own generated client models (``e2b.api.client.models``): request
bodies are parsed with their ``from_dict`` and answers built with their ``to_dict``. Each
sandbox it creates is backed by the one :class:`~.fake_envd.FakeEnvd` it is given.

Simplifications, each a limit of a single local envd standing for every VM:

- every sandbox's envd is the same process (the SDK is pointed at it with
  ``E2B_SANDBOX_URL``), so the tests run one live VM at a time; killing a sandbox (or
  its timeout passing) kills the processes started for it and, once no sandbox is left
  running, everything in the VM and the VM's ``/home/user`` and ``/tmp``;
- a killed sandbox's id is refused by the fake envd (as E2B's edge answers for a
  sandbox that is gone); its access token is checked on every envd request;
- templates are not built: any template name is accepted and recorded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn
from e2b.api.client.models import (
    ConnectSandboxV2,
    ListedSandbox,
    NewSandboxV2,
    Sandbox,
    SandboxState,
    SandboxTimeoutRequest,
)
from e2b.api.client.models import Error as ApiError

from .fake_envd import DEFAULT_USER, FakeEnvd, _chown

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ENVD_VERSION = "0.6.4"


@dataclass
class FakeVm:
    """One sandbox as the control plane knows it (what tests assert on)."""

    sandbox_id: str
    template: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    timeout: int
    network: dict[str, Any] | None
    allow_internet_access: bool | None
    envd_access_token: str
    traffic_access_token: str
    started_at: datetime
    end_at: datetime
    state: str = "running"
    #: Every lifetime set for it: at create, by connect, by set_timeout.
    timeouts: list[int] = field(default_factory=list)
    killed_by: str | None = None
    timer: asyncio.TimerHandle | None = None


class FakeE2BApi:
    """The ASGI app and its sandboxes; served by :meth:`start` on 127.0.0.1."""

    def __init__(self, envd: FakeEnvd, api_key: str) -> None:
        self.envd = envd
        self.api_key = api_key
        self.vms: dict[str, FakeVm] = {}
        self.calls: list[tuple[str, str]] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        #: Seconds added to the sandboxes' clock by :meth:`advance`: with ``manual_clock``
        #: their timeouts pass only then (a test's load cannot make one pass early).
        self.manual_clock = False
        self._offset = 0.0
        envd.app.gate = self._gate

    # ---- what the fake envd asks: is this request for a live sandbox, with its token?

    def _gate(self, headers: dict[str, str]) -> str | None:
        sandbox_id = headers.get("e2b-sandbox-id")
        vm = self.vms.get(sandbox_id or "")
        if vm is None or vm.state != "running":
            return f"sandbox {sandbox_id} is not running"
        if headers.get("x-access-token") != vm.envd_access_token:
            return "invalid envd access token"
        return None

    # ---- HTTP

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self._loop = asyncio.get_running_loop()
                self._started.set()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        self.calls.append((method, path))
        if headers.get("x-api-key") != self.api_key:
            status, answer = 401, ApiError(code=401, message="Invalid API key").to_dict()
        else:
            query = parse_qs(scope["query_string"].decode())
            status, answer = self._route(method, path.rstrip("/"), body, query)
        payload = b"" if answer is None else json.dumps(answer).encode()
        response_headers = [(b"content-type", b"application/json")] if payload else []
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    def _route(
        self, method: str, path: str, body: bytes, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        match method, parts:
            case "POST", ["v2", "sandboxes"]:
                return self._create(NewSandboxV2.from_dict(json.loads(body)))
            case "GET", ["v2", "sandboxes"]:
                return self._list(query)
            case "POST", ["v2", "sandboxes", sandbox_id, "connect"]:
                return self._connect(sandbox_id, ConnectSandboxV2.from_dict(json.loads(body)))
            case "DELETE", ["sandboxes", sandbox_id]:
                return self._kill(sandbox_id, "api")
            case "POST", ["sandboxes", sandbox_id, "timeout"]:
                request = SandboxTimeoutRequest.from_dict(json.loads(body))
                return self._set_timeout(sandbox_id, request.timeout)
        return 404, ApiError(code=404, message=f"no route {method} {path}").to_dict()

    # ---- the calls

    def _create(self, body: NewSandboxV2) -> tuple[int, Any]:
        now = datetime.now(UTC)
        timeout = body.timeout if isinstance(body.timeout, int) else 300
        network = body.network.to_dict() if hasattr(body.network, "to_dict") else None
        internet = body.allow_internet_access
        vm = FakeVm(
            sandbox_id="i" + secrets.token_hex(8),
            template=body.template_id,
            metadata=dict(body.metadata) if isinstance(body.metadata, dict) else {},
            env_vars=dict(body.env_vars) if isinstance(body.env_vars, dict) else {},
            timeout=timeout,
            network=network,
            allow_internet_access=internet if isinstance(internet, bool) else None,
            envd_access_token=secrets.token_urlsafe(16),
            traffic_access_token=secrets.token_urlsafe(16),
            started_at=now,
            end_at=now,
        )
        self.vms[vm.sandbox_id] = vm
        # what E2B's orchestrator gives envd's /init: the sandbox's env vars
        self.envd.app.processes.init_envs = dict(vm.env_vars)
        self._set_timeout(vm.sandbox_id, timeout)
        return 201, self._sandbox(vm).to_dict()

    def _sandbox(self, vm: FakeVm) -> Sandbox:
        return Sandbox(
            template_id=vm.template,
            sandbox_id=vm.sandbox_id,
            client_id="fake",
            envd_version=ENVD_VERSION,
            envd_access_token=vm.envd_access_token,
            traffic_access_token=vm.traffic_access_token,
            domain=None,
        )

    def _connect(self, sandbox_id: str, body: ConnectSandboxV2) -> tuple[int, Any]:
        vm = self.vms.get(sandbox_id)
        if vm is None or vm.state != "running":
            return 404, ApiError(code=404, message=f"sandbox {sandbox_id} not found").to_dict()
        if isinstance(body.timeout, int):
            self._set_timeout(sandbox_id, body.timeout)
        return 200, self._sandbox(vm).to_dict()

    def _set_timeout(self, sandbox_id: str, timeout: int) -> tuple[int, Any]:
        vm = self.vms.get(sandbox_id)
        if vm is None or vm.state != "running":
            return 404, ApiError(code=404, message=f"sandbox {sandbox_id} not found").to_dict()
        vm.timeouts.append(timeout)
        vm.end_at = self._now() + timedelta(seconds=timeout)
        if vm.timer is not None:
            vm.timer.cancel()
        assert self._loop is not None
        if not self.manual_clock:
            vm.timer = self._loop.call_later(timeout, self._kill, sandbox_id, "timeout")
        return 204, None

    def _now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def advance(self, seconds: float) -> None:
        """Move the manual clock on and kill the sandboxes whose time is up by then (as
        E2B does at their ``end_at``); returns once that is done."""
        assert self._loop is not None

        def tick() -> None:
            self._offset += seconds
            for vm in list(self.vms.values()):
                if vm.state == "running" and vm.end_at <= self._now():
                    self._kill(vm.sandbox_id, "timeout")

        asyncio.run_coroutine_threadsafe(_call(tick), self._loop).result(10)

    def kill(self, sandbox_id: str, by: str) -> None:
        """Kill a sandbox as E2B would on its own (its timeout, a failure)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._kill, sandbox_id, by)

    def _kill(self, sandbox_id: str, by: str) -> tuple[int, Any]:
        vm = self.vms.get(sandbox_id)
        if vm is None or vm.state != "running":
            return 404, ApiError(code=404, message=f"sandbox {sandbox_id} not found").to_dict()
        vm.state, vm.killed_by = "killed", by
        if vm.timer is not None:
            vm.timer.cancel()
        self.envd.app.processes.kill_sandbox(sandbox_id)
        if not any(other.state == "running" for other in self.vms.values()):
            self.envd.app.processes.kill_all()
            _wipe(self.envd)
        return 204, None

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        wanted: dict[str, str] = {}
        for raw in query.get("metadata", []):
            for key, values in parse_qs(raw).items():
                wanted[unquote(key)] = unquote(values[0])
        states = ",".join(query.get("state", ["running"])).split(",")
        listed = []
        for vm in self.vms.values():
            if vm.state not in states:
                continue
            if any(vm.metadata.get(k) != v for k, v in wanted.items()):
                continue
            listed.append(
                ListedSandbox(
                    template_id=vm.template,
                    sandbox_id=vm.sandbox_id,
                    client_id="fake",
                    started_at=vm.started_at,
                    end_at=vm.end_at,
                    cpu_count=2,
                    memory_mb=512,
                    disk_size_mb=1024,
                    state=SandboxState(vm.state),
                    envd_version=ENVD_VERSION,
                    metadata=vm.metadata,
                ).to_dict()
            )
        return 200, listed

    # ---- serving

    def start(self, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self, lifespan="on", http="h11", ws="none", log_config=None, log_level="warning"
        )
        self._server = server = uvicorn.Server(config)

        def serve() -> None:
            with sock:
                # a server in its own thread, so it needs a loop of its own: not a test
                asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=serve, name="fake-e2b-api", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the fake E2B API did not start")

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._server = self._thread = None

    def running(self) -> list[FakeVm]:
        return [vm for vm in self.vms.values() if vm.state == "running"]


async def _call(function: Callable[[], None]) -> None:
    function()


def _wipe(envd: FakeEnvd) -> None:
    """A VM's disk goes with it: a fresh home and /tmp for the next one."""
    for top in ("home", "tmp"):
        for child in (envd.root / top).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    home = envd.root / "home" / DEFAULT_USER
    home.mkdir()
    _chown([home], DEFAULT_USER)
