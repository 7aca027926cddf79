"""The WebSocket log stream: backlog, then live, then close with 1000.

Each frame is a JSON array of entries with ``seq > after``, ascending, with no
gap and no duplicate, of at most ``FRAME_ENTRIES`` entries and ``max_page_bytes``
bytes (one entry at least). ``write_message`` is awaited before the next frame is
read, so a slow client slows only its own reader, never the build, and the server
holds at most one frame for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web, websocket

from ..identity import request_owner
from .base import AUTH_RESOURCE, JsonErrors

FRAME_ENTRIES = 5000


class StreamHandler(JsonErrors, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE
    _task: asyncio.Task[None] | None = None

    async def pre_get(self, build_id: str) -> None:
        user = self.current_user
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)
        agentbuild = self.settings["agentbuild"]
        owner = request_owner(self)
        query = {"after": self.get_query_argument("after", "")}
        self.after = await agentbuild.service.stream_from(owner, build_id, query)
        self.build_id = build_id

    @ws_authenticated
    async def get(self, build_id: str, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            # tornado would answer a plain-text 400: the contract's JSON instead
            raise web.HTTPError(400, "this endpoint is a WebSocket (Upgrade: websocket)")
        await self.pre_get(build_id)
        result = super().get(build_id, *args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        # A live log is a trickle of small frames: with Nagle's algorithm on (tornado's
        # default), a frame sent while the previous one is unacknowledged waits for the
        # client's delayed ACK, up to 40 ms on Linux.
        self.set_nodelay(True)
        self._task = asyncio.create_task(self._send_frames())

    async def _send_frames(self) -> None:
        service = self.settings["agentbuild"].service
        try:
            async for frame in service.follow(self.build_id, self.after, FRAME_ENTRIES):
                await self.write_message(frame)
            self.close(1000, "build finished")
        except websocket.WebSocketClosedError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("agentbuild: log stream of %s failed", self.build_id)
            self.close(1011, "stream failed")

    def on_message(self, message: str | bytes) -> None:
        """Clients have nothing to say; the stream is one-way."""

    def on_close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def check_xsrf_cookie(self) -> None:
        """WebSockets are protected by the Origin check instead (as jupyter_server does)."""
        return


__all__ = ["StreamHandler"]
