"""Previews between servers sharing a database: check-ins, requests from other servers,
and what a dead server left behind.

Every poll interval, a server says its previews are alive (``heartbeat_at``) and carries
out what other servers asked, as they cannot reach them: a stop
(``preview_stop_requested``), a delete, a preview declared dead elsewhere. A preview
whose server is dead is stopped from wherever it is asked (nobody else ever would), and
a server starting on a host reaps what a dead server there left running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..entries import utcnow
from ..liveness import HOST, server_dead
from ..store.repository import BuildRow
from ..vocabulary import LIVE_PREVIEW, TERMINAL, PreviewState
from .model import ended_record

if TYPE_CHECKING:
    from .manager import PreviewManager

log = logging.getLogger(__name__)


async def apply_requests(manager: PreviewManager) -> None:
    """Check this server's previews in; carry out a stop asked elsewhere, a delete, or a
    preview declared dead elsewhere while this server could not reach the store."""
    ids = manager.running_ids()
    if not ids:
        return
    checked = await manager.store.preview_checkin(ids, utcnow())
    # Stops run side by side (each may take stop_timeout): the round lasts as long as
    # the slowest, not their sum, and one that fails does not skip the others.
    results = await asyncio.gather(
        *(_apply(manager, build_id, checked.get(build_id)) for build_id in ids),
        return_exceptions=True,
    )
    for build_id, result in zip(ids, results, strict=True):
        if isinstance(result, Exception):
            log.warning("agentbuild: stopping the preview of %s failed: %s", build_id, result)


async def _apply(
    manager: PreviewManager, build_id: str, checked: tuple[bool, str | None] | None
) -> None:
    if checked is None:  # deleted, perhaps elsewhere
        await manager.discard(build_id)
        return
    stop_requested, recorded_state = checked
    if stop_requested:
        await manager.end(build_id, "stopped by request", record=True)
        await manager.store.update_build(build_id, preview_stop_requested=False)
    elif recorded_state in (PreviewState.STOPPED, PreviewState.FAILED):
        # declared dead by another server while this one could not check in: its end
        # is recorded already, its processes are still to go
        await manager.end(build_id, "declared stopped elsewhere", record=False)
        await manager.store.update_build(build_id, sandbox_state=None)


async def reap_orphan(manager: PreviewManager, row: BuildRow) -> bool:
    """Stop, from here, a preview whose server is dead: on this host, its pid is gone;
    on another, its previews have not checked in for ``stale_after``. False when its
    server is alive (it is asked through the store)."""
    beats = [t.timestamp() for t in (row.heartbeat_at, row.finished_at) if t is not None]
    dead = server_dead(
        host=row.runner_host,
        pid=row.runner_pid,
        last_seen=max(beats) if beats else None,
        stale_after=manager.stale_after,
        now=time.time(),
    )
    if not dead:
        return False
    await reap(manager, row, stopped_by_request=True)
    return True


async def reap_leftovers(manager: PreviewManager) -> None:
    """What a dead server on this host left running (its pid is gone)."""
    for row in await manager.store.leftover_sandboxes(host=HOST, statuses=TERMINAL):
        if manager.get(row.id) is not None:
            continue
        dead = server_dead(
            host=HOST, pid=row.runner_pid, last_seen=None, stale_after=0.0, now=time.time()
        )
        if dead:
            await reap(manager, row)
        # else: another live server on this host runs it


async def reap(manager: PreviewManager, row: BuildRow, *, stopped_by_request: bool = False) -> None:
    """Remove a dead server's sandbox (if this process can reach it: otherwise its state
    stays recorded for a server on its host) and record its preview's end."""
    kept = row.sandbox_state
    provider = manager.providers.get(row.provider)
    if provider is not None and row.sandbox_id and row.sandbox_state:
        try:
            if await provider.remove(row.sandbox_id, row.sandbox_state):
                kept = None
        except Exception as exc:
            log.warning("agentbuild: reaping the preview of %s failed: %s", row.id, exc)
    fields: dict[str, Any] = {"sandbox_state": kept, "preview_stop_requested": False}
    if (row.preview or {}).get("state") in LIVE_PREVIEW:
        gone = "the server running the preview stopped"
        if stopped_by_request:
            reason = f"stopped by request ({gone})"
            ended = ended_record(PreviewState.STOPPED, reason=reason)
        else:
            ended = ended_record(PreviewState.FAILED, reason=gone, error=gone)
        ended["step"] = (row.preview or {}).get("step")
        fields["preview"] = ended
    await manager.store.update_build(row.id, **fields)
    log.info("agentbuild: sandbox of %s (left by a dead server) reaped", row.id)


__all__ = ["apply_requests", "reap", "reap_leftovers", "reap_orphan"]
