"""The ``AgentBuild`` server extension: all configuration, wiring and lifecycle.

``c.AgentBuild.*`` traits are the one source of configuration (lessons rule 9);
environment variables are fallbacks for deployments. ``initialize_settings``
builds objects without I/O; the start hook migrates the database and starts the
runner; the stop hook flushes logs, stops sandboxes and disposes the engine.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, Unicode, default

from .handlers.base import NotFoundHandler
from .handlers.builds import BuildHandler, BuildsHandler, CancelHandler, LogsHandler
from .handlers.stream import StreamHandler
from .identity import server_user
from .providers import default_provider
from .runner import Runner, RunnerConfig
from .sandbox.base import SandboxProvider
from .sandbox.local import LocalSandboxProvider
from .service import BuildService, ServiceConfig
from .store.engine import redact_url
from .store.repository import Store

BUILD_ID = r"(?P<build_id>[A-Za-z0-9_-]{1,64})"


@dataclass
class AgentBuildState:
    """What handlers reach through ``settings["agentbuild"]``."""

    service: BuildService
    runner: Runner
    store: Store
    personal_owner: str


class AgentBuild(ExtensionApp):
    """Run sandboxed builds from Jupyter, with live logs, artifacts and previews."""

    name = "jupyter_agentbuild"
    load_other_extensions = True

    db_url = Unicode(
        help="""SQLAlchemy URL of the build database. Default: a SQLite file (WAL mode)
        in the Jupyter data dir. Use postgresql+asyncpg://... to share builds, quotas and live
        logs between servers. Env fallback: AGENTBUILD_DB_URL.""",
    ).tag(config=True)

    @default("db_url")
    def _db_url_default(self) -> str:
        env = os.environ.get("AGENTBUILD_DB_URL")
        if env:
            return env
        return f"sqlite+aiosqlite:///{Path(jupyter_data_dir()) / 'agentbuild' / 'agentbuild.db'}"

    provider = Enum(
        ["auto", "local", "e2b"],
        help="""Sandbox provider for builds that do not name one. 'local' runs steps as local
        processes; 'e2b' uses E2B cloud sandboxes and needs a real e2b_api_key; 'auto' (default)
        uses E2B only when the key looks real, else local. Env fallback: AGENTBUILD_PROVIDER.""",
    ).tag(config=True)

    @default("provider")
    def _provider_default(self) -> str:
        return os.environ.get("AGENTBUILD_PROVIDER", "auto")

    e2b_api_key = Unicode(
        None,
        allow_none=True,
        help="E2B API key (never logged or returned). Default None: env E2B_API_KEY.",
    ).tag(config=True)

    @default("e2b_api_key")
    def _e2b_key_default(self) -> str | None:
        return os.environ.get("E2B_API_KEY")

    workspace_root = Unicode(
        help="""Directory holding one sub-directory per local sandbox. Default:
        <jupyter data dir>/agentbuild/sandboxes. Env fallback: AGENTBUILD_WORKSPACE_ROOT.""",
    ).tag(config=True)

    @default("workspace_root")
    def _workspace_root_default(self) -> str:
        env = os.environ.get("AGENTBUILD_WORKSPACE_ROOT")
        return env or str(Path(jupyter_data_dir()) / "agentbuild" / "sandboxes")

    default_timeout = Float(3600.0, help="Build timeout in seconds when the spec sets none.").tag(
        config=True
    )
    max_concurrent_builds = Int(
        4, help="Builds one owner may run at once; more wait in 'queued'."
    ).tag(config=True)
    builds_per_window = Int(
        60, help="Builds one owner may create per rate_window; beyond it POST answers 429."
    ).tag(config=True)
    rate_window = Float(3600.0, help="The rate-limit window, in seconds.").tag(config=True)
    log_flush_interval = Float(
        0.25, help="Longest time (s) a log line waits in memory before it is written."
    ).tag(config=True)
    max_line_bytes = Int(
        65536, help="Longer output lines are split into pieces marked 'continued'."
    ).tag(config=True)
    max_log_buffer = Int(
        100_000, help="Entries held in memory per build before the sandbox reader is paused."
    ).tag(config=True)
    store_retry_timeout = Float(
        60.0,
        help="How long (s) writes to an unavailable database are retried before a build fails.",
    ).tag(config=True)
    kill_grace = Float(5.0, help="Seconds between SIGTERM and SIGKILL when stopping a step.").tag(
        config=True
    )
    heartbeat_interval = Float(
        5.0, help="Seconds between a server's heartbeats for the builds it runs."
    ).tag(config=True)
    stale_after = Float(
        30.0, help="A build whose server has not beaten for this long is marked interrupted."
    ).tag(config=True)
    owner_name = Unicode(
        None,
        allow_none=True,
        help="""Owner of every build on a personal server (jupyter_server's own identity
        providers). Default None: the server's OS user. Ignored with JupyterHub or a custom
        IdentityProvider, where the owner is the authenticated username.""",
    ).tag(config=True)
    export_kernel_env = Bool(
        True,
        help="Export JPY_AGENTBUILD_URL/TOKEN to kernels so the notebook client finds the server.",
    ).tag(config=True)

    state: AgentBuildState | None = None

    @property
    def _server(self) -> Any:
        assert self.serverapp is not None, "the extension is not linked to a server"
        return self.serverapp

    def initialize_settings(self) -> None:
        """Build the object graph; no I/O happens here."""
        available = {"local"}
        chosen = default_provider(self.provider, self.e2b_api_key, available)
        store = Store.lazy(self.db_url)
        providers: dict[str, SandboxProvider] = {
            "local": LocalSandboxProvider(
                Path(self.workspace_root),
                max_line_bytes=self.max_line_bytes,
                kill_grace=self.kill_grace,
            )
        }
        runner = Runner(
            store,
            providers,
            RunnerConfig(
                default_timeout=self.default_timeout,
                max_concurrent_builds=self.max_concurrent_builds,
                log_flush_interval=self.log_flush_interval,
                max_log_buffer=self.max_log_buffer,
                store_retry_timeout=self.store_retry_timeout,
                heartbeat_interval=self.heartbeat_interval,
                stale_after=self.stale_after,
                shutdown_timeout=max(self.kill_grace * 2, 10.0),
            ),
            on_activity=self._record_activity,
        )
        service = BuildService(
            store,
            runner,
            ServiceConfig(
                root_dir=Path(self._server.root_dir),
                default_provider=chosen,
                available_providers=frozenset(available),
                e2b_api_key=self.e2b_api_key,
                builds_per_window=self.builds_per_window,
                rate_window=self.rate_window,
            ),
        )
        self.state = AgentBuildState(
            service=service,
            runner=runner,
            store=store,
            personal_owner=self.owner_name or server_user(),
        )
        self.settings.update({"agentbuild": self.state})

    def initialize_handlers(self) -> None:
        api = "agentbuild/api/builds"
        self.handlers.extend(
            [
                (rf"/{api}", BuildsHandler),
                (rf"/{api}/{BUILD_ID}", BuildHandler),
                (rf"/{api}/{BUILD_ID}/cancel", CancelHandler),
                (rf"/{api}/{BUILD_ID}/logs", LogsHandler),
                (rf"/{api}/{BUILD_ID}/stream", StreamHandler),
                (r"/agentbuild/(.*)", NotFoundHandler),
            ]
        )

    def _record_activity(self) -> None:
        """A running build is server activity, so idle cullers leave the server alone."""
        times = self._server.web_app.settings.setdefault("last_activity_times", {})
        times["agentbuild"] = datetime.now(UTC)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        assert self.state is not None
        service = self.state.service
        self.log.info("agentbuild: database %s", redact_url(self.db_url))
        try:
            await self.state.store.connect()
            await self.state.runner.start()
        except Exception as exc:
            service.startup_error = f"{type(exc).__name__}: {exc}"
            self.log.error("agentbuild: could not start: %s", service.startup_error)
        finally:
            service.ready.set()
        if self.export_kernel_env:
            self._export_kernel_env()

    def _export_kernel_env(self) -> None:
        """Kernels inherit the server's environment: tell them where the API is."""
        server = self._server
        url = server.connection_url
        if not url.endswith("/"):
            url += "/"
        os.environ["JPY_AGENTBUILD_URL"] = url
        os.environ["JPY_AGENTBUILD_TOKEN"] = server.identity_provider.token or ""

    async def stop_extension(self) -> None:
        if self.state is None:
            return
        try:
            await asyncio.wait_for(self.state.runner.shutdown(), timeout=60)
        finally:
            await self.state.store.dispose()
