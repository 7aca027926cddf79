"""The tunnel's frame follower, against every way a byte stream can be cut into chunks."""

from __future__ import annotations

import random

import pytest

from jupyter_agentbuild.preview.tunnel import FrameBoundary, close_frame


def frame(payload_size: int, *, masked: bool = False, opcode: int = 0x2) -> bytes:
    if payload_size < 126:
        head = bytes([0x80 | opcode, payload_size | (0x80 if masked else 0)])
    elif payload_size < 65536:
        head = bytes([0x80 | opcode, 126 | (0x80 if masked else 0)])
        head += payload_size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127 | (0x80 if masked else 0)])
        head += payload_size.to_bytes(8, "big")
    return head + (b"MASK" if masked else b"") + bytes(payload_size)


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def stream() -> tuple[bytes, set[int]]:
    """Frames of every header form, and the offsets where one ends."""
    frames = [frame(n, masked=i % 2 == 1) for i, n in enumerate(SIZES)] + [close_frame(1000, "")]
    data, ends, offset = b"", {0}, 0
    for f in frames:
        data += f
        offset += len(f)
        ends.add(offset)
    return data, ends


def test_cut_anywhere_the_boundary_is_known_after_every_chunk() -> None:
    data, ends = stream()
    rng = random.Random(6455)
    for _ in range(200):
        follower = FrameBoundary()
        pos = 0
        while pos < len(data):
            size = rng.choice([1, 2, 3, 5, 9, 14, 127, 4096, 70001])
            follower.feed(data[pos : pos + size])
            pos = min(pos + size, len(data))
            assert follower.at_boundary == (pos in ends), pos


@pytest.mark.parametrize("cut", range(1, 16))
def test_a_header_cut_in_two_is_not_a_boundary(cut: int) -> None:
    data = frame(70000, masked=True)  # 2 + 8 + 4 header bytes
    follower = FrameBoundary()
    follower.feed(data[:cut])
    assert not follower.at_boundary
    follower.feed(data[cut:])
    assert follower.at_boundary


def test_close_frame_is_a_server_frame_with_code_and_reason() -> None:
    data = close_frame(1001, "the preview stopped")
    assert data[0] == 0x88 and data[1] == len(data) - 2
    assert int.from_bytes(data[2:4], "big") == 1001 and data[4:] == b"the preview stopped"
    assert len(close_frame(1001, "x" * 500)) == 2 + 125  # a control frame's payload limit


async def test_a_queued_goodbye_reaches_a_browser_that_reads_late() -> None:
    """The preview stops while the browser's socket is full: the close frame waits behind
    what is queued (the backlog, then the preview's last whole frame), and only then the
    connection ends."""
    import asyncio
    import socket

    from tornado.iostream import IOStream

    from jupyter_agentbuild.preview.tunnel import Tunnel

    browser_end, browser_side = socket.socketpair()
    upstream_side, preview_end = socket.socketpair()
    for sock in (browser_end, preview_end):
        sock.setblocking(False)
    browser, upstream = IOStream(browser_side), IOStream(upstream_side)
    relayed = asyncio.Event()
    tunnel = Tunnel(browser, upstream, relayed.set)
    run = asyncio.create_task(tunnel.run())
    backlog = frame(8 << 20)  # one whole frame the browser has not read yet
    queued = browser.write(backlog)
    assert not queued.done()  # more than the socket buffers hold
    preview_end.sendall(frame(5))  # the preview still talks as it is stopped
    await asyncio.wait_for(relayed.wait(), 10)  # the tunnel has read it
    tunnel.close(1001, "the preview stopped")
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(browser_end, 1 << 20):
        received += chunk
    await asyncio.wait_for(run, 10)
    assert bytes(received) == backlog + frame(5) + close_frame(1001, "the preview stopped")
    assert tunnel.ended.is_set()
    browser_end.close()
    preview_end.close()


async def test_what_tornado_read_ahead_goes_first_and_nothing_is_taken() -> None:
    """The preview's first bytes came with its 101 and sit in tornado's buffer: the tunnel
    relays them first, then everything else in order, both ways; tornado, which was still
    listening on both sockets, takes none of it."""
    import asyncio
    import socket

    from tornado.ioloop import IOLoop
    from tornado.iostream import IOStream

    from jupyter_agentbuild.preview.tunnel import Tunnel

    loop = asyncio.get_running_loop()
    browser_end, browser_side = socket.socketpair()
    upstream_side, preview_end = socket.socketpair()
    for sock in (browser_end, preview_end):
        sock.setblocking(False)
    browser, upstream = IOStream(browser_side), IOStream(upstream_side)
    await loop.sock_sendall(preview_end, b"Hearly;")
    assert await upstream.read_bytes(1) == b"H"  # tornado read the rest ahead
    assert upstream._read_buffer_size == len(b"early;")
    for stream in (browser, upstream):
        # as the server's streams are after the upgrade: tornado listening for a close
        # (read interest registered), its close callback then cleared by detach()
        stream.set_close_callback(lambda: None)
        stream.set_close_callback(None)
    assert browser._state is not None and browser._state & IOLoop.READ
    tunnel = Tunnel(browser, upstream, lambda: None)
    run = asyncio.create_task(tunnel.run())
    down = b"".join(f"down {i};".encode() for i in range(3000))
    up = b"".join(f"up {i};".encode() for i in range(3000))

    async def read(sock: socket.socket, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            chunk = await loop.sock_recv(sock, 1 << 16)
            assert chunk, bytes(got[-100:])
            got += chunk
        return bytes(got)

    sends = asyncio.gather(loop.sock_sendall(preview_end, down), loop.sock_sendall(browser_end, up))
    at_browser, at_preview = await asyncio.wait_for(
        asyncio.gather(read(browser_end, len(b"early;") + len(down)), read(preview_end, len(up))),
        10,
    )
    await sends
    assert at_browser == b"early;" + down
    assert at_preview == up
    browser_end.close()  # the browser leaves: the tunnel ends and closes the preview's side
    await asyncio.wait_for(run, 10)
    assert tunnel.ended.is_set()
    assert await loop.sock_recv(preview_end, 10) == b""
    preview_end.close()
