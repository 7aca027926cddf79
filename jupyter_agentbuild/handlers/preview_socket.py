"""The WebSocket way of a preview relay: the upgrade, then a byte tunnel.

The browser's upgrade goes to the preview as it was sent (its key, protocols and
extensions; credentials stripped), the preview's ``101`` comes back, and from then on the
two connections are one WebSocket, relayed as bytes (:mod:`..preview.tunnel`), each
chunk written before the next is read. Who may upgrade was decided in the handler's
``prepare``; which ``Origin`` may, by the way in (:meth:`PreviewRelay._origin_allowed`).
"""

from __future__ import annotations

from ..preview.tunnel import Tunnel
from ..preview.upstream_pool import UpstreamError
from .preview_relay import PreviewRelay, http_error


class WebSocketRelay(PreviewRelay):
    """A :class:`PreviewRelay` that also tunnels WebSockets."""

    async def relay_websocket(self, path: str | None, gone: str) -> None:
        """The upgrade goes to the preview as the browser sent it (its key, protocols and
        extensions; credentials stripped); the preview's ``101`` comes back, and from then
        on the two connections are one WebSocket, relayed as bytes (:mod:`..preview.tunnel`)."""
        preview = self.preview
        if preview is None or preview.pool is None:
            raise http_error(404, gone)
        if not self._origin_allowed(self.request.headers.get("Origin", "")):
            raise http_error(403, "cross-origin WebSocket refused")
        if self._has_body():
            raise http_error(400, "a WebSocket upgrade has no request body")
        headers = self._upstream_headers(websocket=True)
        exchange = self.exchange = await self._exchange(fresh=True)
        try:
            try:
                start_line, answer, upstream = await exchange.upgrade(self._target(path), headers)
            except UpstreamError as exc:
                raise http_error(exc.status, str(exc)) from None
            if upstream is None:
                raise http_error(502, f"the preview refused the WebSocket (HTTP {start_line.code})")
            if preview.stopping:
                raise http_error(404, gone)
            self.answer_head(start_line, answer, self._rewriter())
            self.set_header("Upgrade", "websocket")
            self.set_header("Connection", "Upgrade")
            self.finish()
            tunnel = Tunnel(self.detach(), upstream, preview.touch)
            preview.sockets.add(tunnel)
            try:
                await tunnel.run()
            finally:
                preview.sockets.discard(tunnel)
        finally:
            self.exchange = None
            exchange.abort()
            exchange.release()


__all__ = ["WebSocketRelay"]
