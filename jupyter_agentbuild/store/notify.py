"""Cross-server wake-ups: PostgreSQL LISTEN/NOTIFY on new entries and status changes.

A server streaming a build that runs on another server reads the store; this turns
its waiting from polling into a wake-up the moment the other server commits. The
store stays the source of truth: a missed or late notification only delays a
reader until its fallback poll, never loses an entry. SQLite (one machine) has
no notifications; readers there only poll for builds of other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..swallow import swallowed

log = logging.getLogger(__name__)

CHANNEL = "agentbuild_entries"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :build_id)")


async def notify(conn: AsyncConnection, build_id: str) -> None:
    """Announce a change of ``build_id``; delivered when the transaction commits."""
    if conn.dialect.name == "postgresql":
        await conn.execute(NOTIFY, {"build_id": build_id})


class Notifier:
    """Listens on one dedicated connection and wakes local waiters per build."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self._events: dict[str, asyncio.Event] = {}
        self._conn: AsyncConnection | None = None
        self._raw: Any = None

    async def start(self) -> None:
        if not self.enabled or self._raw is not None:
            return
        try:
            self._conn = await self.engine.connect()
            raw = await self._conn.get_raw_connection()
            self._raw = raw.driver_connection
            await self._raw.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:  # listening is an optimisation: fall back to polling
            log.warning("agentbuild: LISTEN failed (%s); streams will poll", exc)
            await self.stop()

    async def stop(self) -> None:
        if self._raw is not None:
            with swallowed(log, "UNLISTEN", level=logging.DEBUG):
                await self._raw.remove_listener(CHANNEL, self._on_notify)
        if self._conn is not None:
            with swallowed(log, "closing the LISTEN connection", level=logging.DEBUG):
                await self._conn.close()
        self._conn = self._raw = None

    @property
    def listening(self) -> bool:
        return self._raw is not None and not self._raw.is_closed()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, build_id: str) -> None:
        event = self._events.pop(build_id, None)
        if event is not None:
            event.set()

    async def wait(self, build_id: str, seconds: float) -> None:
        """Return on a notification for ``build_id`` or after ``seconds``."""
        if not self.listening:
            await asyncio.sleep(seconds)
            return
        event = self._events.setdefault(build_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
