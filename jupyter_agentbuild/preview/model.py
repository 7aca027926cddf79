"""One live preview as the manager and the proxy see it, and the records it leaves.

``Build.preview["state"]`` goes ``starting -> ready -> stopped | failed``; a restart
takes a ready preview back through ``starting``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..entries import iso, utcnow
from ..sandbox.base import Sandbox
from ..spec import PreviewSpec
from ..swallow import swallowed
from ..vocabulary import PreviewState
from .upstream_pool import UpstreamPool

log = logging.getLogger(__name__)

#: How often (s) preview traffic is reported as server activity (for idle cullers).
ACTIVITY_REPORT_INTERVAL = 10.0


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
    state: PreviewState = PreviewState.STARTING
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
    #: The pending idle stop (see ``PreviewManager.arm_idle``).
    idle_handle: asyncio.TimerHandle | None = None
    reported_at: float = 0.0

    def touch(self) -> None:
        """Proxied traffic: postpones the idle stop, and counts as server activity."""
        now = time.monotonic()
        self.last_activity = now
        if now - self.reported_at > ACTIVITY_REPORT_INTERVAL:
            self.reported_at = now
            self.on_activity()

    def close_sockets(self, reason: str, code: int = 1001) -> None:
        """Close every WebSocket relayed to the preview (it stops, or its process is
        replaced); a relay that fails to close does not keep the others open."""
        for relay in list(self.sockets):
            with swallowed(log, f"closing a WebSocket of preview {self.build_id}"):
                relay.close(code, reason)


class PreviewRoutes(Protocol):
    """Routes a preview host (``{label}.{domain}``) to this server in a front proxy that
    routes by exact host (JupyterHub's): see :mod:`..hub.routes_client`."""

    async def add(self, label: str) -> None: ...

    async def remove(self, label: str) -> None: ...


def ended_record(
    state: PreviewState,
    *,
    reason: str,
    error: str | None = None,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """``Build.preview`` of a preview that has stopped or failed: when, why, and the
    exit code and error when its process exited or never started."""
    out: dict[str, Any] = {"state": state, "stopped_at": iso(utcnow()), "reason": reason}
    if exit_code is not None:
        out["exit_code"] = exit_code
    if error is not None:
        out["error"] = error
    return out


def preview_env(build_env: Mapping[str, str]) -> dict[str, str]:
    """What the preview command gets besides ``$PORT``. The app runs at "/" on its own
    origin, and the path proxy strips its prefix: the base it is told and the paths it
    receives agree (no redirect loop)."""
    env = {"AGENTBUILD_PREVIEW_BASE": "/"}
    if "HOST" not in build_env:
        env["HOST"] = "127.0.0.1"
    return env


__all__ = ["Preview", "PreviewRoutes", "ended_record", "preview_env"]
