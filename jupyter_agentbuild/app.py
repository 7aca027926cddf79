"""The ``AgentBuild`` server extension: all configuration, wiring and lifecycle.

``c.AgentBuild.*`` traits are the one source of configuration (lessons rule 9);
environment variables are fallbacks for deployments. ``initialize_settings``
builds objects without I/O; the start hook migrates the database and starts the
runner; the stop hook flushes logs, stops sandboxes and disposes the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_core.paths import (
    jupyter_config_dir,
    jupyter_config_path,
    jupyter_data_dir,
    jupyter_runtime_dir,
)
from jupyter_server.extension.application import ExtensionApp
from sqlalchemy import make_url
from tornado.routing import HostMatches, Rule
from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate

from .artifacts.blobs import LocalArtifactStore
from .artifacts.collect import ArtifactCollector, Limits
from .artifacts.service import ArtifactService, RetentionConfig
from .handlers.artifacts import ArchiveHandler, ArtifactFileHandler, ArtifactsHandler
from .handlers.base import NotFoundHandler
from .handlers.builds import BuildHandler, BuildsHandler, CancelHandler, LogsHandler
from .handlers.contract import ContractHandler
from .handlers.info import InfoHandler
from .handlers.preview import PreviewProxyHandler, PreviewRestartHandler, PreviewStopHandler
from .handlers.preview_origin import OwnOriginHandler
from .handlers.stream import StreamHandler
from .hub.routes_client import HubRoutes
from .identity import server_user
from .preview import PreviewConfig, PreviewManager, UpstreamLimits
from .preview.origin import PreviewOrigins, TemplateError
from .providers import ProviderCatalog, ProviderSettings
from .runner import Runner, RunnerConfig
from .sandbox.isolation import StepLimits, python_prefixes
from .service import BuildService, ServiceConfig
from .spec import MAX_SPEC_BYTES
from .store.artifacts import ArtifactRecords
from .store.engine import redact_url
from .store.repository import Store

BUILD_ID = r"(?P<build_id>[A-Za-z0-9_-]{1,64})"
#: The default preview CSP: scripts, forms, pop-ups, modals and downloads, but an opaque
#: origin (no allow-same-origin), so a preview can never act as Jupyter.
PREVIEW_CSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


@dataclass
class AgentBuildState:
    """What handlers reach through ``settings["agentbuild"]``."""

    service: BuildService
    runner: Runner
    store: Store
    personal_owner: str
    artifacts: ArtifactService | None = None
    previews: PreviewManager | None = None
    #: What the preview proxy adds to every response's Content-Security-Policy.
    preview_csp: str = ""
    preview_max_request_size: int = 1024**3
    #: Largest body of ``POST api/builds`` (413 beyond).
    max_request_bytes: int = 16 * 1024**2
    #: The sandbox providers, what each can do here, which builds may use (info endpoint).
    catalog: ProviderCatalog | None = None
    #: Which host names are previews' own origins, and the URL a client is given.
    preview_origins: PreviewOrigins = PreviewOrigins()


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

    provider = Unicode(
        help="""Sandbox provider for builds that do not name one: 'local' (the default
        without a real E2B key) runs steps in Linux namespaces (bubblewrap); 'e2b' uses E2B
        cloud sandboxes and needs a real e2b_api_key; 'process' runs plain processes (needs
        allow_unisolated); 'auto' (default) uses E2B only when the key looks real, else
        local. Any provider registered in the 'jupyter_agentbuild.providers' entry-point
        group can be named. Env fallback: AGENTBUILD_PROVIDER.""",
    ).tag(config=True)

    @default("provider")
    def _provider_default(self) -> str:
        return os.environ.get("AGENTBUILD_PROVIDER", "auto")

    allowed_providers = List(
        Unicode(),
        help="""The providers builds may use (default: every registered one). A build that
        names another is refused (400, error.code 'provider_not_allowed') and nothing runs;
        e.g. ['e2b'] keeps every build off this host.""",
    ).tag(config=True)
    allow_unisolated = Bool(
        False,
        help="""Allow builds to run as plain processes of the server's user, which can read
        everything the server can (its token, cookie secret, database, other builds): the
        'process' provider, and 'local' where Linux namespaces cannot be made. Default False:
        such builds are refused with the reason.""",
    ).tag(config=True)
    sandbox_max_processes = Int(
        2048,
        help="""Processes per user an isolated step may have (RLIMIT_NPROC; the kernel does
        not enforce it for root). 0: no limit.""",
    ).tag(config=True)
    sandbox_max_memory = Int(
        8 * 1024**3,
        help="Bytes of memory one process of an isolated step may use (RLIMIT_DATA). 0: no limit.",
    ).tag(config=True)
    sandbox_max_file_size = Int(
        4 * 1024**3,
        help="Largest file (bytes) an isolated step may write (RLIMIT_FSIZE). 0: no limit.",
    ).tag(config=True)
    sandbox_hidden_paths = List(
        Unicode(),
        help="""More directories isolated builds must not see, besides those always hidden
        (the home dirs, the Jupyter data, runtime and config dirs, the server root, the
        sandboxes, the database's directory, the artifact store).""",
    ).tag(config=True)
    sandbox_readonly_paths = List(
        Unicode(),
        help="""Directories inside hidden ones that isolated builds get back read-only
        (e.g. a toolchain in the home dir). The server's Python installation always is.""",
    ).tag(config=True)

    e2b_api_key = Unicode(
        None,
        allow_none=True,
        help="E2B API key (never logged or returned). Default None: env E2B_API_KEY.",
    ).tag(config=True)

    @default("e2b_api_key")
    def _e2b_key_default(self) -> str | None:
        return os.environ.get("E2B_API_KEY")

    e2b_template = Unicode(
        None,
        allow_none=True,
        help="""E2B sandbox template for builds (default None: the SDK's code-interpreter
        template). Env fallback: AGENTBUILD_E2B_TEMPLATE.""",
    ).tag(config=True)

    @default("e2b_template")
    def _e2b_template_default(self) -> str | None:
        return os.environ.get("AGENTBUILD_E2B_TEMPLATE")

    e2b_sandbox_timeout = Int(
        3600,
        help="""Seconds E2B keeps a sandbox alive at most (its own timeout, a last resort
        behind ours): a build's VM is killed when the build, or its preview, ends.""",
    ).tag(config=True)

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
    max_request_bytes = Int(
        16 * 1024**2,
        help="""Largest request body of POST api/builds, in bytes (413 request_too_large
        beyond; the body is never held whole when larger).""",
    ).tag(config=True)
    max_spec_bytes = Int(
        MAX_SPEC_BYTES,
        help="""Largest build spec stored with a build (its JSON, in bytes; 413
        spec_too_large beyond). Lists of builds show a summary of each spec.""",
    ).tag(config=True)
    log_flush_interval = Float(
        0.25, help="Longest time (s) a log line waits in memory before it is written."
    ).tag(config=True)
    max_line_bytes = Int(
        65536, help="Longer output lines are split into pieces marked 'continued'."
    ).tag(config=True)
    max_log_buffer = Int(
        100_000, help="Entries held in memory per build before the sandbox reader is paused."
    ).tag(config=True)
    max_log_bytes = Int(
        256 * 1024**2,
        help="""Bytes of log text one build may store (default 256 MiB). Beyond it, output
        is dropped, one 'log_truncated' event says so, and the build goes on. 0: no cap.""",
    ).tag(config=True)
    max_page_bytes = Int(
        2 * 1024**2,
        help="""Bytes of entries in one REST log page or WebSocket frame (default 2 MiB):
        a page stops early there ('limit' still caps its entries; one entry always fits).""",
    ).tag(config=True)
    store_retry_timeout = Float(
        60.0,
        help="How long (s) writes to an unavailable database are retried before a build fails.",
    ).tag(config=True)
    kill_grace = Float(5.0, help="Seconds between SIGTERM and SIGKILL when stopping a step.").tag(
        config=True
    )
    heartbeat_interval = Float(
        5.0, help="Seconds between a server's heartbeats for the builds and previews it runs."
    ).tag(config=True)
    stale_after = Float(
        30.0,
        help="A build whose server has not beaten for this long is marked interrupted; a "
        "preview whose server has not for this long can be stopped from another server.",
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

    preview_idle_timeout = Float(
        1800.0,
        help="""Seconds without proxied traffic (requests, response data, WebSocket messages)
        after which a preview is stopped and its sandbox destroyed (default 1800). 0: never.""",
    ).tag(config=True)
    preview_csp = Unicode(
        PREVIEW_CSP,
        help=f"""Appended to Jupyter's Content-Security-Policy on every response of the path
        proxy ({{base_url}}agentbuild/preview/ID/, on Jupyter's origin). The default,
        '{PREVIEW_CSP}', runs a page seen there in an opaque origin, so its scripts can never
        act as the Jupyter origin; never add allow-same-origin. (Previews on their own origin,
        the URL browsers are given, need none: that origin is another site.)""",
    ).tag(config=True)
    preview_connect_timeout = Float(
        10.0, help="Seconds to wait for a preview to accept a connection (else 504)."
    ).tag(config=True)
    preview_read_timeout = Float(
        300.0,
        help="""Seconds to wait for a preview's response headers, and then between two parts
        of its body (else 504, or the connection is cut once the response has started).""",
    ).tag(config=True)
    preview_max_request_size = Int(
        1024**3,
        help="Largest request body (bytes) the proxy streams to a preview (default 1 GiB).",
    ).tag(config=True)

    preview_origin_template = Unicode(
        "",
        help="""The own origin of each preview in a deployment: a URL with {label} in its
        host name, e.g. 'https://{label}.previews.example.org', where a wildcard DNS name
        and TLS in front send every such host to this server (see the README). Use a
        registrable domain of its own, not a sub-domain of Jupyter's. Empty (default):
        previews get '{label}.localhost' origins when Jupyter is opened at localhost,
        127.0.0.1 or [::1]; elsewhere their URL is the path proxy's.""",
    ).tag(config=True)

    hub_routes_url = Unicode(
        "",
        help="""Under JupyterHub: the URL of the agentbuild-previews hub service, e.g.
        'http://127.0.0.1:10101/services/agentbuild-previews/'. Each preview asks it (with
        this server's JUPYTERHUB_API_TOKEN) to route its host to this server through the
        hub's proxy, and removes the route when it stops (see the README). Empty (default):
        no routes are asked for. Env fallback: AGENTBUILD_HUB_ROUTES_URL.""",
    ).tag(config=True)

    @default("hub_routes_url")
    def _hub_routes_url_default(self) -> str:
        return os.environ.get("AGENTBUILD_HUB_ROUTES_URL", "")

    @validate("preview_origin_template")
    def _check_preview_origin_template(self, proposal: Any) -> str:
        try:
            return PreviewOrigins.check_template(str(proposal["value"]))
        except TemplateError as exc:
            raise TraitError(f"AgentBuild.preview_origin_template: {exc}") from None

    @validate("preview_csp")
    def _check_preview_csp(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip().rstrip(";")
        tokens = value.lower().split()
        if "sandbox" not in tokens or "allow-same-origin" in tokens:
            self.log.warning(
                "agentbuild: preview_csp %r does not confine the path proxy's pages to an "
                "opaque origin: a page there could act as the user in Jupyter",
                value,
            )
        return value

    artifacts_root = Unicode(
        help="""Directory holding collected artifacts, one sub-directory per build. Default:
        <jupyter data dir>/agentbuild/artifacts. Servers sharing a db_url must share it too.
        Env fallback: AGENTBUILD_ARTIFACTS_ROOT.""",
    ).tag(config=True)

    @default("artifacts_root")
    def _artifacts_root_default(self) -> str:
        env = os.environ.get("AGENTBUILD_ARTIFACTS_ROOT")
        return env or str(Path(jupyter_data_dir()) / "agentbuild" / "artifacts")

    max_artifact_bytes = Int(
        2 * 1024**3,
        help="""Bytes one build may collect (default 2 GiB); collection stops there and the
        artifacts_ready event says it was truncated.""",
    ).tag(config=True)
    max_artifact_files = Int(
        100_000,
        help="""Manifest entries (files, links, skipped paths) one build may collect
        (default 100000); collection stops there, marked truncated.""",
    ).tag(config=True)
    artifact_retention_days = Float(
        30.0,
        help="""Days a build's artifacts are kept after collection (default 30); the
        periodic sweep removes older ones (the build and its logs stay). 0: forever.""",
    ).tag(config=True)
    max_artifact_bytes_per_owner = Int(
        0,
        help="""Artifact bytes one owner may keep; the sweep removes the owner's oldest
        artifacts beyond it. Default 0: no limit.""",
    ).tag(config=True)
    artifact_sweep_interval = Float(
        3600.0,
        help="""Seconds between retention sweeps (the first runs at start-up).
        0: no periodic sweep.""",
    ).tag(config=True)

    state: AgentBuildState | None = None
    _sigint_handler: Any = None

    @property
    def _server(self) -> Any:
        assert self.serverapp is not None, "the extension is not linked to a server"
        return self.serverapp

    def initialize_settings(self) -> None:
        """Build the object graph; no I/O happens here."""
        attach_logging(self._server.log)
        store = Store.lazy(self.db_url)
        stop_timeout = max(self.kill_grace * 2, 10.0)
        catalog = ProviderCatalog.build(
            ProviderSettings(
                workspace_root=Path(self.workspace_root),
                max_line_bytes=self.max_line_bytes,
                kill_grace=self.kill_grace,
                hidden_paths=tuple(self._hidden_paths()),
                readonly_paths=(*python_prefixes(), *self.sandbox_readonly_paths),
                limits=StepLimits(
                    max_processes=self.sandbox_max_processes,
                    max_memory=self.sandbox_max_memory,
                    max_file_size=self.sandbox_max_file_size,
                ),
                allow_unisolated=self.allow_unisolated,
                e2b_api_key=self.e2b_api_key,
                e2b_template=self.e2b_template,
                e2b_sandbox_timeout=self.e2b_sandbox_timeout,
                config=self.config,
            ),
            default_setting=self.provider,
            allowed=self.allowed_providers or None,
        )
        providers = catalog.providers
        artifact_records = ArtifactRecords(store.engine)
        blobs = LocalArtifactStore(Path(self.artifacts_root))
        collector = ArtifactCollector(
            artifact_records,
            blobs,
            Limits(max_bytes=self.max_artifact_bytes, max_files=self.max_artifact_files),
        )
        runner = Runner(
            store,
            providers,
            RunnerConfig(
                default_timeout=self.default_timeout,
                max_concurrent_builds=self.max_concurrent_builds,
                log_flush_interval=self.log_flush_interval,
                max_log_buffer=self.max_log_buffer,
                max_log_bytes=self.max_log_bytes or None,
                store_retry_timeout=self.store_retry_timeout,
                heartbeat_interval=self.heartbeat_interval,
                stale_after=self.stale_after,
                shutdown_timeout=stop_timeout,
            ),
            on_activity=self._record_activity,
            hooks=[collector],
        )
        previews = PreviewManager(
            store,
            providers,
            PreviewConfig(
                idle_timeout=self.preview_idle_timeout,
                upstream=UpstreamLimits(
                    connect_timeout=self.preview_connect_timeout,
                    read_timeout=self.preview_read_timeout,
                ),
                stop_timeout=stop_timeout,
                poll_interval=self.heartbeat_interval,
                stale_after=self.stale_after,
            ),
            base_url=self._server.base_url,
            runner=runner,
            on_activity=self._record_activity,
            routes=HubRoutes.from_env(url=self.hub_routes_url),
        )
        runner.hooks.append(previews)
        service = BuildService(
            store,
            runner,
            ServiceConfig(
                root_dir=Path(self._server.root_dir),
                default_provider=catalog.default,
                e2b_api_key=self.e2b_api_key,
                builds_per_window=self.builds_per_window,
                rate_window=self.rate_window,
                max_page_bytes=self.max_page_bytes,
                max_spec_bytes=self.max_spec_bytes,
                catalog=catalog,
            ),
        )
        artifacts = ArtifactService(
            service,
            artifact_records,
            blobs,
            RetentionConfig(
                retention_days=self.artifact_retention_days,
                max_bytes_per_owner=self.max_artifact_bytes_per_owner,
                sweep_interval=self.artifact_sweep_interval,
            ),
        )
        service.on_delete.append(artifacts.forget)
        service.previews = previews
        service.on_delete.append(previews.discard)
        self.state = AgentBuildState(
            service=service,
            runner=runner,
            store=store,
            personal_owner=self.owner_name or server_user(),
            artifacts=artifacts,
            previews=previews,
            preview_csp=self.preview_csp,
            preview_max_request_size=self.preview_max_request_size,
            max_request_bytes=self.max_request_bytes,
            catalog=catalog,
            preview_origins=PreviewOrigins(self.preview_origin_template),
        )
        self.settings.update({"agentbuild": self.state})
        self._stop_on_sigint()

    def _hidden_paths(self) -> list[str]:
        """What an isolated build must not see: the server's secrets and other builds."""
        paths = [
            str(Path.home()),
            "/root",
            "/home",
            jupyter_data_dir(),
            jupyter_runtime_dir(),
            jupyter_config_dir(),
            *jupyter_config_path(),
            self.workspace_root,
            self.artifacts_root,
            str(self._server.root_dir),
            *self.sandbox_hidden_paths,
        ]
        url = make_url(self.db_url)
        if url.get_backend_name() == "sqlite" and url.database:
            paths.append(str(Path(url.database).expanduser().resolve().parent))
        return [os.path.abspath(os.path.expanduser(p)) for p in paths if p]

    def _stop_on_sigint(self) -> None:
        """Run the server's stop (and so this extension's) on SIGINT without a terminal.

        jupyter_server only handles SIGINT when stdin is a terminal; otherwise Python's
        KeyboardInterrupt ends the event loop and the process exits without the stop
        hooks: running builds and previews were left behind. JupyterHub's local spawner
        stops servers with SIGINT first. A terminal keeps jupyter_server's own prompt."""
        if threading.current_thread() is not threading.main_thread():
            return
        if sys.stdin is not None and sys.stdin.isatty():
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._sigint_handler = self._server._signal_stop
            signal.signal(signal.SIGINT, self._sigint_handler)

    def _restore_sigint(self) -> None:
        """Back to Python's handler once stopped (a process hosting several servers in
        turn, such as a test run, gets its KeyboardInterrupt back)."""
        handler, self._sigint_handler = self._sigint_handler, None
        if handler is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) == handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def initialize_handlers(self) -> None:
        api = "agentbuild/api/builds"
        self.handlers.extend(
            [
                (r"/agentbuild/api/contract\.json", ContractHandler),
                (rf"/{api}", BuildsHandler),
                (rf"/{api}/{BUILD_ID}", BuildHandler),
                (rf"/{api}/{BUILD_ID}/cancel", CancelHandler),
                (rf"/{api}/{BUILD_ID}/logs", LogsHandler),
                (rf"/{api}/{BUILD_ID}/stream", StreamHandler),
                (rf"/{api}/{BUILD_ID}/artifacts", ArtifactsHandler),
                (rf"/{api}/{BUILD_ID}/artifacts\.(?P<fmt>zip|tar\.gz)", ArchiveHandler),
                (rf"/{api}/{BUILD_ID}/artifacts/(?P<path>.+)", ArtifactFileHandler),
                (rf"/{api}/{BUILD_ID}/preview/stop", PreviewStopHandler),
                (rf"/{api}/{BUILD_ID}/preview/restart", PreviewRestartHandler),
                (r"/agentbuild/api/info", InfoHandler),
                (rf"/agentbuild/preview/{BUILD_ID}(?P<path>/.*)?", PreviewProxyHandler),
                (r"/agentbuild/(.*)", NotFoundHandler),
            ]
        )
        self._route_preview_hosts()

    def _route_preview_hosts(self) -> None:
        """Every request to a preview host goes to :class:`OwnOriginHandler`, whatever its
        path: the rule is put first, ahead of Jupyter's and every extension's, so nothing
        of Jupyter is ever served at such a host (its host check would otherwise be all
        that stood in the way, and ``allow_remote_access`` turns that off)."""
        assert self.serverapp is not None
        web_app: Any = self.serverapp.web_app
        pattern = PreviewOrigins(self.preview_origin_template).host_pattern
        web_app.add_handlers(pattern, [(r".*", OwnOriginHandler)])
        rules = web_app.default_router.rules
        rule = next(
            r
            for r in reversed(rules)
            if isinstance(r, Rule)
            and isinstance(r.matcher, HostMatches)
            and r.matcher.host_pattern.pattern == pattern
        )
        rules.remove(rule)
        rules.insert(0, rule)

    def _record_activity(self) -> None:
        """A running build is server activity, so idle cullers leave the server alone."""
        times = self._server.web_app.settings.setdefault("last_activity_times", {})
        times["agentbuild"] = datetime.now(UTC)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        assert self.state is not None
        service = self.state.service
        if self.export_kernel_env:
            # Before the first await: a kernel started right away must already see it.
            self._export_kernel_env()
        self.log.info("agentbuild: database %s", redact_url(self.db_url))
        try:
            if self.state.catalog is not None:
                await self.state.catalog.check()
                for entry in self.state.catalog.info()["providers"]:
                    ok = entry["available"] and entry["isolated"]
                    level = self.log.info if ok else self.log.warning
                    level("agentbuild: provider %s: %s", entry["name"], entry["detail"])
            await self.state.store.connect()
            await self.state.runner.start()
            if self.state.previews is not None:
                await self.state.previews.start()
            if self.state.artifacts is not None:
                self.state.artifacts.start()
        except Exception as exc:
            service.startup_error = f"{type(exc).__name__}: {exc}"
            self.log.error("agentbuild: could not start: %s", service.startup_error)
        finally:
            service.ready.set()

    def _export_kernel_env(self) -> None:
        """Kernels inherit the server's environment: tell them where the API is."""
        server = self._server
        url = server.connection_url
        if not url.endswith("/"):
            url += "/"
        os.environ["JPY_AGENTBUILD_URL"] = url
        os.environ["JPY_AGENTBUILD_TOKEN"] = server.identity_provider.token or ""

    async def stop_extension(self) -> None:
        self._restore_sigint()
        if self.state is None:
            return
        try:
            if self.state.artifacts is not None:
                await self.state.artifacts.stop()
            try:
                await asyncio.wait_for(self.state.runner.shutdown(), timeout=60)
            finally:
                if self.state.previews is not None:
                    await self.state.previews.shutdown()
        finally:
            await self.state.store.dispose()


def attach_logging(server_log: logging.Logger) -> None:
    """Route the extension's module loggers (``jupyter_agentbuild.*``) to the Jupyter
    server's log, as jupyter_server does for tornado's: operators see build lifecycles
    and failures in the server log, with its format, handlers and level."""
    logger = logging.getLogger(__package__ or "jupyter_agentbuild")
    logger.parent = server_log
    logger.propagate = True
    logger.setLevel(server_log.level)
