"""Previews: a build's web server, kept running after its steps, and its life cycle.

``starting -> ready -> stopped | failed`` (``Build.preview["state"]``).

The :class:`PreviewManager` is a runner hook (:class:`~..runner.BuildHook`): once a build's
steps have succeeded it starts ``spec.preview.command`` through the sandbox's port
primitive. The preview's output joins the build's log stream under its own step index
(``len(steps)``) until it is ready; ``preview_ready`` (with the URL) is emitted; the hook
keeps the sandbox and returns, and the build gets its terminal status while the preview
goes on. From then on the preview's changes (``stopped``/``failed``, why, the exit code)
are written to ``Build.preview``, because the build's stream has ended.

A preview stops on ``POST .../preview/stop``, after ``idle_timeout`` seconds without
proxied traffic, when its process exits (``failed``, with the exit code), when its build
is deleted, and on server shutdown. Stopping destroys the sandbox (so the port is free).
A server that died leaves previews behind: the next start on the same host reaps their
processes (:meth:`PreviewManager.start`).

The registry of live previews is this process's memory; it is what the proxy consults on
every request (no database round trip on the hot path). The build record remains the
source of truth for everything a client sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ..entries import TERMINAL, iso, utcnow
from ..errors import Conflict
from ..logpipe import LogPipe, StoreUnavailable
from ..retry import every, with_backoff
from ..runner import AfterSteps, Runner, pid_alive
from ..sandbox.base import Sandbox, SandboxError, SandboxProvider, ServiceFailed
from ..spec import PreviewSpec
from ..store.repository import BuildRow, Store
from ..swallow import swallowed
from .origin import mint_label, parse_label, same_label
from .readiness import check_path
from .upstream import UpstreamLimits, UpstreamPool

log = logging.getLogger(__name__)

_LIVE = ("starting", "ready")

#: How often (s) preview traffic is reported as server activity (for idle cullers).
ACTIVITY_REPORT_INTERVAL = 10.0
#: How long (s) a preview's own store writes are retried before they give up.
STORE_PATIENCE = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class PreviewConfig:
    #: Seconds without proxied traffic after which a preview is stopped; 0 = never.
    idle_timeout: float = 1800.0
    upstream: UpstreamLimits = field(default_factory=UpstreamLimits)
    #: Bound on stopping one preview (its sandbox's kill grace is inside it).
    stop_timeout: float = 30.0
    #: How often (s) this server's previews check in with the store (heartbeat, and
    #: whether another server stopped or deleted one of them).
    poll_interval: float = 5.0
    #: Previews of another host's server that have not checked in for this long (s)
    #: are taken for dead: stopping one is then done from here.
    stale_after: float = 60.0


@dataclass(eq=False)
class Preview:
    """One live (starting or ready) preview, as the proxy and the manager see it."""

    build_id: str
    owner: str
    step: int
    #: The public path, with its trailing slash: ``{base_url}agentbuild/preview/{id}/``.
    prefix: str
    sandbox: Sandbox
    #: The capability in the host name of the preview's own origin (``p{id}-{secret}``),
    #: minted at this start; the URL dies with it when the preview stops.
    label: str | None = None
    state: str = "starting"
    #: Connections to the sandbox's target: the only address the proxy connects to for
    #: this preview.
    pool: UpstreamPool | None = None
    last_activity: float = field(default_factory=time.monotonic)
    stopping: bool = False
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Open WebSocket relays, closed when the preview stops.
    sockets: set[Any] = field(default_factory=set)
    record: dict[str, Any] = field(default_factory=dict)
    #: Per-preview objects the proxy makes once (its response rewriter).
    cache: dict[str, Any] = field(default_factory=dict)
    on_activity: Callable[[], None] = lambda: None
    #: What starts the process again on a restart: the spec's preview, and its env.
    spec: PreviewSpec | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Bumped by each restart: the exit watcher of a replaced process stands down.
    generation: int = 0
    restarting: bool = False
    _reported: float = 0.0
    _idle_handle: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        """Proxied traffic: postpones the idle stop, and counts as server activity."""
        now = time.monotonic()
        self.last_activity = now
        if now - self._reported > ACTIVITY_REPORT_INTERVAL:
            self._reported = now
            self.on_activity()


class PreviewRoutes(Protocol):
    """Routes a preview host (``{label}.{domain}``) to this server in a front proxy that
    routes by exact host (JupyterHub's): see :mod:`..hub.routes_client`."""

    async def add(self, label: str) -> None: ...

    async def remove(self, label: str) -> None: ...


class PreviewManager:
    """Starts previews after successful builds and owns them until they stop."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SandboxProvider],
        config: PreviewConfig,
        *,
        base_url: str = "/",
        runner: Runner | None = None,
        on_activity: Callable[[], None] | None = None,
        routes: PreviewRoutes | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.config = config
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.runner = runner
        self.on_activity = on_activity or (lambda: None)
        #: Under JupyterHub, what routes each preview's host to this server.
        self.routes = routes
        self._previews: dict[str, Preview] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- what the service and the proxy ask ----------------------------------------------

    def prefix(self, build_id: str) -> str:
        return f"{self.base_url}agentbuild/preview/{build_id}/"

    def get(self, build_id: str) -> Preview | None:
        """The live preview of ``build_id`` run by this server (starting or ready)."""
        return self._previews.get(build_id)

    def live(self, build_id: str) -> Preview | None:
        """The preview of ``build_id`` if it is ready to be proxied."""
        preview = self._previews.get(build_id)
        return preview if preview is not None and preview.state == "ready" else None

    def by_label(self, label: str) -> Preview | None:
        """The ready preview whose own origin carries exactly ``label`` (compared in
        constant time), or None: an unknown, altered or stopped label reaches nothing."""
        parsed = parse_label(label)
        if parsed is None:
            return None
        preview = self._previews.get(parsed[0])
        if preview is None or preview.state != "ready" or preview.stopping:
            return None
        return preview if same_label(preview.label, label) else None

    async def stop(self, build_id: str) -> bool:
        """Stop the preview on request; False when this server runs none for the build."""
        return await self._end(build_id, "stopped by request", record=True)

    async def discard(self, build_id: str) -> None:
        """The build is being deleted: stop its preview, nothing to record."""
        await self._end(build_id, "the build was deleted", record=False)

    async def _end(self, build_id: str, reason: str, *, record: bool) -> bool:
        preview = self._previews.get(build_id)
        if preview is None:
            return False
        if preview.state == "starting":  # the start sees the request and records it
            preview.stop_requested.set()
            await preview.closed.wait()
        else:
            await self._close(preview, "stopped", reason=reason, record=record)
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
            await self._start(preview, ctx, spec)
        finally:
            if preview.state != "ready":
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
                await ctx.pipe.log("stderr", preview.step, [line], False)

    async def _remove_route(self, preview: Preview) -> None:
        if self.routes is None or preview.label is None:
            return
        try:
            await self.routes.remove(preview.label)
        except Exception as exc:  # the hub's service sweeps routes of stopped servers
            log.warning("agentbuild: removing the hub route of %s: %s", preview.build_id, exc)

    async def _start(self, preview: Preview, ctx: AfterSteps, spec: PreviewSpec) -> None:
        step, pipe = preview.step, ctx.pipe
        joined = True
        log_lock = asyncio.Lock()

        async def on_output(stream: str, lines: list[str], continued: bool) -> None:
            # Until ready, output joins the build's stream; after, the stream has ended.
            if joined:
                async with log_lock:
                    if joined:
                        await pipe.log(stream, step, lines, continued)

        await self._record(preview, {"state": "starting", "step": step, "label": preview.label})
        await pipe.event(
            "preview_starting", {"step": step, "command": spec.command, "path": spec.path}
        )
        start = asyncio.create_task(
            self._launch(preview, on_output), name=f"preview-start-{preview.build_id}"
        )
        stoppers = [
            asyncio.create_task(ctx.stop.wait()),
            asyncio.create_task(preview.stop_requested.wait()),
        ]
        try:
            await asyncio.wait([start, *stoppers], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            start.cancel()
            raise
        finally:
            for task in stoppers:
                task.cancel()
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            await _quietly(ctx.sandbox.stop_service())
            why = "stopped by request" if preview.stop_requested.is_set() else "the build stopped"
            await self._fail_start(preview, pipe, "stopped", reason=why)
            return
        try:
            target = start.result()
        except SandboxError as exc:  # ServiceFailed included: it has the exit code
            exit_code = exc.exit_code if isinstance(exc, ServiceFailed) else None
            await self._fail_start(
                preview,
                pipe,
                "failed",
                reason="it did not start",
                error=str(exc),
                exit_code=exit_code,
            )
            return
        warning = await check_path(target, spec.path, ctx.sandbox.preview_headers())
        async with log_lock:
            joined = False
            if warning is not None:
                # Ready all the same (the app answers), but a browser would see nothing.
                with swallowed(log, "writing a preview warning into the build log"):
                    await pipe.log("stderr", step, [f"agentbuild: warning: {warning}"], False)
        pool = self._pool(preview, target)
        if pool is None:
            await _quietly(ctx.sandbox.stop_service())
            await self._fail_start(
                preview,
                pipe,
                "failed",
                reason="it did not start",
                error=f"unsupported preview target {target!r}",
            )
            return
        preview.pool = pool
        preview.state = "ready"
        preview.touch()
        ctx.keep_sandbox()
        try:
            ready = {
                "state": "ready",
                "step": step,
                "ready_at": iso(utcnow()),
                "label": preview.label,
            }
            await self._record(preview, ready)
            await pipe.event("preview_ready", {"step": step, "url": preview.prefix})
        except BaseException:
            # The build cannot report the preview: it does not outlive the build.
            ctx.sandbox_kept = False
            preview.state = "failed"
            preview.pool.close()
            await _quietly(ctx.sandbox.stop_service())
            raise
        self._spawn(
            self._watch_exit(preview, preview.generation), f"preview-exit-{preview.build_id}"
        )
        self._spawn(self._after_build(preview), f"preview-build-{preview.build_id}")
        self._arm_idle(preview)
        log.info("agentbuild: preview of %s ready at %s", preview.build_id, preview.prefix)

    async def _launch(self, preview: Preview, on_output: Any = None) -> str:
        """Start the spec's preview command in the preview's sandbox; its target URL."""
        spec = preview.spec
        assert spec is not None
        return await preview.sandbox.start_service(
            spec.command,
            port=spec.port,
            ready_timeout=spec.ready_timeout,
            ready_path=spec.path,
            on_output=on_output,
            env=preview.env,
        )

    # -- restart -------------------------------------------------------------------------

    async def restart(self, row: BuildRow) -> None:
        """Replace the running preview process of ``row``'s build by a new one, in the
        same sandbox and at the same URLs (label and path kept): files edited in the
        sandbox are served by a fresh process. Open WebSockets are closed.

        409 ``no_preview`` when the build has no preview, ``preview_starting`` while it
        is getting ready (or restarting), ``preview_elsewhere`` when another server runs
        it, and ``preview_gone`` once it has stopped or failed: stopping destroyed its
        sandbox with the files the steps made, so only a new build brings it back (a
        fresh sandbox from the workspace alone would serve something the build never
        made). The outcome (ready again, or failed with the error) is in
        ``Build.preview``."""
        preview = self._previews.get(row.id)
        if preview is None:
            raise self._not_restartable(row)
        if preview.state != "ready" or preview.stopping or preview.restarting:
            raise Conflict(
                f"the preview of build {row.id} is starting; restart it once it is ready",
                code="preview_starting",
            )
        preview.restarting = True
        try:
            await self._relaunch(preview)
        except BaseException as exc:
            # (the store failed, the request was cancelled): never leave it half-started
            with swallowed(log, f"stopping preview {preview.build_id} after a failed restart"):
                reason = "it did not restart"
                await self._close(preview, "failed", reason=reason, error=str(exc) or reason)
            raise
        finally:
            preview.restarting = False

    def _not_restartable(self, row: BuildRow) -> Conflict:
        record = row.preview or {}
        state = record.get("state")
        if not row.spec.get("preview") or state is None:
            return Conflict(f"build {row.id} has no preview to restart", code="no_preview")
        mine = self.runner.runner_id if self.runner is not None else None
        if state in _LIVE and row.runner_id != mine:
            return Conflict(
                f"the preview of build {row.id} runs on another server; restart it there",
                code="preview_elsewhere",
            )
        if state == "starting":
            return Conflict(
                f"the preview of build {row.id} is starting; restart it once it is ready",
                code="preview_starting",
            )
        why = record.get("reason") or state
        return Conflict(
            f"the preview of build {row.id} has {state} ({why}) and its sandbox is gone; "
            "run the build again for a new preview",
            code="preview_gone",
        )

    async def _relaunch(self, preview: Preview) -> None:
        """Stop the process, start it again; a stop asked meanwhile wins."""
        preview.generation += 1
        preview.state = "starting"
        if preview.pool is not None:
            preview.pool.close()
            preview.pool = None
        for relay in list(preview.sockets):
            with swallowed(log, f"closing a WebSocket of preview {preview.build_id}"):
                relay.close(1012, "the preview restarts")
        step = preview.step
        await self._record(preview, {"state": "starting", "step": step, "label": preview.label})
        await _quietly(preview.sandbox.stop_service())
        start = asyncio.create_task(
            self._launch(preview), name=f"preview-restart-{preview.build_id}"
        )
        stop = asyncio.create_task(preview.stop_requested.wait())
        try:
            await asyncio.wait([start, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            await self._close(preview, "stopped", reason="stopped by request")
            return
        try:
            target = start.result()
        except SandboxError as exc:
            exit_code = exc.exit_code if isinstance(exc, ServiceFailed) else None
            await self._close(
                preview, "failed", reason="it did not restart", error=str(exc), exit_code=exit_code
            )
            return
        pool = self._pool(preview, target)
        if pool is None:
            error = f"unsupported preview target {target!r}"
            await self._close(preview, "failed", reason="it did not restart", error=error)
            return
        preview.pool = pool
        preview.state = "ready"
        preview.touch()
        now = iso(utcnow())
        ready = {
            "state": "ready",
            "step": step,
            "ready_at": now,
            "restarted_at": now,
            "label": preview.label,
        }
        # the new process group is what a successor reaps if this server dies
        await self._record(preview, ready, sandbox_state=preview.sandbox.state())
        self._spawn(
            self._watch_exit(preview, preview.generation), f"preview-exit-{preview.build_id}"
        )
        log.info("agentbuild: preview of %s restarted", preview.build_id)

    def _pool(self, preview: Preview, target: str) -> UpstreamPool | None:
        """Connections to ``target``, or None for a target the proxy cannot reach."""
        parts = urlsplit(target)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else None)
        if parts.scheme not in ("http", "https") or not parts.hostname or not port:
            return None
        return UpstreamPool(
            parts.hostname,
            port,
            self.config.upstream,
            tls=tls,
            headers=preview.sandbox.preview_headers(),
        )

    async def _fail_start(
        self,
        preview: Preview,
        pipe: LogPipe,
        state: str,
        *,
        reason: str,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        """The preview never became ready: say so in the stream (the build still runs)."""
        preview.state = state
        record = {"step": preview.step, **_final(state, error, exit_code, reason=reason)}
        await self._record(preview, record)
        await pipe.event("preview_stopped", record)

    # -- after the start ---------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_build(self, preview: Preview) -> None:
        """Once the build's terminal row is written (recording the kept sandbox for crash
        reaping), stop the preview if the build did not end as ``succeeded`` after all."""
        if self.runner is not None:
            await self.runner.wait(preview.build_id)
        row = await _retrying(lambda: self.store.get_build(preview.build_id))
        async with preview.lock:
            if preview.stopping or (row is not None and row.status == "succeeded"):
                return
        why = f"the build ended as {row.status}" if row is not None else "the build was deleted"
        await self._close(preview, "stopped", reason=why, record=row is not None)

    async def _watch_exit(self, preview: Preview, generation: int) -> None:
        code = await preview.sandbox.wait_service()
        if preview.stopping or preview.generation != generation:
            return  # stopped, or replaced by a restart
        await self._close(
            preview,
            "failed",
            reason="the preview process exited",
            exit_code=code,
            error=f"the preview process exited with status {code}",
        )

    def _arm_idle(self, preview: Preview) -> None:
        timeout = self.config.idle_timeout
        if timeout <= 0 or preview.stopping:
            return
        delay = max(0.0, preview.last_activity + timeout - time.monotonic())
        preview._idle_handle = asyncio.get_running_loop().call_later(
            delay, self._idle_check, preview
        )

    def _idle_check(self, preview: Preview) -> None:
        preview._idle_handle = None
        if preview.stopping:
            return
        if time.monotonic() - preview.last_activity >= self.config.idle_timeout:
            reason = f"no traffic for {self.config.idle_timeout:g}s"
            self._spawn(self._close(preview, "stopped", reason=reason), "preview-idle")
        else:
            self._arm_idle(preview)

    async def _close(
        self,
        preview: Preview,
        state: str,
        *,
        reason: str,
        exit_code: int | None = None,
        error: str | None = None,
        record: bool = True,
    ) -> None:
        """Stop a ready preview: no new requests, sockets closed, sandbox destroyed, state
        recorded. Idempotent; concurrent callers wait for the first one."""
        async with preview.lock:
            first = not preview.stopping
            preview.stopping = True
        if not first:
            await preview.closed.wait()
            return
        try:
            self._previews.pop(preview.build_id, None)
            if preview._idle_handle is not None:
                preview._idle_handle.cancel()
            if preview.pool is not None:
                preview.pool.close()
            for relay in list(preview.sockets):
                with swallowed(log, f"closing a WebSocket of preview {preview.build_id}"):
                    relay.close(1001, "the preview stopped")
            try:
                async with asyncio.timeout(self.config.stop_timeout):
                    await preview.sandbox.destroy()
            except Exception as exc:
                log.warning("agentbuild: stopping preview %s: %s", preview.build_id, exc)
            await self._remove_route(preview)
            preview.state = state
            final = _final(state, error, exit_code, reason=reason)
            final["step"] = preview.step
            if record:
                with swallowed(log, f"recording the end of preview {preview.build_id}"):
                    await self._record(
                        preview, final, sandbox_state=None, preview_stop_requested=False
                    )
            preview.record = final
            log.info("agentbuild: preview of %s %s (%s)", preview.build_id, state, reason)
        finally:
            preview.closed.set()

    async def _record(self, preview: Preview, data: dict[str, Any], **fields: Any) -> None:
        """Write ``Build.preview`` (and other columns), retrying a briefly failing store."""
        preview.record = data
        await _retrying(lambda: self.store.update_build(preview.build_id, preview=data, **fields))

    # -- start-up and shutdown ---------------------------------------------------------

    async def start(self) -> None:
        """Reap what a dead server on this host left running, and record the end of its
        previews; then keep this server's previews checked in with the store."""
        await self._reap_leftovers()
        # Every poll_interval: say this server's previews are alive (heartbeat_at), and
        # carry out what other servers asked, as they cannot reach them.
        checkins = every(self.config.poll_interval, self.apply_requests, "preview check-in")
        self._spawn(checkins, "agentbuild-preview-checkins")

    async def apply_requests(self) -> None:
        """Check this server's previews in; carry out a stop asked elsewhere
        (``preview_stop_requested``), a delete, or a preview declared dead elsewhere while
        this server could not reach the store."""
        ids = list(self._previews)
        if not ids:
            return
        checked = await self.store.preview_checkin(ids, utcnow())
        # Stops run side by side (each may take stop_timeout): the round lasts as long as
        # the slowest, not their sum, and one that fails does not skip the others.
        results = await asyncio.gather(
            *(self._apply(build_id, checked.get(build_id)) for build_id in ids),
            return_exceptions=True,
        )
        for build_id, result in zip(ids, results, strict=True):
            if isinstance(result, Exception):
                log.warning("agentbuild: stopping the preview of %s failed: %s", build_id, result)

    async def _apply(self, build_id: str, checked: tuple[bool, str | None] | None) -> None:
        if checked is None:  # deleted, perhaps elsewhere
            await self.discard(build_id)
            return
        stop_requested, recorded_state = checked
        if stop_requested:
            await self._end(build_id, "stopped by request", record=True)
            await self.store.update_build(build_id, preview_stop_requested=False)
        elif recorded_state in ("stopped", "failed"):
            # declared dead by another server while this one could not check in: its end
            # is recorded already, its processes are still to go
            await self._end(build_id, "declared stopped elsewhere", record=False)
            await self.store.update_build(build_id, sandbox_state=None)

    async def reap_orphan(self, row: BuildRow) -> bool:
        """Stop, from here, a preview whose server is dead: on this host, its pid is
        gone; on another, its previews have not checked in for ``stale_after``. Nobody
        else ever would. False when its server is alive (it is asked through the store)."""
        if row.runner_host == socket.gethostname() and row.runner_pid is not None:
            if row.runner_pid != os.getpid() and pid_alive(row.runner_pid):
                return False  # (our own pid: a previous server that had it, now dead)
        else:
            beats = [t for t in (row.heartbeat_at, row.finished_at) if t is not None]
            if beats and (utcnow() - max(beats)).total_seconds() <= self.config.stale_after:
                return False
        await self._reap(row, stopped_by_request=True)
        return True

    async def _reap_leftovers(self) -> None:
        host, me = socket.gethostname(), os.getpid()
        for row in await self.store.leftover_sandboxes(host=host, statuses=TERMINAL):
            if row.id in self._previews:
                continue
            if row.runner_pid not in (None, me) and pid_alive(row.runner_pid):
                continue  # another live server on this host runs it
            await self._reap(row)

    async def _reap(self, row: BuildRow, *, stopped_by_request: bool = False) -> None:
        """Remove a dead server's sandbox (if this process can reach it: otherwise its
        state stays recorded for a server on its host) and record its preview's end."""
        kept = row.sandbox_state
        provider = self.providers.get(row.provider)
        if provider is not None and row.sandbox_id and row.sandbox_state:
            try:
                if await provider.remove(row.sandbox_id, row.sandbox_state):
                    kept = None
            except Exception as exc:
                log.warning("agentbuild: reaping the preview of %s failed: %s", row.id, exc)
        fields: dict[str, Any] = {"sandbox_state": kept, "preview_stop_requested": False}
        if (row.preview or {}).get("state") in _LIVE:
            gone = "the server running the preview stopped"
            if stopped_by_request:
                final = _final("stopped", None, None, reason=f"stopped by request ({gone})")
            else:
                final = _final("failed", gone, None, reason=gone)
            final["step"] = (row.preview or {}).get("step")
            fields["preview"] = final
        await self.store.update_build(row.id, **fields)
        log.info("agentbuild: sandbox of %s (left by a dead server) reaped", row.id)

    async def shutdown(self) -> None:
        """Stop every preview (the server stops); bounded by ``stop_timeout``."""
        self._closing = True
        previews = list(self._previews.values())
        for preview in previews:
            preview.stop_requested.set()
        ready = [p for p in previews if p.state == "ready"]
        closing = [
            asyncio.create_task(self._close(p, "stopped", reason="the Jupyter server stopped"))
            for p in ready
        ]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=self.config.stop_timeout + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def preview_env(build_env: Mapping[str, str]) -> dict[str, str]:
    """What the preview command gets besides ``$PORT``. The app runs at "/" on its own
    origin, and the path proxy strips its prefix: the base it is told and the paths it
    receives agree (no redirect loop)."""
    env = {"AGENTBUILD_PREVIEW_BASE": "/"}
    if "HOST" not in build_env:
        env["HOST"] = "127.0.0.1"
    return env


def _final(
    state: str, error: str | None, exit_code: int | None, *, reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"state": state, "stopped_at": iso(utcnow())}
    if reason is not None:
        out["reason"] = reason
    if exit_code is not None:
        out["exit_code"] = exit_code
    if error is not None:
        out["error"] = error
    return out


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.warning("agentbuild: preview clean-up: %s", exc)


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """A store call retried with backoff for a few seconds; then StoreUnavailable."""
    try:
        return await with_backoff(call, patience=STORE_PATIENCE)
    except Exception as exc:
        raise StoreUnavailable(str(exc)) from exc


__all__ = ["Preview", "PreviewConfig", "PreviewManager"]
