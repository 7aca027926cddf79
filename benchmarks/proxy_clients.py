"""The clients of ``bench_proxy.py``: keep-alive HTTP/1.1 connections, latency samples,
and the three loads it measures (small responses, large bodies, WebSocket round trips)."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from typing import Any

from harness import JupyterServer, RssSampler
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

MiB = 1 << 20


class Connection:
    """A keep-alive HTTP/1.1 client connection (just enough HTTP for this benchmark)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        host = "" if "Host" in headers else f"Host: 127.0.0.1:{port}\r\n"
        self.head = f"{host}{extra}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, *, sink: Any = None) -> tuple[int, int]:
        """(status, body bytes); ``sink(n)`` is awaited after each piece of the body."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=4 * MiB
            )
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(None, 2)[1])
        lower = head.lower()
        size = 0
        if b"transfer-encoding: chunked" in lower:
            while True:
                n = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if n == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                size += await self._body(n, sink)
                await self.reader.readexactly(2)
        else:
            match = re.search(rb"content-length: *(\d+)", lower)
            if match:
                size = await self._body(int(match.group(1)), sink)
        if b"connection: close" in lower:
            self.close()
        return status, size

    async def _body(self, n: int, sink: Any) -> int:
        assert self.reader is not None
        got = 0
        while got < n:
            data = await self.reader.read(min(n - got, MiB))
            if not data:
                raise ConnectionError("body cut short")
            got += len(data)
            if sink is not None:
                await sink(got)
        return got

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Sample:
    """Latencies (s) and elapsed time of one target, accumulated over rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.errors = 0

    def summary(self, rate: str) -> dict[str, float]:
        latencies = sorted(self.latencies)
        return {
            rate: len(latencies) / self.elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
            "errors": self.errors,
        }


async def small_responses(
    sample: Sample,
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    warmup: float = 0.5,
) -> None:
    """``connections`` keep-alive clients, each sending its next request when the
    previous answer is in, for ``seconds`` after ``warmup``."""
    stop_at = 0.0
    measuring = False

    async def worker() -> None:
        conn = Connection(port, headers)
        try:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                status, _ = await conn.get(path)
                if status != 200:
                    sample.errors += 1
                if measuring:
                    sample.latencies.append(time.perf_counter() - began)
        finally:
            conn.close()

    stop_at = time.perf_counter() + warmup  # connections made, pools filled
    await asyncio.gather(*(worker() for _ in range(connections)))
    measuring, began = True, time.perf_counter()
    stop_at = began + seconds
    await asyncio.gather(*(worker() for _ in range(connections)))
    sample.elapsed += time.perf_counter() - began


class BodyReader(asyncio.BufferedProtocol):
    """A fast reader of one response with a ``Content-Length`` body.

    The client shares this machine's two cores with the server and the preview, so for
    a large body it must cost as little as possible, or the benchmark measures it
    instead of the proxy: ``asyncio.StreamReader`` copies every byte twice in Python
    (into its buffer, then out of it), which made the client the busiest process of a
    direct transfer. Here the kernel writes into one reusable buffer (a browser's
    network stack reads the same way) and only the head is kept.
    """

    def __init__(self) -> None:
        self.buf = bytearray(MiB)
        self.head = b""
        self.status = 0
        self.left = -1  # body bytes still to come; -1 until the head is in
        self.size = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.left < 0:
            self.head += self.buf[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.head[:end].lower()
            self.status = int(head.split(None, 2)[1])
            match = re.search(rb"content-length: *(\d+)", head)
            if match is None:
                self._fail(ConnectionError("the large-body reader needs a Content-Length"))
                return
            self.size = int(match.group(1))
            nbytes = len(self.head) - end - 4
            self.left = self.size
        self.left -= nbytes
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"body cut short ({exc})"))


async def read_fast(port: int, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """(status, body bytes) of one GET read with :class:`BodyReader`."""
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(BodyReader, "127.0.0.1", port)
    try:
        transport.write(f"GET {path} HTTP/1.1\r\n{Connection(port, headers).head}".encode())
        await reader.done
    finally:
        transport.close()
    return reader.status, reader.size


async def large_body(
    server: JupyterServer, port: int, path: str, headers: dict[str, str], rate: float | None
) -> dict[str, Any]:
    """One large GET: read as fast as possible (``rate`` None) or paced at ``rate``
    bytes/s; MB/s and the server's RSS growth meanwhile."""
    conn = Connection(port, headers)
    began = time.perf_counter()

    async def pace(got: int) -> None:
        assert rate is not None
        ahead = got / rate - (time.perf_counter() - began)
        if ahead > 0:
            await asyncio.sleep(ahead)

    try:
        with RssSampler(server) as rss:
            if rate is None:
                status, size = await read_fast(port, path, headers)
            else:
                status, size = await conn.get(path, sink=pace)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return {"ok": False, "error": f"connection broke ({exc})"}
    finally:
        conn.close()
    elapsed = time.perf_counter() - began
    if status != 200:
        return {"ok": False, "error": f"HTTP {status}", "rss": rss.growth}
    return {"ok": True, "mbps": size / MiB / elapsed, "rss": rss.growth, "size": size}


async def ws_round_trips(sample: Sample, url: str, headers: dict[str, str], count: int) -> None:
    ws = await websocket_connect(HTTPRequest(url, headers=headers))
    try:
        for _ in range(100):  # warm-up
            await ws.write_message("warm")
            await ws.read_message()
        began = time.perf_counter()
        for i in range(count):
            sent = time.perf_counter()
            await ws.write_message(f"round trip {i}")
            assert await ws.read_message() == f"round trip {i}"
            sample.latencies.append(time.perf_counter() - sent)
        sample.elapsed += time.perf_counter() - began
    finally:
        ws.close()


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """The targets' order in each round, rotated: load drifts hit every target alike."""
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(rounds)]


# --------------------------------------------------------------------------- the run
