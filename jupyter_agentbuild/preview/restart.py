"""A fresh process for a ready preview, in the same sandbox, at the same URLs.

Files edited in the sandbox are served by the new process, and a hung app is replaced.
A preview that has stopped or failed cannot be restarted: stopping destroyed its sandbox
with the files the steps made, and a new sandbox from the workspace alone would serve
something the build never made (a new build brings the preview back).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..entries import iso, utcnow
from ..errors import Conflict
from ..sandbox.base import SandboxError
from ..store.repository import BuildRow
from ..swallow import swallowed
from ..vocabulary import LIVE_PREVIEW, PreviewState
from .model import Preview
from .starting import failure_of, launch_unless_stopped, quietly

if TYPE_CHECKING:
    from .manager import PreviewManager

log = logging.getLogger(__name__)

NOT_RESTARTED = "it did not restart"


async def restart_preview(manager: PreviewManager, row: BuildRow) -> None:
    """Replace the running preview process of ``row``'s build (see the module).

    409 ``no_preview`` when the build has no preview, ``preview_starting`` while it is
    getting ready (or restarting), ``preview_elsewhere`` when another server runs it, and
    ``preview_gone`` once it has stopped or failed. The outcome (ready again, or failed
    with the error) is in ``Build.preview``."""
    preview = manager.get(row.id)
    if preview is None:
        raise not_restartable(manager, row)
    if preview.state != PreviewState.READY or preview.stopping or preview.restarting:
        raise _starting(row.id)
    preview.restarting = True
    try:
        await relaunch(manager, preview)
    except BaseException as exc:
        # (the store failed, the request was cancelled): never leave it half-started
        with swallowed(log, f"stopping preview {preview.build_id} after a failed restart"):
            error = str(exc) or NOT_RESTARTED
            await manager.close(preview, PreviewState.FAILED, reason=NOT_RESTARTED, error=error)
        raise
    finally:
        preview.restarting = False


def _starting(build_id: str) -> Conflict:
    return Conflict(
        f"the preview of build {build_id} is starting; restart it once it is ready",
        code="preview_starting",
    )


def not_restartable(manager: PreviewManager, row: BuildRow) -> Conflict:
    """Why a build whose preview this server does not run cannot be restarted here."""
    record = row.preview or {}
    state = record.get("state")
    if not row.spec.get("preview") or state is None:
        return Conflict(f"build {row.id} has no preview to restart", code="no_preview")
    if state in LIVE_PREVIEW and row.runner_id != manager.runner_id:
        return Conflict(
            f"the preview of build {row.id} runs on another server; restart it there",
            code="preview_elsewhere",
        )
    if state == PreviewState.STARTING:
        return _starting(row.id)
    why = record.get("reason") or state
    return Conflict(
        f"the preview of build {row.id} has {state} ({why}) and its sandbox is gone; "
        "run the build again for a new preview",
        code="preview_gone",
    )


async def relaunch(manager: PreviewManager, preview: Preview) -> None:
    """Stop the process, start it again; a stop asked meanwhile wins."""
    preview.generation += 1
    preview.state = PreviewState.STARTING
    if preview.pool is not None:
        preview.pool.close()
        preview.pool = None
    preview.close_sockets("the preview restarts", code=1012)
    step = preview.step
    starting = {"state": PreviewState.STARTING, "step": step, "label": preview.label}
    await manager.record(preview, starting)
    await quietly(preview.sandbox.stop_preview_process())
    start = await launch_unless_stopped(preview, None, preview.stop_requested)
    if start is None:
        await manager.close(preview, PreviewState.STOPPED, reason="stopped by request")
        return
    try:
        target = start.result()
    except SandboxError as exc:
        failed = failure_of(exc)
        await manager.close(preview, PreviewState.FAILED, reason=NOT_RESTARTED, **failed)
        return
    pool = manager.pool_for(preview, target)
    if pool is None:
        error = f"unsupported preview target {target!r}"
        await manager.close(preview, PreviewState.FAILED, reason=NOT_RESTARTED, error=error)
        return
    preview.pool = pool
    preview.state = PreviewState.READY
    preview.touch()
    now = iso(utcnow())
    ready = {
        "state": PreviewState.READY,
        "step": step,
        "ready_at": now,
        "restarted_at": now,
        "label": preview.label,
    }
    # the new process group is what a successor reaps if this server dies
    await manager.record(preview, ready, sandbox_state=preview.sandbox.state())
    manager.watch_exit(preview)
    log.info("agentbuild: preview of %s restarted", preview.build_id)


__all__ = ["not_restartable", "relaunch", "restart_preview"]
