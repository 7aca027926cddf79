"""A live log is a trickle of small frames: each must leave at once. With Nagle's
algorithm on (tornado's default for a WebSocket), a frame written while the previous
one is unacknowledged waits for the client's delayed ACK, up to 40 ms on Linux: the
print-to-client latency's p99 was ~50 ms for that alone (``benchmarks/bench_logs.py``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from jupyter_agentbuild.handlers.stream import StreamHandler
from tests.conftest import Api


async def test_the_log_stream_sends_without_nagle_delay(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodelay: list[int] = []  # TCP_NODELAY of the server's end of each stream, once open
    original = StreamHandler.open

    def recorded(self: StreamHandler, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        assert self.ws_connection is not None
        sock = self.ws_connection.stream.socket  # type: ignore[attr-defined,union-attr]
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(StreamHandler, "open", recorded)
    build = await api.create({"steps": ["echo one; echo two"]})
    entries, code = await api.stream(build["id"])
    assert code == 1000 and [e["text"] for e in entries if e["kind"] == "log"] == ["one", "two"]
    assert nodelay == [1]
