"""Large bodies through the proxy: streamed with bounded memory for fast and slow readers,
intact, and (bodies of known length) moved inside the kernel (``os.splice``) with the
browser's keep-alive connection still served by tornado afterwards; a browser that leaves
in the middle frees the preview's connection without harming the next request."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from jupyter_agentbuild.preview import splice, upstream
from tests.preview.conftest import WAIT, Previews

LINUX_SPLICE = pytest.mark.skipif(not hasattr(splice.os, "splice"), reason="Linux only")


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    match = re.search(rb"Content-Length: (\d+)", head)
    assert match is not None, head
    body = await asyncio.wait_for(reader.readexactly(int(match.group(1))), WAIT)
    return int(head.split()[1]), body


@LINUX_SPLICE
async def test_spliced_bodies_are_intact_on_one_keep_alive_connection(
    previews: Previews, monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced: list[int] = []

    async def counted(*args: Any, **kwargs: Any) -> None:
        spliced.append(args[2])
        await splice.splice_body(*args, **kwargs)

    monkeypatch.setattr(upstream, "splice_body", counted)
    build = await previews.start()
    bid = build["id"]
    own = previews.own_host(build)
    ways = [
        (previews.path(bid, ""), f"127.0.0.1:{previews.port}", f"token {previews.token}"),
        ("", own, None),
    ]
    for prefix, host, auth in ways:
        reader, writer = await asyncio.open_connection("127.0.0.1", previews.port)
        try:
            for size in (3 * 2**20 + 7, 2 * 2**20 + 1):  # more than a first read takes
                for target in (f"/random?size={size}", "/tiny"):
                    extra = f"Authorization: {auth}\r\n" if auth else ""
                    request = f"GET {prefix}{target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
                    writer.write(request.encode())
                    status, body = await read_answer(reader)
                    assert status == 200, (host, target, body[:200])
                    if target == "/tiny":
                        assert body == b"ok"
                    else:
                        assert body == random.Random(size).randbytes(size), (host, size)
        finally:
            writer.close()
    assert len(spliced) == 4, "each body (after its first piece) went through the kernel"
    # the preview's connection went back to the pool after each spliced body
    assert previews.manager.get(bid).pool.opened <= 2


async def test_a_browser_leaving_mid_body_cuts_the_upstream_only(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    pool = previews.manager.get(bid).pool
    reader, writer = await asyncio.open_connection("127.0.0.1", previews.port)
    writer.write(
        f"GET {previews.path(bid, '/big?size=2000000000')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: token {previews.token}\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    await asyncio.wait_for(reader.readexactly(4 * 2**20), WAIT)
    writer.transport.abort()  # reset, not a polite close
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    # the relay notices at its next write; nothing announces the release to await
    while pool.in_use and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not pool.in_use and not pool.idle, "the cut connection is not kept"
    again = await previews.fetch(bid, "/random?size=1000000")
    assert again.code == 200 and again.body == random.Random(1000000).randbytes(1000000)


async def test_large_response_streams_with_bounded_memory(previews: Previews) -> None:
    """400 MB through the proxy at full speed, then 128 MB read at 64 MB/s (the upstream
    is far faster): server memory grows by less than 64 MB either way."""
    build = await previews.start()
    me = psutil.Process()
    for size, rate in ((400 * 2**20, None), (128 * 2**20, 64 * 2**20)):
        peak = PeakRss(me)
        with peak:
            status, received = await stream_get(
                previews.port, previews.path(build["id"], f"/big?size={size}"), previews.token, rate
            )
        assert status == 200 and received == size
        growth = peak.growth / 2**20
        assert growth < 64, f"RSS grew by {growth:.0f} MB for {size >> 20} MB (rate {rate})"


class PeakRss:
    """The peak RSS growth of a process while the block runs (sampled every 20 ms)."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.base = self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


async def stream_get(port: int, path: str, token: str, rate: float | None) -> tuple[int, int]:
    """GET ``path`` reading the body as it comes (or at ``rate`` bytes/s); discard it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: token {token}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        status = int(head.split()[1])
        match = re.search(rb"Content-Length: (\d+)", head)
        assert match is not None, head
        remaining = int(match.group(1))
        received = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while remaining > 0:
            data = await asyncio.wait_for(reader.read(min(remaining, 256 * 1024)), WAIT)
            if not data:
                break
            received += len(data)
            remaining -= len(data)
            if rate is not None:
                ahead = received / rate - (loop.time() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the reader, not synchronisation
        return status, received
    finally:
        writer.close()


async def test_a_browser_that_leaves_mid_transfer_frees_its_upstream_connection(
    previews: Previews,
) -> None:
    build = await previews.start()
    bid = build["id"]
    pool = previews.manager.get(bid).pool
    loop = asyncio.get_running_loop()

    async def until(condition: Any) -> None:
        deadline = loop.time() + 10
        while not condition():  # waiting for a condition, bounded
            assert loop.time() < deadline, pool.in_use
            await asyncio.sleep(0.01)

    head = f"Host: 127.0.0.1:{previews.port}\r\nAuthorization: token {previews.token}\r\n"
    requests = [
        f"GET {previews.path(bid, '/big?size=200000000')} HTTP/1.1\r\n{head}\r\n".encode(),
        f"PUT {previews.path(bid, '/echo')} HTTP/1.1\r\n{head}Content-Length: 50000000\r\n\r\n".encode()
        + b"x" * 1_000_000,
    ]
    for request in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", previews.port)
        writer.write(request)
        await writer.drain()
        await until(lambda: pool.in_use == 1)  # the exchange with the preview is on
        writer.close()  # ... and the browser leaves in the middle of it
        await until(lambda: not pool.in_use)
    assert (await previews.fetch(bid, "/tiny")).body == b"ok"


async def test_bodies_of_known_length_arrive_intact_and_the_connection_is_reused(
    previews: Previews,
) -> None:
    """Such bodies go from one socket to the other through one reused buffer: every byte
    must still arrive as sent, for a fast reader and for a slow one (whose socket fills,
    so writes complete in parts), and the upstream connection serves the next request."""
    build = await previews.start()
    bid = build["id"]
    pool = previews.manager.get(bid).pool
    size = 6 * 2**20 + 12345
    expected = random.Random(size).randbytes(size)
    fast = await previews.fetch(bid, f"/random?size={size}")
    assert fast.code == 200 and fast.body == expected
    status, slow = await read_body(
        previews.port, previews.path(bid, f"/random?size={size}"), previews.token, 16 * 2**20
    )
    assert status == 200 and slow == expected
    opened = pool.opened
    assert (await previews.fetch(bid, "/tiny")).body == b"ok"
    assert pool.opened == opened, "the connection went back to the pool and was reused"
    head = await previews.fetch(bid, f"/random?size={size}", method="HEAD")
    assert head.code == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(size)


async def read_body(port: int, path: str, token: str, rate: float) -> tuple[int, bytes]:
    """GET ``path`` and read its whole body at ``rate`` bytes/s (in 64 KiB reads)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: token {token}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        match = re.search(rb"Content-Length: (\d+)", head)
        assert match is not None, head
        body, remaining = bytearray(), int(match.group(1))
        loop = asyncio.get_running_loop()
        start = loop.time()
        while remaining > 0:
            data = await asyncio.wait_for(reader.read(min(remaining, 65536)), WAIT)
            assert data, "the body ended early"
            body += data
            remaining -= len(data)
            ahead = len(body) / rate - (loop.time() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the reader, not synchronisation
        return int(head.split()[1]), bytes(body)
    finally:
        writer.close()


def test_a_bounded_send_buffer_is_restored_after_the_body() -> None:
    """While a body is spliced the browser's send buffer is bounded (bytes in flight stay
    few); afterwards the connection gets back the buffer it had."""
    with tcp_pair() as (left, _right):
        big = 4 * splice.SEND_BUFFER
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, big)
        before = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        with splice.bounded_send_buffer(left, splice.SEND_BUFFER):
            during = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        after = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert during <= 2 * splice.SEND_BUFFER < before
    assert after == before


@contextlib.contextmanager
def tcp_pair(host: str = "127.0.0.1") -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair: (the accepted side, the connecting side), peers at ``host``."""
    with socket.create_server(("0.0.0.0", 0)) as server:
        dialled = socket.create_connection((host, server.getsockname()[1]))
        accepted, _ = server.accept()
        with accepted, dialled:
            yield accepted, dialled


def sizes_and_locks(sock: socket.socket) -> tuple[int, int, int | None]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        splice.buffer_locks(sock),
    )


def test_autotuned_buffers_are_bounded_then_autotuned_again() -> None:
    """A fresh connection's buffers are the kernel's to grow: bounded during the body, then
    back to their size and, where the kernel can say (SO_BUF_LOCK), to autotuning, so the
    connection's later responses are not held to the bound."""
    with tcp_pair() as (sock, _peer):
        before = sizes_and_locks(sock)
        with (
            splice.bounded_send_buffer(sock, splice.SEND_BUFFER),
            splice.bounded_receive_buffer(sock, splice.RECEIVE_BUFFER),
        ):
            send, receive, locks = sizes_and_locks(sock)
        after = sizes_and_locks(sock)
    assert send <= 2 * splice.SEND_BUFFER and receive <= 2 * splice.RECEIVE_BUFFER
    assert after == before
    if before[2] is not None:  # the kernel tells which sizes are fixed
        assert before[2] == 0 and locks == 3  # both fixed meanwhile, neither afterwards


def test_a_buffer_the_application_fixed_smaller_is_left_alone() -> None:
    with tcp_pair() as (sock, _peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, splice.SEND_BUFFER // 4)
        before = sizes_and_locks(sock)
        with splice.bounded_send_buffer(sock, splice.SEND_BUFFER):
            during = sizes_and_locks(sock)
        assert during == before == sizes_and_locks(sock)


def non_loopback_address() -> str | None:
    """An address of this machine's that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: this picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_only_a_peer_on_this_machine_gets_bounded_buffers() -> None:
    """Across a network the round trip decides and autotuning keeps the pipe full."""
    with tcp_pair("127.0.0.1") as (local, _peer):
        before = local.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        with splice.bounded_send_buffer(local, splice.SEND_BUFFER):
            assert local.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= min(
                before, 2 * splice.SEND_BUFFER
            )
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with tcp_pair(address) as (remote, _peer):
        before = remote.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        with splice.bounded_send_buffer(remote, 4096):
            assert remote.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
