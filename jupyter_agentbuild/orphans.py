"""Builds whose server died: taken over, or ended ``interrupted`` with their sandboxes
reaped; and sandboxes whose destroy failed, removed on a later heartbeat."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import resume
from .entries import ACTIVE, encode_event, iso, utcnow
from .sandbox.base import SandboxProvider
from .store.repository import BuildRow, Store
from .vocabulary import BuildStatus, EventType

if TYPE_CHECKING:
    from .runner import Runner

#: The runner's logger: operators follow a build's life in one logger's lines.
log = logging.getLogger("jupyter_agentbuild.runner")


async def end_orphan(runner: Runner, row: BuildRow) -> None:
    """Resume ``row`` (its server died) here or let another server do it; else mark it
    ``interrupted``, reaping its sandbox where this server can."""
    if await resume.take_over(runner, row) is not False:  # resumed here or elsewhere
        return
    await resume.reap_unrecorded(runner, row)
    # A sandbox that cannot be reaped from here (another host) stays recorded:
    # the next server starting there reaps it (PreviewManager.start).
    keep = None
    if row.sandbox_id and row.sandbox_state and row.provider in runner.providers:
        try:
            provider = runner.providers[row.provider]
            if not await provider.reap(row.sandbox_id, row.sandbox_state):
                keep = row.sandbox_state
        except Exception as exc:
            keep = row.sandbox_state  # still there: stays recorded for a later reaper
            log.warning("agentbuild: reaping %s failed: %s", row.sandbox_id, exc)
    message = "the server running this build stopped before it finished"
    now_utc = utcnow()
    data = {"status": BuildStatus.INTERRUPTED, "exit_code": None, "error": message}
    seq = row.last_seq + 1
    if await runner.store.end_with_entry(
        row.id,
        (seq, encode_event(seq, iso(now_utc) or "", EventType.STATUS, data)),
        from_statuses=list(ACTIVE),
        to_status=BuildStatus.INTERRUPTED,
        error=message,
        finished_at=now_utc,
        sandbox_state=keep,
    ):
        log.info(
            "agentbuild: build %s of %s interrupted: its server died (sandbox %s)",
            row.id,
            row.owner,
            "left recorded" if keep else "reaped" if row.sandbox_state else "none",
        )


async def remove_leftovers(
    providers: Mapping[str, SandboxProvider],
    store: Store,
    leftovers: dict[str, tuple[str, str, dict[str, Any]]],
) -> None:
    """Try again to remove the sandboxes whose destroy failed; a removed one is no
    longer recorded (a server restart reaps the rest: they stay in the store)."""
    for build_id, (name, sandbox_id, state) in list(leftovers.items()):
        provider = providers.get(name)
        try:
            gone = provider is not None and await provider.remove(sandbox_id, state)
        except Exception as exc:
            log.warning(
                "agentbuild: removing sandbox %s of build %s failed again (%s: %s)",
                sandbox_id,
                build_id,
                type(exc).__name__,
                exc,
            )
            continue
        if gone:
            await store.update_build(build_id, sandbox_state=None)
            log.info("agentbuild: sandbox %s of build %s removed", sandbox_id, build_id)
        leftovers.pop(build_id, None)


__all__ = ["end_orphan", "remove_leftovers"]
