"""What the store hands back: plain frozen rows, no ORM session behind them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class BuildRow:
    """One ``builds`` row; JSON columns already decoded, datetimes aware UTC."""

    pk: int
    id: str
    owner: str
    name: str | None
    status: str
    provider: str
    sandbox_id: str | None
    sandbox_state: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str | None
    spec: dict[str, Any]
    last_seq: int
    preview: dict[str, Any] | None
    artifacts: dict[str, Any] | None
    #: The server running the build (``Runner.server_id``), its host and pid.
    runner_id: str | None
    runner_host: str | None
    runner_pid: int | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    preview_stop_requested: bool = False
