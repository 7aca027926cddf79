"""Previews: a build's web server, kept running after its steps, and its life cycle.

``starting -> ready -> stopped | failed`` (``Build.preview["state"]``).

The :class:`PreviewManager` is a runner hook (:class:`~..build_job.BuildHook`): once a build's
steps have succeeded it starts ``spec.preview.command`` through the sandbox's port
primitive (:mod:`.starting`). From then on the preview's changes (``stopped``/``failed``,
why, the exit code) are written to ``Build.preview``, because the build's stream has
ended. A ready preview can be given a fresh process (:mod:`.restart`).

A preview stops on ``POST .../preview/stop``, after ``idle_timeout`` seconds without
proxied traffic, when its process exits (``failed``, with the exit code), when its build
is deleted, and on server shutdown. Stopping destroys the sandbox (so the port is free).
What other servers ask, and what a dead server left, is :mod:`.reaping`'s.

The registry of live previews is this process's memory; it is what the proxy consults on
every request (no database round trip on the hot path). The build record remains the
source of truth for everything a client sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from traitlets.config import LoggingConfigurable

from ..buildlog import StoreUnavailable
from ..retry import repeat_forever, with_backoff
from ..runner import AfterSteps, Runner
from ..sandbox.base import SandboxProvider
from ..store.repository import BuildRow, Store
from ..swallow import swallowed
from ..urls import preview_path
from ..vocabulary import BuildStatus, PreviewState, Stream
from . import reaping
from .model import Preview, PreviewRoutes, ended_record, preview_env
from .origin import mint_label, parse_label, same_label
from .restart import restart_preview
from .settings import PreviewSettings
from .starting import start_preview
from .upstream_pool import UpstreamPool

log = logging.getLogger(__name__)

#: How long (s) a preview's own store writes are retried before they give up.
STORE_PATIENCE = 5.0

T = TypeVar("T")


class PreviewManager(PreviewSettings, LoggingConfigurable):
    """Starts previews after successful builds and owns them until they stop."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SandboxProvider],
        *,
        base_url: str = "/",
        runner: Runner | None = None,
        on_activity: Callable[[], None] | None = None,
        routes: PreviewRoutes | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.providers = providers
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.runner = runner
        self.on_activity = on_activity or (lambda: None)
        #: Under JupyterHub, what routes each preview's host to this server.
        self.routes = routes if routes is not None else self.hub_routes()
        self._previews: dict[str, Preview] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- what the service and the proxy ask ----------------------------------------------

    def prefix(self, build_id: str) -> str:
        return preview_path(self.base_url, build_id)

    def get(self, build_id: str) -> Preview | None:
        """The live preview of ``build_id`` run by this server (starting or ready)."""
        return self._previews.get(build_id)

    def running_ids(self) -> list[str]:
        return list(self._previews)

    def live(self, build_id: str) -> Preview | None:
        """The preview of ``build_id`` if it is ready to be proxied."""
        preview = self._previews.get(build_id)
        return preview if preview is not None and preview.state == PreviewState.READY else None

    def by_label(self, label: str) -> Preview | None:
        """The ready preview whose own origin carries exactly ``label`` (compared in
        constant time), or None: an unknown, altered or stopped label reaches nothing."""
        parsed = parse_label(label)
        if parsed is None:
            return None
        preview = self._previews.get(parsed[0])
        if preview is None or preview.state != PreviewState.READY or preview.stopping:
            return None
        return preview if same_label(preview.label, label) else None

    @property
    def runner_id(self) -> str | None:
        return self.runner.server_id if self.runner is not None else None

    async def stop(self, build_id: str) -> bool:
        """Stop the preview on request; False when this server runs none for the build."""
        return await self.end(build_id, "stopped by request", record=True)

    async def restart(self, row: BuildRow) -> None:
        """A fresh process for the build's ready preview (:mod:`.restart`)."""
        await restart_preview(self, row)

    async def discard(self, build_id: str) -> None:
        """The build is being deleted: stop its preview, nothing to record."""
        await self.end(build_id, "the build was deleted", record=False)

    async def end(self, build_id: str, reason: str, *, record: bool) -> bool:
        """Stop the preview of ``build_id`` if this server runs one (a starting one sees
        the request and records it itself)."""
        preview = self._previews.get(build_id)
        if preview is None:
            return False
        if preview.state == PreviewState.STARTING:
            preview.stop_requested.set()
            await preview.closed.wait()
        else:
            await self.close(preview, PreviewState.STOPPED, reason=reason, record=record)
        return True

    # -- the runner hook -------------------------------------------------------------------

    async def after_steps(self, ctx: AfterSteps) -> None:
        spec = ctx.spec.preview
        if spec is None or not ctx.succeeded or self._closing:
            return
        preview = Preview(
            build_id=ctx.build_id,
            owner=ctx.owner,
            step=len(ctx.spec.steps),
            prefix=self.prefix(ctx.build_id),
            sandbox=ctx.sandbox,
            label=mint_label(ctx.build_id),
            on_activity=self.on_activity,
            spec=spec,
            env=preview_env(ctx.spec.env),
        )
        self._previews[ctx.build_id] = preview
        try:
            await self._add_route(preview, ctx)
            await start_preview(self, preview, ctx, spec)
        finally:
            if preview.state != PreviewState.READY:
                self._previews.pop(ctx.build_id, None)
                preview.closed.set()
                await self._remove_route(preview)

    async def _add_route(self, preview: Preview, ctx: AfterSteps) -> None:
        """Ask the hub's proxy to route the preview's host here (under JupyterHub). A
        failure leaves the preview reachable by its path URL only, and says so."""
        if self.routes is None or preview.label is None:
            return
        try:
            await self.routes.add(preview.label)
        except Exception as exc:
            log.warning("agentbuild: no hub route for preview %s: %s", preview.build_id, exc)
            with swallowed(log, "writing a hub-route warning into the build log"):
                line = f"agentbuild: warning: the hub's proxy could not route this preview's origin: {exc}"
                await ctx.build_log.log(Stream.STDERR, preview.step, [line], False)

    async def _remove_route(self, preview: Preview) -> None:
        if self.routes is None or preview.label is None:
            return
        try:
            await self.routes.remove(preview.label)
        except Exception as exc:  # the hub's service sweeps routes of stopped servers
            log.warning("agentbuild: removing the hub route of %s: %s", preview.build_id, exc)

    def pool_for(self, preview: Preview, target: str) -> UpstreamPool | None:
        """Connections to ``target``, or None for a target the proxy cannot reach."""
        parts = urlsplit(target)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else None)
        if parts.scheme not in ("http", "https") or not parts.hostname or not port:
            return None
        return UpstreamPool(
            parts.hostname,
            port,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            tls=tls,
            headers=preview.sandbox.preview_headers(),
        )

    # -- a ready preview -----------------------------------------------------------------

    def watch(self, preview: Preview) -> None:
        """Once ready: watch its process, its build's end, and its traffic."""
        self.watch_exit(preview)
        self._spawn(self._after_build(preview), f"preview-build-{preview.build_id}")
        self.arm_idle(preview)

    def watch_exit(self, preview: Preview) -> None:
        """Stop the preview as ``failed`` when its current process exits."""
        name = f"preview-exit-{preview.build_id}"
        self._spawn(self._watch_exit(preview, preview.generation), name)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_build(self, preview: Preview) -> None:
        """Once the build's terminal row is written (recording the kept sandbox for crash
        reaping), stop the preview if the build did not end as ``succeeded`` after all."""
        if self.runner is not None:
            await self.runner.wait(preview.build_id)
        row = await retrying(lambda: self.store.get_build(preview.build_id))
        async with preview.lock:
            if preview.stopping or (row is not None and row.status == BuildStatus.SUCCEEDED):
                return
        why = f"the build ended as {row.status}" if row is not None else "the build was deleted"
        await self.close(preview, PreviewState.STOPPED, reason=why, record=row is not None)

    async def _watch_exit(self, preview: Preview, generation: int) -> None:
        code = await preview.sandbox.wait_preview_process()
        if preview.stopping or preview.generation != generation:
            return  # stopped, or replaced by a restart
        await self.close(
            preview,
            PreviewState.FAILED,
            reason="the preview process exited",
            exit_code=code,
            error=f"the preview process exited with status {code}",
        )

    def arm_idle(self, preview: Preview) -> None:
        timeout = self.idle_timeout
        if timeout <= 0 or preview.stopping:
            return
        delay = max(0.0, preview.last_activity + timeout - time.monotonic())
        loop = asyncio.get_running_loop()
        preview.idle_handle = loop.call_later(delay, self._idle_check, preview)

    def _idle_check(self, preview: Preview) -> None:
        preview.idle_handle = None
        if preview.stopping:
            return
        if time.monotonic() - preview.last_activity >= self.idle_timeout:
            reason = f"no traffic for {self.idle_timeout:g}s"
            self._spawn(self.close(preview, PreviewState.STOPPED, reason=reason), "preview-idle")
        else:
            self.arm_idle(preview)

    async def close(
        self,
        preview: Preview,
        state: PreviewState,
        *,
        reason: str,
        exit_code: int | None = None,
        error: str | None = None,
        record: bool = True,
    ) -> None:
        """Stop a preview: no new requests, sockets closed, sandbox destroyed, state
        recorded. Idempotent; concurrent callers wait for the first one."""
        async with preview.lock:
            first = not preview.stopping
            preview.stopping = True
        if not first:
            await preview.closed.wait()
            return
        try:
            self._previews.pop(preview.build_id, None)
            if preview.idle_handle is not None:
                preview.idle_handle.cancel()
            if preview.pool is not None:
                preview.pool.close()
            preview.close_sockets("the preview stopped")
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await preview.sandbox.destroy()
            except Exception as exc:
                log.warning("agentbuild: stopping preview %s: %s", preview.build_id, exc)
            await self._remove_route(preview)
            preview.state = state
            ended = ended_record(state, reason=reason, error=error, exit_code=exit_code)
            ended["step"] = preview.step
            if record:
                with swallowed(log, f"recording the end of preview {preview.build_id}"):
                    await self.record(
                        preview, ended, sandbox_state=None, preview_stop_requested=False
                    )
            preview.record = ended
            log.info("agentbuild: preview of %s %s (%s)", preview.build_id, state, reason)
        finally:
            preview.closed.set()

    async def record(self, preview: Preview, data: dict[str, Any], **fields: Any) -> None:
        """Write ``Build.preview`` (and other columns), retrying a briefly failing store."""
        preview.record = data
        await retrying(lambda: self.store.update_build(preview.build_id, preview=data, **fields))

    # -- other servers, start-up and shutdown --------------------------------------------

    async def start(self) -> None:
        """Reap what a dead server on this host left running, and record the end of its
        previews; then keep this server's previews checked in with the store."""
        await reaping.reap_leftovers(self)
        # Every poll_interval: say this server's previews are alive (heartbeat_at), and
        # carry out what other servers asked, as they cannot reach them.
        checkins = repeat_forever(self.poll_interval, self.apply_requests, "preview check-in")
        self._spawn(checkins, "agentbuild-preview-checkins")

    async def apply_requests(self) -> None:
        """What other servers asked of this server's previews (:mod:`.reaping`)."""
        await reaping.apply_requests(self)

    async def reap_orphan(self, row: BuildRow) -> bool:
        """Stop, from here, a preview whose server is dead (:mod:`.reaping`); False when
        its server is alive."""
        return await reaping.reap_orphan(self, row)

    async def shutdown(self) -> None:
        """Stop every preview (the server stops); bounded by ``stop_timeout``."""
        self._closing = True
        previews = list(self._previews.values())
        for preview in previews:
            preview.stop_requested.set()
        ready = [p for p in previews if p.state == PreviewState.READY]
        reason = "the Jupyter server stopped"
        closing = [
            asyncio.create_task(self.close(p, PreviewState.STOPPED, reason=reason)) for p in ready
        ]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=self.stop_timeout + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """A store call retried with backoff for a few seconds; then StoreUnavailable."""
    try:
        return await with_backoff(call, patience=STORE_PATIENCE)
    except Exception as exc:
        raise StoreUnavailable(str(exc)) from exc


__all__ = ["Preview", "PreviewManager"]
