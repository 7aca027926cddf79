"""How a build ends: its sandbox released, its last entry stored with its terminal row,
one line for operators.

The terminal status entry and the terminal row are written in one transaction, so whoever
sees the end of the stream (here or on another server) and then reads the build finds it
terminal, with its exit code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .build_job import BuildJob
from .entries import ACTIVE, utcnow
from .retry import with_backoff
from .store.repository import BuildRow, Store
from .vocabulary import BuildStatus

#: The runner's logger: operators follow a build's life in one logger's lines.
log = logging.getLogger("jupyter_agentbuild.runner")


async def release_sandbox(
    job: BuildJob, leftovers: dict[str, tuple[str, str, dict[str, Any]]]
) -> dict[str, Any] | None:
    """Destroy the build's sandbox unless a hook kept it; the ``sandbox_state`` to
    record with the terminal row: the kept sandbox's, or the one that could not be
    destroyed (a reaper finds it there), else None."""
    sandbox = job.sandbox
    if sandbox is None:
        return None
    if job.sandbox_kept:
        return sandbox.state()
    try:
        await sandbox.destroy()
        return None
    except Exception as exc:
        try:
            state: dict[str, Any] | None = sandbox.state()
        except Exception:
            state = job.recorded_state
        log.warning(
            "agentbuild: destroying sandbox %s of build %s failed (%s: %s); "
            "it stays recorded until it is removed",
            sandbox.id,
            job.row.id,
            type(exc).__name__,
            exc,
        )
        if state is not None:
            leftovers[job.row.id] = (job.row.provider, sandbox.id, state)
        return state


@dataclass(frozen=True)
class Outcome:
    """How a build ended, as its terminal row records it."""

    status: str
    exit_code: int | None
    error: str | None
    #: A kept sandbox (a preview), or one that could not be destroyed: still recorded.
    sandbox_state: dict[str, Any] | None = None

    def columns(self) -> dict[str, Any]:
        """The terminal row's columns besides ``status``, ended now."""
        return {
            "exit_code": self.exit_code,
            "error": self.error,
            "finished_at": utcnow(),
            "sandbox_state": self.sandbox_state,
        }


def terminal_commit(
    store: Store, patience: float, build_id: str, outcome: Outcome, elsewhere: asyncio.Event
) -> Callable[[tuple[int, str]], Awaitable[bool]]:
    """How the build log stores its last entry: with the terminal row, in one transaction
    (retried through a brief outage). ``elsewhere`` is set when the build had already
    been ended by someone else (its row must then stay as they left it)."""

    async def commit(entry: tuple[int, str]) -> bool:
        async def once() -> bool:
            return await store.end_with_entry(
                build_id,
                entry,
                from_statuses=list(ACTIVE),
                to_status=outcome.status,
                **outcome.columns(),
            )

        try:
            if await with_backoff(once, patience=patience):
                return True
        except Exception as exc:
            log.error("agentbuild: could not store the end of build %s: %s", build_id, exc)
            return False
        # Refused: perhaps an earlier attempt committed and only its answer was lost.
        now = await store.get_build(build_id)
        if now is not None and now.last_seq >= entry[0] and now.status == outcome.status:
            return True
        elsewhere.set()
        log.warning(
            "agentbuild: build %s was ended elsewhere (%s) before this server could",
            build_id,
            now.status if now is not None else "deleted",
        )
        return False

    return commit


def log_end(row: BuildRow, status: str, exit_code: int | None, error: str | None) -> None:
    """One line per build end, for operators."""
    if status == BuildStatus.SUCCEEDED:
        log.info("agentbuild: build %s of %s succeeded", row.id, row.owner)
    elif status == BuildStatus.FAILED:
        log.info(
            "agentbuild: build %s of %s failed (exit code %s): %s",
            row.id,
            row.owner,
            exit_code,
            error,
        )
    else:  # cancelled | timed_out | interrupted
        log.info("agentbuild: build %s of %s %s: %s", row.id, row.owner, status, error)


async def write_terminal(store: Store, patience: float, build_id: str, outcome: Outcome) -> None:
    """The terminal row alone (the stream could not be ended in the store)."""
    try:
        await with_backoff(
            lambda: store.update_build(build_id, status=outcome.status, **outcome.columns()),
            patience=patience,
        )
    except Exception:
        log.exception("agentbuild: could not record the end of build %s", build_id)


__all__ = ["Outcome", "log_end", "release_sandbox", "terminal_commit", "write_terminal"]
