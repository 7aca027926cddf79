"""The ``AgentBuild`` server extension: its own settings, routes and lifecycle.

Each component carries its own configuration (``c.BuildService.*``,
``c.ArtifactService.*``, ...; :data:`~.wiring.CONFIGURABLES`), so ``--help-all`` and the
generated reference group it where it is used and no value is copied by hand; an old
``c.AgentBuild.<name>`` is forwarded there with a deprecation warning
(:mod:`.legacy_config`). Environment variables are fallbacks for deployments.
``initialize_settings`` builds objects without I/O (:mod:`.wiring`); the start hook
migrates the database and starts the runner; the stop hook flushes logs, stops sandboxes
and disposes the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from tornado.routing import HostMatches, Rule
from traitlets import Bool, Int, Unicode
from traitlets.config import Config

from . import heap, urls
from .handlers.artifacts import ArchiveHandler, ArtifactFileHandler, ArtifactsHandler
from .handlers.base import NotFoundHandler
from .handlers.builds import BuildHandler, BuildsHandler, CancelHandler, LogsHandler
from .handlers.contract import ContractHandler
from .handlers.info import InfoHandler
from .handlers.openapi import OpenAPIHandler
from .handlers.preview import PreviewProxyHandler, PreviewRestartHandler, PreviewStopHandler
from .handlers.preview_origin import OwnOriginHandler
from .handlers.stream import StreamHandler
from .legacy_config import LegacyForwarder
from .store.engine import redact_url
from .wiring import CONFIGURABLES, AgentBuildState, build_state


class AgentBuild(ExtensionApp):
    """Run sandboxed builds from Jupyter, with live logs, artifacts and previews."""

    name = "jupyter_agentbuild"
    load_other_extensions = True
    #: ``--help-all`` and ``--generate-config`` list these, each under its own section.
    classes = [*ExtensionApp.classes, *CONFIGURABLES]

    max_request_bytes = Int(
        16 * 1024**2,
        help="""Largest request body of POST api/builds, in bytes (413 request_too_large
        beyond; the body is never held whole when larger).""",
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
    freeze_startup_heap = Bool(
        True,
        help="""Once started, move the objects the server made while starting (its
        imports: ~300,000) out of the garbage collector's sight (gc.freeze), once per
        process. Full collections then take milliseconds instead of pausing the server
        for 100-300 ms, which live logs felt. Off: Python's default.""",
    ).tag(config=True)

    state: AgentBuildState | None = None
    _sigint_handler: Any = None
    _legacy: LegacyForwarder | None = None

    @property
    def _server(self) -> Any:
        assert self.serverapp is not None, "the extension is not linked to a server"
        return self.serverapp

    def update_config(self, config: Config) -> None:
        """Every config reaching the app passes here (files, the server's config, the
        command line): old ``c.AgentBuild.<name>`` settings move to their component's
        section first, so traitlets never calls them unrecognized."""
        if self._legacy is None:
            self._legacy = LegacyForwarder(CONFIGURABLES, self.trait_names(), self.log)
        super().update_config(self._legacy.forward(config, self.config))

    def initialize_settings(self) -> None:
        """Build the object graph; no I/O happens here."""
        attach_logging(self._server.log)
        self.state = build_state(self)
        self.settings.update({"agentbuild": self.state})
        self._stop_on_sigint()

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
        build = f"/{urls.BUILDS}/{urls.BUILD_ID}"
        self.handlers.extend(
            [
                (rf"/{urls.API}/contract\.json", ContractHandler),
                (rf"/{urls.BUILDS}", BuildsHandler),
                (build, BuildHandler),
                (rf"{build}/cancel", CancelHandler),
                (rf"{build}/logs", LogsHandler),
                (rf"{build}/stream", StreamHandler),
                (rf"{build}/artifacts", ArtifactsHandler),
                (rf"{build}/artifacts\.(?P<fmt>zip|tar\.gz)", ArchiveHandler),
                (rf"{build}/artifacts/(?P<path>.+)", ArtifactFileHandler),
                (rf"{build}/preview/stop", PreviewStopHandler),
                (rf"{build}/preview/restart", PreviewRestartHandler),
                (rf"/{urls.API}/info", InfoHandler),
                (rf"/{urls.API}/openapi\.json", OpenAPIHandler),
                (rf"/{urls.PREVIEW}/{urls.BUILD_ID}(?P<path>/.*)?", PreviewProxyHandler),
                (rf"/{urls.ROOT}/(.*)", NotFoundHandler),
            ]
        )
        self._route_preview_hosts()

    def _route_preview_hosts(self) -> None:
        """Every request to a preview host goes to :class:`OwnOriginHandler`, whatever its
        path: the rule is put first, ahead of Jupyter's and every extension's, so nothing
        of Jupyter is ever served at such a host (its host check would otherwise be all
        that stood in the way, and ``allow_remote_access`` turns that off)."""
        assert self.serverapp is not None and self.state is not None
        web_app: Any = self.serverapp.web_app
        pattern = self.state.preview_origins.host_pattern
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

    def record_activity(self) -> None:
        """A running build is server activity, so idle cullers leave the server alone."""
        times = self._server.web_app.settings.setdefault("last_activity_times", {})
        times["agentbuild"] = datetime.now(UTC)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        assert self.state is not None
        service = self.state.service
        if self.export_kernel_env:
            # Before the first await: a kernel started right away must already see it.
            self._export_kernel_env()
        self.log.info("agentbuild: database %s", redact_url(self.state.store.db_url))
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
        if self.freeze_startup_heap:
            frozen = heap.freeze_startup_heap()
            if frozen:
                self.log.debug("agentbuild: %d start-up objects frozen (gc.freeze)", frozen)

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


#: ``main(["--help-all"])`` lists every option, grouped by component; with no arguments
#: it starts a Jupyter server with this extension (what a ``jupyter-agentbuild`` script
#: would run).
main = AgentBuild.launch_instance
