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

Over plain TCP on both sides (a local preview, Jupyter without TLS), the relay leaves
tornado's streams once the handshake is through and drives the two sockets itself from
the event loop's readiness callbacks (:class:`_Pump`): one ``recv`` and one ``send`` per
chunk and direction, no future and no task switch per message, which is most of what a
small message's round trip through the proxy costs. With TLS on either side, tornado's
streams relay it (the TLS layer is theirs).

The one thing the proxy says itself is goodbye: when the preview stops, the browser gets a
close frame (1001, "the preview stopped") if the preview's byte stream is between two
frames, which :class:`FrameBoundary` follows from the frame headers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from tornado import iostream
from tornado.ioloop import IOLoop

from ..swallow import swallowed
from .upstream_pool import CHUNK_SIZE  # the most read from one side before it is written

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
        if type(self.browser) is iostream.IOStream and type(self.upstream) is iostream.IOStream:
            await self._run_sockets()
            return
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

    # -- over the two sockets themselves ----------------------------------------------------

    _pumps: tuple[_Pump, _Pump] | None = None

    async def _run_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        socks: list[socket.socket] = []
        try:
            for stream in (self.browser, self.upstream):
                _stop_reading(stream)
                # a duplicate descriptor: what tornado has registered for its own socket
                # stays as it is, and is never ours to change
                dup = socket.socket(fileno=os.dup(stream.socket.fileno()))
                dup.setblocking(False)
                _no_delay(dup)
                socks.append(dup)
            browser, upstream = socks

            def end() -> None:
                if not ended.done():
                    ended.set_result(None)

            # whatever tornado still has to write to a side goes first (the 101 to the
            # browser); whatever it has read already (a preview's first message sent with
            # its 101) is relayed first
            up = _Pump(loop, browser, upstream, self.upstream.write(b""), None, self, end)
            down = _Pump(
                loop, upstream, browser, self.browser.write(b""), self.downstream, self, end
            )
            self._pumps = (up, down)
            for pump, stream in ((up, self.browser), (down, self.upstream)):
                buffered = getattr(stream, "_read_buffer_size", 0)  # tornado's read-ahead
                if buffered:  # (served from its buffer: tornado reads its socket no more)
                    pump.relay(await stream.read_bytes(buffered))
                if self.closed:
                    break
                pump.start()
            if not self.closed or self._goodbye is not None:
                await ended
        except (iostream.StreamClosedError, OSError):
            pass
        finally:
            for pump in self._pumps or ():
                pump.stop()
            for sock in socks:
                sock.close()
            self._close_streams()
            self.ended.set()

    def close(self, code: int = 1001, reason: str = "") -> None:
        """End the tunnel now; the browser gets a close frame when one can be placed."""
        if self.closed:
            return
        if self._pumps is not None:
            up, down = self._pumps
            self.closed = True
            up.stop()
            if self.downstream.at_boundary:
                # after what the browser has not been sent yet, then the connection goes;
                # a browser that does not read gets GOODBYE_TIMEOUT
                self._goodbye = down.finish(close_frame(code, reason))
                down.loop.call_later(GOODBYE_TIMEOUT, down.give_up)
            else:
                down.stop()
                down.on_end()
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


def _no_delay(sock: socket.socket) -> None:
    """Small interactive messages: no Nagle delay (not for a Unix socket)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _stop_reading(stream: iostream.IOStream) -> None:
    """Tornado keeps listening for its socket to be readable (to notice a close), and
    would then read into its own buffer: bytes taken from the tunnel. It listens no more.
    (Its own writes, the 101 still on its way, go on.)"""
    state: int | None = getattr(stream, "_state", None)
    if state is not None and state & IOLoop.READ:
        stream._state = state & ~IOLoop.READ  # type: ignore[attr-defined]
        stream.io_loop.update_handler(stream.fileno(), stream._state)  # type: ignore[attr-defined]


class _Pump:
    """One direction of a tunnel over two non-blocking sockets, driven by readiness
    callbacks: a chunk is read, then written; what the sink does not take at once is
    written when it can take more, and nothing is read meanwhile (back-pressure: at
    most one chunk held). ``gate`` is tornado's last write to the sink: nothing of ours
    goes before it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: socket.socket,
        sink: socket.socket,
        gate: asyncio.Future[None],
        frames: FrameBoundary | None,
        tunnel: Tunnel,
        on_end: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.source = source
        self.sink = sink
        self.gate = gate
        self.frames = frames
        self.tunnel = tunnel
        self.on_end = on_end
        self.pending: memoryview | None = None
        self.reading = False
        self.writing = False
        self.finishing: asyncio.Future[None] | None = None
        self.stopped = False
        if not gate.done():
            gate.add_done_callback(self._gate_open)

    def start(self) -> None:
        if not self.stopped and self.pending is None:
            self._read_on()

    def stop(self) -> None:
        self.stopped = True
        self._read_off()
        self._write_off()
        if self.finishing is not None and not self.finishing.done():
            self.finishing.set_result(None)

    def finish(self, last: bytes) -> asyncio.Future[None]:
        """Read no more; write what is held, then ``last``; then end the tunnel."""
        self._read_off()
        self.finishing = self.loop.create_future()
        held = bytes(self.pending) if self.pending is not None else b""
        self.pending = memoryview(held + last)
        self._flush()
        return self.finishing

    def give_up(self) -> None:
        """The sink did not take what was left in time: end anyway."""
        if not self.stopped:
            self._ended()

    def relay(self, data: bytes) -> None:
        """Pass ``data`` (read from the source) on to the sink."""
        self.tunnel.on_traffic()
        if self.frames is not None:
            self.frames.feed(data)
        self.pending = memoryview(data)
        self._flush()

    # -- readiness callbacks ---------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.source.recv(CHUNK_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._ended()
            return
        if not data:
            self._ended()
            return
        self.relay(data)

    def _flush(self) -> None:
        if self.stopped:
            return
        if not self.gate.done():
            self._read_off()  # until tornado's own writes are out (_gate_open)
            return
        pending = self.pending
        while pending is not None and len(pending):
            try:
                sent = self.sink.send(pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._ended()
                return
            pending = pending[sent:]
        if pending is not None and len(pending):
            self.pending = pending
            self._read_off()
            self._write_on()
            return
        self.pending = None
        self._write_off()
        if self.finishing is not None:
            if not self.finishing.done():
                self.finishing.set_result(None)
            self._ended()
            return
        self._read_on()

    def _gate_open(self, gate: asyncio.Future[None]) -> None:
        if not gate.cancelled() and gate.exception() is not None:
            self._ended()
            return
        _no_delay(self.sink)  # tornado turns it off once its response is written
        if self.pending is not None:
            self._flush()

    def _ended(self) -> None:
        self.stop()
        self.on_end()

    # -- registrations ---------------------------------------------------------------------

    def _read_on(self) -> None:
        if not self.reading and not self.stopped and self.finishing is None:
            self.loop.add_reader(self.source.fileno(), self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.source.fileno())
            self.reading = False

    def _write_on(self) -> None:
        if not self.writing:
            self.loop.add_writer(self.sink.fileno(), self._flush)
            self.writing = True

    def _write_off(self) -> None:
        if self.writing:
            self.loop.remove_writer(self.sink.fileno())
            self.writing = False


__all__ = ["FrameBoundary", "Tunnel", "close_frame"]
