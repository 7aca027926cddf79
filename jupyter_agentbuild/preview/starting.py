"""A preview's start, after its build's steps succeeded: until it is ready, or is not.

The preview's output joins the build's log stream under its own step index
(``len(steps)``) until it is ready; ``preview_ready`` (with the URL) is emitted, the
sandbox is kept, and the build gets its terminal status while the preview goes on. A
preview that never gets ready says why in the stream (``preview_stopped``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..buildlog import BuildLog
from ..entries import iso, utcnow
from ..runner import AfterSteps
from ..sandbox.base import PreviewFailed, SandboxError
from ..spec import PreviewSpec
from ..swallow import swallowed
from ..vocabulary import EventType, PreviewState, Stream
from .model import Preview, ended_record
from .readiness import check_path
from .upstream_pool import UpstreamPool

if TYPE_CHECKING:
    from .manager import PreviewManager

log = logging.getLogger(__name__)


class JoinedOutput:
    """The preview process's output, written into the build's stream until the preview
    is ready (after that the stream has ended, and the output is dropped)."""

    def __init__(self, pipe: BuildLog, step: int) -> None:
        self.pipe = pipe
        self.step = step
        self.joined = True
        self.lock = asyncio.Lock()

    async def __call__(self, stream: str, lines: list[str], continued: bool) -> None:
        if self.joined:
            async with self.lock:
                if self.joined:
                    await self.pipe.log(stream, self.step, lines, continued)

    async def end(self, warning: str | None) -> None:
        """Stop joining; ``warning`` (a ready app a browser would see nothing of) is the
        last line the stream gets from the preview."""
        async with self.lock:
            self.joined = False
            if warning is not None:
                with swallowed(log, "writing a preview warning into the build log"):
                    line = f"agentbuild: warning: {warning}"
                    await self.pipe.log(Stream.STDERR, self.step, [line], False)


async def launch(preview: Preview, on_output: Any = None) -> str:
    """Start the spec's preview command in the preview's sandbox; its target URL."""
    spec = preview.spec
    assert spec is not None
    return await preview.sandbox.start_preview_process(
        spec.command,
        port=spec.port,
        ready_timeout=spec.ready_timeout,
        ready_path=spec.path,
        on_output=on_output,
        env=preview.env,
    )


async def launch_unless_stopped(
    preview: Preview, on_output: Any, *stops: asyncio.Event
) -> asyncio.Task[str] | None:
    """Launch, racing the ``stops``: the finished launch task (its result or error), or
    None when a stop came first (the launch is then cancelled and its process stopped)."""
    start = asyncio.create_task(
        launch(preview, on_output), name=f"preview-start-{preview.build_id}"
    )
    stoppers = [asyncio.create_task(stop.wait()) for stop in stops]
    try:
        await asyncio.wait([start, *stoppers], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        start.cancel()
        raise
    finally:
        for task in stoppers:
            task.cancel()
    if start.done():
        return start
    start.cancel()
    await asyncio.gather(start, return_exceptions=True)
    await quietly(preview.sandbox.stop_preview_process())
    return None


def failure_of(exc: SandboxError) -> dict[str, Any]:
    """The error and exit code of a process that did not start."""
    exit_code = exc.exit_code if isinstance(exc, PreviewFailed) else None
    return {"error": str(exc), "exit_code": exit_code}


async def start_preview(
    manager: PreviewManager, preview: Preview, ctx: AfterSteps, spec: PreviewSpec
) -> None:
    """From ``starting`` to ``ready`` (or to ``stopped``/``failed``, said in the stream)."""
    step, pipe = preview.step, ctx.build_log
    output = JoinedOutput(pipe, step)
    starting = {"state": PreviewState.STARTING, "step": step, "label": preview.label}
    await manager.record(preview, starting)
    await pipe.event(
        EventType.PREVIEW_STARTING, {"step": step, "command": spec.command, "path": spec.path}
    )
    start = await launch_unless_stopped(preview, output, ctx.stop, preview.stop_requested)
    if start is None:
        why = "stopped by request" if preview.stop_requested.is_set() else "the build stopped"
        await fail_start(manager, preview, pipe, PreviewState.STOPPED, reason=why)
        return
    try:
        target = start.result()
    except SandboxError as exc:  # PreviewFailed included: it has the exit code
        failed = failure_of(exc)
        await fail_start(manager, preview, pipe, PreviewState.FAILED, reason=NOT_STARTED, **failed)
        return
    await output.end(await check_path(target, spec.path, ctx.sandbox.preview_headers()))
    pool = manager.pool_for(preview, target)
    if pool is None:
        await quietly(ctx.sandbox.stop_preview_process())
        error = f"unsupported preview target {target!r}"
        await fail_start(
            manager, preview, pipe, PreviewState.FAILED, reason=NOT_STARTED, error=error
        )
        return
    await become_ready(manager, preview, ctx, pool)


NOT_STARTED = "it did not start"


async def become_ready(
    manager: PreviewManager, preview: Preview, ctx: AfterSteps, pool: UpstreamPool
) -> None:
    """Ready: the sandbox outlives the build, the stream says where the preview is."""
    step, pipe = preview.step, ctx.build_log
    preview.pool = pool
    preview.state = PreviewState.READY
    preview.touch()
    ctx.keep_sandbox()
    try:
        ready = {
            "state": PreviewState.READY,
            "step": step,
            "ready_at": iso(utcnow()),
            "label": preview.label,
        }
        await manager.record(preview, ready)
        await pipe.event(EventType.PREVIEW_READY, {"step": step, "url": preview.prefix})
    except BaseException:
        # The build cannot report the preview: it does not outlive the build.
        ctx.sandbox_kept = False
        preview.state = PreviewState.FAILED
        pool.close()
        await quietly(ctx.sandbox.stop_preview_process())
        raise
    manager.watch(preview)
    log.info("agentbuild: preview of %s ready at %s", preview.build_id, preview.prefix)


async def fail_start(
    manager: PreviewManager,
    preview: Preview,
    pipe: BuildLog,
    state: PreviewState,
    *,
    reason: str,
    error: str | None = None,
    exit_code: int | None = None,
) -> None:
    """The preview never became ready: say so in the stream (the build still runs)."""
    preview.state = state
    ended = ended_record(state, reason=reason, error=error, exit_code=exit_code)
    record = {"step": preview.step, **ended}
    await manager.record(preview, record)
    await pipe.event(EventType.PREVIEW_STOPPED, record)


async def quietly(awaitable: Any) -> None:
    """A clean-up step whose failure is logged, never raised."""
    try:
        await awaitable
    except Exception as exc:
        log.warning("agentbuild: preview clean-up: %s", exc)


__all__ = ["fail_start", "launch", "launch_unless_stopped", "quietly", "start_preview"]
