"""A WebSocket through the preview proxy, relayed as bytes after the handshake.

Once the preview has answered the upgrade with ``101`` (to the browser's own
``Sec-WebSocket-Key``, protocols and extensions, passed on by the proxy), both TCP
connections already carry the same WebSocket: frames from the browser are masked, as the
preview expects of a client; frames from the preview are not, as the browser expects of a
server. So the proxy relays bytes, as nginx does, instead of decoding each frame and
encoding it again (what tornado's WebSocket client and handler would do, and what
jupyter-server-proxy does):

- no per-message work: no unmasking and masking, no UTF-8 check, no queue; a message costs
  one read and one write in each direction, which is why round trips through this proxy
  are faster than through jupyter-server-proxy (``benchmarks/bench_proxy.py``);
- end to end as the two ends agreed: the subprotocol, permessage-deflate, fragmentation,
  ping/pong and the closing handshake are theirs, untouched;
- back-pressure: the next chunk is read from one side only once the previous one has been
  written to the other, so memory per tunnel stays at about one chunk.

The one thing the proxy says itself is goodbye: when the preview stops, the browser gets a
close frame (1001, "the preview stopped") if the preview's byte stream is between two
frames, which :class:`FrameBoundary` follows from the frame headers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tornado import iostream

from ..swallow import swallowed
from .upstream import CHUNK_SIZE  # the most read from one side before it is written

log = logging.getLogger(__name__)

#: How long a queued close frame may wait for a browser that does not read.
GOODBYE_TIMEOUT = 5.0

_CLOSE = 0x8


class FrameBoundary:
    """Follows a WebSocket byte stream from frame header to frame header.

    ``feed`` takes the bytes in the order they are relayed; ``at_boundary`` says whether
    they end exactly between two frames (where another frame may be written). Only
    headers are parsed: a chunk inside a long payload costs one comparison.
    """

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = b""  # the start of a frame header cut by a chunk end

    @property
    def at_boundary(self) -> bool:
        return self._skip == 0 and not self._head

    def feed(self, data: bytes) -> None:
        size = len(data)
        if self._skip >= size:
            self._skip -= size
            return
        pos = self._skip
        if self._head:
            data = self._head + data
            size = len(data)
            self._head = b""
        while pos < size:
            if size - pos < 2:
                break
            second = data[pos + 1]
            length = second & 0x7F
            header = 2 + (4 if second & 0x80 else 0) + (2 if length == 126 else 0)
            header += 8 if length == 127 else 0
            if size - pos < header:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            pos += header + length
        else:
            self._skip = pos - size
            return
        self._skip = 0
        self._head = data[pos:]


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked (server-to-client) close frame."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes([0x80 | _CLOSE, len(payload)]) + payload


def _close_after(written: asyncio.Future[None], stream: iostream.IOStream) -> None:
    if not written.cancelled():
        written.exception()  # retrieved: a browser gone meanwhile is no error
    stream.close()


class Tunnel:
    """Relays one upgraded connection: browser <-> preview, bytes both ways.

    ``run`` returns when either side has closed (the other is then closed, after what
    was read from the first has been written); ``close`` ends it from outside (the
    preview stopped). ``on_traffic`` is called per chunk relayed (the idle clock).
    """

    def __init__(
        self,
        browser: iostream.IOStream,
        upstream: iostream.IOStream,
        on_traffic: Callable[[], None],
    ) -> None:
        self.browser = browser
        self.upstream = upstream
        self.on_traffic = on_traffic
        self.downstream = FrameBoundary()
        self.closed = False
        #: The goodbye frame's write, while it waits in the browser's socket buffer.
        self._goodbye: asyncio.Future[None] | None = None
        #: Set once both sides are closed and both relays have ended.
        self.ended = asyncio.Event()
        browser.set_nodelay(True)  # small interactive messages: no Nagle delay
        upstream.set_nodelay(True)

    async def run(self) -> None:
        up = asyncio.create_task(self._relay(self.browser, self.upstream, None))
        down = asyncio.create_task(self._relay(self.upstream, self.browser, self.downstream))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            goodbye = self._goodbye
            if goodbye is not None and not goodbye.done():
                # the close frame is queued behind what the browser has not read yet:
                # give it a moment to get out before the connection goes
                with swallowed(log, "sending a tunnel's close frame", level=logging.DEBUG):
                    await asyncio.wait_for(asyncio.shield(goodbye), GOODBYE_TIMEOUT)
            self._close_streams()
            await asyncio.wait((up, down))
            self.ended.set()

    async def _relay(
        self, source: iostream.IOStream, sink: iostream.IOStream, frames: FrameBoundary | None
    ) -> None:
        on_traffic = self.on_traffic
        with contextlib.suppress(iostream.StreamClosedError, OSError):
            while True:
                data = await source.read_bytes(CHUNK_SIZE, partial=True)
                if self.closed:
                    return  # nothing after the goodbye (tornado still hands out its buffer)
                on_traffic()
                if frames is not None:
                    frames.feed(data)
                written = sink.write(data)
                if not written.done():
                    await written
                elif written.exception() is not None:
                    return

    def close(self, code: int = 1001, reason: str = "") -> None:
        """End the tunnel now; the browser gets a close frame when one can be placed."""
        if self.closed:
            return
        browser = self.browser
        if self.downstream.at_boundary and not browser.closed():
            with contextlib.suppress(iostream.StreamClosedError):
                written = browser.write(close_frame(code, reason))
                if not written.done():
                    # the frame is queued: stop the preview's side now, the browser's
                    # once the frame is out (run() waits for it, a bounded while)
                    self.closed = True
                    self._goodbye = written
                    self.upstream.close()
                    written.add_done_callback(lambda done: _close_after(done, browser))
                    return
        self._close_streams()

    def _close_streams(self) -> None:
        self.closed = True
        self.upstream.close()
        self.browser.close()


__all__ = ["FrameBoundary", "Tunnel", "close_frame"]
